"""Install and run as a user does: build the wheel, install it WITHOUT extras into a fresh
venv (torch first, at the pin of constraints.txt, then the wheel under those constraints),
and run the console scripts from a folder outside the repository, so nothing is imported
from the source tree: `vaegan-prep synth`, `vaegan-train --config tiny` on those shards,
`vaegan-sample`, every script's `--help`; and each command that needs a missing extra
(`--format ffcv`, `data.source=ffcv`, `train.engine=deepspeed`, `vaegan-eval`) exits 2 with
one line naming the extra and no traceback.

Needs only the package index (pip's own cache is reused). About 1.5 minutes on 2 cores:
`--no-compile` skips byte-compiling torch's ~20k files, pip runs from this venv against the
new one (`--python`) instead of bootstrapping its own, and the ~1 GB venv lives in /dev/shm
where there is room (deleting it from a disk mounted with `discard` alone took 30-70 s)."""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests import procs

pytestmark = [pytest.mark.install, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ("vaegan-prep", "vaegan-train", "vaegan-sample", "vaegan-interp", "vaegan-attrs",
           "vaegan-eval", "vaegan-submit")
# not copied into the build folder: only at the top level (vaegan_dist/data is a package)
TOP_SKIP = {".venv", ".git", "runs", "data", "build", "dist", ".pytest_cache", ".ruff_cache"}


def _torch_pin() -> str:
    """The exact torch of constraints.txt (the CPU build on this machine and CI)."""
    m = re.search(r"^torch==\S+", (ROOT / "constraints.txt").read_text(), re.M)
    assert m, "constraints.txt pins torch"
    return m.group(0)


def _copy_source(dst: Path) -> None:
    def ignore(folder: str, names: list[str]) -> set[str]:
        skip = {n for n in names if n == "__pycache__" or n.endswith(".egg-info")}
        if Path(folder) == ROOT:
            skip |= TOP_SKIP & set(names)
        return skip

    shutil.copytree(ROOT, dst, ignore=ignore, symlinks=True)


def _scratch(tmp_path_factory) -> Path:
    """A RAM-backed folder where there is room (fast to fill and to delete), else pytest's."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > 4 * 2**30:
        for old in shm.glob("vaegan-install-*"):  # left by a killed run (an hour or older)
            if time.time() - old.stat().st_mtime > 3600:
                shutil.rmtree(old, ignore_errors=True)
        return Path(tempfile.mkdtemp(prefix="vaegan-install-", dir=shm))
    return tmp_path_factory.mktemp("install")


def _pip(venv: Path, *args: str, timeout: float) -> None:
    r = procs.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"),
                   "install", "--no-compile", "--disable-pip-version-check", *args],
                  timeout=timeout)
    assert r.returncode == 0, procs.tail(r.stdout, r.stderr)


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    """(venv bin folder, work folder outside the repository, clean environment)."""
    base = _scratch(tmp_path_factory)
    try:
        src, wheels, venv, work = base / "src", base / "wheels", base / "venv", base / "work"
        _copy_source(src)  # builds write build/ and *.egg-info: never into the checkout
        r = procs.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                       "--disable-pip-version-check", "-w", str(wheels), str(src)], timeout=300)
        assert r.returncode == 0, procs.tail(r.stdout, r.stderr)
        (wheel,) = wheels.glob("vaegan_dist-*.whl")
        r = procs.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], timeout=120)
        assert r.returncode == 0, r.stderr
        _pip(venv, _torch_pin(), timeout=400)
        _pip(venv, "-c", str(ROOT / "constraints.txt"), str(wheel), timeout=400)
        work.mkdir()
        env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": os.environ.get("HOME", str(base)),
               "OMP_NUM_THREADS": "1", "VAEGAN_CACHE": str(base / "cache"), "LC_ALL": "C.UTF-8"}
        yield venv / "bin", work, env
    finally:
        shutil.rmtree(base, ignore_errors=True)  # ~1 GB with torch: never kept


def _run(user, *cmd: str, timeout: float = 300):
    bin_dir, work, env = user
    return procs.run([str(bin_dir / cmd[0]), *cmd[1:]], cwd=work, env=env, timeout=timeout)


def _ok(r) -> None:
    assert r.returncode == 0, procs.tail(r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr


def test_installed_wheel_runs_from_outside_the_checkout(user):
    bin_dir, work, _ = user
    r = _run(user, "python", "-c",
             "import importlib.util as u, vaegan_dist, data_prep, launch\n"
             "print(vaegan_dist.__file__, data_prep.__file__, launch.__file__)\n"
             "print(*[u.find_spec(m) is None for m in ('ffcv', 'deepspeed', 'sklearn')])")
    _ok(r)
    files, missing = r.stdout.splitlines()
    venv = bin_dir.parent.resolve()
    assert all(Path(f).resolve().is_relative_to(venv) for f in files.split()), files
    assert missing == "True True True", "the extras must be absent in this venv: " + missing

    _ok(_run(user, "vaegan-prep", "synth", "shards", "--num", "64", "--size", "32",
             "--no-progress"))
    assert (work / "shards" / "manifest.json").is_file()

    r = _run(user, "vaegan-train", "--config", "tiny", "--run-dir", "run", "--max-steps", "3",
             "--batch", "8", "--log-every", "1", "data.source=wds", "data.path=shards",
             "train.threads=1")
    _ok(r)
    assert (work / "run" / "checkpoints" / "step-000000003" / "COMPLETE").is_file(), r.stdout
    assert len((work / "run" / "stats.jsonl").read_text().splitlines()) == 3

    r = _run(user, "vaegan-sample", "--run", "run", "--n", "4", "--out", "samples.png")
    _ok(r)
    assert (work / "samples.png").stat().st_size > 0

    r = _run(user, "vaegan-train", "--list-presets")
    _ok(r)
    root = Path(r.stdout.splitlines()[0].removeprefix("presets folder: ")).resolve()
    assert root.is_relative_to(bin_dir.parent.resolve()), r.stdout  # inside the install
    for rel in ("tiny.yaml", "deepspeed/zero2.json", "accelerate/cpu_multi_process.yaml",
                "slurm/train-single.sbatch"):
        assert rel in r.stdout.split(), rel

    # every script's --help, and every command whose extra is missing, two at a time
    jobs = {name: (name, "--help") for name in SCRIPTS}
    missing_extra = {
        "ffcv": ("vaegan-prep", "synth", "betons", "--num", "8", "--size", "32",
                 "--format", "ffcv", "--no-progress"),
        "ffcv-train": ("vaegan-train", "--config", "tiny", "--run-dir", "run-ffcv",
                       "data.source=ffcv", "data.path=betons"),
        "deepspeed": ("vaegan-train", "--config", "tiny", "--run-dir", "run-ds",
                      "train.engine=deepspeed", "train.deepspeed_config=zero2"),
        "eval": ("vaegan-eval", "--run", "run", "--n", "8"),
    }
    with ThreadPoolExecutor(2) as pool:
        done = dict(zip([*jobs, *missing_extra],
                        pool.map(lambda c: _run(user, *c, timeout=180),
                                 [*jobs.values(), *missing_extra.values()]), strict=True))
    for name in SCRIPTS:
        r = done[name]
        _ok(r)
        assert r.stdout.startswith(f"usage: {name}"), (name, r.stdout[:200])
    for key, cmd in missing_extra.items():
        r = done[key]
        extra = key.split("-")[0]
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2, (cmd, r.returncode, r.stderr[-2000:])
        assert len(lines) == 1 and "Traceback" not in r.stderr, (cmd, r.stderr[-2000:])
        assert lines[0].startswith(f"{cmd[0]}: error: ") and \
            f"pip install 'vaegan-dist[{extra}]'" in lines[0], lines[0]
    assert not (work / "betons").exists()  # refused before any work
    assert not (work / "run-ds" / "checkpoints").exists()
