"""Using a trained model (paper sec. 5): load a snapshot, sample, encode, interpolate.

A snapshot is `weights.safetensors` of a checkpoint folder; its metadata holds the resolved
config YAML under "config", so a snapshot file alone rebuilds the networks."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image
from torch import nn

from . import checkpoint as ckpt
from .config import Config, ConfigError, from_dict
from .data import to_float
from .images import to_uint8
from .models import build_models


class SnapshotError(RuntimeError):
    """A missing or unreadable snapshot; printed as one line."""


def resolve_snapshot(path: str | Path) -> Path:
    """A run folder (newest complete checkpoint), a checkpoint folder or a .safetensors file
    -> the weights file."""
    p = Path(path)
    if p.is_file():
        return p
    if not p.exists():
        raise SnapshotError(f"{p} does not exist (give a run folder, checkpoint folder or "
                            ".safetensors snapshot)")
    if (p / "weights.safetensors").is_file():
        return p / "weights.safetensors"
    newest = ckpt.latest(p)
    if newest is None:
        raise SnapshotError(f"{p} holds no complete checkpoint (no checkpoints/step-*/COMPLETE)")
    return newest / "weights.safetensors"


@dataclass
class Model:
    """The trained networks in eval mode. `encoder` is None for the non-VAE ablations."""

    cfg: Config
    decoder: nn.Module
    disc: nn.Module
    encoder: nn.Module | None
    file: Path
    step: int
    device: torch.device
    ema: bool = False  # `decoder` is the run's weight average (train.ema_kimg)

    @property
    def latent(self) -> int:
        return self.cfg.model.latent

    def z(self, n: int, seed: int = 0, temperature: float = 1.0) -> torch.Tensor:
        """n latents from N(0, t^2 I): temperature < 1 trades diversity for quality."""
        g = torch.Generator().manual_seed(seed)
        return (temperature * torch.randn(n, self.latent, generator=g)).to(self.device)

    @torch.no_grad()
    def decode(self, z: torch.Tensor, batch: int = 256) -> torch.Tensor:
        return torch.cat([self.decoder(z[i:i + batch].to(self.device))
                          for i in range(0, len(z), batch)])

    @torch.no_grad()
    def encode(self, x: torch.Tensor, batch: int = 256) -> torch.Tensor:
        """Posterior means mu(x) of float NCHW images in [-1, 1]."""
        if self.encoder is None:
            raise SnapshotError(f"{self.file} is a {self.cfg.loss.variant} model: it has no "
                                "encoder (use seeds instead of images)")
        return torch.cat([self.encoder(x[i:i + batch].to(self.device))[0]
                          for i in range(0, len(x), batch)])

    def encode_u8(self, images_u8: np.ndarray) -> torch.Tensor:
        return self.encode(to_float(torch.from_numpy(np.ascontiguousarray(images_u8))))

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0, temperature: float = 1.0) -> torch.Tensor:
        return self.decode(self.z(n, seed, temperature))


def load_model(path: str | Path, device: str = "cpu", ema: bool = True) -> Model:
    """Rebuild the networks from a snapshot's embedded config and load its weights. The
    decoder is the generator average (`decoder_ema.*`, train.ema_kimg > 0) where the
    snapshot holds one, unless ema=False: then the trained decoder itself."""
    from safetensors import safe_open

    file = resolve_snapshot(path)
    try:
        with safe_open(str(file), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # noqa: BLE001 - any unreadable file is one clear error
        raise SnapshotError(f"cannot read {file} as safetensors: {e}") from e
    if "config" not in meta:
        raise SnapshotError(f"{file} has no 'config' metadata (not a vaegan-dist snapshot)")
    try:
        cfg = from_dict(yaml.safe_load(meta["config"]))
    except (ConfigError, yaml.YAMLError) as e:
        raise SnapshotError(f"{file}: bad embedded config: {e}") from e
    dev = torch.device(device)
    models = build_models(cfg.model, cfg.loss.variant == "vae_began_star_lsm")
    use_ema = ema and any(k.startswith("decoder_ema.") for k in tensors)
    for name, m in models.items():
        prefix = "decoder_ema." if name == "decoder" and use_ema else f"{name}."
        sd = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        try:
            m.load_state_dict(sd)
        except RuntimeError as e:
            raise SnapshotError(f"{file}: weights do not fit the embedded config ({name})") from e
        m.to(dev).eval()
    return Model(cfg, models["decoder"], models["disc"], models.get("encoder"), file,
                 int(meta.get("step", 0)), dev, use_ema)


# --- interpolation (paper Fig. 6) ----------------------------------------------------------


def lerp(z0: torch.Tensor, z1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return z0 + (z1 - z0) * t


def slerp(z0: torch.Tensor, z1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation (White 2016): keeps intermediate latents at the typical norm
    of a Gaussian; falls back to lerp for (anti)parallel endpoints."""
    n0, n1 = z0.norm(dim=-1, keepdim=True), z1.norm(dim=-1, keepdim=True)
    cos = ((z0 * z1).sum(-1, keepdim=True) / (n0 * n1).clamp_min(1e-12)).clamp(-1, 1)
    omega = torch.acos(cos)
    so = torch.sin(omega)
    safe = so.abs() > 1e-6
    s = torch.where(safe, so, torch.ones_like(so))
    out = (torch.sin((1 - t) * omega) / s) * z0 + (torch.sin(t * omega) / s) * z1
    return torch.where(safe, out, lerp(z0, z1, t))


def interpolate(z0: torch.Tensor, z1: torch.Tensor, steps: int,
                mode: str = "slerp") -> torch.Tensor:
    """[R, N] endpoints -> [R * steps, N] latents, row-major (one row per pair)."""
    if steps < 2:
        raise ValueError(f"steps must be >= 2, got {steps}")
    if mode not in ("lerp", "slerp"):
        raise ValueError(f"mode must be lerp or slerp, got '{mode}'")
    fn = slerp if mode == "slerp" else lerp
    t = torch.linspace(0, 1, steps, device=z0.device).view(1, steps, 1)
    return fn(z0[:, None], z1[:, None], t).reshape(-1, z0.shape[-1])


def save_gif(frames: torch.Tensor, path: str | Path, ms: int = 120, bounce: bool = True) -> Path:
    """Frames [T, C, H, W] as an animated GIF that loops (played forth and back)."""
    imgs = [Image.fromarray(a) for a in to_uint8(frames)]
    if bounce and len(imgs) > 2:
        imgs = imgs + imgs[-2:0:-1]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    imgs[0].save(path, save_all=True, append_images=imgs[1:], duration=ms, loop=0)
    return path


def tile_columns(x: torch.Tensor, rows: int) -> torch.Tensor:
    """[rows * T, C, H, W] -> [T, C, rows * H, W]: frame t stacks step t of every row."""
    t = x.shape[0] // rows
    return x.view(rows, t, *x.shape[1:]).permute(1, 2, 0, 3, 4).reshape(
        t, x.shape[1], rows * x.shape[2], x.shape[3])


def load_image(path: str | Path, resolution: int) -> np.ndarray:
    """One image file, centre-cropped and resized like the folder source: uint8 HxWx3."""
    from .data.folder import center_crop_resize

    try:
        with Image.open(path) as im:
            return np.asarray(center_crop_resize(im.convert("RGB"), resolution))
    except (OSError, ValueError) as e:
        raise SnapshotError(f"cannot read image {path}: {e}") from e


def grid_size(n: int, nrow: int | None = None, res: int = 32, pad: int = 2) -> tuple[int, int]:
    """(width, height) of `make_grid` output, for callers and tests."""
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    return nrow * (res + pad) + pad, rows * (res + pad) + pad

