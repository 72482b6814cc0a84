"""Speed options of the train step, each alone and combined: channels_last, bf16 autocast,
torch.compile, foreach / fused Adam, the number of threads: each a config key of the
trainer's own step.

Every case is the same model, batch and data; cases are timed round-robin (one repeat of
each case per round) so that load changes hit all alike, and each case is reported as the
median over rounds of its speed-up against the baseline timed in the same round.
The baseline is torch's defaults on CPU: fp32, contiguous, eager, Adam's per-parameter
loop (foreach=False), all threads; the model's defaults (the full model with its prior
term).

    python bench/bench_options.py --res 64 --batch 8 --repeats 5
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    N_FOR_RES,
    append_results,
    make_step,
    markdown_table,
    median,
    timed,
)

BASE = ("train.channels_last=false", "optim.foreach=false")


@dataclass
class Case:
    name: str
    overrides: tuple[str, ...] = ()  # config keys laid over BASE
    threads: int = 0  # 0: torch's default


def cases(threads: int, with_compile: bool) -> list[Case]:
    out = [
        Case("baseline"),
        Case("channels_last", ("train.channels_last=true",)),
        Case("bf16 autocast", ("train.precision=bf16",)),
        Case("Adam foreach", ("optim.foreach=true",)),
        Case("Adam fused", ("optim.fused=true",)),
        Case("1 thread", threads=1),
        # the full model's prior term (beta L_sg, on by default) off: what the term costs
        Case("without the prior term", ("loss.ls_prior=false",)),
    ]
    if threads > 1:
        out.append(Case(f"{threads} threads", threads=threads))
    if with_compile:
        out.append(Case("torch.compile", ("train.compile=true",)))
    out.append(Case("combined: channels_last+bf16+fused", ("train.channels_last=true",
                                                           "train.precision=bf16",
                                                           "optim.fused=true")))
    return out


def build(c: Case, res: int, n: int, batch: int, latent: int = 64) -> Callable[[], None]:
    """A zero-argument callable running one full train step of the trainer's own step
    (bench.common.make_step) under case `c`."""
    step, cfg = make_step(res, n, latent, (*BASE, *c.overrides))
    fmt = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
    x = (torch.rand(batch, 3, res, res) * 2 - 1).contiguous(memory_format=fmt)
    default_threads = torch.get_num_threads()

    def run() -> None:
        torch.set_num_threads(c.threads or default_threads)
        try:
            step([x], 0)
        finally:
            torch.set_num_threads(default_threads)

    return run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--res", type=int, default=64)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--n", type=int, default=0, help="filters unit n (0: the preset's n)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--iters", type=int, default=2, help="steps per timed repeat")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile case")
    p.add_argument("--no-save", action="store_true")
    a = p.parse_args(argv)
    n = a.n or N_FOR_RES[a.res]
    runs: dict[str, Callable[[], None]] = {}
    for c in cases(torch.get_num_threads(), not a.no_compile):
        try:
            fn = build(c, a.res, n, a.batch)
            fn(), fn()  # warm-up (compiles where asked)
            runs[c.name] = fn
        except Exception as e:  # an option this build/CPU lacks is reported, not fatal
            print(f"{c.name}: skipped ({type(e).__name__}: {str(e).splitlines()[0][:120]})")
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(a.repeats):
        for name, fn in runs.items():
            times[name].append(timed(fn, a.iters))
    base = times["baseline"]
    rows = [[name, a.res, n, a.batch, a.batch / median(t),
             median([b / x for b, x in zip(base, t)])] for name, t in times.items()]
    table = markdown_table(HEADER, rows)
    print("\n" + table)
    if not a.no_save:
        path = append_results("options.md", f"Speed options of the train step at {a.res}x{a.res}",
                              table, "img/s median over repeats; speed-up = median over rounds "
                              "of baseline time / case time, cases timed round-robin")
        print(f"appended to {path}")
    return 0


HEADER = ["case", "res", "n", "batch", "img/s", "speed-up vs baseline (median)"]

if __name__ == "__main__":
    sys.exit(main())
