"""One typed config tree. Presets in `configs/*.yaml` are plain data laid over the
dataclass defaults; CLI `key=value` overrides are laid over the preset. Unknown keys and
values of the wrong type or range are rejected with a one-line `ConfigError`."""

from __future__ import annotations

import dataclasses
import math
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .controller import ERROR_SCALES
from .losses import ERROR_READINGS, LS_MATCHES, LS_NORMS
from .variants import VARIANTS

# the choices of the string-valued keys; the code that dispatches on them trusts these
OUTPUTS = ("linear", "tanh")  # models.Decoder's last activation
SOURCES = ("synthetic", "folder", "wds", "ffcv")
ENGINES = ("ddp", "accelerate", "deepspeed")
PRECISIONS = ("fp32", "bf16", "fp16")
KL_REDUCTIONS = ("mean", "sum")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")
GEN_SCALES = ("none", "rms", "auto")  # loss.ls_gen_scale; auto is resolved (resolve())
# loss.ls_gen_scale=auto turns into rms at a D this wide (min of model.n and model.d_latent):
# measured at widths 16 (rms loses) and 64 (rms engages k_t): bench/results/fidelity.md
WIDE_D = 64


class ConfigError(ValueError):
    """A bad preset, key or value; the CLI prints it as one line."""


@dataclass
class ModelConfig:
    resolution: int = 64  # power of two, 32..1024 (presets and tests: 32..512)
    n: int = 64  # filters per stage unit (BEGAN's n)
    latent: int = 64  # N: the generator's latent size
    d_latent: int = 64  # h: the discriminator auto-encoder's bottleneck
    channels: int = 3
    checkpoint_stages: bool = False  # activation checkpointing of encoder/decoder stages
    # the last activation of D's and G's decoders (OUTPUTS): linear (the paper's and BEGAN's:
    # unbounded) | tanh (bounded to the image range [-1, 1], so D cannot raise a fake's energy
    # without bound). Measured (bench/results/fidelity.md): tanh on both with l1 1e-2 stops
    # BEGAN's collapse on digits but collapses every variant on MNIST (G finds a saturated
    # image D reconstructs exactly, k_t -> 1); linear stays the default
    d_output: str = "linear"
    g_output: str = "linear"
    # D's encoder sees a minibatch-std feature map over groups of this many samples
    # (Karras et al. 2018), so D can tell a batch of near-identical fakes from real ones;
    # 0: off (the paper's D). Measured with 4 (bench/results/fidelity.md): BEGAN still
    # collapses on digits, the full model gains there but is far worse on MNIST; off
    d_mbstd: int = 0


@dataclass
class LossConfig:
    variant: str = "vae_began_star_lsm"  # a record of variants.VARIANTS (paper Table 1)
    alpha: float = 0.3
    beta: float = 0.1
    gamma: float = 0.1
    # eta: the fake/real energy ratio the controller holds (Eq. 10). The paper (and BEGAN)
    # use 0.5; measured on real data (bench/results/controller_study.md) the full model's
    # generator reaches a ratio of 0.8 to 1.2 with D not opposing it (k = 0), so with 0.5
    # e_t < 0 always and k_t stays 0. 1.5 lies above that range: k engages on every set
    # and seed measured. The full model's own default is 1.75, with ls_prior (its ratio is
    # higher; variants.py). The paper's setting: loss.eta=0.5 loss.error_reading=eq10.
    eta: float = 1.5
    kl_reduction: str = "mean"  # mean over batch and latent dims, or "sum" over dims
    # the controller's error e_t (losses.controller_error): eq10 | eq11_printed | weighted_mean
    # weighted_mean: eta L_d - (L_g + alpha L_v) / (1 + alpha), so eta is a ratio of mean
    # energies whatever alpha (eq10 = the same error x (1 + alpha) at eta x (1 + alpha))
    error_reading: str = "weighted_mean"
    # scale of D's latents inside L_s (losses.normalize_latents): none | rms | std | tanh.
    # none: measured, rms/std/tanh at beta 0.1 (and beta 0) collapse the VAE posterior: the
    # raw L_s is what balances the mean-reduced KL in L_enc
    ls_norm: str = "none"
    # how began_star_lsm compares unpaired real/fake latents: pair (per-sample L1 to an
    # unrelated real image: collapses onto one image) | mean | mean_std (feature matching
    # of batch statistics, Salimans et al. 2016) | mmd (maximum mean discrepancy: measured
    # best, mean_std dropped classes at 3,000 steps; bench/results/fidelity.md)
    ls_match: str = "mmd"
    # the full model only: L_gen also gets beta L_sg, L_sg = ls_match of D's latents of the
    # real batch and of the prior samples x_g (the term BEGAN*+LSM's generator is trained by),
    # so the full model holds every term of its ablation. L_sg is logged either way.
    # On by default for the full model (variants.py), which it puts level with or ahead of
    # both ablations on the three sets measured (bench/results/fidelity.md)
    ls_prior: bool = False
    # the generator's similarity terms (L_s, L_sg; L_enc keeps the raw L_s) in units of the
    # real latents' rms ('rms') or raw ('none', the paper's): variants._gen_scale. 'auto'
    # (the full model's default, variants.py) is rms when D is wide (model.n and
    # model.d_latent >= WIDE_D) and none otherwise; the resolved value is what config.yaml
    # holds. Measured (bench/results/fidelity.md): at issue 12's GPU settings (width 64,
    # lr 1e-4, batch 64) rms holds k_t at ~0.27 and leads on Animal-MNIST (FD 48.4 and 46.5
    # against 91.4 and 80.0, two seeds; raw lets k_t drain to 0) but trails on digits (23.2
    # and 28.1 against 18.2 and 21.3, two seeds); at the tiny width (16) rms loses on digits
    # (170 +- 100 against 19.3, five seeds): k_t peaks at 0.36-0.53 and D's energies rise
    ls_gen_scale: str = "none"
    # D's push on the fakes stops (no gradient) in a batch whose mean fake energy exceeds
    # margin x eta x L_d, a multiple of the controller's set point (losses.margin_push,
    # EBGAN's hinge made relative). 0: never (the paper). Measured: bench/results/fidelity.md
    margin: float = 2.0
    # weight of EBGAN's pull-away term (losses.pull_away: the mean squared cosine of D's
    # latents of the generated batch, pair by pair) in the generator's loss; 0: off (the
    # paper's L_gen). BEGAN's own default is 0.1 (variants.py), against its collapse at a
    # wide D (CPU runs: bench/results/fidelity.md); the other variants cover the classes
    # without it
    pullaway: float = 0.0


@dataclass
class ControllerConfig:
    l1: float = 1e-3  # integral gain (velocity form: multiplies e_t)
    l2: float = 1e-5  # proportional gain (multiplies e_t - e_{t-1})
    l3: float = 1e-5  # derivative gain (multiplies e_t - 2e_{t-1} + e_{t-2})
    k0: float = 0.0
    # e_t in the energies' units (absolute, the paper's) or divided by L_d (relative: k_t's
    # speed no longer depends on the scale of the losses). Measured (fidelity.md): relative
    # at l1 3e-3 is better on digits at 300 steps, worse on MNIST at 16 kimg (D runs away
    # once k_t is high), and does not stop BEGAN's collapse on the GPU; so not the default
    scale: str = "absolute"


@dataclass
class OptimConfig:
    lr: float = 5e-5
    betas: tuple[float, float] = (0.5, 0.999)
    eps: float = 1e-8
    lr_halving: bool = False  # BEGAN: halve lr when M stalls
    lr_patience_kimg: float = 100.0  # images (thousands) without a new best M before halving
    lr_floor: float = 1e-6
    foreach: bool = True  # multi-tensor Adam (ignored when fused)
    # fused Adam kernels: on CUDA the fast path, and everywhere the one Adam that skips a
    # step on the device (the divergence guard needs no host read with it)
    fused: bool = True


@dataclass
class DataConfig:
    source: str = "synthetic"  # synthetic | folder | wds | ffcv
    path: str = ""  # folder of images, shard folder or .beton
    split: str = "train"
    num_images: int = 4096  # synthetic only
    data_seed: int = 0  # synthetic only: the embedded dataset's own seed
    workers: int = 0
    shuffle_buffer: int = 1000
    resampled: bool = False  # wds: infinite stream drawing shards with replacement


@dataclass
class TrainConfig:
    batch: int = 16  # per device (per process); global = batch * accum * world_size
    accum: int = 1  # micro-batches per optimiser step
    # Every length and interval of a run is counted in images (thousands: kimg), so runs
    # with other batch sizes or process counts stay comparable; an interval fires at the
    # first step whose image count reaches its next multiple. (stop_check_every counts
    # steps: it is the loop's own cadence of a collective, not an interval of the run.)
    kimg: float = 16.0  # the run's length: it ends at the first step with nimg >= kimg * 1000
    seed: int = 0
    log_every_kimg: float = 0.16  # stats.jsonl line, TensorBoard scalars, console status
    image_every_kimg: float = 10.0  # sample grid / TensorBoard images interval
    ckpt_every_kimg: float = 50.0  # checkpoint interval in thousands of images
    keep: int = 3  # newest complete checkpoints kept
    checksums: bool = True  # SHA-256 of every checkpoint file, verified when loading
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "fp32"  # fp32 | bf16 | fp16
    threads: int = 0  # torch intra-op threads; 0 = leave torch's default
    grid: int = 8  # the fixed-latent sample grid is grid x grid
    eval_every_kimg: float = 0.0  # offline metric (digits FD/KID) interval; 0 = off
    # half-life (thousands of images) of the moving average of the generator's weights that
    # samples, snapshots and scores use (ema.py); 0 = off: the trained decoder itself.
    # Measured at 5 (bench/results/fidelity.md, 48-kimg runs): lower FD on digits and
    # Animal-MNIST, higher on MNIST (its runs end while still improving); so off by default
    ema_kimg: float = 0.0
    ema_rampup: float = 0.05  # early on the half-life is at most this x the images seen
    time_budget_s: float = 0.0  # stop cleanly (checkpoint) after this many seconds; 0 = off
    engine: str = "ddp"  # ddp (one process, or DDP under a launcher) | accelerate | deepspeed
    deepspeed_config: str = ""  # JSON file (configs/deepspeed/*.json) when engine=deepspeed
    # NHWC models and batches: 1.26x on CPU (bench/results/options.md); resolved to false
    # under DeepSpeed (its parameter broadcast needs contiguous weights)
    channels_last: bool = True
    compile: bool = False  # torch.compile the three models
    # torch.compile's mode: default | reduce-overhead (CUDA graphs) | max-autotune
    compile_mode: str = "default"
    dist_timeout_s: float = 600.0  # bound on every collective: a dead rank ends the job
    # steps between the ranks' agreement on a stop request (a collective read on the host:
    # the only host sync of a step that does not log); a stop is acted on within this many
    stop_check_every: int = 10


@dataclass
class GuardConfig:
    """The divergence guard (guard.py): bad steps are skipped, then rolled back."""

    enabled: bool = True  # skip every update of a step whose losses or gradients are not finite
    rollback_after: int = 20  # bad steps in a row before rolling back to the last checkpoint
    lr_scale: float = 0.5  # the learning rate is multiplied by this at each rollback (1: keep)
    max_rollbacks: int = 3  # then the run stops with exit code 65 (no requeue restarts it)


@dataclass
class HealthConfig:
    """The health monitor (monitor.Health), read at every log interval."""

    # warn when the fixed-latent samples' mean pairwise distance falls below this share of
    # a real batch's (1: as varied as the data)
    collapse_below: float = 0.15
    k_stuck_kimg: float = 20.0  # warn when k_t sits at 0 for this many thousand images
    warmup_kimg: float = 1.0  # no collapse warning before (a fresh decoder is near-constant)


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    controller: ControllerConfig = field(default_factory=ControllerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    guard: GuardConfig = field(default_factory=GuardConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    run_dir: str = "runs/default"
    preset: str = ""


def config_dir() -> Path:
    """The presets folder: $VAEGAN_CONFIGS, else the package's own `vaegan_dist/configs/`
    (package data, so an installed wheel has it; `configs` at the repository root links to
    it). It also holds deepspeed/*.json, accelerate/*.yaml and slurm/*.sbatch."""
    env = os.environ.get("VAEGAN_CONFIGS")
    return Path(env) if env else Path(__file__).resolve().parent / "configs"


def packaged_file(value: str, sub: str, suffix: str) -> Path:
    """A file given as a path, or by name from the presets folder's `sub`/ folder
    (`zero2` -> configs/deepspeed/zero2.json). Raises ConfigError naming the choices."""
    p = Path(value)
    if p.is_file():
        return p
    if p.name == value:  # a bare name: look in the packaged folder
        q = config_dir() / sub / (value if value.endswith(suffix) else value + suffix)
        if q.is_file():
            return q
    known = sorted(f.stem for f in (config_dir() / sub).glob(f"*{suffix}"))
    raise ConfigError(f"no file '{value}' (a path, or a name in {config_dir() / sub}: "
                      f"{', '.join(known)})")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        x = None
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if isinstance(value, (int, float)):
            try:
                x = float(value)
            except OverflowError:  # an integer beyond a float's range
                raise ConfigError(f"{key}: {value} is too large for a number") from None
        elif isinstance(value, str):  # YAML 1.1 reads 1e-5 (no dot) as a string
            try:
                x = float(value)
            except ValueError:
                pass
        if x is None or math.isnan(x):  # NaN passes every range check below: refuse it here
            raise ConfigError(f"{key}: expected a number (not NaN), got {value!r}")
        return x
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{key}: expected a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, key) for v, a in zip(value, args))
    raise ConfigError(f"{key}: unsupported type {tp}")  # the tree uses none other


def _merge(obj: Any, data: dict, prefix: str = "") -> None:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if k not in names:
            raise ConfigError(f"unknown config key '{key}' (known: {', '.join(sorted(names))})")
        cur = getattr(obj, k)
        if dataclasses.is_dataclass(cur):
            _merge(cur, v, key + ".")
        else:
            setattr(obj, k, _coerce(v, hints[k], key))


def _set_dotted(cfg: Config, dotted: str, raw: str) -> None:
    parts = dotted.split(".")
    obj: Any = cfg
    for p in parts[:-1]:
        if not dataclasses.is_dataclass(obj) or p not in {f.name for f in dataclasses.fields(obj)}:
            raise ConfigError(f"unknown config key '{dotted}'")
        obj = getattr(obj, p)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"{dotted}: cannot parse value {raw!r}") from e
    if value is None:  # `key=null` or `key=~`: keep the text
        value = raw
    node: dict = {parts[-1]: value}
    _merge(obj, node, ".".join(parts[:-1]) + "." if len(parts) > 1 else "")


def load_preset(name_or_path: str) -> dict:
    """Read a preset by name (configs/NAME.yaml) or path; `base: NAME` chains presets."""
    p = Path(name_or_path)
    if not (p.suffix in (".yaml", ".yml") and p.exists()):
        p = config_dir() / f"{name_or_path}.yaml"
    if not p.exists():
        known = sorted(q.stem for q in config_dir().glob("*.yaml"))
        raise ConfigError(f"no preset or YAML file '{name_or_path}' (presets: {', '.join(known)})")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: invalid YAML ({str(e).splitlines()[0]})") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level")
    base = data.pop("base", None)
    if base:
        merged = load_preset(str(base))
        _deep_update(merged, data)
        return merged
    return data


def _deep_update(dst: dict, src: dict) -> None:
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _deep_update(dst[k], v)
        else:
            dst[k] = v


def _assemble(cfg: Config, preset_data: dict, overrides: list[str]) -> Config:
    _merge(cfg, preset_data)
    for ov in overrides:
        if "=" not in ov:
            raise ConfigError(f"override '{ov}' is not of the form key=value")
        k, v = ov.split("=", 1)
        _set_dotted(cfg, k.strip(), v.strip())
    return cfg


def build_config(preset: str | None, overrides: list[str] | None = None) -> Config:
    """Defaults, then the preset, then `key=value` overrides; validated. The defaults are
    the field defaults with the chosen variant's own loss settings on top (variants.py:
    the full model's differ from its ablations'), so what a preset or override says wins."""
    data = load_preset(preset) if preset else {}
    cfg = _assemble(Config(), data, overrides or [])
    own = getattr(VARIANTS.get(cfg.loss.variant), "defaults", ())
    if own:  # again, on the variant's defaults
        base = Config()
        _merge(base.loss, dict(own), "loss.")
        cfg = _assemble(base, data, overrides or [])
    cfg.preset = preset or cfg.preset
    resolve(cfg)
    validate(cfg)
    return cfg


def resolve(cfg: Config) -> None:
    """Settings that depend on others, decided once before validation, so the resolved
    config (config.yaml) is what runs and nothing changes it afterwards."""
    if cfg.train.engine == "deepspeed":
        # DeepSpeed broadcasts parameters as flat byte views, which NHWC weights are not
        cfg.train.channels_last = False
    if cfg.loss.ls_gen_scale == "auto":  # rms for a wide D, where it was measured to help
        wide = min(cfg.model.n, cfg.model.d_latent) >= WIDE_D
        cfg.loss.ls_gen_scale = "rms" if wide and _gen_scale_applies(cfg.loss) else "none"


def _gen_scale_applies(loss: LossConfig) -> bool:
    """loss.ls_gen_scale rescales raw latent distances: it needs raw ones (ls_norm none)
    and a variant with L_s."""
    return (loss.ls_norm == "none" and loss.variant in VARIANTS
            and "L_s" in VARIANTS[loss.variant].terms)


def _choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{key} must be one of {', '.join(choices)}, got '{value}'")


def _finite(key: str, value: float, positive: bool = False, note: str = "") -> None:
    """A value that must be finite and >= 0 (> 0 with positive): for the numbers where inf
    has no meaning of "never" (weights, gains, lr, eps); NaN is refused earlier, in _coerce."""
    if not ((0 < value) if positive else (0 <= value)) or value == math.inf:
        raise ConfigError(f"{key} must be a finite number {'>' if positive else '>='} 0"
                          f"{note}, got {value}")


def validate(cfg: Config) -> None:
    """Range and choice checks that types alone cannot express."""
    m, t = cfg.model, cfg.train
    r = m.resolution
    if r < 32 or r > 1024 or r & (r - 1):
        raise ConfigError(f"model.resolution must be a power of two in 32..1024, got {r}")
    for key, v in (("model.n", m.n), ("model.latent", m.latent), ("model.d_latent", m.d_latent),
                   ("train.batch", t.batch), ("train.accum", t.accum),
                   ("train.keep", t.keep),
                   ("train.stop_check_every", t.stop_check_every),
                   ("guard.rollback_after", cfg.guard.rollback_after),
                   ("train.grid", t.grid)):
        if v < 1:
            raise ConfigError(f"{key} must be >= 1, got {v}")
    if not 0 < cfg.guard.lr_scale <= 1:
        raise ConfigError(f"guard.lr_scale must be in (0, 1], got {cfg.guard.lr_scale}")
    if cfg.guard.max_rollbacks < 0:
        raise ConfigError(f"guard.max_rollbacks must be >= 0, got {cfg.guard.max_rollbacks}")
    if t.kimg < 0:
        raise ConfigError(f"train.kimg must be >= 0, got {t.kimg}")
    _finite("train.ema_kimg", t.ema_kimg, note=" (0: off)")
    _finite("train.ema_rampup", t.ema_rampup, note=" (0: no ramp)")
    if t.log_every_kimg <= 0:
        raise ConfigError(f"train.log_every_kimg must be > 0, got {t.log_every_kimg}")
    if m.d_mbstd < 0:
        raise ConfigError(f"model.d_mbstd must be >= 0, got {m.d_mbstd}")
    _choice("model.d_output", m.d_output, OUTPUTS)
    _choice("model.g_output", m.g_output, OUTPUTS)
    _choice("loss.variant", cfg.loss.variant, tuple(VARIANTS))
    _choice("loss.kl_reduction", cfg.loss.kl_reduction, KL_REDUCTIONS)
    _choice("loss.error_reading", cfg.loss.error_reading, ERROR_READINGS)
    _choice("loss.ls_norm", cfg.loss.ls_norm, LS_NORMS)
    _choice("loss.ls_match", cfg.loss.ls_match, LS_MATCHES)
    _choice("loss.ls_gen_scale", cfg.loss.ls_gen_scale, GEN_SCALES)
    if cfg.loss.ls_prior and not VARIANTS[cfg.loss.variant].vae:
        raise ConfigError(f"loss.ls_prior is for the VAE variant (vae_began_star_lsm); "
                          f"'{cfg.loss.variant}' has no x_v, and began_star_lsm's L_s is "
                          "this term already")
    if cfg.loss.ls_gen_scale != "none" and not _gen_scale_applies(cfg.loss):
        raise ConfigError("loss.ls_gen_scale rescales raw latent distances: it needs "
                          "loss.ls_norm=none and a variant with L_s (not began)")
    for key in ("alpha", "beta", "gamma", "eta", "pullaway"):
        _finite(f"loss.{key}", getattr(cfg.loss, key))
    if cfg.loss.pullaway and t.batch < 2:  # its pairs are within one micro-batch
        raise ConfigError(f"loss.pullaway={cfg.loss.pullaway} (began's default is 0.1) needs "
                          f"train.batch >= 2: it compares the samples of one micro-batch "
                          f"pair by pair, so with 1 it is 0; set loss.pullaway=0 or a larger "
                          f"batch, got train.batch={t.batch}")
    if cfg.loss.margin != 0 and not 1 <= cfg.loss.margin < math.inf:
        raise ConfigError(f"loss.margin must be 0 (off) or a finite number >= 1 (a multiple of "
                          f"the set point eta L_d), got {cfg.loss.margin}")
    _finite("optim.lr", cfg.optim.lr, positive=True)
    if not all(0 <= b < 1 for b in cfg.optim.betas):
        raise ConfigError(f"optim.betas must be in [0, 1), got {cfg.optim.betas}")
    _finite("optim.eps", cfg.optim.eps, positive=True)  # 0: no gradient gets 0/0
    _finite("optim.lr_floor", cfg.optim.lr_floor)
    # inf means never; a negative span would act at every step
    for key, value in (("optim.lr_patience_kimg", cfg.optim.lr_patience_kimg),
                       ("health.k_stuck_kimg", cfg.health.k_stuck_kimg),
                       ("health.warmup_kimg", cfg.health.warmup_kimg)):
        if value < 0:
            raise ConfigError(f"{key} must be >= 0 (inf: never), got {value}")
    _finite("health.collapse_below", cfg.health.collapse_below, note=" (0: never warn)")
    # an infinite gain leaves k_t only its clamps; a negative one drives k_t away from the
    # set point (the paper's gains are all positive)
    for key in ("l1", "l2", "l3"):
        _finite(f"controller.{key}", getattr(cfg.controller, key))
    if not 0 <= cfg.controller.k0 <= 1:
        raise ConfigError(f"controller.k0 must be in [0, 1], got {cfg.controller.k0}")
    _choice("controller.scale", cfg.controller.scale, ERROR_SCALES)
    _choice("train.precision", t.precision, PRECISIONS)
    if t.device not in ("auto", "cpu", "cuda") and not t.device.startswith("cuda:"):
        raise ConfigError(f"train.device must be auto, cpu or cuda[:i], got '{t.device}'")
    _choice("train.engine", t.engine, ENGINES)
    _choice("train.compile_mode", t.compile_mode, COMPILE_MODES)
    if t.engine == "deepspeed" and not t.deepspeed_config:
        raise ConfigError("train.engine=deepspeed needs train.deepspeed_config (a JSON file)")
    if t.dist_timeout_s <= 0:
        raise ConfigError(f"train.dist_timeout_s must be > 0, got {t.dist_timeout_s}")
    _choice("data.source", cfg.data.source, SOURCES)
    if cfg.data.source != "synthetic" and not cfg.data.path:
        raise ConfigError(f"data.path is required when data.source is {cfg.data.source}")


def to_dict(cfg: Config) -> dict:
    d = dataclasses.asdict(cfg)
    d["optim"]["betas"] = list(d["optim"]["betas"])
    return d


def dump_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def from_dict(data: dict) -> Config:
    """A config from its dict (config.yaml, a checkpoint); resolved again, which leaves a
    resolved one unchanged."""
    cfg = Config()
    _merge(cfg, data)
    resolve(cfg)
    validate(cfg)
    return cfg
