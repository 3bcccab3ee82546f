"""The skip-connection ablation of thesis §6.2: the same weights with and without the
hourglass skip connections.

    python -m analysis.skips --ckpt WORKDIR --out DIR [--checkpoint best] [--split train]

Per-sample PCK with and without the skips over a split (the thesis used the training data),
the two histograms with their means (Fig. 13), and a grid of 20 samples that score PCK 1.0
with skips: crop, ground truth, prediction with skips, prediction without (Fig. 14).
"""

from __future__ import annotations

import sys

from shg_jax import cpu_flags

if __name__ == "__main__":
    cpu_flags.restart_with_hugepage_malloc()    # before the imports below (main.py)

import jax
import numpy as np

from analysis import figures
from analysis.common import add_run_arguments, gt_overlays, heat_overlays, open_run_split
from analysis.report import Report
from shg_jax import cli, data, pck
from shg_jax import placement
from shg_jax.progress import Progress


def ablation_function(steps):
    """jitted (state, batch) -> per-sample PCK with skips, without, has-annotation mask,
    and both predictions (B, H, W, J)."""
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

    return jax.jit(fn)


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


@cli.command
def main(argv=None) -> int:
    p = cli.parser("python -m analysis.skips", __doc__,
                   "python -m analysis.skips --ckpt runs/demo --out reports/skips --split val")
    add_run_arguments(p)
    p.add_argument("--limit", type=cli.whole_number(1),
                   help="only the first N samples of the split")
    p.add_argument("--grid", type=cli.whole_number(1), default=20,
                   help="samples in the grid figure")
    p.add_argument("--seed", type=cli.whole_number(0), default=0,
                   help="seed of the samples drawn")
    args = p.parse_args(argv)
    config, steps, state, record, split = open_run_split(args)
    res = run_ablation(steps, state, split, args.batch_size, args.limit)
    has = res["has"]
    with_skips, without = res["with"][has], res["without"][has]
    label = cli.checkpoint_label(args.workdir, args.checkpoint, record)
    report = Report(args.out, f"Skip-connection ablation: {args.workdir} ({label}, "
                              f"epoch {record.epoch}), {args.split} split")
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
        pick = np.sort(np.random.default_rng(args.seed).choice(
            perfect, min(args.grid, len(perfect)), replace=False))
        batch = split.gather(pick)
        padded = split.gather(np.resize(pick, placement.padded_size(len(pick))))
        padded["valid"] = np.ones(len(padded["images"]), bool)
        out = jax.device_get(ablation_function(steps)(
            state, placement.shard_batch(padded, steps.mesh)))
        n = len(pick)
        grid = [list(t) for t in zip(batch["images"],
                                     gt_overlays(steps, batch["images"], batch["keypoints"]),
                                     heat_overlays(batch["images"], out["pred_with"][:n]),
                                     heat_overlays(batch["images"], out["pred_without"][:n]))]
        report.figure(figures.image_grid(grid, [str(int(r)) for r in pick],
                                         ["crop", "ground truth", "with skips",
                                          "without skips"]),
                      "skips_grid.png", f"{n} samples with PCK 1.0 with skips (Fig. 14)")
        report.json([{"row": int(r), "image_id": int(i), "ann_id": int(a),
                      "pck_without_skips": float(res["without"][r])}
                     for r, i, a in zip(pick, batch["image_id"], batch["ann_id"])],
                    "skips_grid.json", "the samples of the grid")
    print(f"PCK with skips {summary['mean_pck_with_skips']:.4f}, without "
          f"{summary['mean_pck_without_skips']:.4f} over {summary['samples']} samples")
    print(f"wrote {report.write_index()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
