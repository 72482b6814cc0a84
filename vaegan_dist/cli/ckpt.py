"""vaegan-ckpt verify RUN: the state of every checkpoint folder of a run (complete or not,
checksums, readable, finite), newest last. Exit 0 when the newest complete checkpoint is
good (what a resume would load), 1 when it is not (a resume falls back to an older one),
2 on bad input."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import checkpoint as ckpt


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="vaegan-ckpt", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("verify", help="report every checkpoint of a run folder")
    v.add_argument("run", help="run folder (holding checkpoints/)")
    a = p.parse_args(argv)
    run = Path(a.run)
    if not (run / "checkpoints").is_dir():
        print(f"vaegan-ckpt: error: {run} has no checkpoints/ folder", file=sys.stderr)
        return 2
    reports = ckpt.verify_all(run)
    if not reports:
        print(f"vaegan-ckpt: {run}/checkpoints holds no checkpoint folder")
        return 1
    width = max(len(r.path.name) for r in reports)
    for r in reports:
        print(f"{r.path.name:<{width}}  {'ok' if r.ok else 'BAD':<3}  {r.detail}")
    newest = [r for r in reports if r.complete]
    if not newest:
        print("no complete checkpoint: a resume starts from scratch")
        return 1
    if not newest[-1].ok:
        good = [r for r in newest if r.ok]
        print(f"the newest complete checkpoint is bad: a resume falls back to "
              f"{good[-1].path.name if good else 'nothing (starts from scratch)'}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
