"""PCK as the thesis computes it, as jittable sums and counts.

Thesis (Algorithm 1, §5): for every joint whose ground-truth heatmap is non-zero, compare the
argmax of the GT map with the argmax of the predicted map; the joint is correct when
distance / c < r with c = H/10 (6.4 for 64x64 maps) and r = 0.5, i.e. closer than 3.2 heatmap
pixels. The per-sample fraction of correct annotated joints is averaged over the samples that
have at least one annotated joint (a sample with none is excluded, not scored 0 or 1).

Every function returns sums and counts, never means, so that batches, padded evaluation
batches and hosts combine exactly by adding; `summarize` turns the totals into numbers.

Variants ("subsets"): all annotated joints; v=2 only (visible); limbs only (elbows, wrists,
knees, ankles). Each gives the per-sample mean (the thesis' number), the pooled mean over all
joints, and the per-joint PCK.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from shg_jax.heatmap import heatmap_argmax
from shg_jax.skeleton import LIMB_JOINTS

SUBSETS = ("all", "visible", "limbs")


def joint_hits(pred: jax.Array, gt: jax.Array, *, threshold: float = 0.5,
               normalizer: float | None = None) -> tuple[jax.Array, jax.Array]:
    """(B, H, W, J) predicted and GT heatmaps -> (correct, annotated), both (B, J) bool.

    `annotated` is "the GT map is non-zero"; `correct` implies `annotated`."""
    normalizer = gt.shape[-2] / 10.0 if normalizer is None else normalizer
    gt_peak, _ = heatmap_argmax(gt)
    pred_peak, _ = heatmap_argmax(pred)
    dist = jnp.linalg.norm((pred_peak - gt_peak).astype(jnp.float32), axis=-1)
    annotated = jnp.any(gt > 0, axis=(-3, -2))
    return annotated & (dist / normalizer < threshold), annotated


def subset_masks(visibility: jax.Array) -> dict[str, jax.Array]:
    """(B, J) COCO visibility flags -> the (B, J) joint mask of each PCK subset."""
    limbs = np.zeros(visibility.shape[-1], bool)
    limbs[list(LIMB_JOINTS)] = True
    ones = jnp.ones(visibility.shape, bool)
    return {"all": ones, "visible": visibility == 2, "limbs": ones & limbs}


def per_sample_pck(correct: jax.Array, annotated: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(B, J) hits -> (per-sample PCK (B,), has-annotated-joint mask (B,)); PCK is 0 where the
    mask is False, and such samples must be left out of any mean."""
    n = jnp.sum(annotated, axis=-1)
    pck = jnp.sum(correct, axis=-1) / jnp.maximum(n, 1)
    return pck, n > 0


def pck_counts(pred: jax.Array, gt: jax.Array, visibility: jax.Array,
               valid: jax.Array | None = None, *, threshold: float = 0.5,
               normalizer: float | None = None) -> dict[str, jax.Array]:
    """Sums and counts for every subset.

    pred, gt: (B, H, W, J) heatmaps; visibility: (B, J) COCO v flags; valid: (B,) bool, False
    for padding rows of an evaluation batch. Returns, per subset s:
    `s/sample_sum` (sum of per-sample PCK), `s/sample_count` (samples with an annotated joint),
    `s/joint_correct` and `s/joint_count` (J,).
    """
    correct, annotated = joint_hits(pred, gt, threshold=threshold, normalizer=normalizer)
    if valid is not None:
        annotated = annotated & valid[:, None]
    counts = {}
    for name, mask in subset_masks(visibility).items():
        a = annotated & mask
        c = correct & a
        pck, has = per_sample_pck(c, a)
        counts[f"{name}/sample_sum"] = jnp.sum(jnp.where(has, pck, 0.0))
        counts[f"{name}/sample_count"] = jnp.sum(has).astype(jnp.float32)
        counts[f"{name}/joint_correct"] = jnp.sum(c, axis=0).astype(jnp.float32)
        counts[f"{name}/joint_count"] = jnp.sum(a, axis=0).astype(jnp.float32)
    return counts


def add_counts(a: dict, b: dict) -> dict:
    """Adds two `pck_counts` results (or any dicts of arrays with the same keys)."""
    return jax.tree.map(jnp.add, a, b)


def summarize(counts: dict) -> dict[str, float | list]:
    """Totals -> {s/pck (thesis per-sample mean), s/pooled, s/per_joint (list, NaN where a
    joint was never annotated), s/samples} for each subset; NaN when nothing was counted."""
    counts = jax.tree.map(np.asarray, counts)
    out = {}
    for s in SUBSETS:
        n = float(counts[f"{s}/sample_count"])
        jc, jn = counts[f"{s}/joint_correct"], counts[f"{s}/joint_count"]
        out[f"{s}/pck"] = float(counts[f"{s}/sample_sum"]) / n if n else float("nan")
        out[f"{s}/pooled"] = float(jc.sum() / jn.sum()) if jn.sum() else float("nan")
        with np.errstate(invalid="ignore", divide="ignore"):
            out[f"{s}/per_joint"] = [float(v) for v in np.where(jn > 0, jc / jn, np.nan)]
        out[f"{s}/samples"] = int(n)
    return out
