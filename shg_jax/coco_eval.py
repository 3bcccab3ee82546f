"""COCO keypoint AP/AR of crop-level predictions, with pycocotools' COCOeval.

Top-down with ground-truth person boxes: each val crop's predicted keypoints (crop pixels)
are mapped back to the original image through the crop box, which is recomputed from the
annotation file the data was prepared from (meta.json `source`, `crop_mode`) with the same
crop code as data_prep; each person is scored by its mean joint confidence. Persons that the
crop rules dropped get no prediction; they are marked as crowd (ignored) so that the AP
measures the keypoints of the persons evaluated, and the summary says how many there were.
"""

from __future__ import annotations

import contextlib
import io
import json
import pathlib

import numpy as np

from shg_jax import crop as cropping

STAT_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")


class CocoEvalError(Exception):
    """The COCO evaluation cannot run (missing annotations, wrong split); says what to do."""


def val_annotations(meta: dict) -> dict:
    """The COCO val2017 keypoint annotations the prepared data came from."""
    path = pathlib.Path(meta.get("source", "")) / "annotations" / "person_keypoints_val2017.json"
    if not path.is_file():
        raise CocoEvalError(f"COCO AP needs the annotations the val split was prepared from; "
                            f"{path} not found (meta.json 'source'); prepare the data again "
                            f"or put the COCO annotations there")
    return json.loads(path.read_text())


def crop_boxes(coco: dict, ann_ids: np.ndarray, crop_mode: str) -> list[cropping.CropBox]:
    """The crop box of every annotation id, recomputed as data_prep made it."""
    anns = {a["id"]: a for a in coco["annotations"]}
    images = {i["id"]: i for i in coco["images"]}
    boxes = []
    for ann_id in np.asarray(ann_ids).tolist():
        ann = anns[ann_id]
        image = images[ann["image_id"]]
        kps = np.asarray(ann["keypoints"], np.float64).reshape(-1, 3)
        boxes.append(cropping.person_box(crop_mode, kps, ann["bbox"], image["width"],
                                         image["height"]))
    return boxes


def results(image_ids, keypoints: np.ndarray, scores: np.ndarray) -> list[dict]:
    """COCO keypoint results: image keypoints (N, J, 2) and joint scores (N, J)."""
    out = []
    for image_id, xy, s in zip(np.asarray(image_ids).tolist(), keypoints, scores):
        flat = np.concatenate([xy, s[:, None]], axis=1).reshape(-1)
        out.append({"image_id": int(image_id), "category_id": 1,
                    "keypoints": [float(v) for v in flat], "score": float(np.mean(s))})
    return out


def keypoint_ap(coco: dict, predictions: list[dict], ann_ids) -> dict:
    """COCOeval (iouType 'keypoints') on the images of `predictions`; annotations of those
    images not in `ann_ids` (dropped by the crop rules) are ignored as crowd."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    evaluated = set(np.asarray(ann_ids).tolist())
    image_ids = sorted({p["image_id"] for p in predictions})
    keep = set(image_ids)
    anns, ignored = [], 0
    for a in coco["annotations"]:
        if a["image_id"] in keep:
            a = dict(a)
            if a["id"] not in evaluated and not a.get("iscrowd", 0):
                a["iscrowd"] = 1
                ignored += a.get("num_keypoints", 0) > 0
            anns.append(a)
    gt = COCO()
    gt.dataset = {"images": [i for i in coco["images"] if i["id"] in keep],
                  "annotations": anns, "categories": coco["categories"]}
    with contextlib.redirect_stdout(io.StringIO()) as log:
        gt.createIndex()
        dt = gt.loadRes(predictions)
        ev = COCOeval(gt, dt, iouType="keypoints")
        ev.params.imgIds = image_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = {name: float(v) for name, v in zip(STAT_NAMES, ev.stats)}
    stats.update(images=len(image_ids), persons=len(evaluated), ignored_persons=ignored,
                 summary="\n".join(line for line in log.getvalue().splitlines()
                                   if line.lstrip().startswith("Average")))
    return stats


def crop_predictions_ap(coco: dict, crop_mode: str, input_size: int, ann_ids, image_ids,
                        crop_xy: np.ndarray, scores: np.ndarray) -> dict:
    """The whole path from crop-pixel predictions (N, J, 2) to COCO AP."""
    boxes = crop_boxes(coco, ann_ids, crop_mode)
    image_xy = np.stack([box.to_image(xy, input_size) for box, xy in zip(boxes, crop_xy)])
    return keypoint_ap(coco, results(image_ids, image_xy, scores), ann_ids)
