"""PCK as the thesis computes it, as jittable sums and counts.

Thesis (Algorithm 1, §5): for every joint whose ground-truth heatmap is non-zero, compare the
argmax of the GT map with the argmax of the predicted map; the joint is correct when
distance / c < r with c = H/10 (6.4 for 64x64 maps) and r = 0.5, i.e. closer than 3.2 heatmap
pixels. The per-sample fraction of correct annotated joints is averaged over the samples that
have at least one annotated joint (a sample with none is excluded, not scored 0 or 1).

Every function returns sums and counts, never means, so that batches, padded evaluation
batches and hosts combine exactly by adding; `summarize` turns the totals into numbers.

Variants ("subsets"): all annotated joints; v=2 only (visible); limbs only (elbows, wrists,
knees, ankles). Each gives the per-sample mean over the samples with an annotated joint of the
subset (our number, and the thesis' validation PCK), the pooled mean over all joints, and the
per-joint PCK.

The thesis' test protocol (code/model_testing.ipynb), which its test numbers use, differs
(`thesis_*` keys): "all" and "v=2 only" sum the per-sample PCK and divide by ALL samples (a
sample with no annotated joint of the subset adds 0 but still counts); "limbs only" takes one
PCK per sample per limb pair (wrists, elbows, knees, ankles) whose maps are annotated and
averages that list.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from shg_jax.heatmap import heatmap_argmax
from shg_jax.skeleton import LIMB_JOINTS, LIMB_PAIRS

SUBSETS = ("all", "visible", "limbs")
#: The thesis' constants: correct when distance / c < THRESHOLD, c = H / NORMALIZER_DIVISOR.
THRESHOLD = 0.5
NORMALIZER_DIVISOR = 10.0


def joint_hits(pred: jax.Array, gt: jax.Array, *, threshold: float = THRESHOLD,
               normalizer: float | None = None) -> tuple[jax.Array, jax.Array]:
    """(B, H, W, J) predicted and GT heatmaps -> (correct, annotated), both (B, J) bool.

    `annotated` is "the GT map is non-zero"; `correct` implies `annotated`."""
    normalizer = gt.shape[-3] / NORMALIZER_DIVISOR if normalizer is None else normalizer
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
               valid: jax.Array | None = None, *, threshold: float = THRESHOLD,
               normalizer: float | None = None) -> dict[str, jax.Array]:
    """Sums and counts for every subset.

    pred, gt: (B, H, W, J) heatmaps; visibility: (B, J) COCO v flags; valid: (B,) bool, False
    for padding rows of an evaluation batch. Returns, per subset s:
    `s/sample_sum` (sum of per-sample PCK), `s/sample_count` (samples with an annotated joint),
    `s/joint_correct` and `s/joint_count` (J,); for the thesis' test protocol also
    `thesis/samples` (valid rows) and `thesis_limbs/pair_sum`, `thesis_limbs/pair_count`.
    """
    correct, annotated = joint_hits(pred, gt, threshold=threshold, normalizer=normalizer)
    valid = jnp.ones(pred.shape[0], bool) if valid is None else valid
    annotated = annotated & valid[:, None]
    counts = {"thesis/samples": jnp.sum(valid).astype(jnp.float32)}
    pairs = np.asarray(LIMB_PAIRS)                                    # (P, 2)
    pair_n = jnp.sum(annotated[:, pairs], axis=-1)                    # (B, P)
    pair_c = jnp.sum((correct & annotated)[:, pairs], axis=-1)
    counts["thesis_limbs/pair_sum"] = jnp.sum(jnp.where(pair_n > 0, pair_c / jnp.maximum(
        pair_n, 1), 0.0))
    counts["thesis_limbs/pair_count"] = jnp.sum(pair_n > 0).astype(jnp.float32)
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
    """Totals -> {s/pck (per-sample mean), s/pooled, s/per_joint (list, NaN where a joint was
    never annotated), s/samples} for each subset, and thesis_all/pck, thesis_visible/pck,
    thesis_limbs/pck (the thesis' test protocol); NaN when nothing was counted."""
    counts = jax.tree.map(np.asarray, counts)

    def ratio(a: str, b: str) -> float:
        return float(counts[a]) / float(counts[b]) if float(counts[b]) else float("nan")

    out = {"thesis_all/pck": ratio("all/sample_sum", "thesis/samples"),
           "thesis_visible/pck": ratio("visible/sample_sum", "thesis/samples"),
           "thesis_limbs/pck": ratio("thesis_limbs/pair_sum", "thesis_limbs/pair_count")}
    for s in SUBSETS:
        n = float(counts[f"{s}/sample_count"])
        jc, jn = counts[f"{s}/joint_correct"], counts[f"{s}/joint_count"]
        out[f"{s}/pck"] = float(counts[f"{s}/sample_sum"]) / n if n else float("nan")
        out[f"{s}/pooled"] = float(jc.sum() / jn.sum()) if jn.sum() else float("nan")
        with np.errstate(invalid="ignore", divide="ignore"):
            out[f"{s}/per_joint"] = [float(v) for v in np.where(jn > 0, jc / jn, np.nan)]
        out[f"{s}/samples"] = int(n)
    return out
