"""Evaluation of a checkpoint: PCK (all / v=2 only / limbs only, per joint) and loss.

    python -m shg_jax.evaluate --workdir DIR [--checkpoint best|latest|best_loss|EPOCH]
        [--split val|test] [--data_dir DIR] [--out FILE.json] [--flip] [--subpixel]
        [--coco-ap]

The same evaluation training runs after every epoch, so on `--split val` it reproduces the
numbers training logged for that epoch. `--coco-ap` adds COCO keypoint AP/AR on the val
split (pycocotools, top-down with the ground-truth boxes; see shg_jax.coco_eval).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import jax
import ml_collections
import numpy as np

from shg_jax import coco_eval, data, fileio, pck
from shg_jax import sharding as shd
from shg_jax.checkpoint import CheckpointError, Checkpoints
from shg_jax.heatmap import decode_heatmaps
from shg_jax.progress import Progress
from shg_jax.skeleton import JOINT_NAMES
from shg_jax.steps import DEFAULT_DECODE, Steps


def evaluate_split(steps: Steps, state, split: data.Split, batch_size: int, *,
                   desc: str | None = None) -> dict:
    """Every sample of `split` once -> {"loss", "samples", and pck.summarize's keys}.

    Sums stay on device until the end; every process feeds its slice of each global batch,
    and the sums are global, so the result is the same for any number of processes."""
    batches = data.eval_batches(split, batch_size, process_index=jax.process_index(),
                                process_count=jax.process_count())
    total = data.steps_per_epoch(len(split), batch_size, train=False)
    sums = None
    with Progress(total, desc or f"eval {split.name}", unit="img",
                  enabled=jax.process_index() == 0) as progress:
        for batch in data.prefetch(batches, transform=lambda b: shd.shard_batch(b,
                                                                                steps.mesh)):
            out = steps.eval_step(state, batch)
            sums = out if sums is None else pck.add_counts(sums, out)
            progress.update(1, count=batch_size)
    sums = shd.to_host(sums)
    result = pck.summarize({k: v for k, v in sums.items() if "/" in k})
    count = float(sums["count"])
    result["loss"] = float(sums["loss_sum"]) / count if count else float("nan")
    result["count"] = int(count)
    return result


def evaluate_coco_ap(steps: Steps, state, split: data.Split, batch_size: int) -> dict:
    """COCO keypoint AP/AR of the val split, top-down with the ground-truth person boxes:
    decoded keypoints (config.decode) mapped back to the original images."""
    if split.name != "val":
        raise coco_eval.CocoEvalError("--coco-ap evaluates the val split (COCO val2017): "
                                      f"use --split val, not --split {split.name}")
    if jax.process_count() > 1:
        raise coco_eval.CocoEvalError("--coco-ap runs in one process")
    meta = data.load_meta(split.dir.parent)
    coco = coco_eval.val_annotations(meta)
    size = steps.config.model.input_size
    xy, scores, ann_ids, image_ids = [], [], [], []
    batches = data.eval_batches(split, batch_size)
    with Progress(data.steps_per_epoch(len(split), batch_size, train=False), "COCO AP",
                  unit="img") as progress:
        for batch in batches:
            heatmaps = steps.infer(state, shd.shard_batch(batch, steps.mesh,
                                                          keys=("images",))["images"])
            coords, s = decode_heatmaps(shd.to_host(heatmaps), input_size=size,
                                        subpixel=steps.subpixel)
            valid = batch["valid"]
            xy.append(np.asarray(coords)[valid])
            scores.append(np.asarray(s)[valid])
            ann_ids.append(batch["ann_id"][valid])
            image_ids.append(batch["image_id"][valid])
            progress.update(1, count=int(valid.sum()))
    return coco_eval.crop_predictions_ap(coco, meta["crop_mode"], size,
                                         np.concatenate(ann_ids), np.concatenate(image_ids),
                                         np.concatenate(xy), np.concatenate(scores))


def format_table(result: dict) -> str:
    lines = [f"{'subset':<10}{'PCK':>8}{'pooled':>9}{'samples':>9}"]
    for s in pck.SUBSETS:
        lines.append(f"{s:<10}{result[f'{s}/pck']:>8.4f}{result[f'{s}/pooled']:>9.4f}"
                     f"{result[f'{s}/samples']:>9}")
    lines.append("the thesis' test protocol (all and v=2 divided by every sample; limbs: mean "
                 "over per-sample limb pairs):")
    lines.append("  " + "  ".join(f"{s} {result[f'thesis_{s}/pck']:.4f}" for s in pck.SUBSETS))
    lines.append(f"loss {result['loss']:.4g} over {result['count']} samples")
    lines.append(f"{'joint':<16}{'PCK':>8}")
    for name, v in zip(JOINT_NAMES, result["all/per_joint"]):
        lines.append(f"{name:<16}{v:>8.4f}")
    return "\n".join(lines)


def load_run(workdir, checkpoint: str = "best", data_dir: str | None = None, *,
             flip: bool | None = None, subpixel: bool | None = None):
    """A trained run -> (config, steps, state, record) for evaluation or analysis.
    `flip` / `subpixel` override the run's config.decode (None keeps it)."""
    ckpts = Checkpoints(workdir, read_only=True)
    kind, step = ckpts.find(checkpoint)
    record = ckpts.record(kind, step)
    config = ml_collections.ConfigDict(record["config"])
    if data_dir:
        config.data_dir = str(data_dir)
    config.decode = ml_collections.ConfigDict(config.get("decode") or DEFAULT_DECODE)
    for name, value in (("flip", flip), ("subpixel", subpixel)):
        if value is not None:
            config.decode[name] = value
    mean = record.get("mean_rgb") or data.load_meta(config.data_dir)["mean_rgb"]
    steps = Steps(config, mean)
    state, record = ckpts.restore(kind, step, steps.init_state())
    return config, steps, state, record


def add_decode_arguments(p: argparse.ArgumentParser) -> None:
    """--flip / --subpixel (and --no-...): override the run's config.decode."""
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="flip test: average with the mirrored crop's prediction (default: "
                        "the run's config.decode.flip; thesis: off)")
    p.add_argument("--subpixel", action=argparse.BooleanOptionalAction, default=None,
                   help="quarter-pixel shift toward the higher neighbour (default: the "
                        "run's config.decode.subpixel; thesis: off)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m shg_jax.evaluate",
                                description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--workdir", required=True, help="a training run's folder")
    p.add_argument("--checkpoint", default="best",
                   help="best | latest | best_loss | an epoch number")
    p.add_argument("--split", default="val", choices=("val", "test", "train"))
    p.add_argument("--data_dir", help="prepared data (default: the run's config.data_dir)")
    p.add_argument("--batch_size", type=int, help="default: the run's eval_batch_size")
    p.add_argument("--out", help="JSON output (default WORKDIR/eval/SPLIT-CHECKPOINT.json)")
    add_decode_arguments(p)
    p.add_argument("--coco-ap", action="store_true",
                   help="also COCO keypoint AP/AR (pycocotools) on the val split, top-down "
                        "with the ground-truth person boxes")
    args = p.parse_args(argv)
    try:
        config, steps, state, record = load_run(args.workdir, args.checkpoint, args.data_dir,
                                                flip=args.flip, subpixel=args.subpixel)
        split = data.Split(config.data_dir, args.split)
        batch_size = args.batch_size or config.eval_batch_size
        coco = evaluate_coco_ap(steps, state, split, batch_size) if args.coco_ap else None
        result = evaluate_split(steps, state, split, batch_size)
        if coco:
            result["coco"] = coco
    except (CheckpointError, data.DataError, coco_eval.CocoEvalError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    result.update(checkpoint=args.checkpoint, epoch=record["epoch"], split=args.split,
                  global_step=record["global_step"], decode=config.decode.to_dict())
    print(f"{args.workdir}: checkpoint {args.checkpoint} (epoch {record['epoch']}), "
          f"split {args.split}, decoding: flip {config.decode.flip}, "
          f"subpixel {config.decode.subpixel}")
    print(format_table(result))
    if args.coco_ap:
        c = result["coco"]
        print(f"COCO keypoint AP, top-down with ground-truth person boxes: {c['persons']} "
              f"persons in {c['images']} images ({c['ignored_persons']} with keypoints that "
              f"the crop rules dropped are ignored)")
        print(c["summary"].rstrip())
    out = pathlib.Path(args.out or pathlib.Path(args.workdir) / "eval" /
                       f"{args.split}-{args.checkpoint}.json")
    if jax.process_index() == 0:
        out.parent.mkdir(parents=True, exist_ok=True)
        fileio.write_json(out, json.loads(json.dumps(result, default=_jsonable)))
        print(f"wrote {out}")
    return 0


def _jsonable(x):
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(type(x))


if __name__ == "__main__":
    sys.exit(main())
