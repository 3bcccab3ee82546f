"""Target heatmaps rendered on device from keypoints, and heatmaps decoded back to keypoints.

Heatmaps are never stored: the train step renders them from the (B, J, 3) keypoints of a
batch, so a change of style or resolution needs no new data preparation.

Thesis style (DESIGN.md): a unit impulse at (round(x*H/S), round(y*H/S)) (H heatmap size, S
input size; an index equal to H is floored to H-1), blurred with scipy's normalised Gaussian
filter (`mode="nearest"`, `truncate=4.0`), sigma 0.5 for visible joints (v=2) and 1.0 for
occluded ones (v=1); peaks about 0.62 and 0.16. The filter is separable and the impulse is a
product of two 1-D impulses, so the blurred map is the outer product of two 1-D profiles,
each the exact correlation of the impulse with the truncated kernel under edge replication.
Newell style: exp(-d^2 / (2 sigma^2)) around the same integer centre, peak 1.
A joint with v=0 or outside the crop gives an all-zero map.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from shg_jax.skeleton import FLIP_PAIRS

HEATMAP_STYLES = ("thesis", "newell")


def gaussian_kernel1d(sigma: float, truncate: float = 4.0) -> np.ndarray:
    """scipy.ndimage's normalised 1-D Gaussian: radius int(truncate * sigma + 0.5)."""
    radius = int(truncate * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


def heatmap_centres(keypoints: jax.Array, input_size: int, heatmap_size: int
                    ) -> tuple[jax.Array, jax.Array]:
    """(..., J, 3) keypoints in input pixels -> integer centres (..., J, 2) as (x, y), and a
    (..., J) mask of joints that get a non-zero map (v > 0 and inside the crop)."""
    xy = keypoints[..., :2]
    inside = jnp.all((xy >= 0) & (xy < input_size), axis=-1)
    present = (keypoints[..., 2] > 0) & inside
    centres = jnp.round(xy * (heatmap_size / input_size)).astype(jnp.int32)
    centres = jnp.minimum(centres, heatmap_size - 1)
    return centres, present


def _blurred_impulse_profile(centre: jax.Array, size: int, sigma: float) -> jax.Array:
    """(...,) integer centres -> (..., size): gaussian_filter1d of a unit impulse, mode nearest."""
    w = gaussian_kernel1d(sigma)
    radius = (len(w) - 1) // 2
    # Row i of `taps` lists the (edge-clamped) input pixels output pixel i reads.
    taps = np.clip(np.arange(size)[:, None] + np.arange(-radius, radius + 1)[None, :],
                   0, size - 1)
    hits = taps == centre[..., None, None]
    return jnp.sum(jnp.where(hits, jnp.asarray(w, jnp.float32), 0.0), axis=-1)


def render_heatmaps(keypoints: jax.Array, *, input_size: int = 256, heatmap_size: int = 64,
                    style: str = "thesis", sigma_visible: float = 0.5,
                    sigma_occluded: float = 1.0, sigma_newell: float = 1.0) -> jax.Array:
    """(..., J, 3) keypoints (x, y, v) in input pixels -> (..., H, H, J) float32 heatmaps."""
    if style not in HEATMAP_STYLES:
        raise ValueError(f"heatmap_style must be one of {HEATMAP_STYLES}, got {style!r}")
    keypoints = jnp.asarray(keypoints, jnp.float32)
    centres, present = heatmap_centres(keypoints, input_size, heatmap_size)
    cx, cy = centres[..., 0], centres[..., 1]
    if style == "thesis":
        visible = (keypoints[..., 2] == 2)[..., None]
        px = jnp.where(visible, _blurred_impulse_profile(cx, heatmap_size, sigma_visible),
                       _blurred_impulse_profile(cx, heatmap_size, sigma_occluded))
        py = jnp.where(visible, _blurred_impulse_profile(cy, heatmap_size, sigma_visible),
                       _blurred_impulse_profile(cy, heatmap_size, sigma_occluded))
    else:
        grid = jnp.arange(heatmap_size, dtype=jnp.float32)
        scale = -0.5 / sigma_newell ** 2
        px = jnp.exp(scale * (grid - cx[..., None]) ** 2)
        py = jnp.exp(scale * (grid - cy[..., None]) ** 2)
    maps = py[..., :, None] * px[..., None, :]                     # (..., J, H, W)
    maps = jnp.where(present[..., None, None], maps, 0.0)
    return jnp.moveaxis(maps, -3, -1)                              # (..., H, W, J)


def _flatten(heatmaps: jax.Array) -> jax.Array:
    """(..., H, W, J) -> (..., J, H*W), row-major over (y, x)."""
    maps = jnp.moveaxis(heatmaps, -1, -3)
    return maps.reshape(*maps.shape[:-2], -1)


def heatmap_argmax(heatmaps: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(..., H, W, J) -> integer peak positions (..., J, 2) as (x, y), and peak values (..., J).

    Ties resolve to the first position in row-major order (as numpy and PyTorch do)."""
    w = heatmaps.shape[-2]
    flat = _flatten(heatmaps)
    idx = jnp.argmax(flat, axis=-1)
    return jnp.stack([idx % w, idx // w], axis=-1), jnp.max(flat, axis=-1)


def decode_heatmaps(heatmaps: jax.Array, *, input_size: int | None = None,
                    subpixel: bool = False) -> tuple[jax.Array, jax.Array]:
    """(..., H, W, J) heatmaps -> keypoints (..., J, 2) as float (x, y), and scores (..., J).

    argmax (thesis); with `subpixel`, Newell's quarter-pixel shift toward the higher
    neighbour on each axis (not at the border). With `input_size`, coordinates are mapped to
    input pixels by the inverse of the rendering rule: x_input = x_heatmap * S / H.
    """
    h, w = heatmaps.shape[-3], heatmaps.shape[-2]
    peaks, scores = heatmap_argmax(heatmaps)
    coords = peaks.astype(jnp.float32)
    if subpixel:
        flat = _flatten(heatmaps)
        px, py = peaks[..., 0], peaks[..., 1]

        def at(yy, xx):
            i = jnp.clip(yy, 0, h - 1) * w + jnp.clip(xx, 0, w - 1)
            return jnp.take_along_axis(flat, i[..., None], axis=-1)[..., 0]

        dx = jnp.where((px > 0) & (px < w - 1),
                       0.25 * jnp.sign(at(py, px + 1) - at(py, px - 1)), 0.0)
        dy = jnp.where((py > 0) & (py < h - 1),
                       0.25 * jnp.sign(at(py + 1, px) - at(py - 1, px)), 0.0)
        coords = coords + jnp.stack([dx, dy], axis=-1)
    if input_size is not None:
        coords = coords * (input_size / w)
    return coords, scores


def flip_shift(stride: int, label_offset: float = 0.0) -> float:
    """How far right (in heatmap cells) a mirrored crop's heatmap, once flipped back, must be
    moved so that its peaks sit where the unmirrored crop's would.

    Mirroring an S-pixel crop sends pixel index u to S-1-u. A model trained on labels that lie
    on average `label_offset` = d pixels right of the pixel they mark (label k = u + d; d is
    0 for labels that are pixel indices, and each crop mode has its own, recorded by
    data_prep) predicts, on the mirrored crop, k' = (S-1-u) + d = S-1-k+2d. The rendering rule
    puts label k at cell k/s (s = S/H, the stride), so k' lands at cell (S-1+2d)/s - k/s;
    flipping the H cells sends cell c to H-1-c, which leaves it at k/s - (s-1+2d)/s. The shift
    is therefore (s - 1 + 2d) / s cells: 3/4 for pixel-index labels at stride 4, where a plain
    flip puts the peaks 0.75 cells too far left on average (HRNet and mmpose shift by 1)."""
    return (stride - 1 + 2.0 * label_offset) / stride


def shift_width(heatmaps: jax.Array, shift: float) -> jax.Array:
    """Moves (..., H, W, J) heatmaps `shift` cells right (any real number): linear
    interpolation between the two nearest whole-cell shifts, the border cell repeated."""
    whole = int(np.floor(shift))
    frac = float(shift - whole)
    w = heatmaps.shape[-2]
    cols = np.arange(w) - whole

    def moved(offset):
        return jnp.take(heatmaps, jnp.asarray(np.clip(cols - offset, 0, w - 1)), axis=-2)

    if frac == 0.0:
        return moved(0)
    return (1.0 - frac) * moved(0) + frac * moved(1)


def unflip_heatmaps(heatmaps: jax.Array, shift: float = 0.0) -> jax.Array:
    """Heatmaps predicted on a horizontally mirrored crop -> the original crop's frame:
    mirror the width axis, swap left/right joints (COCO flip pairs), and move the maps
    `shift` cells right (`flip_shift` derives it; 0 = the bare mirror). (..., H, W, J)."""
    perm = list(range(heatmaps.shape[-1]))
    for a, b in FLIP_PAIRS:
        perm[a], perm[b] = b, a
    mirrored = jnp.flip(heatmaps, axis=-2)[..., jnp.asarray(perm)]
    return shift_width(mirrored, shift) if shift else mirrored
