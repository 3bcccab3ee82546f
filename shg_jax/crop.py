"""Person crops: the box around one person, the image crop, and keypoint transforms.

Shared by data preparation (`data_prep.coco`), COCO evaluation and inference, so a photo is
cropped at prediction time exactly as the training data was.

Modes (DESIGN.md "Data"):
- "thesis" (default): what `crop_image` + `resize_img` of the thesis' notebook
  `code/bsc_project_prework.ipynb` do, step by step (see `thesis_box`). The box is an integer
  rectangle `photo[y0:y1, x0:x1]` with numpy slice semantics (a negative start wraps round,
  an end past the edge is clipped), usually square but narrower at the right image edge; the
  slice is resized as `skimage.transform.resize` does (bilinear, Gaussian anti-aliasing when
  shrinking; `resize_like_skimage`) and stored truncated to uint8; keypoints are the thesis'
  integers `(p - 1 - x0) * size // crop_width` (COCO's 1-based pixels, floored per axis).
- "square": the rule this project used first: a square of side 1.1 x the larger keypoint
  extent on the keypoint centre, shifted and shrunk to fit the image; drops only persons whose
  keypoints cannot fit; continuous keypoints; Pillow's bilinear resize.
- "bbox_pad": centred on the COCO bbox, side 1.25 x max(w, h), zero padding outside the
  image (the usual top-down convention); labelled keypoints outside the box become v=0.

At prediction time no keypoints are known: "thesis" and "square" crop the square of side
max(w, h) on the bbox centre, kept inside the image (`square_bbox_box`); "bbox_pad" pads.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from PIL import Image
from scipy import ndimage

CROP_MODES = ("thesis", "square", "bbox_pad")
THESIS_MARGIN = 0.1          # the thesis' margin_size: side = 1.1 x the larger keypoint extent


class CropError(ValueError):
    """A person that cannot be cropped; `reason` is the drop reason recorded in meta.json."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class CropBox:
    """An integer box [x0, x1) x [y0, y1) in image pixels, cropped with zero padding where it
    leaves the image and mapped to the size x size crop continuously:
    crop = (p - (x0, y0)) * size / (width, height)."""
    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    def as_list(self) -> list[int]:
        return [int(self.x0), int(self.y0), int(self.x1), int(self.y1)]

    @property
    def negative_start(self) -> bool:
        """Whether a numpy slice of this box would wrap round (never: this box pads)."""
        return False

    def _scale(self, size: int) -> np.ndarray:
        return np.array([size / self.width, size / self.height])

    def to_crop(self, keypoints: np.ndarray, size: int) -> np.ndarray:
        """(J, 3) image keypoints -> (J, 3) float32 crop keypoints; v=0 joints become (0, 0, 0)
        and so do labelled joints outside the crop (possible in bbox_pad mode only)."""
        kps = np.asarray(keypoints, np.float64).reshape(-1, 3)
        xy = (kps[:, :2] - (self.x0, self.y0)) * self._scale(size)
        v = kps[:, 2].copy()
        v[np.any((xy < 0) | (xy >= size), axis=1)] = 0
        return _with_visibility(xy, v)

    def to_image(self, xy: np.ndarray, size: int) -> np.ndarray:
        """(..., 2) crop coordinates -> image coordinates (inverse of `to_crop`)."""
        return np.asarray(xy, np.float64) / self._scale(size) + (self.x0, self.y0)

    def pixel_to_crop(self, xy: np.ndarray, size: int) -> np.ndarray:
        """(..., 2) image pixel indices -> where the resize puts those pixels' centres in the
        crop, as (fractional) crop pixel indices: (p + 0.5 - (x0, y0)) * scale - 0.5, the
        half-pixel grid of Pillow's resize (and of skimage's)."""
        return (np.asarray(xy, np.float64) + 0.5 - (self.x0, self.y0)) * self._scale(size) - 0.5

    def crop(self, photo: np.ndarray, size: int) -> np.ndarray:
        """(H, W, 3) uint8 photo -> (size, size, 3) uint8 crop; black outside the photo,
        resized with Pillow's bilinear filter (antialiased when shrinking)."""
        patch = Image.fromarray(photo).crop((self.x0, self.y0, self.x1, self.y1))
        return np.asarray(patch.resize((size, size), Image.Resampling.BILINEAR), np.uint8)


@dataclasses.dataclass(frozen=True)
class ThesisBox(CropBox):
    """A thesis crop: `photo[y0:y1, x0:x1]` with numpy semantics on a photo of
    `image_width` x `image_height`, and the thesis' integer keypoint rule."""
    image_width: int = 0
    image_height: int = 0

    def slices(self) -> tuple[slice, slice]:
        """The (rows, cols) the thesis' slice really takes (wrap-around and clipping done)."""
        rows = slice(*slice(self.y0, self.y1).indices(self.image_height)[:2])
        cols = slice(*slice(self.x0, self.x1).indices(self.image_width)[:2])
        return rows, cols

    @property
    def crop_hw(self) -> tuple[int, int]:
        rows, cols = self.slices()
        return max(0, rows.stop - rows.start), max(0, cols.stop - cols.start)

    @property
    def negative_start(self) -> bool:
        """True where the thesis' slice starts below 0, so numpy wraps it round."""
        return self.x0 < 0 or self.y0 < 0

    def to_crop(self, keypoints: np.ndarray, size: int) -> np.ndarray:
        """(J, 3) COCO keypoints -> the thesis' integer crop keypoints as float32:
        (p - 1 - (x0, y0)) * size // (crop width, crop height). Labelled joints keep their
        value even where it falls outside the crop (heatmaps ignore them); v=0 -> (0, 0, 0)."""
        kps = np.asarray(keypoints, np.float64).reshape(-1, 3)
        h, w = self.crop_hw
        xy = (kps[:, :2] - 1 - (self.x0, self.y0)) * size // np.array([w, h])
        return _with_visibility(xy, kps[:, 2])

    def to_image(self, xy: np.ndarray, size: int) -> np.ndarray:
        """(..., 2) crop coordinates -> COCO image coordinates (the continuous inverse of
        `to_crop`, the 1-pixel shift included)."""
        h, w = self.crop_hw
        return np.asarray(xy, np.float64) * (np.array([w, h]) / size) + (self.x0 + 1,
                                                                          self.y0 + 1)

    def pixel_to_crop(self, xy: np.ndarray, size: int) -> np.ndarray:
        """As CropBox's, on the rows and columns the thesis' slice really takes."""
        rows, cols = self.slices()
        h, w = self.crop_hw
        return ((np.asarray(xy, np.float64) + 0.5 - (cols.start, rows.start))
                * (size / np.array([w, h])) - 0.5)

    def crop(self, photo: np.ndarray, size: int) -> np.ndarray:
        """The thesis' crop: the numpy slice, `resize_like_skimage`, `(img * 255)` truncated
        to uint8."""
        rows, cols = self.slices()
        resized = resize_like_skimage(photo[rows, cols], (size, size))
        return (resized * 255).astype(np.uint8)


def label_offsets_x(box: CropBox, keypoints, size: int) -> np.ndarray:
    """How far right of the pixel it marks each labelled joint's crop label lies, in crop
    pixels: label x minus `pixel_to_crop` x, over the joints labelled inside the crop.

    Annotations are read as pixel indices (COCO's keypoints are, and the synthetic figures
    are drawn so). Each crop mode has its own offset: "square" and "bbox_pad" label with the
    continuous (p - x0) * scale, half a pixel off the resize grid: (1 - scale) / 2; the thesis'
    floored (p - 1 - x0) * scale lies 1.5 x scale pixels left on average (1.5 x scale - 0.5
    where scale and keypoints are integers: 1 pixel at scale 1). A
    model learns its labels' offset, which the flip test must undo (`heatmap.flip_shift`)."""
    kps = np.asarray(keypoints, np.float64).reshape(-1, 3)
    labels = box.to_crop(kps, size)
    inside = (labels[:, 2] > 0) & np.all((labels[:, :2] >= 0) & (labels[:, :2] < size), axis=1)
    return labels[inside, 0] - box.pixel_to_crop(kps[inside, :2], size)[:, 0]


def _with_visibility(xy: np.ndarray, v: np.ndarray) -> np.ndarray:
    out = np.zeros((len(v), 3))
    out[:, :2] = xy
    out[:, 2] = v
    out[v == 0] = 0
    return out.astype(np.float32)


def resize_like_skimage(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """`skimage.transform.resize(image, shape)` (order 1, mode "reflect", anti-aliasing on
    when any axis shrinks, clip) with scipy.ndimage, as the thesis resized its crops:
    uint8 (h, w[, C]) -> float64 (shape[0], shape[1][, C]) in [0, 1]. Gaussian pre-filter
    with sigma max(0, (factor - 1) / 2) per axis, then ndimage.zoom with grid_mode=True;
    skimage's "reflect" is ndimage's "mirror"."""
    image = np.asarray(image)
    if image.size == 0:
        raise ValueError("cannot resize an empty crop")
    as_float = image.astype(np.float64) / 255.0 if image.dtype == np.uint8 else \
        image.astype(np.float64)
    out_shape = tuple(shape) + image.shape[2:]
    factors = np.divide(image.shape, out_shape)
    filtered = as_float
    if np.any(factors > 1):
        sigma = np.maximum(0, (factors - 1) / 2)
        filtered = ndimage.gaussian_filter(as_float, sigma, cval=0, mode="mirror")
    out = ndimage.zoom(filtered, [1 / f for f in factors], order=1, mode="mirror", cval=0,
                       grid_mode=True)
    return np.clip(out, as_float.min(), as_float.max())


def _labelled(keypoints: np.ndarray) -> np.ndarray:
    kps = np.asarray(keypoints, np.float64).reshape(-1, 3)
    return kps[kps[:, 2] != 0, :2]


def thesis_box(keypoints, bbox, width: int, height: int,
               margin: float = THESIS_MARGIN) -> ThesisBox:
    """The thesis' `crop_image` box, step by step (its own quirks kept: see DESIGN.md).

    Raises CropError("no_labelled_keypoint") when sum(v) == 0, "not_centrable" when a box as
    wide as the vertical keypoint extent, centred on the keypoint x-centre, leaves the image
    horizontally (the thesis' drop test), "empty_crop" when the thesis' slice would be empty
    (its code would have crashed there)."""
    kps = np.asarray(keypoints, np.float64).reshape(-1, 3)
    if int(np.sum(kps[:, 2])) == 0:
        raise CropError("no_labelled_keypoint")
    pts = _labelled(kps)
    kx_lo, ky_lo = pts.min(axis=0)
    kx_hi, ky_hi = pts.max(axis=0)
    bx, by, bw, bh = bbox
    # COCO bbox to integers, grown to hold every labelled keypoint.
    x0 = min(math.floor(bx), kx_lo)
    y0 = min(math.floor(by), ky_lo)
    x1 = max(math.ceil(bx + bw), kx_hi)
    y1 = max(math.ceil(by + bh), ky_hi)
    cx = kx_lo + (kx_hi - kx_lo) / 2
    cy = ky_lo + (ky_hi - ky_lo) / 2
    if cx - (ky_hi - ky_lo) / 2 < 0 or cx + (ky_hi - ky_lo) / 2 > width:
        raise CropError("not_centrable")
    # Square it by growing the shorter side (ceil on the far side, floor on the near side).
    if x1 - x0 > y1 - y0:
        extra = ((x1 - x0) - (y1 - y0)) / 2
        y1 += math.ceil(extra)
        y0 -= math.floor(extra)
    elif y1 - y0 > x1 - x0:
        extra = ((y1 - y0) - (x1 - x0)) / 2
        x1 += math.ceil(extra)
        x0 -= math.floor(extra)
    shift = math.floor(cx - (x0 + (x1 - x0) / 2))
    x0, x1 = x0 + shift, x1 + shift
    side = max(ky_hi - ky_lo, kx_hi - kx_lo) * (1 + margin)
    if side != 0:
        half = int((x1 - x0 - side) // 2)
        x0, x1 = x0 + half, x1 - half
    # Back inside horizontally; the y range changes with it (the thesis' arithmetic).
    if x0 < 0:
        x1, y1, y0, x0 = x1 - x0, y1 - x0, y0 + x0, 0
    elif x1 > width:
        over = x1 - width
        x1, x0, y0, y1 = width, x0 + over, y0 + over, y1 - over
    if side != 0:
        half = int((y1 - y0 - side) // 2)
        y0, y1 = y0 + half, y1 - half
    if side < kx_hi - kx_lo or side < ky_hi - ky_lo:
        raise CropError("keypoints_cannot_fit")
    # (Every y change above is symmetric, so the box's y-centre is still the squared box's,
    # the one the thesis took before resizing y.)
    shift = math.floor(cy - (y0 + (y1 - y0) / 2))
    y0, y1 = y0 + shift, y1 + shift
    if y0 < 0:
        y1, y0 = y1 - y0, 0
    elif y1 > height:
        y0, y1 = y0 - (y1 - height), height
    box = ThesisBox(int(x0), int(y0), int(x1), int(y1), int(width), int(height))
    if 0 in box.crop_hw:
        raise CropError("empty_crop")
    return box


def square_box(keypoints, bbox, width: int, height: int) -> CropBox:
    """Crop mode "square": side 1.1 x the larger labelled-keypoint extent on its centre (the
    square bbox rule when the extent is zero), shifted back inside and shrunk to fit; a person
    whose labelled keypoints then fall outside is dropped ("keypoints_cannot_fit")."""
    pts = _labelled(keypoints)
    if len(pts) == 0:
        raise CropError("no_labelled_keypoint")
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    extent = float(np.max(hi - lo))
    if extent > 0:
        box = _square_inside((lo + hi) / 2, 1.1 * extent, width, height)
    else:
        box = square_bbox_box(bbox, width, height)
    if np.any(pts < (box.x0, box.y0)) or np.any(pts >= (box.x1, box.y1)):
        raise CropError("keypoints_cannot_fit")
    return box


def square_bbox_box(bbox, width: int, height: int) -> CropBox:
    """The square of side max(w, h) on the COCO bbox centre, kept inside the image (the
    "square" mode's fallback, and the "thesis"/"square" box at prediction time)."""
    bx, by, bw, bh = bbox
    return _square_inside(np.array([bx + bw / 2, by + bh / 2]), float(max(bw, bh)),
                          width, height)


def _square_inside(centre, side: float, width: int, height: int) -> CropBox:
    """A square on `centre`, shifted back inside the image, shrunk to fit if needed."""
    side = min(max(int(round(side)), 1), width, height)
    x0 = min(max(int(round(centre[0] - side / 2)), 0), width - side)
    y0 = min(max(int(round(centre[1] - side / 2)), 0), height - side)
    return CropBox(x0, y0, x0 + side, y0 + side)


def bbox_pad_box(bbox, scale: float = 1.25) -> CropBox:
    """Centred on the bbox, side `scale` x max(w, h); may leave the image (zero padding)."""
    bx, by, bw, bh = bbox
    side = int(round(scale * max(bw, bh)))
    if side < 1:
        raise CropError("degenerate_box")
    x0, y0 = int(round(bx + bw / 2 - side / 2)), int(round(by + bh / 2 - side / 2))
    return CropBox(x0, y0, x0 + side, y0 + side)


def check_mode(mode: str) -> None:
    if mode not in CROP_MODES:
        raise ValueError(f"crop mode must be one of {CROP_MODES}, got {mode!r}")


def person_box(mode: str, keypoints, bbox, width: int, height: int) -> CropBox:
    """The crop box of one annotated person in `mode`; raises CropError with the drop
    reason."""
    check_mode(mode)
    if mode == "thesis":
        return thesis_box(keypoints, bbox, width, height)
    if mode == "square":
        return square_box(keypoints, bbox, width, height)
    if len(_labelled(keypoints)) == 0:
        raise CropError("no_labelled_keypoint")
    return bbox_pad_box(bbox)


def inference_box(mode: str, bbox, width: int, height: int) -> CropBox:
    """The crop box of a person known only by a bbox (prediction time). "thesis": the square
    bbox box, cropped and mapped with the thesis' rules (slice, skimage resize, 1-pixel
    shift); "square": the same box, cropped as that mode does; "bbox_pad" as in training.
    A bbox of None means the whole image: the square of side max(width, height) on its
    centre, zero padded, in every mode."""
    check_mode(mode)
    if bbox is None:
        return bbox_pad_box((0, 0, width, height), scale=1.0)
    if mode == "bbox_pad":
        return bbox_pad_box(bbox)
    box = square_bbox_box(bbox, width, height)
    if mode == "thesis":
        return ThesisBox(box.x0, box.y0, box.x1, box.y1, width, height)
    return box


def photo_array(image: Image.Image) -> np.ndarray:
    """A PIL photo as the (H, W, 3) uint8 array every crop is taken from (grey and CMYK
    photos become RGB, as the thesis' grey crops were stacked to three channels)."""
    return np.asarray(image.convert("RGB"), np.uint8)
