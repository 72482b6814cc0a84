"""FID / KID / IS of a model's samples against a reference image set, with the reference
features cached on disk (keyed by extractor, data, resolution and count)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from .features import cache_dir
from .generate import Model
from .images import to_uint8
from .metrics import feature_stats, frechet_distance, inception_score, kid

KID_KEEP = 2000  # reference features kept in the cache for KID


def reference_images(spec: str, resolution: int, n: int, seed: int = 0) -> np.ndarray:
    """uint8 NHWC: 'synthetic' (embedded data), 'digits' (sklearn's bundled digits), a
    folder of images or WebDataset .tar shards."""
    if spec == "synthetic":
        from .data.synthetic import make_dataset

        return make_dataset(n, resolution, seed)[0]
    if spec == "digits":
        from .features import digits_images

        return digits_images(resolution)[0][:n]
    p = Path(spec)
    if p.suffix == ".tar" or (p.is_dir() and any(p.glob("*.tar"))):
        from .attributes import ShardAttrReader

        imgs = [b for b, _ in ShardAttrReader(p, resolution, limit=n).batches(512)]
        return np.concatenate(imgs)[:n]
    if p.is_dir():
        from .data.folder import load_folder

        return load_folder(str(p), resolution)[:n]
    raise FileNotFoundError(f"reference data '{spec}' is not synthetic, digits, a folder "
                            "or .tar shards")


def _key(extractor, spec: str, resolution: int, n: int) -> str:
    p = Path(spec)
    ident = spec
    if p.exists():
        st = p.stat()
        ident = f"{p.resolve()}:{st.st_mtime_ns}:{st.st_size}"
    raw = f"{extractor.name}:{getattr(extractor, 'cache_file', '')}:{ident}:{resolution}:{n}"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def reference_stats(extractor, spec: str, resolution: int, n: int,
                    cache: Path | None = None) -> dict[str, np.ndarray]:
    """{'mu', 'sigma', 'feats' (<= KID_KEEP rows)} of the reference set, cached as .npz."""
    name = f"{extractor.name}-{_key(extractor, spec, resolution, n)}.npz"
    path = (cache or cache_dir()) / "refstats" / name
    if path.exists():
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    feats, _ = extractor(reference_images(spec, resolution, n))
    mu, sigma = feature_stats(feats)
    rng = np.random.default_rng(0)
    keep = feats[rng.permutation(len(feats))[:KID_KEEP]]
    out = {"mu": mu, "sigma": sigma, "feats": keep}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **out)
    tmp.replace(path)
    return out


def score_images(extractor, images_u8: np.ndarray, ref: dict[str, np.ndarray],
                 is_splits: int = 10) -> dict[str, float]:
    """FID, KID (mean, std) and, when the extractor has class logits, IS (mean, std)."""
    feats, logits = extractor(images_u8)
    out = {"fid": frechet_distance(*feature_stats(feats), ref["mu"], ref["sigma"])}
    out["kid"], out["kid_std"] = kid(feats, ref["feats"], subsets=50,
                                     subset_size=min(1000, len(feats), len(ref["feats"])))
    if logits is not None:
        out["is"], out["is_std"] = inception_score(logits, splits=min(is_splits, len(logits)))
    return out


def model_images(model: Model, n: int, seed: int = 0, temperature: float = 1.0) -> np.ndarray:
    return np.concatenate([to_uint8(model.sample(min(256, n - i), seed + i, temperature))
                           for i in range(0, n, 256)])
