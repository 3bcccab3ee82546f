"""Drawing skeletons on images (data previews, predictions)."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from shg_jax.skeleton import SKELETON

LEFT, RIGHT, CENTRE = (255, 140, 0), (0, 160, 255), (80, 220, 80)


def _side(joint: int):
    if joint == 0:
        return CENTRE
    return LEFT if joint % 2 == 1 else RIGHT


def draw_skeleton(image: Image.Image, keypoints: np.ndarray, *, radius: float = 3.0,
                  width: int = 2, scores: np.ndarray | None = None,
                  threshold: float = 0.0) -> Image.Image:
    """Draws (17, 3) keypoints (x, y, v) on a copy of `image`: limbs coloured by side (left
    orange, right blue), visible joints (v=2) filled, occluded ones (v=1) as rings, v=0 not
    drawn. With `scores`, joints scoring below `threshold` (and their limbs) are dimmed."""
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out, "RGBA")
    kps = np.asarray(keypoints, np.float64)
    dim = np.zeros(len(kps), bool) if scores is None else np.asarray(scores) < threshold

    def colour(j, weak):
        return _side(j) + ((90,) if weak else (255,))

    for a, b in SKELETON:
        if kps[a, 2] > 0 and kps[b, 2] > 0:
            draw.line((tuple(kps[a, :2]), tuple(kps[b, :2])),
                      fill=colour(b, dim[a] or dim[b]), width=width)
    for j, (x, y, v) in enumerate(kps):
        if v <= 0:
            continue
        box = (x - radius, y - radius, x + radius, y + radius)
        if v >= 2:
            draw.ellipse(box, fill=colour(j, dim[j]), outline=(0, 0, 0, 255))
        else:
            draw.ellipse(box, outline=colour(j, dim[j]), width=max(1, width))
    return out


def fuse_heatmaps(heatmaps: np.ndarray) -> np.ndarray:
    """(H, W, J) heatmaps -> (H, W) in [0, 1]: the max over joints, scaled by its own peak
    (thesis-style maps peak at 0.62 or 0.16, predictions anywhere), 0 where all are <= 0."""
    fused = np.clip(np.asarray(heatmaps, np.float32).max(axis=-1), 0, None)
    peak = fused.max()
    return fused / peak if peak > 0 else fused


def overlay_heatmap(image: np.ndarray, heat: np.ndarray, colour=(255, 40, 40)) -> np.ndarray:
    """(S, S, 3) uint8 crop and an (H, W) map in [0, 1] (S a multiple of H) -> the crop,
    darkened, with the map blended on top in `colour` (nearest-neighbour upsampled)."""
    scale = image.shape[0] // heat.shape[0]
    alpha = np.repeat(np.repeat(heat, scale, axis=0), scale, axis=1)[..., None]
    base = image.astype(np.float32) * 0.6
    out = base * (1 - alpha) + np.asarray(colour, np.float32) * alpha
    return np.clip(out, 0, 255).astype(np.uint8)


def heatmap_grid(images: np.ndarray, *maps: np.ndarray) -> np.ndarray:
    """N crops (N, S, S, 3) and any number of (N, H, W, J) heatmap sets -> one uint8 image
    with a row per crop: the crop, then the crop with each fused heatmap set overlaid."""
    rows = [np.concatenate([img] + [overlay_heatmap(img, fuse_heatmaps(m[i])) for m in maps],
                           axis=1) for i, img in enumerate(images)]
    return np.concatenate(rows, axis=0)


def crop_grid(images: np.ndarray, keypoints: np.ndarray, labels: list[str]) -> Image.Image:
    """Crops (N, S, S, 3) uint8 with their skeletons (N, J, 3) drawn and a label each, in a
    near-square grid."""
    n, size = len(images), images.shape[1]
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = Image.new("RGB", (cols * size, rows * size), (0, 0, 0))
    for i in range(n):
        tile = draw_skeleton(Image.fromarray(images[i]), keypoints[i],
                             radius=max(2.0, size / 64))
        ImageDraw.Draw(tile).text((3, 2), labels[i], fill=(255, 255, 255))
        grid.paste(tile, ((i % cols) * size, (i // cols) * size))
    return grid
