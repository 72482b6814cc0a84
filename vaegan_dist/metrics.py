"""Sample-quality metrics on features of any extractor: Inception Score (paper Table 1),
Frechet distance (FID) and Kernel Inception Distance (KID).

Plain numpy (float64) so they run anywhere; the feature extractor is a separate concern
(`features.py`): Inception features give the published FID/KID, the offline digits
classifier gives a sanity metric only."""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def inception_score(logits: np.ndarray | None = None, probs: np.ndarray | None = None,
                    splits: int = 10) -> tuple[float, float]:
    """(mean, std) over `splits` of exp(E_x KL(p(y|x) || p(y))) (Salimans et al. 2016).
    Give class logits or probabilities [N, C]; splits are contiguous, as the original."""
    if (logits is None) == (probs is None):
        raise ValueError("give exactly one of logits or probs")
    p = softmax(logits) if logits is not None else np.asarray(probs, np.float64)
    n = p.shape[0]
    if splits < 1 or splits > n:
        raise ValueError(f"splits must be in 1..{n}, got {splits}")
    scores = []
    for part in np.array_split(p, splits):
        py = part.mean(axis=0, keepdims=True)
        kl = np.where(part > 0, part * (np.log(np.clip(part, 1e-300, None)) - np.log(py)), 0.0)
        scores.append(np.exp(kl.sum(axis=1).mean()))
    return float(np.mean(scores)), float(np.std(scores))


def feature_stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, covariance) of [N, D] features, unbiased covariance (N - 1), as pytorch-fid."""
    f = np.asarray(feats, np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"need [N>=2, D] features, got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                     sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)).

    tr((S1 S2)^(1/2)) is the sum of the square roots of the eigenvalues of S1 S2, which are
    real and non-negative for PSD S1, S2 (S1 S2 is similar to S1^(1/2) S2 S1^(1/2)); this
    avoids a matrix square root and its imaginary round-off."""
    mu1, mu2 = (np.atleast_1d(np.asarray(m, np.float64)) for m in (mu1, mu2))
    s1, s2 = (np.atleast_2d(np.asarray(s, np.float64)) for s in (sigma1, sigma2))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError("statistics of different dimensions")
    # symmetric form: eigenvalues of S1^(1/2) S2 S1^(1/2) are those of S1 S2, and it is PSD
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = root1 @ s2 @ root1
    ev = np.linalg.eigvalsh((m + m.T) / 2)
    tr_covmean = np.sqrt(np.clip(ev, 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)


def fid_from_features(f1: np.ndarray, f2: np.ndarray) -> float:
    return frechet_distance(*feature_stats(f1), *feature_stats(f2))


def polynomial_kernel(a: np.ndarray, b: np.ndarray, degree: int = 3,
                      gamma: float | None = None, coef0: float = 1.0) -> np.ndarray:
    """k(x, y) = (gamma x.y + coef0)^degree with gamma = 1/D by default (Binkowski et al.)."""
    g = 1.0 / a.shape[1] if gamma is None else gamma
    return (g * (a @ b.T) + coef0) ** degree


def mmd2_unbiased(x: np.ndarray, y: np.ndarray, degree: int = 3, gamma: float | None = None,
                  coef0: float = 1.0) -> float:
    """Unbiased MMD^2 with the polynomial kernel: off-diagonal means within each set minus
    twice the mean across sets."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    m, n = len(x), len(y)
    if m < 2 or n < 2:
        raise ValueError("KID needs at least 2 samples per set")
    kxx = polynomial_kernel(x, x, degree, gamma, coef0)
    kyy = polynomial_kernel(y, y, degree, gamma, coef0)
    kxy = polynomial_kernel(x, y, degree, gamma, coef0)
    sxx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    syy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(sxx + syy - 2 * kxy.mean())


def kid(f1: np.ndarray, f2: np.ndarray, subsets: int = 100, subset_size: int = 1000,
        seed: int = 0, **kernel) -> tuple[float, float]:
    """(mean, std) of the unbiased MMD^2 over random subsets of both sets. When both sets
    are no larger than `subset_size`, one estimate on all samples (std 0)."""
    f1, f2 = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
    if subset_size >= len(f1) and subset_size >= len(f2):
        return mmd2_unbiased(f1, f2, **kernel), 0.0
    size = min(subset_size, len(f1), len(f2))
    rng = np.random.default_rng(seed)
    vals = [mmd2_unbiased(f1[rng.choice(len(f1), size, replace=False)],
                          f2[rng.choice(len(f2), size, replace=False)], **kernel)
            for _ in range(subsets)]
    return float(np.mean(vals)), float(np.std(vals))
