"""COCO keypoint AP/AR of a model on val2017, the two top-down pipelines: crops of the
ground-truth person boxes as data_prep made them (`evaluate_coco_ap`), and crops of a
detector's person boxes with OKS-NMS, the protocol of published numbers
(`evaluate_person_boxes`). The scoring itself (pycocotools, the crops mapped back to the
photos) is shg_jax.coco_eval's.
"""

from __future__ import annotations

import pathlib

import jax
import numpy as np

from shg_jax import coco_eval, data, placement, topdown
from shg_jax.progress import Progress
from shg_jax.steps import Steps


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
            coords, s = steps.codec.decode(placement.to_host(heatmaps))
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
            subpixel=steps.codec.subpixel, batch_size=batch_size)
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
