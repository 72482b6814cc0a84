"""Loader throughput (images/s, decode to float NCHW in [-1, 1]): the WebDataset loader,
the FFCV loader and a torchvision-style ImageFolder + PIL loader, on the same images.

    .venv/bin/python bench/bench_loaders.py [--num 2000] [--sizes 64 128] [--workers 2]

Prints a table and appends it, with the command, machine and date, to
bench/results/loaders.md. Medians of --repeats epochs, measured side by side in one run."""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vaegan_dist.data import to_float  # noqa: E402
from vaegan_dist.data.streaming import find_shards  # noqa: E402
from vaegan_dist.data.wds_stream import ShardStream  # noqa: E402


class ImageFolderPIL(Dataset):
    """What torchvision's ImageFolder + ToTensor does: PIL open, RGB, to tensor."""

    def __init__(self, files: list[Path]):
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        with Image.open(self.files[i]) as im:
            return torch.from_numpy(np.array(im.convert("RGB")))


def _epoch(it) -> tuple[int, float]:
    """Images and seconds after the first batch (worker start-up is not throughput)."""
    t, n = None, 0
    for imgs in it:
        x = to_float(imgs)
        if t is None:
            t = time.perf_counter()
            continue
        n += len(x)
    return n, time.perf_counter() - t


def bench(out: Path, size: int, workers: int, repeats: int, batch: int) -> dict[str, float]:
    res: dict[str, list[float]] = {"wds+simplejpeg": [], "ffcv": [], "imagefolder+PIL": []}
    shards = find_shards(str(out), "train", size)
    folder = out / f"folder-{size}"
    if not folder.is_dir():
        from data_helpers_bench import export_folder
        export_folder(shards, folder)
    files = sorted(folder.glob("*.jpg"))
    try:
        from vaegan_dist.data.ffcv_loader import make_loader
        ffcv = make_loader(str(out / f"train-{size}.beton"), batch, workers, seed=0)
        _epoch(x[0] for x in ffcv)  # numba compiles on the first epoch
    except RuntimeError as e:
        print(f"ffcv skipped: {e}")
        ffcv = None
    for r in range(repeats):
        ds = ShardStream(shards, batch, seed=r, shuffle_buffer=1000, epochs=1)
        dl = DataLoader(ds, batch_size=None, num_workers=workers, prefetch_factor=4)
        n, t = _epoch(x[0] for x in dl)
        res["wds+simplejpeg"].append(n / t)
        dl = DataLoader(ImageFolderPIL(files), batch_size=batch, shuffle=True,
                        num_workers=workers, prefetch_factor=4)
        n, t = _epoch(dl)
        res["imagefolder+PIL"].append(n / t)
        if ffcv is not None:
            n, t = _epoch(x[0] for x in ffcv)
            res["ffcv"].append(n / t)
    return {k: statistics.median(v) for k, v in res.items() if v}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num", type=int, default=2000)
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--data", help="reuse this shard folder (made by vaegan-prep synth)")
    a = p.parse_args()
    out = Path(a.data or tempfile.mkdtemp(prefix="bench-loaders-"))
    if not (out / "manifest.json").is_file():
        cmd = [sys.executable, "-m", "data_prep.cli", "synth", str(out), "--num", str(a.num),
               "--format", "both", "--shard-size", "250", "--workers", "2", "--no-progress"]
        for s in a.sizes:
            cmd += ["--size", str(s)]
        subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    rows = []
    for s in a.sizes:
        r = bench(out, s, a.workers, a.repeats, a.batch)
        ratio = r["wds+simplejpeg"] / r["imagefolder+PIL"]
        ff = f"{r['ffcv']:.0f}" if "ffcv" in r else "n/a"
        rows.append(f"| {s} | {r['wds+simplejpeg']:.0f} | {ff} | {r['imagefolder+PIL']:.0f} "
                    f"| {ratio:.2f}x |")
    table = ["| size | WebDataset (simplejpeg) img/s | FFCV (raw beton) img/s | "
             "ImageFolder+PIL img/s | WDS / ImageFolder |", "|---|---|---|---|---|", *rows]
    print("\n".join(table))
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
               f"{platform.system()} {platform.release()}, torch {torch.__version__}")
    block = [f"\n## {datetime.date.today().isoformat()}", "",
             f"`{' '.join([Path(sys.executable).name, *sys.argv])}`", "",
             f"Machine: {machine}. {a.num} synthetic images (JPEG q95 4:4:4), batch {a.batch}, "
             f"{a.workers} workers, median of {a.repeats} epochs, float NCHW output; timed "
             f"from the first batch (excludes "
             f"worker start-up). Load average {os.getloadavg()[0]:.1f} at the end; "
             f"compare within a row.", "",
             *table, ""]
    res = ROOT / "bench" / "results" / "loaders.md"
    if not res.exists():
        res.write_text("# Loader throughput (bench/bench_loaders.py)\n")
    with res.open("a") as f:
        f.write("\n".join(block))
    return 0


if __name__ == "__main__":
    sys.exit(main())
