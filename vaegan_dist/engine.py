"""The engine: what runs backward, gradient sync and optimiser steps for `TrainStep`, so the
step does not know whether one process, DDP, accelerate or DeepSpeed trains it. The trainer,
the tests and the benchmarks all get theirs from `build_engine`.

    modules            what the shared forward calls (DDP wrappers, or the plain modules)
    raw                the plain modules (state dicts, snapshots, fingerprints)
    optimizers         one per module, as the engine prepared them
    autocast()         the forward's mixed-precision context
    sync(last)         context for one micro-batch: skip the gradient all-reduce unless last
    backward(name, loss, retain_graph)   gradient of `loss` into module `name` only
    after_micro(last)  after each micro-batch's backward (DeepSpeed steps its engines here)
    step(ok)           the optimiser steps; `ok` False (a device bool) skips every update
    can_skip           whether `step` can skip (the divergence guard rolls back otherwise)
    checks_grads       whether the guard checks gradients (not under a loss scaler: it does)
    zero_grad()
    state_parts()      the engine's entries of the checkpoint registry (optimisers, scaler)
    save_shards(dir) / load_shards(dir)   engine-owned files inside a checkpoint folder

Gradient routing under DDP: each of the three DDP modules runs its forwards of a micro-batch
(D once per input batch) and receives exactly ONE backward into its own parameters
(autograd sums the uses before a parameter's hook fires; `backward(inputs=own params)`:
the other phases pass through it without firing its AccumulateGrad hooks), so each DDP
reducer sees the ordinary one-forward/one-backward pattern, with every parameter used; no
`find_unused_parameters` or `static_graph` is needed. tests/test_dist_equivalence.py proves
it: 2 processes x B equals 1 process x 2B."""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from . import dist
from .config import Config, ConfigError, packaged_file
from .extras import require
from .state import Group, Stateful


def autocast_factory(precision: str, device: torch.device) -> Callable:
    if precision == "fp32":
        return contextlib.nullcontext
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return lambda: torch.autocast(device.type, dtype=dtype)


def _own_params(m: nn.Module) -> list[torch.Tensor]:
    return [p for p in m.parameters() if p.requires_grad]


def _inner(opt: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The torch optimiser behind accelerate's wrapper."""
    return getattr(opt, "optimizer", opt)


def _skips_on_device(opt: torch.optim.Optimizer) -> bool:
    """Fused optimisers skip an update on the device when `found_inf` is set (the
    protocol of torch's GradScaler); the others need the decision on the host."""
    return bool(_inner(opt).defaults.get("fused"))


class Engine:
    """The interface, with the plain-autograd behaviour the local engine uses."""

    kind = "engine"
    can_skip = True
    checks_grads = True
    cuda_graphs = False  # torch.compile replays CUDA graphs: mark each step's start

    def __init__(self, raw: dict[str, nn.Module], modules: dict[str, nn.Module],
                 optimizers: dict[str, torch.optim.Optimizer], autocast: Callable):
        self.raw, self.modules, self.optimizers = dict(raw), dict(modules), dict(optimizers)
        self.autocast = autocast

    def sync(self, last: bool) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def backward(self, name: str, loss: torch.Tensor, retain_graph: bool) -> None:
        torch.autograd.backward(loss, inputs=_own_params(self.raw[name]),
                                retain_graph=retain_graph)

    def zero_grad(self) -> None:
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)

    def after_micro(self, last: bool) -> None:
        """Nothing: the optimisers step once per optimiser step, in `step`."""

    def step(self, ok: torch.Tensor | None = None) -> None:
        """Every optimiser's step; with `ok` False, none moves. Fused optimisers decide on
        the device (no host read); with others, `ok` is read on the host."""
        bad = None
        if ok is not None:
            if not all(_skips_on_device(o) for o in self.optimizers.values()):
                if not bool(ok):  # a host read: only for optimisers that cannot skip
                    return
            else:
                bad = (~ok).float()
        for opt in self.optimizers.values():
            inner = _inner(opt)
            if bad is not None:
                inner.found_inf = bad
            try:
                opt.step()
            finally:
                if bad is not None:
                    del inner.found_inf

    def state_parts(self) -> dict[str, Stateful]:
        return {"optimizers": Group(self.optimizers)}

    def save_shards(self, folder: Path) -> None:
        """Collective: engine-owned files into a checkpoint folder (none by default)."""

    def load_shards(self, folder: Path) -> None:
        """Collective: the counterpart of `save_shards`."""


class LocalEngine(Engine):
    """One process ("single"), or DDP ("ddp") whenever a process group exists: under a
    launcher even one process is wrapped, so it runs the multi-process code path."""

    def __init__(self, models: dict[str, nn.Module], optimizers: dict, precision: str,
                 device: torch.device):
        wrapped = dist.is_initialized()
        ids = [device.index] if device.type == "cuda" else None
        modules = ({k: nn.parallel.DistributedDataParallel(m, device_ids=ids)
                    for k, m in models.items()} if wrapped else models)
        super().__init__(models, modules, optimizers, autocast_factory(precision, device))
        self.kind = "ddp" if wrapped else "single"
        # fp16: ONE GradScaler shared by the three optimisers. The three losses come from one
        # shared forward, so an overflow in it is common to all phases; each optimiser still
        # checks its own grads for inf in scaler.step (a skip stays local), and one scale
        # keeps the three updates on the same footing (PyTorch's multi-optimiser recipe).
        self.scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
        self.checks_grads = self.scaler is None  # the scaler owns (scaled) gradient overflow

    def sync(self, last: bool) -> contextlib.AbstractContextManager:
        stack = contextlib.ExitStack()
        if not last:
            for m in self.modules.values():
                if isinstance(m, nn.parallel.DistributedDataParallel):
                    stack.enter_context(m.no_sync())
        return stack

    def backward(self, name: str, loss: torch.Tensor, retain_graph: bool) -> None:
        if self.scaler is not None:
            loss = self.scaler.scale(loss)
        super().backward(name, loss, retain_graph)

    def step(self, ok: torch.Tensor | None = None) -> None:
        if self.scaler is None:
            return super().step(ok)
        if ok is not None:  # the guard's verdict joins the scaler's own inf check
            bad = (~ok).float()
            for opt in self.optimizers.values():
                self.scaler.unscale_(opt)
                for found in self.scaler._per_optimizer_states[id(opt)][
                        "found_inf_per_device"].values():
                    torch.maximum(found, bad.to(found.device), out=found)
        for opt in self.optimizers.values():
            self.scaler.step(opt)
        self.scaler.update()

    def state_parts(self) -> dict[str, Stateful]:
        parts = super().state_parts()
        if self.scaler is not None:
            parts["scaler"] = self.scaler  # fp16 loss scaling is training state
        return parts


class AccelerateEngine(Engine):
    """`accelerate launch` (or a plain process): accelerate prepares models and optimisers
    (DDP when several processes) and owns autocast and the fp16 scaler."""

    kind = "accelerate"

    def __init__(self, models: dict[str, nn.Module], optimizers: dict, precision: str,
                 device: torch.device):
        from accelerate import Accelerator

        launcher = dist.launcher_mixed_precision()
        ours = {"fp32": "no"}.get(precision, precision)
        if launcher not in (None, "no") and launcher != ours:
            raise ConfigError(f"accelerate is configured with mixed_precision={launcher} but "
                              f"train.precision={precision}: set it in one place only")
        self.acc = Accelerator(mixed_precision=ours, cpu=device.type == "cpu")
        names = list(models)
        out = self.acc.prepare(*models.values(), *(optimizers[k] for k in names))
        super().__init__(models, dict(zip(names, out[:len(names)], strict=True)),
                         dict(zip(names, out[len(names):], strict=True)), self.acc.autocast)
        # under fp16 accelerate's own scaler sets found_inf: the guard reads `ok` on the host
        self.checks_grads = self.acc.scaler is None

    def step(self, ok: torch.Tensor | None = None) -> None:
        if ok is not None and self.acc.scaler is not None:
            if not bool(ok):
                return
            ok = None
        super().step(ok)

    def sync(self, last: bool) -> contextlib.AbstractContextManager:
        stack = contextlib.ExitStack()
        if not last:
            for m in self.modules.values():
                stack.enter_context(self.acc.no_sync(m))
        return stack

    def backward(self, name: str, loss: torch.Tensor, retain_graph: bool) -> None:
        self.acc.backward(loss, inputs=_own_params(self.raw[name]), retain_graph=retain_graph)


def deepspeed_config(cfg: Config, world: int) -> dict:
    """The JSON file named by train.deepspeed_config with our batch semantics filled in;
    a file that states other batch sizes or another precision is an error."""
    try:
        path = packaged_file(cfg.train.deepspeed_config, "deepspeed", ".json")
    except ConfigError as e:
        raise ConfigError(f"train.deepspeed_config: {e}") from None
    try:
        ds = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: invalid JSON ({e})") from e
    t = cfg.train
    want = {"train_micro_batch_size_per_gpu": t.batch, "gradient_accumulation_steps": t.accum,
            "train_batch_size": t.batch * t.accum * world}
    for k, v in want.items():
        if k in ds and ds[k] != v:
            raise ConfigError(f"{path}: {k}={ds[k]} contradicts train.* (expected {v})")
        ds[k] = v
    ds.setdefault("steps_per_print", 10**9)
    prec = ("bf16" if ds.get("bf16", {}).get("enabled") else
            "fp16" if ds.get("fp16", {}).get("enabled") else
            "bf16" if ds.get("torch_autocast", {}).get("enabled") else "fp32")
    if prec != t.precision:
        raise ConfigError(f"{path} trains in {prec} but train.precision={t.precision}: "
                          "set both to the same")
    return ds


class DeepSpeedEngine(Engine):
    """One DeepSpeed engine per model (ZeRO 0/1/2). The shared forward calls the plain
    modules (whole on every rank at ZeRO <= 2); each phase hands its own engine a surrogate
    loss whose gradient is exactly the phase's gradient into that model only (`backward`).
    DeepSpeed counts micro-batches itself: every engine steps after every micro-batch and
    reduces/updates at the accumulation boundary. It owns the optimiser state (ZeRO
    partitions, one shard per rank): saved by `save_shards`, not in state.pt."""

    kind = "deepspeed"
    can_skip = False  # its optimisers step inside engine.step: the guard rolls back instead

    def __init__(self, models: dict[str, nn.Module], optimizers: dict, precision: str,
                 device: torch.device, ds_config: dict):
        deepspeed = require("deepspeed", "deepspeed", "train.engine=deepspeed")

        self.engines = {}
        for k, m in models.items():
            eng, _, _, _ = deepspeed.initialize(model=m, optimizer=optimizers[k],
                                                config=dict(ds_config))
            self.engines[k] = eng
        super().__init__(models, {k: e.module for k, e in self.engines.items()},
                         {k: e.optimizer for k, e in self.engines.items()},
                         autocast_factory(precision, device))

    def backward(self, name: str, loss: torch.Tensor, retain_graph: bool) -> None:
        # DeepSpeed's backward takes no `inputs=`, and freezing the other models is not enough
        # (a frozen parameter's post-accumulate hook still fires: ZeRO-2 then fails on a None
        # grad). So take the phase's gradient g with the restricted autograd.grad, and hand
        # the engine the surrogate sum(p * g / S), whose graph holds only this model's
        # parameters and whose gradient is exactly g (times the engine's fp16 loss scale S,
        # a power of two, applied inside engine.backward; S = 1 otherwise).
        eng = self.engines[name]
        params = _own_params(self.raw[name])
        scale = float(getattr(eng.optimizer, "loss_scale", 1.0)) if eng.fp16_enabled() else 1.0
        grads = torch.autograd.grad(loss * scale, params, retain_graph=retain_graph)
        surrogate = sum((p.float() * (g.float() / scale)).sum()
                        for p, g in zip(params, grads, strict=True))
        eng.backward(surrogate, scale_wrt_gas=False)

    def zero_grad(self) -> None:
        pass  # each engine zeroes its gradients after its boundary step

    def after_micro(self, last: bool) -> None:
        for eng in self.engines.values():
            eng.step()

    def step(self, ok: torch.Tensor | None = None) -> None:
        pass  # done in after_micro, at DeepSpeed's accumulation boundary

    def state_parts(self) -> dict[str, Stateful]:
        return {}  # the optimisers travel in DeepSpeed's own files (save_shards)

    def save_shards(self, folder: Path) -> None:
        """DeepSpeed's own checkpoint API, one tag per model, inside the checkpoint's
        temporary folder: rank 0 writes the module states, every rank its ZeRO shard."""
        for k, eng in self.engines.items():
            eng.save_checkpoint(str(folder / "deepspeed"), tag=k, save_latest=False)

    def load_shards(self, folder: Path) -> None:
        root = folder / "deepspeed"
        if not root.is_dir():
            raise FileNotFoundError(f"{folder} holds no DeepSpeed state (saved by another "
                                    "engine?): resume it with that engine")
        for k, eng in self.engines.items():
            path, _ = eng.load_checkpoint(str(root), tag=k, load_optimizer_states=True,
                                          load_lr_scheduler_states=False)
            if path is None:
                raise FileNotFoundError(f"DeepSpeed could not load {root / k}")


def build_engine(cfg: Config, models: dict[str, nn.Module], optimizers: dict,
                 device: torch.device) -> Engine:
    """The engine named by train.engine, after channels_last / torch.compile."""
    t = cfg.train
    if t.channels_last:
        models = {k: m.to(memory_format=torch.channels_last) for k, m in models.items()}
    if t.engine == "deepspeed":
        eng: Engine = DeepSpeedEngine(models, optimizers, t.precision, device,
                                      deepspeed_config(cfg, dist.world_size()))
    elif t.engine == "accelerate":
        eng = AccelerateEngine(models, optimizers, t.precision, device)
    else:
        eng = LocalEngine(models, optimizers, t.precision, device)
    if t.compile:
        # the phases share one forward and back-propagate through it in turn (retain_graph),
        # which AOTAutograd's donated buffers forbid (seen on an H200 at 128x128)
        import torch._functorch.config as aot_config

        aot_config.donated_buffer = False
        eng.modules = {k: torch.compile(m, mode=t.compile_mode) for k, m in eng.modules.items()}
        eng.cuda_graphs = device.type == "cuda" and t.compile_mode != "default"
    return eng


def fingerprint(controller, models: dict[str, nn.Module]) -> dict:
    """The controller state and a SHA-256 of each model's parameters and buffers."""
    out: dict = {"controller": json.dumps(controller.state_dict(), sort_keys=True,
                                          default=float)}
    for name, m in models.items():
        h = hashlib.sha256()
        for k, v in m.state_dict().items():
            h.update(k.encode())
            h.update(v.detach().float().cpu().contiguous().numpy().tobytes())
        out[name] = h.hexdigest()
    return out


def check_ranks_agree(controller, models: dict[str, nn.Module]) -> dict:
    """Called at every checkpoint with the plain modules: all ranks must hold the same
    controller state and the same parameters; a mismatch is an error on every rank."""
    mine = fingerprint(controller, models)
    if dist.world_size() == 1:
        return mine
    everyone = dist.all_gather_object(mine)
    bad = [f"rank {r}: {k}" for r, fp in enumerate(everyone) for k in fp if fp[k] != everyone[0][k]]
    if bad:
        raise RuntimeError("ranks diverged (differs from rank 0): " + ", ".join(bad))
    return mine
