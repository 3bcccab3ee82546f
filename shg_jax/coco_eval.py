"""COCO keypoint AP/AR with pycocotools' COCOeval, under two top-down protocols.

Ground-truth person boxes (`crop_predictions_ap`): each val crop's predicted keypoints (crop
pixels) are mapped back to the original image through the crop box, which is recomputed from
the annotation file the data was prepared from (meta.json `source`, `crop_mode`) with the same
crop code as data_prep; each person is scored by its mean joint confidence. Persons that the
crop rules dropped get no prediction; they are marked as crowd (ignored) so that the AP
measures the keypoints of the persons evaluated, and the summary says how many there were.

Detector boxes (`read_person_boxes`, then shg_jax.topdown and `keypoint_ap` with nothing
ignored): the protocol of published top-down numbers, in which every annotated person counts
and missed or spurious detections cost AP.
"""

from __future__ import annotations

import contextlib
import io
import json
import pathlib

import numpy as np

from shg_jax import crop as cropping
from shg_jax.errors import UserError

STAT_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")


class CocoEvalError(UserError):
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


#: The COCO category of persons, the only one keypoint evaluation uses.
PERSON_CATEGORY = 1


def results(image_ids, keypoints: np.ndarray, scores: np.ndarray,
            person_scores=None) -> list[dict]:
    """COCO keypoint results: image keypoints (N, J, 2) and joint scores (N, J); a person's
    score is `person_scores` (N,) or else its mean joint score."""
    out = []
    if person_scores is None:
        person_scores = np.mean(scores, axis=-1)
    for image_id, xy, s, p in zip(np.asarray(image_ids).tolist(), keypoints, scores,
                                  person_scores):
        flat = np.concatenate([xy, s[:, None]], axis=1).reshape(-1)
        out.append({"image_id": int(image_id), "category_id": PERSON_CATEGORY,
                    "keypoints": [float(v) for v in flat], "score": float(p)})
    return out


def read_person_boxes(path, known_ids: set, known_as: str) -> dict[int, list]:
    """A detector's output in the COCO detection-results format (a JSON list of
    {"image_id", "bbox": [x, y, w, h], "score", "category_id"}) -> {image id: [(bbox,
    score), ...]} of the person detections (category 1), best score first. Any other shape
    raises CocoEvalError naming the file, the entry and the field; so does an image id not
    in `known_ids` (`known_as` says where ids come from)."""
    try:
        entries = json.loads(pathlib.Path(path).read_text())
    except OSError as e:
        raise CocoEvalError(f"{path}: cannot read the detections file ({e.strerror})") from e
    except ValueError as e:
        raise CocoEvalError(f"{path}: not JSON ({e}); expected the COCO detection-results "
                            f"format, a list of image_id, bbox, score, category_id") from e
    if not isinstance(entries, list):
        raise CocoEvalError(f"{path}: expected a JSON list of detections (image_id, bbox, "
                            f"score, category_id), got a {type(entries).__name__}")
    boxes: dict[int, list] = {}
    for i, det in enumerate(entries):
        where = f"{path}: detection {i}"
        if not isinstance(det, dict):
            raise CocoEvalError(f"{where} is a {type(det).__name__}, not an object with "
                                f"image_id, bbox, score, category_id")
        for field in ("image_id", "bbox", "score", "category_id"):
            if field not in det:
                raise CocoEvalError(f"{where} has no '{field}' (each detection needs "
                                    f"image_id, bbox [x, y, w, h], score, category_id)")
        image_id, bbox, score = det["image_id"], det["bbox"], det["score"]
        if not isinstance(image_id, int) or isinstance(image_id, bool):
            raise CocoEvalError(f"{where}: 'image_id' must be an integer, got {image_id!r}")
        if (not isinstance(bbox, list) or len(bbox) != 4
                or not all(_is_number(v) for v in bbox) or bbox[2] <= 0 or bbox[3] <= 0):
            raise CocoEvalError(f"{where}: 'bbox' must be [x, y, w, h] with w, h > 0, got "
                                f"{bbox!r}")
        if not _is_number(score):
            raise CocoEvalError(f"{where}: 'score' must be a number, got {score!r}")
        if det["category_id"] != PERSON_CATEGORY:
            continue
        if image_id not in known_ids:
            raise CocoEvalError(f"{where}: 'image_id' {image_id} is not among {known_as}")
        boxes.setdefault(image_id, []).append((tuple(float(v) for v in bbox), float(score)))
    for dets in boxes.values():
        dets.sort(key=lambda d: -d[1])
    return boxes


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)


def keypoint_ap(coco: dict, predictions: list[dict], ann_ids=None, image_ids=None) -> dict:
    """COCOeval (iouType 'keypoints') on `image_ids` (default: the images of `predictions`).
    With `ann_ids`, annotations not among them (dropped by the crop rules) are ignored as
    crowd; without, every annotated person counts (the detector-box protocol)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if image_ids is None:
        image_ids = {p["image_id"] for p in predictions}
    image_ids = sorted(image_ids)
    if not predictions:
        raise CocoEvalError("no person was predicted on the evaluated images; COCO AP needs "
                            "at least one prediction")
    keep = set(image_ids)
    evaluated = None if ann_ids is None else set(np.asarray(ann_ids).tolist())
    anns, ignored = [], 0
    for a in coco["annotations"]:
        if a["image_id"] in keep:
            a = dict(a)
            if (evaluated is not None and a["id"] not in evaluated
                    and not a.get("iscrowd", 0)):
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
    persons = len(evaluated) if evaluated is not None else sum(
        1 for a in anns if a.get("num_keypoints", 0) > 0 and not a.get("iscrowd", 0))
    stats.update(images=len(image_ids), persons=persons, ignored_persons=ignored,
                 summary="\n".join(line for line in log.getvalue().splitlines()
                                   if line.lstrip().startswith("Average")))
    return stats


def crop_predictions_ap(coco: dict, crop_mode: str, input_size: int, ann_ids, image_ids,
                        crop_xy: np.ndarray, scores: np.ndarray) -> dict:
    """The whole path from crop-pixel predictions (N, J, 2) to COCO AP."""
    boxes = crop_boxes(coco, ann_ids, crop_mode)
    image_xy = np.stack([box.to_image(xy, input_size) for box, xy in zip(boxes, crop_xy)])
    return keypoint_ap(coco, results(image_ids, image_xy, scores), ann_ids)
