"""The engine adapter: plain (one process), DDP, accelerate and DeepSpeed behind one small
interface, so `TrainStep` runs its three phases without knowing which engine runs it.

    modules            what the shared forward calls (DDP wrappers, or raw modules)
    autocast()         the forward's mixed-precision context
    sync(last)         context for one micro-batch: skip the gradient all-reduce unless last
    backward(name, loss, retain_graph)   gradient of `loss` into module `name` only
    after_micro(last)  optimiser steps (all engines step once per optimiser step)
    zero_grad()
    save_shards(dir) / load_shards(dir)   engine-owned state inside a checkpoint folder
                       (DeepSpeed's own checkpoint API; nothing for the others)

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
from .checkpoint import unwrap
from .config import Config, ConfigError, packaged_file
from .extras import require

ENGINES = ("ddp", "accelerate", "deepspeed")


def autocast_factory(precision: str, device: torch.device) -> Callable:
    if precision == "fp32":
        return contextlib.nullcontext
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return lambda: torch.autocast(device.type, dtype=dtype)


def _own_params(m: nn.Module) -> list[torch.Tensor]:
    return [p for p in unwrap(m).parameters() if p.requires_grad]


class Engine:
    """One process, or DDP when the process group has several ranks."""

    kind = "ddp"

    def __init__(self, models: dict[str, nn.Module], optimizers: dict, precision: str,
                 device: torch.device):
        self.raw = dict(models)
        self.optimizers = optimizers
        self.autocast = autocast_factory(precision, device)
        # fp16: ONE GradScaler shared by the three optimisers. The three losses come from one
        # shared forward, so an overflow in it is common to all phases; each optimiser still
        # checks its own grads for inf in scaler.step (a skip stays local), and one scale
        # keeps the three updates on the same footing (PyTorch's multi-optimiser recipe).
        self.scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
        self.modules = self._wrap(models, device)

    def _wrap(self, models: dict[str, nn.Module], device: torch.device) -> dict[str, nn.Module]:
        if dist.world_size() == 1:
            return dict(models)  # world size 1: the same step, no wrapper
        ids = [device.index] if device.type == "cuda" else None
        return {k: nn.parallel.DistributedDataParallel(m, device_ids=ids)
                for k, m in models.items()}

    def sync(self, last: bool) -> contextlib.AbstractContextManager:
        stack = contextlib.ExitStack()
        if not last:
            for m in self.modules.values():
                if hasattr(m, "no_sync"):
                    stack.enter_context(m.no_sync())
        return stack

    def backward(self, name: str, loss: torch.Tensor, retain_graph: bool) -> None:
        if self.scaler is not None:
            loss = self.scaler.scale(loss)
        torch.autograd.backward(loss, inputs=_own_params(self.modules[name]),
                                retain_graph=retain_graph)

    def zero_grad(self) -> None:
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)

    def after_micro(self, last: bool) -> None:
        if not last:
            return
        for opt in self.optimizers.values():
            if self.scaler is not None:
                self.scaler.step(opt)
            else:
                opt.step()
        if self.scaler is not None:
            self.scaler.update()

    owns_optimizer_state = False  # True: the optimisers are saved by save_shards, not state.pt

    def save_shards(self, folder: Path) -> None:
        """Collective: engine-owned files into a checkpoint folder (none here)."""

    def load_shards(self, folder: Path) -> None:
        """Collective: the counterpart of `save_shards`."""


class AccelerateEngine(Engine):
    """`accelerate launch` (or a plain process): accelerate prepares models and optimisers
    (DDP when several processes) and owns autocast and the fp16 scaler."""

    kind = "accelerate"

    def __init__(self, models, optimizers, precision, device):
        from accelerate import Accelerator

        launcher = dist.launcher_mixed_precision()
        ours = {"fp32": "no"}.get(precision, precision)
        if launcher not in (None, "no") and launcher != ours:
            raise ConfigError(f"accelerate is configured with mixed_precision={launcher} but "
                              f"train.precision={precision}: set it in one place only")
        self.acc = Accelerator(mixed_precision=ours, cpu=device.type == "cpu")
        names = list(models)
        out = self.acc.prepare(*models.values(), *(optimizers[k] for k in names))
        self.raw = dict(models)
        self.modules = dict(zip(names, out[:len(names)], strict=True))
        self.optimizers = dict(zip(names, out[len(names):], strict=True))
        self.autocast = self.acc.autocast
        self.scaler = None

    def sync(self, last: bool) -> contextlib.AbstractContextManager:
        stack = contextlib.ExitStack()
        if not last:
            for m in self.modules.values():
                stack.enter_context(self.acc.no_sync(m))
        return stack

    def backward(self, name, loss, retain_graph):
        self.acc.backward(loss, inputs=_own_params(self.modules[name]),
                          retain_graph=retain_graph)

    def after_micro(self, last: bool) -> None:
        if last:
            for opt in self.optimizers.values():
                opt.step()


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
    """One DeepSpeed engine per model (ZeRO 0/1/2). The shared forward calls the raw modules
    (whole on every rank at ZeRO <= 2); each phase hands its own engine a surrogate loss whose
    gradient is exactly the phase's gradient into that model only (see `backward`).
    DeepSpeed counts micro-batches itself: every engine steps after every micro-batch and
    reduces/updates at the accumulation boundary."""

    kind = "deepspeed"

    def __init__(self, models, optimizers, precision, device, ds_config: dict):
        deepspeed = require("deepspeed", "deepspeed", "train.engine=deepspeed")
        self.raw = dict(models)
        self.engines = {}
        for k, m in models.items():
            eng, opt, _, _ = deepspeed.initialize(model=m, optimizer=optimizers[k],
                                                  config=dict(ds_config))
            self.engines[k] = eng
        self.modules = {k: e.module for k, e in self.engines.items()}
        self.optimizers = {k: e.optimizer for k, e in self.engines.items()}
        self.autocast = autocast_factory(precision, device)
        self.scaler = None  # DeepSpeed scales fp16 losses itself

    def sync(self, last: bool) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def backward(self, name, loss, retain_graph):
        # DeepSpeed's backward takes no `inputs=`, and freezing the other models is not enough
        # (a frozen parameter's post-accumulate hook still fires: ZeRO-2 then fails on a None
        # grad). So take the phase's gradient g with the restricted autograd.grad, and hand
        # the engine the surrogate sum(p * g / S), whose graph holds only this model's
        # parameters and whose gradient is exactly g (times the engine's fp16 loss scale S,
        # a power of two, applied inside engine.backward; S = 1 otherwise).
        eng = self.engines[name]
        params = [p for p in self.raw[name].parameters() if p.requires_grad]
        scale = float(getattr(eng.optimizer, "loss_scale", 1.0)) if eng.fp16_enabled() else 1.0
        grads = torch.autograd.grad(loss * scale, params, retain_graph=retain_graph)
        surrogate = sum((p.float() * (g.float() / scale)).sum() for p, g in zip(params, grads,
                                                                                 strict=True))
        eng.backward(surrogate, scale_wrt_gas=False)

    def zero_grad(self) -> None:
        pass  # each engine zeroes its gradients after its boundary step

    def after_micro(self, last: bool) -> None:
        for eng in self.engines.values():
            eng.step()

    owns_optimizer_state = True  # ZeRO partitions: each rank holds a shard of Adam's state

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
    if t.channels_last and t.engine == "deepspeed":
        # DeepSpeed broadcasts parameters as flat byte views, which NHWC weights are not
        if dist.is_main():
            print("vaegan-train: train.channels_last is not supported by DeepSpeed; off")
        t.channels_last = False  # the resolved config.yaml says so
    if t.channels_last:
        models = {k: m.to(memory_format=torch.channels_last) for k, m in models.items()}
    if t.engine == "deepspeed":
        eng: Engine = DeepSpeedEngine(models, optimizers, t.precision, device,
                                      deepspeed_config(cfg, dist.world_size()))
    elif t.engine == "accelerate":
        eng = AccelerateEngine(models, optimizers, t.precision, device)
    else:
        eng = Engine(models, optimizers, t.precision, device)
    if t.compile:
        eng.modules = {k: torch.compile(m) for k, m in eng.modules.items()}
    return eng


def fingerprint(controller, models: dict[str, nn.Module]) -> dict:
    """The controller state and a SHA-256 of each model's parameters and buffers."""
    out: dict = {"controller": json.dumps(controller.state_dict(), sort_keys=True,
                                          default=float)}
    for name, m in models.items():
        h = hashlib.sha256()
        for k, v in unwrap(m).state_dict().items():
            h.update(k.encode())
            h.update(v.detach().float().cpu().contiguous().numpy().tobytes())
        out[name] = h.hexdigest()
    return out


def check_ranks_agree(controller, models: dict[str, nn.Module]) -> dict:
    """Called at every checkpoint: all ranks must hold the same controller state and the
    same parameters; a mismatch is an error on every rank (no silent divergence)."""
    mine = fingerprint(controller, models)
    if dist.world_size() == 1:
        return mine
    everyone = dist.all_gather_object(mine)
    bad = [f"rank {r}: {k}" for r, fp in enumerate(everyone) for k in fp if fp[k] != everyone[0][k]]
    if bad:
        raise RuntimeError("ranks diverged (differs from rank 0): " + ", ".join(bad))
    return mine
