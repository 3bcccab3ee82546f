"""What a sample is, from its annotations alone: joint counts, where its box lay in the
photo, and pose descriptors computed from its keypoints. The study profiles clusters and
principal components by them, so that the thesis' readings of its figures ("sitting or
standing", "moving or stationary", "almost fully annotated or not") become numbers.

Every function maps arrays of N samples to (N,) float64 arrays, NaN where a descriptor is
undefined (its joints unlabelled). Keypoints are crop pixels (x right, y down) with COCO's
visibility v (0 unlabelled, 1 occluded, 2 visible); angles are degrees.
"""

from __future__ import annotations

import warnings

import numpy as np

from shg_jax.skeleton import JOINT_NAMES

_J = {name: i for i, name in enumerate(JOINT_NAMES)}
SIDES = ("left", "right")

#: Descriptor name -> what it measures (the report's legend, in this order).
POSE = {
    "torso_lean": "angle of the hip-to-shoulder line from upright (0 upright, 90 lying)",
    "hip_angle": "angle at the hips between shoulder and knee (180 straight, ~90 sitting)",
    "knee_angle": "angle at the knees between hip and ankle (180 straight, ~90 sitting)",
    "arms_raised": "fraction of labelled wrists above their shoulder",
    "limb_spread": "mean distance of the labelled wrists and ankles from the torso centre, "
                   "in torso lengths (larger: limbs stretched out, as in motion)",
}
ANNOTATION = {
    "labelled": "joints labelled (v > 0)",
    "visible_fraction": "fraction of the labelled joints marked visible (v = 2)",
    "occluded_fraction": "fraction of the labelled joints marked occluded (v = 1)",
    "box_size": "square root of the COCO box area, photo pixels",
    "box_aspect": "COCO box height / width",
    "truncated": "1 when the COCO box touches the photo's edge (the person is cut off)",
}
DESCRIPTORS = {**ANNOTATION, **POSE}
#: A box within this many pixels of the photo's edge touches it.
EDGE_PIXELS = 1.0


def _point(keypoints: np.ndarray, name: str) -> np.ndarray:
    """(N, 17, 3) -> (N, 2) joint `name`'s position, NaN where unlabelled."""
    k = keypoints[:, _J[name]]
    return np.where(k[:, 2:3] > 0, k[:, :2], np.nan)


def _mean_point(keypoints: np.ndarray, names) -> np.ndarray:
    """The mean of the labelled joints among `names`, NaN where none is labelled."""
    return nanmean(np.stack([_point(keypoints, n) for n in names]))


def nanmean(stacked: np.ndarray) -> np.ndarray:
    """The mean over axis 0 of what is not NaN; NaN (quietly) where all are."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(stacked, axis=0)


def angle(a: np.ndarray, vertex: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, 2) points -> (N,) the angle a-vertex-b in degrees (NaN where a point is)."""
    u, v = a - vertex, b - vertex
    cos = (u * v).sum(-1) / (np.linalg.norm(u, axis=-1) * np.linalg.norm(v, axis=-1))
    with np.errstate(invalid="ignore"):
        return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def pose_descriptors(keypoints: np.ndarray) -> dict[str, np.ndarray]:
    """(N, 17, 3) crop keypoints -> {name in POSE: (N,)}; a two-sided descriptor is the mean
    of the sides whose joints are labelled."""
    keypoints = np.asarray(keypoints, np.float64)
    shoulders = _mean_point(keypoints, ("left_shoulder", "right_shoulder"))
    hips = _mean_point(keypoints, ("left_hip", "right_hip"))
    torso = shoulders - hips
    length = np.linalg.norm(torso, axis=-1)
    lean = np.degrees(np.arctan2(np.abs(torso[:, 0]), -torso[:, 1]))
    side = {s: {part: _point(keypoints, f"{s}_{part}")
                for part in ("shoulder", "hip", "knee", "ankle", "wrist")} for s in SIDES}
    hip = nanmean(np.stack([angle(p["shoulder"], p["hip"], p["knee"])
                            for p in side.values()]))
    knee = nanmean(np.stack([angle(p["hip"], p["knee"], p["ankle"])
                             for p in side.values()]))
    raised = [np.where(np.isnan(p["wrist"][:, 1] + p["shoulder"][:, 1]), np.nan,
                       (p["wrist"][:, 1] < p["shoulder"][:, 1]).astype(np.float64))
              for p in side.values()]
    centre = (shoulders + hips) / 2
    ends = [np.linalg.norm(p[end] - centre, axis=-1) for p in side.values()
            for end in ("wrist", "ankle")]
    with np.errstate(invalid="ignore", divide="ignore"):
        spread = nanmean(np.stack(ends)) / np.where(length > 0, length, np.nan)
    return {"torso_lean": lean, "hip_angle": hip, "knee_angle": knee,
            "arms_raised": nanmean(np.stack(raised)), "limb_spread": spread}


def annotation_descriptors(keypoints: np.ndarray, box: np.ndarray,
                           photo_size: np.ndarray) -> dict[str, np.ndarray]:
    """(N, 17, 3) keypoints, (N, 4) COCO boxes (x, y, w, h), (N, 2) photo (width, height)
    -> {name in ANNOTATION: (N,)}."""
    v = np.asarray(keypoints)[..., 2]
    labelled = (v > 0).sum(-1).astype(np.float64)
    box = np.asarray(box, np.float64)
    x, y, w, h = box.T
    with np.errstate(invalid="ignore", divide="ignore"):
        visible = np.where(labelled > 0, (v == 2).sum(-1) / labelled, np.nan)
        occluded = np.where(labelled > 0, (v == 1).sum(-1) / labelled, np.nan)
        aspect = np.where(w > 0, h / w, np.nan)
    width, height = np.asarray(photo_size, np.float64).T
    truncated = ((x <= EDGE_PIXELS) | (y <= EDGE_PIXELS) | (x + w >= width - EDGE_PIXELS)
                 | (y + h >= height - EDGE_PIXELS)).astype(np.float64)
    return {"labelled": labelled, "visible_fraction": visible, "occluded_fraction": occluded,
            "box_size": np.sqrt(np.maximum(w * h, 0)), "box_aspect": aspect,
            "truncated": truncated}


def describe(keypoints: np.ndarray, box: np.ndarray, photo_size: np.ndarray
             ) -> dict[str, np.ndarray]:
    """Every descriptor of DESCRIPTORS, in its order."""
    return {**annotation_descriptors(keypoints, box, photo_size), **pose_descriptors(keypoints)}
