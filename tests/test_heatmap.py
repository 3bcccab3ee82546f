"""Heatmap rendering (thesis and Newell style) and decoding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from shg_jax.heatmap import decode_heatmaps, heatmap_argmax, render_heatmaps

render = jax.jit(render_heatmaps, static_argnames=("input_size", "heatmap_size", "style"))


def scipy_reference(x, y, v, input_size=256, size=64):
    """The thesis' recipe, written independently: impulse, then scipy's Gaussian filter."""
    if v == 0 or not (0 <= x < input_size and 0 <= y < input_size):
        return np.zeros((size, size))
    cx = min(int(round(x * size / input_size)), size - 1)
    cy = min(int(round(y * size / input_size)), size - 1)
    impulse = np.zeros((size, size))
    impulse[cy, cx] = 1.0
    return gaussian_filter(impulse, 0.5 if v == 2 else 1.0, mode="nearest", truncate=4.0)


POINTS = [  # (x, y, v): interior, every border, corners, half-way rounding, v=1 and v=0
    (100.0, 37.0, 2), (100.0, 37.0, 1), (0.0, 0.0, 2), (0.0, 0.0, 1), (255.9, 255.9, 2),
    (255.0, 3.0, 1), (1.9, 128.0, 2), (128.0, 253.0, 1), (6.0, 10.0, 2), (14.0, 2.0, 1),
    (4.0, 250.0, 2), (50.0, 50.0, 0), (-0.5, 20.0, 2), (20.0, 256.0, 1), (300.0, -4.0, 2),
    (7.99, 4.0, 1), (251.0, 251.0, 1),
]


def test_thesis_style_equals_scipy_gaussian_filter():
    kps = jnp.array([POINTS])                                      # (1, 17, 3)
    maps = np.asarray(render(kps))[0]                              # (64, 64, 17)
    assert maps.shape == (64, 64, 17) and maps.dtype == np.float32
    for j, (x, y, v) in enumerate(POINTS):
        np.testing.assert_allclose(maps[..., j], scipy_reference(x, y, v), atol=1e-6,
                                   err_msg=f"joint {j} at {(x, y, v)}")


def test_peaks_and_zero_maps():
    maps = np.asarray(render(jnp.array([POINTS])))[0]
    assert maps[..., 0].max() == pytest.approx(0.6187, abs=1e-3)       # sigma 0.5, interior
    assert maps[..., 1].max() == pytest.approx(0.1592, abs=1e-3)       # sigma 1.0, interior
    for j in (11, 12, 13, 14):                                         # v=0 or outside
        assert not maps[..., j].any()


def test_rounding_rule():
    # x*64/256: 6 -> 1.5 -> 2 and 10 -> 2.5 -> 2 (round half to even, as Python and numpy);
    # 255.9 -> 63.975 -> 64 -> floored to 63; 7.99 -> 1.9975 -> 2; 1.9 -> 0.475 -> 0.
    kps = jnp.array([[(6.0, 10.0, 2), (255.9, 255.9, 2), (7.99, 1.9, 1)]])
    peaks, _ = heatmap_argmax(render(kps))
    assert peaks[0].tolist() == [[2, 2], [63, 63], [2, 0]]


def test_newell_style():
    kps = jnp.array([[(40.0, 80.0, 1), (40.0, 80.0, 0)]])
    maps = np.asarray(render(kps, style="newell"))[0]
    assert maps[20, 10, 0] == pytest.approx(1.0)
    assert maps[20, 11, 0] == pytest.approx(np.exp(-0.5), rel=1e-6)
    assert maps[22, 12, 0] == pytest.approx(np.exp(-4.0), rel=1e-5)
    assert not maps[..., 1].any()
    with pytest.raises(ValueError, match="heatmap_style"):
        render_heatmaps(kps, style="bogus")


def test_batched_with_leading_dims_and_other_sizes():
    kps = jax.random.uniform(jax.random.key(0), (3, 2, 17, 3), maxval=128.0).at[..., 2].set(2)
    maps = render(kps, input_size=128, heatmap_size=32)
    assert maps.shape == (3, 2, 32, 32, 17)
    peaks, _ = heatmap_argmax(maps)
    expected = np.minimum(np.round(np.asarray(kps[..., :2]) / 4), 31)
    np.testing.assert_array_equal(peaks, expected)


def test_decode_roundtrip_and_subpixel():
    kps = jnp.array([[(100.0, 36.0, 2), (0.0, 12.0, 2)]])
    maps = render(kps)
    coords, scores = decode_heatmaps(maps, input_size=256)
    np.testing.assert_allclose(coords[0], [[100.0, 36.0], [0.0, 12.0]])
    np.testing.assert_allclose(scores[0], maps[0].max(axis=(0, 1)))
    # Raise the right-hand and lower neighbours: the peak shifts +1/4 px on x and y, except
    # on the left border, where x has no left neighbour and stays.
    bumped = maps.at[0, 9, 26, 0].add(0.1).at[0, 10, 25, 0].add(0.1)
    bumped = bumped.at[0, 4, 0, 1].add(0.05)
    coords, _ = decode_heatmaps(bumped, subpixel=True)
    np.testing.assert_allclose(coords[0], [[25.25, 9.25], [0.0, 3.25]])
    coords, _ = decode_heatmaps(bumped)
    np.testing.assert_allclose(coords[0], [[25.0, 9.0], [0.0, 3.0]])
