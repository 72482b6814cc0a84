"""The training loop: build, resume, step, log, snapshot. Progress is counted in images
(nimg = steps x global batch); intervals are in thousands of images, so runs with other
batch sizes or process counts stay comparable."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from . import checkpoint as ckpt
from . import dist
from . import preempt as pre
from .config import Config, ConfigError, dump_yaml, to_dict
from .controller import PIDController
from .data import build_source
from .engine import build_engine, check_ranks_agree
from .images import make_grid, save_grid
from .models import build_models
from .monitor import OfflineEval, Progress, cuda_max_alloc_gib, fig4_grids
from .schedule import LrHalving
from .stats import StatsWriter, peak_rss_gib
from .step import TrainStep


def build_controller(cfg: Config) -> PIDController:
    """PID for the BEGAN* variants; BEGAN's P-only controller (l2 = l3 = 0) for `began`."""
    c = cfg.controller
    pid = cfg.loss.variant != "began"
    # no VAE, no L_v: alpha has nothing to weigh (it matters to the weighted_mean reading)
    alpha = cfg.loss.alpha if cfg.loss.variant == "vae_began_star_lsm" else 0.0
    return PIDController(c.l1, c.l2 if pid else 0.0, c.l3 if pid else 0.0,
                         cfg.loss.eta, alpha, c.k0, cfg.loss.error_reading)


def build_optimizers(cfg: Config, models: dict[str, nn.Module]) -> dict[str, torch.optim.Optimizer]:
    o = cfg.optim
    return {name: torch.optim.Adam(m.parameters(), lr=o.lr, betas=tuple(o.betas), eps=o.eps,
                                   foreach=o.foreach)
            for name, m in models.items()}


def fixed_latent(cfg: Config, device: torch.device) -> torch.Tensor:
    """The fixed z of the sample grid: comparable samples over the whole run."""
    g = torch.Generator().manual_seed(cfg.train.seed + 12345)
    return torch.randn(cfg.train.grid**2, cfg.model.latent, generator=g).to(device)


def weights_of(models: dict[str, nn.Module]) -> dict[str, torch.Tensor]:
    return {f"{name}.{k}": v for name, m in models.items()
            for k, v in ckpt.unwrap(m).state_dict().items()}


class Trainer:
    """Holds every stateful part; `state_dict()` is exactly what a checkpoint stores."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.env = dist.init(cfg.train.dist_timeout_s)
        self.device = dist.device_for(cfg.train.device)
        if cfg.train.threads > 0:
            torch.set_num_threads(cfg.train.threads)
        if cfg.train.precision == "fp16" and self.device.type != "cuda":
            raise ConfigError("train.precision=fp16 needs a CUDA device (use bf16 on CPU)")
        self.world, self.rank = dist.world_size(), dist.rank()
        self.global_batch = cfg.train.batch * cfg.train.accum * self.world
        self.run_dir = Path(cfg.run_dir)
        torch.manual_seed(cfg.train.seed)  # identical initial weights on every rank
        vae = cfg.loss.variant == "vae_began_star_lsm"
        self.models = {k: m.to(self.device) for k, m in build_models(cfg.model, vae).items()}
        self.optimizers = build_optimizers(cfg, self.models)
        # plain/DDP/accelerate/DeepSpeed: wrapped models and optimisers come back from it
        self.engine = build_engine(cfg, self.models, self.optimizers, self.device)
        self.models, self.optimizers = self.engine.modules, self.engine.optimizers
        self.controller = build_controller(cfg)
        self.lr = LrHalving(cfg.optim, self.optimizers)
        self.step = 0
        self.stats = StatsWriter(self.run_dir, dist.is_main())
        self.z_fixed = fixed_latent(cfg, self.device)

    # --- state -------------------------------------------------------------------------
    def _scaler(self):
        """The fp16 GradScaler where the engine has one (its scale is training state)."""
        return getattr(self.engine, "scaler", None)

    def state_dict(self) -> dict:
        return {
            "models": {k: ckpt.unwrap(m).state_dict() for k, m in self.models.items()},
            # DeepSpeed saves its (ZeRO-partitioned) optimisers itself: engine.save_shards
            "optimizers": ({} if self.engine.owns_optimizer_state else
                           {k: o.state_dict() for k, o in self.optimizers.items()}),
            "controller": self.controller.state_dict(),
            "lr": self.lr.state_dict(),
            "step": self.step,
            "nimg": self.step * self.global_batch,
            "world_size": self.world,
            "config": to_dict(self.cfg),
            **({"scaler": self.engine.scaler.state_dict()} if self._scaler() else {}),
        }

    def load_state_dict(self, state: dict) -> None:
        for k, m in self.models.items():
            ckpt.unwrap(m).load_state_dict(state["models"][k])
        if not self.engine.owns_optimizer_state:
            if not state["optimizers"]:
                raise ckpt.CheckpointError("this checkpoint's optimisers are in DeepSpeed's "
                                           "files: resume it with train.engine=deepspeed")
            for k, o in self.optimizers.items():
                o.load_state_dict(state["optimizers"][k])
        self.controller.load_state_dict(state["controller"])
        self.lr.load_state_dict(state["lr"])
        if "scaler" in state and self._scaler() is not None:
            self.engine.scaler.load_state_dict(state["scaler"])  # fp16 loss scaling, where used
        self.step = int(state["step"])

    def save(self) -> Path:
        check_ranks_agree(self.controller, self.models)  # identical k_t and weights, or error
        meta = {"config": dump_yaml(self.cfg), "step": str(self.step),
                "nimg": str(self.step * self.global_batch)}
        return ckpt.save(self.run_dir, self.step, self.state_dict(), weights_of(self.models),
                         meta, self.cfg.train.keep, shards=self.engine.save_shards)

    def resume(self, path: str | None = None) -> None:
        """Load `path`, or the newest complete checkpoint of the run folder. Structural
        config changes are refused in one line; any other change is accepted and logged."""
        target, skipped = ckpt.find_resume_target(self.run_dir, path)
        for bad in skipped:
            dist.print0(f"ignoring incomplete checkpoint {bad}")
        if target is None:
            return
        state, rng = ckpt.load(target, self.device)
        mismatch = ckpt.check_compatible(state["config"], to_dict(self.cfg))
        if mismatch:
            raise ckpt.CheckpointError(f"checkpoint {target} is from another config: "
                                       + "; ".join(mismatch))
        for change in ckpt.config_changes(state["config"], to_dict(self.cfg)):
            dist.print0(f"config change accepted on resume: {change}")
        saved_world = int(state.get("world_size", self.world))
        if saved_world != self.world:
            dist.print0(f"world size {saved_world} -> {self.world}: models, optimisers and "
                        "controller carry over; data order re-derived from (seed, step)")
        self.load_state_dict(state)
        try:
            self.engine.load_shards(target)  # DeepSpeed: modules and ZeRO optimiser shards
        except FileNotFoundError as e:
            raise ckpt.CheckpointError(str(e)) from e
        if rng is not None:
            ckpt.set_rng_state(rng)
        dist.print0(f"resumed from {target} (step {self.step}, k={self.controller.k:.6f})")

    # --- the loop ----------------------------------------------------------------------
    def write_config(self) -> None:
        if dist.is_main():
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.yaml").write_text(dump_yaml(self.cfg))

    @torch.no_grad()
    def sample_grid(self, real: torch.Tensor | None = None) -> Path | None:
        """The fixed-latent sample grid and, given real images, the Fig. 4 reconstructions."""
        dec = ckpt.unwrap(self.models["decoder"])
        x = dec(self.z_fixed)
        nimg = self.step * self.global_batch
        self.stats.image("samples/fixed_z", make_grid(x, self.cfg.train.grid), nimg)
        if real is not None and dist.is_main():
            for tag, grid in fig4_grids(self.models, real, self.z_fixed, 8).items():
                self.stats.image(tag, grid, nimg)
        if dist.is_main():
            return save_grid(x, self.run_dir / "samples.png", self.cfg.train.grid)
        return None

    def _crossed(self, kimg: float, nimg: int) -> bool:
        every = int(kimg * 1000)
        return every > 0 and (nimg // every) > ((nimg - self.global_batch) // every)

    def fit(self, resume_from: str | None = None) -> dict:
        cfg, t = self.cfg, self.cfg.train
        self.write_config()
        self.resume(resume_from)
        source = build_source(cfg, self.world, self.rank, self.device)
        step_fn = TrainStep(self.models, self.optimizers, self.controller, cfg.loss,
                            cfg.model.latent, t.seed, engine=self.engine)
        dist.print0(f"training {cfg.loss.variant} {cfg.model.resolution}px: "
                    f"{self.world} process(es) x batch {t.batch} x accum {t.accum} = "
                    f"{self.global_batch} images/step, steps {self.step}..{t.max_steps}")
        watch = _Watch(Progress(self.step, t.max_steps, self.global_batch),
                       OfflineEval() if t.eval_every_kimg > 0 and dist.is_main() else None)
        guard = pre.PreemptGuard(self.run_dir, t.time_budget_s, self.device)
        with guard:
            stopped = self._loop(step_fn, source, guard, watch)
        if stopped:
            self.stats.close()
            raise pre.Preempted(self.step, guard.reason)
        self.sample_grid(watch.batch)
        if ckpt.latest(self.run_dir) != ckpt.step_dir(self.run_dir, self.step):
            self.save()
        self.stats.close()
        return watch.last

    def _loop(self, step_fn: TrainStep, source, guard: pre.PreemptGuard, w: _Watch) -> bool:
        """Steps until max_steps (False) or an agreed stop request (True, checkpoint saved)."""
        t = self.cfg.train
        while self.step < t.max_steps:
            batches = source.micro_batches(self.step)
            if t.channels_last:
                batches = [b.contiguous(memory_format=torch.channels_last) for b in batches]
            w.batch = batches[0]
            if w.offline is not None:
                w.offline.observe(w.batch)
            stats = step_fn(batches, self.step)
            self.step += 1
            nimg = self.step * self.global_batch
            w.n_log += self.global_batch
            self.lr.update(stats["M"], nimg)
            if self.step % t.log_every == 0 or self.step == t.max_steps:
                self._log(stats, nimg, w)
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
            if self.step < t.max_steps and guard.should_stop():
                if ckpt.latest(self.run_dir) != ckpt.step_dir(self.run_dir, self.step):
                    self.save()
                guard.mark_requeue(self.step)
                dist.print0(f"stopping at step {self.step} ({guard.reason}): checkpoint "
                            f"written, exit {pre.REQUEUE_EXIT_CODE} = requeue me")
                return True
        return False

    def _log(self, stats: dict, nimg: int, w: _Watch) -> None:
        """One stats.jsonl line (and TensorBoard scalars) plus the console status line."""
        now = time.perf_counter()
        ips = w.n_log / max(now - w.t_log, 1e-9)
        w.t_log, w.n_log = now, 0
        w.last = {"step": self.step, "nimg": nimg, **stats, "lr": self.lr.lr,
                  "img_per_s": ips, "sec_per_kimg": 1000.0 / ips, "peak_rss_gib": peak_rss_gib()}
        if (cuda_gib := cuda_max_alloc_gib(self.device)) is not None:
            w.last["cuda_max_alloc_gib"] = cuda_gib
        self.stats.write(w.last)
        dist.print0(w.progress.line(self.step, stats, ips))


@dataclass
class _Watch:
    """What the loop reports with: the console progress line, the offline metric, the newest
    real batch (for Fig. 4 grids) and the last logged statistics."""

    progress: Progress
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
