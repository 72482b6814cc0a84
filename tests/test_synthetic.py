"""The embedded default dataset is deterministic and its attributes are visible."""

import numpy as np

from vaegan_dist.data import synthetic


def test_deterministic_from_seed():
    a, attrs_a = synthetic.make_dataset(16, 32, seed=3)
    b, attrs_b = synthetic.make_dataset(16, 32, seed=3)
    c, _ = synthetic.make_dataset(16, 32, seed=4)
    assert np.array_equal(a, b) and np.array_equal(attrs_a, attrs_b)
    assert not np.array_equal(a, c)
    assert a.dtype == np.uint8 and a.shape == (16, 32, 32, 3)


def test_attributes_are_balanced_and_visible():
    imgs, attrs = synthetic.make_dataset(400, 32, seed=0)
    assert attrs.shape == (400, len(synthetic.ATTRIBUTES))
    assert np.all(np.abs(attrs.mean(0) - 0.5) < 0.1)
    red = attrs[:, synthetic.ATTRIBUTES.index("red")] == 1
    redness = (imgs[..., 0].astype(float) - imgs[..., 1]).max(axis=(1, 2))  # not the yellow bar
    assert redness[red].min() > redness[~red].max()  # separable by one threshold
    assert redness[red].mean() > redness[~red].mean() + 100
    bright = attrs[:, synthetic.ATTRIBUTES.index("bright_bg")] == 1
    corners = imgs[:, [0, 0, -1, -1], [0, -1, 0, -1]].astype(float).mean(axis=2)
    corner = np.median(corners, axis=1)  # a shape covers at most one corner
    assert corner[bright].min() > corner[~bright].max()
