"""IS, FID and KID against independent computations on fixed synthetic features."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vaegan_dist.metrics import (
    feature_stats,
    fid_from_features,
    frechet_distance,
    inception_score,
    kid,
    mmd2_unbiased,
)

REL = 1e-4


def test_inception_score_matches_loop_over_fixed_logits():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, size=(60, 7))
    splits = 3
    scores = []
    for s in range(splits):  # independent: per-sample python loops, math.log/exp
        part = logits[s * 20:(s + 1) * 20]
        probs = [[math.exp(v) / sum(math.exp(u) for u in row) for v in row] for row in part]
        marg = [sum(p[c] for p in probs) / len(probs) for c in range(7)]
        kls = [sum(p[c] * (math.log(p[c]) - math.log(marg[c])) for c in range(7))
               for p in probs]
        scores.append(math.exp(sum(kls) / len(kls)))
    mean, std = inception_score(logits, splits=splits)
    assert mean == pytest.approx(float(np.mean(scores)), rel=REL)
    assert std == pytest.approx(float(np.std(scores)), rel=REL)
    # the same from probabilities
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert inception_score(probs=p, splits=splits)[0] == pytest.approx(mean, rel=REL)


def test_inception_score_extremes():
    one_hot = np.eye(10)[np.arange(100) % 10] * 50.0  # confident and uniform over classes
    assert inception_score(one_hot, splits=1)[0] == pytest.approx(10.0, rel=REL)
    same = np.zeros((100, 10))
    same[:, 3] = 50.0  # every image the same class: IS 1
    assert inception_score(same, splits=1)[0] == pytest.approx(1.0, rel=REL)


def test_frechet_distance_diagonal_gaussians_closed_form():
    rng = np.random.default_rng(2)
    d = 12
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    v1, v2 = rng.uniform(0.2, 3, d), rng.uniform(0.2, 3, d)
    expected = ((mu1 - mu2) ** 2).sum() + (v1 + v2 - 2 * np.sqrt(v1 * v2)).sum()
    got = frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2))
    assert got == pytest.approx(expected, rel=REL)


def test_frechet_distance_commuting_full_covariances():
    """S1 = Q D1 Q^T, S2 = Q D2 Q^T: the closed form holds in the eigenbasis."""
    rng = np.random.default_rng(3)
    d = 9
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    v1, v2 = rng.uniform(0.1, 4, d), rng.uniform(0.1, 4, d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    expected = ((mu1 - mu2) ** 2).sum() + (v1 + v2 - 2 * np.sqrt(v1 * v2)).sum()
    got = frechet_distance(mu1, q @ np.diag(v1) @ q.T, mu2, q @ np.diag(v2) @ q.T)
    assert got == pytest.approx(expected, rel=REL)


def test_fid_from_samples_of_known_gaussians():
    """Sample statistics of two Gaussians: FD of the samples equals FD of their sample
    mean/covariance (np.mean/np.cov), and approaches the population value."""
    rng = np.random.default_rng(4)
    a = rng.normal(0, 1, size=(20000, 4))
    b = rng.normal(1, 2, size=(20000, 4))
    mu_a, s_a = a.mean(0), np.cov(a, rowvar=False)
    mu_b, s_b = b.mean(0), np.cov(b, rowvar=False)
    assert fid_from_features(a, b) == pytest.approx(
        frechet_distance(mu_a, s_a, mu_b, s_b), rel=REL)
    assert fid_from_features(a, b) == pytest.approx(4 * 1 + 4 * (1 + 4 - 2 * 2), rel=0.05)
    assert abs(fid_from_features(a, a)) < 1e-8
    mu, sigma = feature_stats(a)
    assert sigma.shape == (4, 4) and mu.shape == (4,)


def _mmd_loops(x, y):
    """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3, written as explicit sums."""
    d = x.shape[1]

    def k(a, b):
        return (float(np.dot(a, b)) / d + 1.0) ** 3

    m, n = len(x), len(y)
    sxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    syy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    sxy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return sxx + syy - 2 * sxy


def test_kid_unbiased_estimator_matches_explicit_sums():
    rng = np.random.default_rng(5)
    x = rng.normal(0, 1, size=(30, 6))
    y = rng.normal(0.5, 1.3, size=(25, 6))
    expected = _mmd_loops(x, y)
    assert mmd2_unbiased(x, y) == pytest.approx(expected, rel=REL)
    mean, std = kid(x, y, subset_size=1000)  # both sets smaller: one estimate on all
    assert mean == pytest.approx(expected, rel=REL) and std == 0.0


def test_kid_subsets_average_of_subset_estimates():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(80, 5))
    y = rng.normal(0.3, 1, size=(90, 5))
    mean, std = kid(x, y, subsets=4, subset_size=20, seed=11)
    r = np.random.default_rng(11)
    vals = [_mmd_loops(x[r.choice(80, 20, replace=False)], y[r.choice(90, 20, replace=False)])
            for _ in range(4)]
    assert mean == pytest.approx(float(np.mean(vals)), rel=REL)
    assert std == pytest.approx(float(np.std(vals)), rel=REL)
    # same distribution: near zero; shifted: clearly positive
    same = kid(rng.normal(size=(300, 5)), rng.normal(size=(300, 5)))[0]
    far = kid(rng.normal(size=(300, 5)), rng.normal(2, 1, size=(300, 5)))[0]
    assert abs(same) < 0.1 * far


def test_metric_input_errors():
    with pytest.raises(ValueError):
        inception_score(np.zeros((3, 2)), splits=5)
    with pytest.raises(ValueError):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(ValueError):
        mmd2_unbiased(np.zeros((1, 2)), np.zeros((3, 2)))
