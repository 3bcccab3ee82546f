"""Person crops: the square box around one person, the image crop, and keypoint transforms.

Shared by data preparation (`data_prep.coco`) and inference, so a photo is cropped at
prediction time exactly as the training data was.

Boxes are integer squares in image pixels (x0, y0, side); the crop is resized to
size x size with Pillow's bilinear filter, which is antialiased when downscaling (its support
grows with the scale factor). A keypoint at image position p maps to (p - x0) * size / side.

Modes (DESIGN.md "Data"):
- "thesis": centred on the centre of the labelled-keypoint extent, side 1.1 x the larger
  extent (the square COCO bbox when the extent is zero); a box leaving the image is shifted
  back inside, shrunk to the largest square that fits if needed; a person whose labelled
  keypoints then fall outside is dropped ("keypoints_cannot_fit").
- "bbox_pad": centred on the COCO bbox, side 1.25 x max(w, h), zero padding outside the
  image (the usual top-down convention); labelled keypoints outside the box become v=0.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image

CROP_MODES = ("thesis", "bbox_pad")


class CropError(ValueError):
    """A person that cannot be cropped; `reason` is the drop reason recorded in meta.json."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class CropBox:
    x0: int
    y0: int
    side: int

    def to_crop(self, keypoints: np.ndarray, size: int) -> np.ndarray:
        """(J, 3) image keypoints -> (J, 3) float32 crop keypoints; v=0 joints become (0, 0, 0)
        and so do labelled joints outside the crop (possible in bbox_pad mode only)."""
        kps = np.asarray(keypoints, np.float64).reshape(-1, 3)
        xy = (kps[:, :2] - (self.x0, self.y0)) * (size / self.side)
        v = kps[:, 2].copy()
        v[np.any((xy < 0) | (xy >= size), axis=1)] = 0
        out = np.zeros_like(kps)
        out[:, :2] = xy
        out[:, 2] = v
        out[v == 0] = 0
        return out.astype(np.float32)

    def to_image(self, xy: np.ndarray, size: int) -> np.ndarray:
        """(..., 2) crop coordinates -> image coordinates (inverse of `to_crop`)."""
        return np.asarray(xy, np.float64) * (self.side / size) + (self.x0, self.y0)


def _labelled(keypoints: np.ndarray) -> np.ndarray:
    kps = np.asarray(keypoints, np.float64).reshape(-1, 3)
    return kps[kps[:, 2] > 0, :2]


def thesis_box(keypoints, bbox, width: int, height: int) -> CropBox:
    pts = _labelled(keypoints)
    if len(pts) == 0:
        raise CropError("no_labelled_keypoint")
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    extent = float(np.max(hi - lo))
    if extent > 0:
        box = _square_inside((lo + hi) / 2, 1.1 * extent, width, height)
    else:
        box = thesis_bbox_box(bbox, width, height)
    if np.any(pts < (box.x0, box.y0)) or np.any(pts >= (box.x0 + box.side, box.y0 + box.side)):
        raise CropError("keypoints_cannot_fit")
    return box


def thesis_bbox_box(bbox, width: int, height: int) -> CropBox:
    """The thesis' box from a COCO bbox alone (its fallback rule, and inference without
    keypoints): the square of side max(w, h) on the bbox centre, kept inside the image."""
    bx, by, bw, bh = bbox
    return _square_inside(np.array([bx + bw / 2, by + bh / 2]), float(max(bw, bh)),
                          width, height)


def _square_inside(centre, side: float, width: int, height: int) -> CropBox:
    """A square on `centre`, shifted back inside the image, shrunk to fit if needed."""
    side = min(max(int(round(side)), 1), width, height)
    x0 = min(max(int(round(centre[0] - side / 2)), 0), width - side)
    y0 = min(max(int(round(centre[1] - side / 2)), 0), height - side)
    return CropBox(x0, y0, side)


def bbox_pad_box(bbox, scale: float = 1.25) -> CropBox:
    """Centred on the bbox, side `scale` x max(w, h); may leave the image (zero padding)."""
    bx, by, bw, bh = bbox
    side = int(round(scale * max(bw, bh)))
    if side < 1:
        raise CropError("degenerate_box")
    return CropBox(int(round(bx + bw / 2 - side / 2)), int(round(by + bh / 2 - side / 2)), side)


def person_box(mode: str, keypoints, bbox, width: int, height: int) -> CropBox:
    """The crop box of one person in `mode`; raises CropError with the drop reason."""
    if mode == "thesis":
        return thesis_box(keypoints, bbox, width, height)
    if mode == "bbox_pad":
        if len(_labelled(keypoints)) == 0:
            raise CropError("no_labelled_keypoint")
        return bbox_pad_box(bbox)
    raise ValueError(f"crop mode must be one of {CROP_MODES}, got {mode!r}")


def inference_box(mode: str, bbox, width: int, height: int) -> CropBox:
    """The crop box of a person known only by a bbox (prediction time): `bbox_pad` as in
    training; `thesis` by its bbox rule (no keypoints are known). A bbox of None means the
    whole image: the square of side max(width, height) on its centre, zero padded."""
    if bbox is None:
        return bbox_pad_box((0, 0, width, height), scale=1.0)
    if mode == "thesis":
        return thesis_bbox_box(bbox, width, height)
    if mode == "bbox_pad":
        return bbox_pad_box(bbox)
    raise ValueError(f"crop mode must be one of {CROP_MODES}, got {mode!r}")


def crop_image(image: Image.Image, box: CropBox, size: int) -> np.ndarray:
    """RGB PIL image -> (size, size, 3) uint8 crop; pixels outside the image are black."""
    patch = image.crop((box.x0, box.y0, box.x0 + box.side, box.y0 + box.side))
    return np.asarray(patch.resize((size, size), Image.Resampling.BILINEAR), np.uint8)
