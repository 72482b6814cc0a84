"""Train-step throughput: our shared-forward step vs the naive reference (a fresh forward per
loss), interleaved repeat by repeat on the same model, batch and data, reported as the
median ratio; plus model FLOPs per image (torch.utils.flop_counter) and the model FLOP
utilisation against a plain conv2d stack of the same shapes timed in the same run.

    python bench/bench_step.py --res 32 64 128 --n 64 --batch 4 --repeats 3
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    N_FOR_RES,
    append_results,
    make_step,
    markdown_table,
    median,
    timed,
)
from vaegan_dist.reference import naive_step  # noqa: E402
from vaegan_dist.step import step_noise  # noqa: E402


def make(res: int, n: int, batch: int, latent: int = 64):
    step, cfg = make_step(res, n, latent)
    models = step.engine.raw
    fmt = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
    x = (torch.rand(batch, 3, res, res) * 2 - 1).contiguous(memory_format=fmt)
    eps, z_g = step_noise(0, 0, batch, latent, True, x.device)

    def ours():
        step([x], 0)

    def naive():
        naive_step(models, step.engine.optimizers, x, eps, z_g, cfg.loss, float(step.controller.k))

    return models, ours, naive, x


def conv_shapes(models: dict, x: torch.Tensor, ours) -> list[tuple]:
    """(input shape, weight shape, stride) of every conv the step runs forward."""
    shapes: list[tuple] = []
    hooks = [m.register_forward_hook(
        lambda mod, inp, out: shapes.append((tuple(inp[0].shape), tuple(mod.weight.shape),
                                             mod.stride)))
        for model in models.values() for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    ours()
    for h in hooks:
        h.remove()
    return shapes


def conv_stack_flops_per_s(shapes: list[tuple], iters: int, repeats: int = 3) -> float:
    """FLOP/s of forward+backward of the same convs alone, best of `repeats`: our 'peak'
    (a conv-only reference, so an MFU near 1 means the step runs at the speed of its
    convolutions, with little overhead around them)."""
    ins = [torch.randn(s, requires_grad=True) for s, _, _ in shapes]
    ws = [torch.randn(w, requires_grad=True) for _, w, _ in shapes]

    def run():
        for i, w, (_, _, st) in zip(ins, ws, shapes):
            torch.nn.functional.conv2d(i, w, stride=st, padding=1).sum().backward()

    with FlopCounterMode(display=False) as fc:
        run()
    flops = fc.get_total_flops()
    run()
    return flops / min(timed(run, iters) for _ in range(repeats))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--res", type=int, nargs="+", default=[32, 64, 128])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--n", type=int, default=0, help="filters unit n (0: the preset's n)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--iters", type=int, default=2, help="steps per timed repeat")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--no-save", action="store_true")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    rows = []
    for res in a.res:
        n = a.n or N_FOR_RES[res]
        models, ours, naive, x = make(res, n, a.batch)
        ours(), naive()  # warm-up
        t_ours, t_naive = [], []
        for _ in range(a.repeats):  # interleaved, so load changes hit both alike
            t_ours.append(timed(ours, a.iters))
            t_naive.append(timed(naive, a.iters))
        ratio = median([tn / to for to, tn in zip(t_ours, t_naive)])
        with FlopCounterMode(display=False) as fc:
            ours()
        flops_img = fc.get_total_flops() / a.batch
        achieved = flops_img * a.batch / median(t_ours)
        peak = conv_stack_flops_per_s(conv_shapes(models, x, ours), a.iters, a.repeats)
        rows.append([res, n, a.batch, a.batch / median(t_ours), a.batch / median(t_naive),
                     ratio, flops_img / 1e9, achieved / 1e9, peak / 1e9, achieved / peak])
        print(markdown_table(HEADER, rows[-1:]), flush=True)
    table = markdown_table(HEADER, rows)
    print("\n" + table)
    if not a.no_save:
        path = append_results("step.md", "Train step: shared forward vs naive reference", table,
                              "img/s medians over repeats; ratio = median of per-repeat "
                              "naive/ours time; MFU = achieved model FLOP/s over a conv2d "
                              "stack of the same shapes (fwd+bwd) timed in the same run")
        print(f"appended to {path}")
    return 0


HEADER = ["res", "n", "batch", "ours img/s", "naive img/s", "speed-up (median)",
          "GFLOP/img (fwd+bwd)", "achieved GFLOP/s", "conv-stack GFLOP/s", "MFU"]

if __name__ == "__main__":
    sys.exit(main())
