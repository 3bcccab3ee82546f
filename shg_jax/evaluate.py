"""Evaluation of a checkpoint: PCK (all / v=2 only / limbs only, per joint) and loss.

    python -m shg_jax.evaluate --workdir DIR [--checkpoint best|latest|best_loss|EPOCH]
        [--split val|test] [--data-dir DIR] [--out FILE.json] [--flip] [--subpixel]
        [--coco-ap] [--person-boxes DETECTIONS.json] [--augment-val]

The same evaluation training runs after every epoch, so on `--split val` it reproduces the
numbers training logged for that epoch. `--coco-ap` adds COCO keypoint AP/AR on the val
split (pycocotools, top-down with the ground-truth boxes; see shg_jax.coco_eval);
`--person-boxes` adds it from a detector's person boxes (the COCO detection-results format,
e.g. HRNet's published val2017 person detections), the protocol of published numbers.
"""

from __future__ import annotations

import json
import pathlib
import sys

from shg_jax import cpu_flags

if __name__ == "__main__":
    cpu_flags.restart_with_hugepage_malloc()    # before the imports below (main.py)

import jax
import ml_collections
import numpy as np

from shg_jax import augment, cli, coco_eval, data, fileio, pck, topdown
from shg_jax import placement
from shg_jax.heatmap import decode_heatmaps
from shg_jax.progress import Progress
from shg_jax.runs import open_run
from shg_jax.skeleton import JOINT_NAMES
from shg_jax.steps import Steps


def evaluate_split(steps: Steps, state, split: data.Split, batch_size: int, *,
                   desc: str | None = None,
                   augment_val: ml_collections.ConfigDict | None = None) -> dict:
    """Every sample of `split` once -> {"loss", "samples", and pck.summarize's keys}.

    Sums stay on device until the end; every process feeds its slice of each global batch,
    and the sums are global, so the result is the same for any number of processes.
    `augment_val` (augment.augment_config ranges): score a rotated/scaled/mirrored copy of
    the split instead, each sample transformed by draws from its index (augment_samples)."""
    batches = data.eval_batches(split, batch_size, process_index=jax.process_index(),
                                process_count=jax.process_count())
    if augment_val is not None:
        batches = _transformed(batches, augment_val)
    total = data.steps_per_epoch(len(split), batch_size, train=False)
    sums = None
    with Progress(total, desc or f"eval {split.name}", unit="img",
                  enabled=jax.process_index() == 0) as progress:
        for batch in data.prefetch(batches, transform=lambda b: placement.shard_batch(b,
                                                                                steps.mesh)):
            out = steps.eval_step(state, batch)
            sums = out if sums is None else pck.add_counts(sums, out)
            progress.update(1, count=batch_size)
    sums = placement.to_host(sums)
    result = pck.summarize({k: v for k, v in sums.items() if "/" in k})
    count = float(sums["count"])
    result["loss"] = float(sums["loss_sum"]) / count if count else float("nan")
    result["count"] = int(count)
    return result


def _transformed(batches, config: ml_collections.ConfigDict):
    """eval_batches' batches with crops and keypoints transformed (float32 crops), each by
    the draws of its split row (the batch's `index`)."""
    transform = jax.jit(lambda images, keypoints, index: augment.augment_samples(
        images, keypoints, index, config))
    for batch in batches:
        images, keypoints = transform(batch["images"], batch["keypoints"], batch["index"])
        yield dict(batch, images=np.asarray(images), keypoints=np.asarray(keypoints))


def _check_coco_split(split: data.Split, flag: str) -> None:
    if split.name != "val":
        raise coco_eval.CocoEvalError(f"{flag} evaluates the val split (COCO val2017): "
                                      f"use --split val, not --split {split.name}")
    if jax.process_count() > 1:
        raise coco_eval.CocoEvalError(f"{flag} runs in one process")


def evaluate_coco_ap(steps: Steps, state, split: data.Split, batch_size: int) -> dict:
    """COCO keypoint AP/AR of the val split, top-down with the ground-truth person boxes:
    decoded keypoints (config.decode) mapped back to the original images."""
    _check_coco_split(split, "--coco-ap")
    meta = data.load_meta(split.dir.parent)
    coco = coco_eval.val_annotations(meta)
    size = steps.config.model.input_size
    xy, scores, ann_ids, image_ids = [], [], [], []
    batches = data.eval_batches(split, batch_size)
    with Progress(data.steps_per_epoch(len(split), batch_size, train=False), "COCO AP",
                  unit="img") as progress:
        for batch in batches:
            heatmaps = steps.infer(state, placement.shard_batch(batch, steps.mesh,
                                                          keys=("images",))["images"])
            coords, s = decode_heatmaps(placement.to_host(heatmaps), input_size=size,
                                        subpixel=steps.subpixel)
            valid = batch["valid"]
            xy.append(np.asarray(coords)[valid])
            scores.append(np.asarray(s)[valid])
            ann_ids.append(batch["ann_id"][valid])
            image_ids.append(batch["image_id"][valid])
            progress.update(1, count=int(valid.sum()))
    stats = coco_eval.crop_predictions_ap(coco, meta["crop_mode"], size,
                                          np.concatenate(ann_ids), np.concatenate(image_ids),
                                          np.concatenate(xy), np.concatenate(scores))
    stats["protocol"] = (f"ground-truth person boxes: {stats['persons']} persons in "
                         f"{stats['images']} images ({stats['ignored_persons']} with keypoints "
                         f"that the crop rules dropped are ignored)")
    return stats


def evaluate_person_boxes(steps: Steps, state, split: data.Split, batch_size: int,
                          detections) -> dict:
    """COCO keypoint AP/AR of val2017 from a detector's person boxes (`detections`: a COCO
    detection-results file), the protocol of published top-down numbers: each box is cropped
    from its photo with the run's crop rule (box-only for "thesis" and "square": see
    shg_jax.topdown), scored box score x mean joint peak, OKS-NMS'd per photo, and COCOeval
    counts every annotated person of the evaluated photos (all of val2017, or the photos the
    data was prepared from when it was made with --limit)."""
    _check_coco_split(split, "--person-boxes")
    meta = data.load_meta(split.dir.parent)
    coco = coco_eval.val_annotations(meta)
    images = {im["id"]: im for im in coco["images"]}
    if meta.get("limit"):
        with_people = {a["image_id"] for a in coco["annotations"]}
        images = {i: images[i] for i in sorted(with_people)[:meta["limit"]]}
    ann_file = pathlib.Path(meta["source"]) / "annotations" / "person_keypoints_val2017.json"
    boxes = coco_eval.read_person_boxes(detections, set(images), f"the image ids of "
                                        f"{ann_file}")
    folder = pathlib.Path(meta["source"]) / "val2017"
    order = sorted(boxes)

    def photos():
        for image_id in order:
            try:
                photo = topdown.load_photo(folder / images[image_id]["file_name"])
            except topdown.PhotoError as e:
                raise coco_eval.CocoEvalError(f"{e}; --person-boxes crops the val2017 photos "
                                              f"the data was prepared from (meta.json "
                                              f"'source')") from e
            dets = boxes[image_id]
            yield photo, [b for b, _ in dets], [s for _, s in dets]

    predictions = []
    with Progress(len(order), "COCO AP, detector boxes", unit="img") as progress:
        people_per_photo = topdown.predict_photos(
            photos(), topdown.RunHeatmaps(steps, state, batch_size),
            input_size=steps.config.model.input_size, crop_mode=meta["crop_mode"],
            subpixel=steps.subpixel, batch_size=batch_size)
        for image_id, people in zip(order, people_per_photo):
            people = topdown.oks_nms(people)
            predictions += coco_eval.results([image_id] * len(people),
                                             np.stack([p.keypoints for p in people]),
                                             np.stack([p.scores for p in people]),
                                             [p.score for p in people])
            progress.update(1)
    stats = coco_eval.keypoint_ap(coco, predictions, image_ids=set(images))
    stats["detections"] = sum(len(d) for d in boxes.values())
    stats["kept_after_nms"] = len(predictions)
    stats["protocol"] = (f"the person boxes of {detections}: {stats['detections']} "
                         f"detections, {stats['kept_after_nms']} poses after OKS-NMS, "
                         f"{stats['persons']} annotated persons in {stats['images']} images")
    return stats


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


@cli.guard
def main(argv=None) -> int:
    p = cli.parser("python -m shg_jax.evaluate", __doc__,
                   "python -m shg_jax.evaluate --workdir runs/demo --checkpoint best --split "
                   "val --out runs/demo/val.json")
    cli.add_run_arguments(p, split="val")
    p.add_argument("--batch-size", "--batch_size", dest="batch_size", type=int,
                   help="default: the run's eval_batch_size")
    p.add_argument("--out", help="JSON output (default WORKDIR/eval/SPLIT-CHECKPOINT.json)")
    cli.add_decode_arguments(p)
    p.add_argument("--coco-ap", action="store_true",
                   help="also COCO keypoint AP/AR (pycocotools) on the val split, top-down "
                        "with the ground-truth person boxes")
    p.add_argument("--person-boxes", metavar="DETECTIONS.json",
                   help="also COCO keypoint AP/AR on the val split from these person "
                        "detections (COCO detection-results format: image_id, bbox, score, "
                        "category_id), OKS-NMS 0.9, as published top-down numbers are")
    p.add_argument("--augment-val", action="store_true",
                   help="score PCK on a rotated (+-30 deg), scaled (0.75-1.25) and mirrored "
                        "(p 0.5) copy of the split, the same copy for every model "
                        "(shg_jax.augment; what training augmentation buys)")
    args = p.parse_args(argv)
    if args.augment_val and (args.coco_ap or args.person_boxes):
        p.error("--augment-val scores PCK on transformed crops; COCO AP needs the photos "
                "as they are: drop --coco-ap/--person-boxes")
    config, steps, state, record = open_run(args.workdir, args.checkpoint, args.data_dir,
                                            **cli.decode_overrides(args))
    split = data.Split(config.data_dir, args.split)
    batch_size = args.batch_size or config.eval_batch_size
    coco = evaluate_coco_ap(steps, state, split, batch_size) if args.coco_ap else None
    detected = (evaluate_person_boxes(steps, state, split, batch_size, args.person_boxes)
                if args.person_boxes else None)
    augment_val = augment.augment_config(enabled=True) if args.augment_val else None
    result = evaluate_split(steps, state, split, batch_size, augment_val=augment_val)
    if augment_val is not None:
        result["augment_val"] = augment_val.to_dict()
    if coco:
        result["coco"] = coco
    if detected:
        result["coco_person_boxes"] = dict(detected, detections_file=args.person_boxes)
    result.update(checkpoint=args.checkpoint, epoch=record["epoch"], split=args.split,
                  global_step=record["global_step"], decode=config.decode.to_dict())
    print(f"{args.workdir}: checkpoint {args.checkpoint} (epoch {record['epoch']}), "
          f"split {args.split}, decoding: flip {steps.flip} (shift {steps.flip_shift:+.3f} "
          f"cells), subpixel {steps.subpixel}"
          + (", on the transformed copy (--augment-val)" if augment_val else ""))
    print(format_table(result))
    for key in ("coco", "coco_person_boxes"):
        if key in result:
            print(f"COCO keypoint AP, top-down with {result[key]['protocol']}")
            print(result[key]["summary"].rstrip())
    out = pathlib.Path(args.out or pathlib.Path(args.workdir) / "eval" /
                       f"{args.split}-{args.checkpoint}{'-augmented' if augment_val else ''}"
                       ".json")
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
