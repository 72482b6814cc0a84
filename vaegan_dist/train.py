"""The training loop: build, resume, step, log, snapshot. Progress is counted in images
(nimg = steps x global batch); intervals are in thousands of images, so runs with other
batch sizes or process counts stay comparable."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from . import checkpoint as ckpt
from . import dist, variants
from . import preempt as pre
from .config import Config, ConfigError, dump_yaml, to_dict
from .controller import PIDController
from .data import build_source
from .ema import GeneratorEma
from .engine import build_engine, check_ranks_agree
from .guard import Diverged, GuardState, fault_from_env, nonfinite_paths
from .images import make_grid, save_grid
from .models import build_models
from .monitor import Health, OfflineEval, Progress, cuda_max_alloc_gib, fig4_grids
from .schedule import LrHalving
from .state import Group, MissingPart, Stateful, load_into, state_of
from .stats import StatsWriter, peak_rss_gib
from .step import StepStats, TrainStep


def build_controller(cfg: Config, variant: variants.Variant,
                     device: torch.device) -> PIDController:
    """The variant's controller (full PID, or BEGAN's integral-only update) on `device`.
    Without a VAE there is no L_v, so alpha weighs nothing (it matters to the
    weighted_mean reading's 1 + alpha)."""
    c = cfg.controller
    alpha = cfg.loss.alpha if variant.vae else 0.0
    return PIDController(*variant.gains(c.l1, c.l2, c.l3), cfg.loss.eta, alpha, c.k0,
                         device=device, reading=cfg.loss.error_reading, scale=c.scale)


def build_optimizers(cfg: Config, models: dict[str, nn.Module]) -> dict[str, torch.optim.Optimizer]:
    o = cfg.optim
    impl = {"fused": True} if o.fused else {"foreach": o.foreach}
    return {name: torch.optim.Adam(m.parameters(), lr=o.lr, betas=tuple(o.betas), eps=o.eps,
                                   **impl)
            for name, m in models.items()}


def build_step(cfg: Config, device: torch.device) -> TrainStep:
    """Models, optimisers, engine, controller and step, as every training run builds them;
    the tests and benchmarks get theirs here too, so they measure the code that trains."""
    variant = variants.get(cfg.loss.variant)
    torch.manual_seed(cfg.train.seed)  # identical initial weights on every rank
    models = {k: m.to(device) for k, m in build_models(cfg.model, variant.vae).items()}
    # single process/DDP, accelerate or DeepSpeed: wrapped models and prepared optimisers
    engine = build_engine(cfg, models, build_optimizers(cfg, models), device)
    guard = GuardState(device) if cfg.guard.enabled else None
    return TrainStep(engine, build_controller(cfg, variant, device), variant, cfg.loss,
                     cfg.model.latent, cfg.train.seed, guard)


def fixed_latent(cfg: Config, device: torch.device) -> torch.Tensor:
    """The fixed z of the sample grid: comparable samples over the whole run."""
    g = torch.Generator().manual_seed(cfg.train.seed + 12345)
    return torch.randn(cfg.train.grid**2, cfg.model.latent, generator=g).to(device)


def weights_of(models: dict[str, nn.Module]) -> dict[str, torch.Tensor]:
    """The inference snapshot's tensors, named `model.param` without wrapper prefixes."""
    return {f"{name}.{k}": v for name, m in models.items()
            for k, v in ckpt.unwrap(m).state_dict().items()}


class Counter:
    """The run's position: optimiser steps done (data order and noise are functions of it)
    and the images they consumed (the unit of every length and interval)."""

    def __init__(self, world: int, engine: str):
        self.step, self.nimg, self.world, self.engine = 0, 0, world, engine

    def state_dict(self) -> dict:
        return {"step": self.step, "nimg": self.nimg, "world_size": self.world,
                "engine": self.engine}

    def load_state_dict(self, state: dict) -> None:
        self.step, self.nimg = int(state["step"]), int(state["nimg"])


class Trainer:
    """Builds every part of a run; `registry()` names the parts a checkpoint holds."""

    def __init__(self, cfg: Config):
        self.cfg, t = cfg, cfg.train
        self.env = dist.init(t.dist_timeout_s, t.device)
        self.device = dist.device()
        if t.threads > 0:
            torch.set_num_threads(t.threads)
        if t.precision == "fp16" and self.device.type != "cuda":
            raise ConfigError("train.precision=fp16 needs a CUDA device (use bf16 on CPU)")
        self.world, self.rank = dist.world_size(), dist.rank()
        self.global_batch = t.batch * t.accum * self.world
        self.run_dir = Path(cfg.run_dir)
        self.step_fn = build_step(cfg, self.device)
        self.engine, self.controller = self.step_fn.engine, self.step_fn.controller
        self.guard = self.step_fn.guard
        self.ema = (GeneratorEma(self.models["decoder"], t.ema_kimg, t.ema_rampup)
                    if t.ema_kimg > 0 else None)
        self.step_fn.fault = fault_from_env()  # test-only: see guard.FAULT_ENV
        # bad steps in a row before a rollback (at once where a bad step cannot be skipped)
        self.rollback_after = cfg.guard.rollback_after if self.engine.can_skip else 1
        self.lr = LrHalving(cfg.optim, self.engine.optimizers)
        self.counter = Counter(self.world, t.engine)
        self.total_nimg = round(t.kimg * 1000)
        self.source = build_source(cfg, self.world, self.rank, self.device)
        self.stats = StatsWriter(self.run_dir, dist.is_main())
        self.z_fixed = fixed_latent(cfg, self.device)
        # called after every step with (step index, its StepStats): a hook for tests and tools
        self.on_step: Callable[[int, StepStats], None] | None = None

    @property
    def models(self) -> dict[str, nn.Module]:
        """The plain modules (no DDP or compile wrappers)."""
        return self.engine.raw

    @property
    def generator(self) -> nn.Module:
        """What samples come from: the weight average when train.ema_kimg > 0."""
        return self.models["decoder"] if self.ema is None else self.ema.module

    @property
    def step(self) -> int:
        return self.counter.step

    # --- state -------------------------------------------------------------------------
    def registry(self) -> dict[str, Stateful]:
        """Everything a checkpoint's state.pt holds, by name. The engine adds its own parts
        (optimisers, the fp16 loss scaler; DeepSpeed keeps its optimisers in its shards)."""
        return {"models": Group(self.engine.raw), "controller": self.controller,
                "lr": self.lr, "progress": self.counter, "data": self.source,
                **({"guard": self.guard} if self.guard is not None else {}),
                **({"ema": self.ema} if self.ema is not None else {}),
                **self.engine.state_parts()}

    def save(self) -> Path | None:
        """A checkpoint of the registry, unless its state is not finite or the guard is
        skipping steps (a rollback must land before the trouble): then the newest good
        checkpoint stays the newest, and keep-k rotation cannot remove it."""
        check_ranks_agree(self.controller, self.models)  # identical k_t and weights, or error
        state = {**state_of(self.registry()), "config": to_dict(self.cfg)}
        bad = nonfinite_paths({k: state[k] for k in ("models", "optimizers", "controller", "ema")
                               if k in state})
        streak = 0 if self.guard is None else int(self.guard.streak)
        if bad or streak:  # the same verdict on every rank: their states were just checked
            why = (f"non-finite values in {', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}"
                   if bad else f"its last {streak} step(s) were skipped as non-finite")
            newest = ckpt.latest(self.run_dir)
            dist.print0(f"guard: not saving step {self.step}: {why}; "
                        + (f"the newest checkpoint stays {newest}" if newest else
                           "there is no checkpoint yet"))
            return None
        meta = {"config": dump_yaml(self.cfg), "step": str(self.step),
                "nimg": str(self.counter.nimg)}
        # the average as `decoder_ema`: the generator that load_model samples from
        avg = {} if self.ema is None else {"decoder_ema": self.ema.module}
        return ckpt.save(self.run_dir, self.step, state, weights_of({**self.models, **avg}), meta,
                         self.cfg.train.keep, shards=self.engine.save_shards,
                         checksums=self.cfg.train.checksums)

    def save_if_new(self) -> None:
        """Save unless the newest checkpoint already is this step's."""
        if ckpt.latest(self.run_dir) != ckpt.step_dir(self.run_dir, self.step):
            self.save()

    def resume(self, path: str | None = None) -> None:
        """Load `path`, or the newest complete checkpoint of the run folder that every rank
        can read (an unreadable one is skipped with a warning naming it). Structural config
        changes are refused in one line; any other change is accepted and logged."""
        for bad in ckpt.incomplete_checkpoints(self.run_dir):
            dist.print0(f"ignoring incomplete checkpoint {bad}")
        target = self._restore(path)
        if target is not None:
            dist.print0(f"resumed from {target} (step {self.step}, "
                        f"k={self.controller.state_dict()['k']:.6f})")

    def _restore(self, path: str | None = None) -> Path | None:
        """Load the checkpoint `path`, or else the newest complete one whose files every
        rank reads and verifies; one that fails is set aside (renamed *.unreadable) with
        a warning and the next older one is tried. Returns the loaded folder, or None."""
        if path:
            target = Path(path)
            if not target.is_dir():
                raise ckpt.CheckpointError(f"checkpoint {target} does not exist")
            candidates = [target]
        else:
            candidates = ckpt.complete_checkpoints(self.run_dir)[::-1]
        for target in candidates:
            err, state, rng = "", None, None
            try:
                state, rng = ckpt.load(target, self.device, verify=self.cfg.train.checksums)
            except ckpt.CheckpointError as e:
                err = str(e)
            errors = [e for e in dist.all_gather_object(err) if e]  # every rank agrees
            if not errors:
                self._load(target, state, rng)
                return target
            if path:
                raise ckpt.CheckpointError(errors[0])
            aside = ckpt.set_aside(target)
            dist.print0(f"warning: skipping unreadable checkpoint {target} ({errors[0]}); "
                        f"moved to {aside.name}, trying the previous one")
        return None

    def _load(self, target: Path, state: dict, rng: dict | None) -> None:
        mismatch = ckpt.check_compatible(state["config"], to_dict(self.cfg))
        if mismatch:
            raise ckpt.CheckpointError(f"checkpoint {target} is from another config: "
                                       + "; ".join(mismatch))
        for change in ckpt.config_changes(state["config"], to_dict(self.cfg)):
            dist.print0(f"config change accepted on resume: {change}")
        ckpt.upgrade(state)
        if self.ema is not None and "ema" not in state:  # train.ema_kimg set on resume
            dist.print0("train.ema_kimg: the checkpoint holds no generator average; it starts "
                        "from the checkpoint's decoder")
            state["ema"] = state["models"]["decoder"]
        saved_world = int(state["progress"]["world_size"])
        if saved_world != self.world:
            dist.print0(f"world size {saved_world} -> {self.world}: models, optimisers and "
                        "controller carry over; data order re-derived from (seed, step)")
        try:
            load_into(self.registry(), state)
        except MissingPart as e:
            saved = state["progress"].get("engine", "another engine")
            raise ckpt.CheckpointError(f"checkpoint {target} holds no '{e.args[0]}' (saved by "
                                       f"train.engine={saved}): resume it with "
                                       f"train.engine={saved}") from None
        try:
            self.engine.load_shards(target)  # DeepSpeed: modules and ZeRO optimiser shards
        except FileNotFoundError as e:
            raise ckpt.CheckpointError(str(e)) from e
        if rng is not None:
            ckpt.set_rng_state(rng)

    def _rollback(self, streak: int) -> None:
        """The guard's answer to `streak` bad steps in a row: back to the newest readable
        checkpoint (its state is finite: a non-finite one is never saved), the learning rate
        scaled by guard.lr_scale; past guard.max_rollbacks, stop (Diverged)."""
        g, gc, at = self.guard, self.cfg.guard, self.step
        if g.rollbacks >= gc.max_rollbacks:
            raise Diverged(f"training diverged: {streak} non-finite steps in a row at step {at} "
                           f"after {g.rollbacks} rollback(s) (guard.max_rollbacks="
                           f"{gc.max_rollbacks}); lower optim.lr or check the data")
        rollbacks, old, skipped = g.rollbacks + 1, self.lr.lr, g.skipped
        target = self._restore()
        if target is None:
            raise Diverged(f"training diverged at step {at} ({streak} non-finite steps in a row)"
                           " before any checkpoint was written; lower optim.lr or check the data")
        g.rollbacks, g.skipped = rollbacks, skipped  # the checkpoint's own counts are older
        self.lr.set(min(old, self.lr.lr) * gc.lr_scale)  # lower at every rollback
        dist.print0(f"guard: {streak} non-finite steps in a row at step {at}: rolled back to "
                    f"{target.name} (step {self.step}), lr {old:g} -> {self.lr.lr:g} "
                    f"(rollback {rollbacks} of at most {gc.max_rollbacks})")
        self.stats.write({"step": self.step, "nimg": self.counter.nimg,
                          "rollback": rollbacks, "from_step": at, "lr": self.lr.lr})

    # --- the loop ----------------------------------------------------------------------
    def write_config(self) -> None:
        if dist.is_main():
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.yaml").write_text(dump_yaml(self.cfg))

    @torch.no_grad()
    def sample_grid(self, real: torch.Tensor | None = None) -> Path | None:
        """The fixed-latent sample grid and, given real images, the Fig. 4 reconstructions."""
        x = self.generator(self.z_fixed)
        nimg = self.counter.nimg
        self.stats.image("samples/fixed_z", make_grid(x, self.cfg.train.grid), nimg)
        if real is not None and dist.is_main():
            for tag, grid in fig4_grids(self.models, real, self.z_fixed, 8).items():
                self.stats.image(tag, grid, nimg)
        if dist.is_main():
            return save_grid(x, self.run_dir / "samples.png", self.cfg.train.grid)
        return None

    def _crossed(self, kimg: float, nimg: int) -> bool:
        """Did the step that ended at `nimg` images reach the next multiple of kimg?"""
        every = round(kimg * 1000)
        return every > 0 and (nimg // every) > ((nimg - self.global_batch) // every)

    def fit(self, resume_from: str | None = None) -> dict:
        cfg, t = self.cfg, self.cfg.train
        self.write_config()
        self.resume(resume_from)
        last_step = self.step + max(0, -(-(self.total_nimg - self.counter.nimg)
                                         // self.global_batch))
        dist.print0(f"training {cfg.loss.variant} {cfg.model.resolution}px: "
                    f"{self.world} process(es) x batch {t.batch} x accum {t.accum} = "
                    f"{self.global_batch} images/step, {self.counter.nimg}..{self.total_nimg} "
                    f"images (steps {self.step}..{last_step})")
        watch = _Watch(Progress(self.step, last_step),
                       Health(cfg.health.collapse_below, cfg.health.k_stuck_kimg,
                              cfg.health.warmup_kimg, self.step),
                       OfflineEval() if t.eval_every_kimg > 0 and dist.is_main() else None)
        guard = pre.PreemptGuard(self.run_dir, t.time_budget_s, self.device)
        try:  # TensorBoard's events reach the disk on every way out (ranks end by os._exit)
            with guard:
                stopped = self._loop(guard, watch)
            if stopped:
                raise pre.Preempted(self.step, guard.reason)
            self.sample_grid(watch.batch)
            self.save_if_new()
        finally:
            self.stats.close()
        return watch.last

    def _loop(self, guard: pre.PreemptGuard, w: _Watch) -> bool:
        """Steps until train.kimg (False) or an agreed stop request (True, checkpoint saved)."""
        t = self.cfg.train
        while self.counter.nimg < self.total_nimg:
            batches = self.source.micro_batches(self.step)
            if t.channels_last:
                batches = [b.contiguous(memory_format=torch.channels_last) for b in batches]
            w.batch = batches[0]
            if w.offline is not None:
                w.offline.observe(w.batch)
            stats = self.step_fn(batches, self.step)
            if self.on_step is not None:
                self.on_step(self.step, stats)
            self.counter.step += 1
            self.counter.nimg += self.global_batch
            if self.ema is not None:
                self.ema.update(self.models["decoder"], self.counter.nimg, self.global_batch)
            nimg, done = self.counter.nimg, self.counter.nimg >= self.total_nimg
            w.n_log += self.global_batch
            if self.cfg.optim.lr_halving:  # reads M on the host: a sync, only when halving
                self.lr.update(stats.host()["M"], nimg)
            if self._crossed(t.log_every_kimg, nimg) or done:
                div = w.health.diversity(self.models["decoder"], self.z_fixed, w.batch)
                self._log(stats.host({"diversity": div}), nimg, w)
            if self._crossed(t.image_every_kimg, nimg):
                self.sample_grid(w.batch)
            if w.offline is not None and w.offline.ready and self._crossed(t.eval_every_kimg,
                                                                           nimg):
                scores = w.offline(self.models["decoder"], self.cfg.model.latent, self.device)
                self.stats.write({"step": self.step, "nimg": nimg, **scores})
                dist.print0(f"eval nimg {nimg}: " + " ".join(f"{k} {v:.4f}"
                                                            for k, v in scores.items()))
            if self._crossed(t.ckpt_every_kimg, nimg):
                self.save()
            if not done and self.step % t.stop_check_every == 0 and self._check(guard):
                self.save_if_new()
                guard.mark_requeue(self.step)
                dist.print0(f"stopping at step {self.step} ({guard.reason}): checkpoint "
                            f"written, exit {pre.REQUEUE_EXIT_CODE} = requeue me")
                return True
        return False

    def _check(self, preempt: pre.PreemptGuard) -> bool:
        """The periodic collective check (one host read): a stop request, and the guard's
        count of bad steps in a row, which may roll the run back. True: stop."""
        stop, values = preempt.poll(None if self.guard is None else self.guard.streak)
        if values and values[0] >= self.rollback_after:
            self._rollback(int(values[0]))
        return stop

    def _log(self, stats: dict, nimg: int, w: _Watch) -> None:
        """One stats.jsonl line (and TensorBoard scalars) plus the console status line."""
        now = time.perf_counter()
        ips = w.n_log / max(now - w.t_log, 1e-9)
        w.t_log, w.n_log = now, 0
        w.last = {"step": self.step, "nimg": nimg, **stats, "lr": self.lr.lr,
                  "img_per_s": ips, "sec_per_kimg": 1000.0 / ips, "peak_rss_gib": peak_rss_gib()}
        if (cuda_gib := cuda_max_alloc_gib(self.device)) is not None:
            w.last["cuda_max_alloc_gib"] = cuda_gib
        warnings = w.health.update(w.last, self.step, nimg)
        self.stats.write(w.last)
        dist.print0(w.progress.line(self.step, nimg, stats, ips))
        for line in warnings:
            dist.print0(line)
        if stats.get("skipped"):
            dist.print0(f"guard: step {self.step} had non-finite losses or gradients and was "
                        f"skipped ({stats['skipped_steps']} skipped so far)")


@dataclass
class _Watch:
    """What the loop reports with: the console progress line, the offline metric, the newest
    real batch (for Fig. 4 grids) and the last logged statistics."""

    progress: Progress
    health: Health
    offline: OfflineEval | None
    batch: torch.Tensor | None = None
    last: dict = field(default_factory=dict)
    t_log: float = field(default_factory=time.perf_counter)
    n_log: int = 0


def train(cfg: Config, resume_from: str | None = None) -> dict:
    """Run (or resume) training as configured; returns the last logged statistics."""
    trainer = Trainer(cfg)
    try:
        return trainer.fit(resume_from)
    finally:
        dist.shutdown()
