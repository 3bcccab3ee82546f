"""The skip-connection ablation of thesis §6.2: the same weights with and without the
hourglass skip connections, scored per sample, and its report (Figs. 13, 14): what
`python -m analysis.skips` runs."""

from __future__ import annotations

import functools

import jax
import numpy as np

from analysis import figures
from analysis.common import gt_overlays, heat_overlays
from analysis.report import Report
from shg_jax import data, pck, placement
from shg_jax.progress import Progress


@functools.cache
def ablation_function(steps):
    """jitted (state, batch) -> per-sample PCK with skips, without, has-annotation mask,
    and both predictions (B, H, W, J); one per Steps, so the scoring pass and the grid
    share its compiled program."""
    def fn(state, batch):
        model = steps.eval_model(state)
        images = steps.inputs(batch["images"])
        target = steps.codec.targets(batch["keypoints"])
        out = {}
        for name, use in (("with", True), ("without", False)):
            pred = model(images, use_skips=use)
            correct, annotated = pck.joint_hits(pred, target)
            out[name], out["has"] = pck.per_sample_pck(correct, annotated)
            out[f"pred_{name}"] = pred
        out["has"] = out["has"] & batch["valid"]
        return out

    return steps.jit(fn)


def run_ablation(steps, state, split: data.Split, batch_size: int, limit: int | None = None):
    """-> dict of (N,) arrays: with, without, has (samples with an annotated joint)."""
    fn = ablation_function(steps)
    n = min(len(split), limit or len(split))
    keep = {"with": [], "without": [], "has": []}
    total = data.steps_per_epoch(n, batch_size, train=False)
    with Progress(total, "skip ablation", unit="img") as progress:
        for i, batch in enumerate(data.prefetch(data.eval_batches(split, batch_size))):
            if i == total:
                break
            out = jax.device_get(fn(state, placement.shard_batch(batch, steps.mesh)))
            rows = batch["valid"] & (batch["index"] < n)
            for k in keep:
                keep[k].append(np.asarray(out[k])[rows])
            progress.update(1, count=int(rows.sum()))
    return {k: np.concatenate(v) for k, v in keep.items()}


def write_report(report: Report, res: dict, steps, state, split: data.Split, *,
                 grid: int = 20, seed: int = 0) -> dict:
    """The histograms, numbers and sample grid of `run_ablation`'s result `res` into
    `report`; returns the summary (samples, mean PCK with and without skips)."""
    has = res["has"]
    with_skips, without = res["with"][has], res["without"][has]
    summary = {"samples": int(has.sum()), "mean_pck_with_skips": float(with_skips.mean()),
               "mean_pck_without_skips": float(without.mean())}
    report.figure(figures.pck_histograms(with_skips, without), "pck_histograms.png",
                  "per-sample PCK with and without the skip connections (Fig. 13)")
    report.json(summary, "skips.json", "means over the samples with an annotated joint",
                summary=summary)
    rows = np.nonzero(has)[0]
    report.csv(["row", "pck_with_skips", "pck_without_skips"],
               [[int(r), float(res["with"][r]), float(res["without"][r])] for r in rows],
               "per_sample_pck.csv", "per-sample PCK")
    perfect = rows[res["with"][rows] == 1.0]
    if len(perfect):
        pick = np.sort(np.random.default_rng(seed).choice(
            perfect, min(grid, len(perfect)), replace=False))
        batch = split.gather(pick)
        padded = split.gather(np.resize(pick, placement.padded_size(len(pick))))
        padded["valid"] = np.ones(len(padded["images"]), bool)
        out = jax.device_get(ablation_function(steps)(
            state, placement.shard_batch(padded, steps.mesh)))
        n = len(pick)
        rows_shown = [list(t) for t in zip(batch["images"],
                                     gt_overlays(steps, batch["images"], batch["keypoints"]),
                                     heat_overlays(batch["images"], out["pred_with"][:n]),
                                     heat_overlays(batch["images"], out["pred_without"][:n]))]
        report.figure(figures.image_grid(rows_shown, [str(int(r)) for r in pick],
                                         ["crop", "ground truth", "with skips",
                                          "without skips"]),
                      "skips_grid.png", f"{n} samples with PCK 1.0 with skips (Fig. 14)")
        report.json([{"row": int(r), "image_id": int(i), "ann_id": int(a),
                      "pck_without_skips": float(res["without"][r])}
                     for r, i, a in zip(pick, batch["image_id"], batch["ann_id"])],
                    "skips_grid.json", "the samples of the grid")
    return summary
