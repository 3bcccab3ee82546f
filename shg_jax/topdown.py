"""Top-down pose estimation on photos: person boxes -> crops -> heatmaps -> image keypoints.

Shared by prediction on photos (shg_jax.predict) and COCO AP with detector boxes
(shg_jax.evaluate --person-boxes). A person known only by a box is cropped with
`crop.inference_box`: in the run's crop mode, except that "thesis" and "square", which need
keypoints to place their box in training, crop the square of side max(w, h) on the box
centre (kept inside the photo). The heatmaps are decoded (config.decode) and mapped back to
image pixels through the crop box.

Detector boxes are handled as the top-down codebases (HRNet, mmpose) do: a person's score is
the detector's box score times its mean joint peak, and near-duplicate poses of one image are
removed by OKS-NMS (greedy, best score first, threshold 0.9).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Iterable, Iterator

import jax.numpy as jnp
import numpy as np
from PIL import Image, UnidentifiedImageError

from shg_jax import crop as cropping
from shg_jax import placement
from shg_jax.errors import UserError
from shg_jax.heatmap import decode_heatmaps

#: The OKS threshold above which two poses of one image are the same person (HRNet, mmpose).
OKS_NMS_THRESHOLD = 0.9


@dataclasses.dataclass
class Person:
    bbox: tuple | None               # the box asked for (x, y, w, h), None = whole image
    box: cropping.CropBox            # the box that was cropped
    keypoints: np.ndarray            # (J, 2) image pixels (x, y)
    scores: np.ndarray               # (J,) heatmap peak values
    box_score: float = 1.0           # the detector's score of `bbox` (1 for given boxes)

    @property
    def score(self) -> float:
        """The person's score: box score x mean joint peak."""
        return self.box_score * float(np.mean(self.scores))

    @property
    def area(self) -> float:
        """The person's scale for OKS: the area of the box asked for (or of the crop)."""
        if self.bbox is not None:
            return float(self.bbox[2] * self.bbox[3])
        return float(self.box.width * self.box.height)

    def to_json(self) -> dict:
        kps = np.concatenate([self.keypoints, self.scores[:, None]], axis=1)
        return {"bbox": None if self.bbox is None else [float(v) for v in self.bbox],
                "crop_box": self.box.as_list(),
                "keypoints": [[round(float(v), 2) for v in row] for row in kps],
                "box_score": float(self.box_score), "score": self.score}


class PhotoError(UserError):
    """A photo that cannot be read; the message names it."""


def load_photo(path) -> Image.Image:
    """A photo as RGB (grey, CMYK and RGBA photos converted)."""
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (OSError, UnidentifiedImageError) as e:
        raise PhotoError(f"cannot read image {path}: {e}") from e


class RunHeatmaps:
    """A trained model as a heatmap function: uint8 crops (N, S, S, 3) -> last-stack heatmaps
    (N, H, W, J), in fixed-size batches (one compile) on every local device."""

    def __init__(self, steps, state, batch_size: int = 16):
        self.steps, self.state = steps, state
        self.batch_size = placement.padded_size(batch_size)

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        out = []
        for start in range(0, len(crops), self.batch_size):
            chunk = crops[start:start + self.batch_size]
            padded = np.zeros((self.batch_size,) + chunk.shape[1:], np.uint8)
            padded[:len(chunk)] = chunk
            batch = placement.shard_batch({"images": padded}, self.steps.mesh, keys=("images",))
            heatmaps = self.steps.infer(self.state, batch["images"])
            out.append(np.asarray(placement.to_host(heatmaps))[:len(chunk)])
        return np.concatenate(out)


def predict_people(image: Image.Image, bboxes, heatmap_fn, *, input_size: int,
                   crop_mode: str, subpixel: bool = False, box_scores=None) -> list[Person]:
    """One Person per bbox (None or [] = the whole image). `heatmap_fn` maps uint8 crops
    (N, S, S, 3) to heatmaps (N, H, W, J); `box_scores` (one per bbox) default to 1."""
    return next(predict_photos([(image, bboxes, box_scores)], heatmap_fn,
                               input_size=input_size, crop_mode=crop_mode, subpixel=subpixel))


def predict_photos(photos: Iterable, heatmap_fn, *, input_size: int, crop_mode: str,
                   subpixel: bool = False, batch_size: int = 64) -> Iterator[list[Person]]:
    """(image, bboxes, box_scores) per photo -> its Persons, photo by photo, in order; the
    crops of consecutive photos share `heatmap_fn` calls of about `batch_size` crops (a photo
    with one or two people would waste most of a batch), and no more are held at once."""
    pending, n_crops = [], 0

    def flush():
        crops = np.concatenate([crops for _, _, _, crops in pending])
        xy, scores = decode_heatmaps(jnp.asarray(heatmap_fn(crops)), input_size=input_size,
                                     subpixel=subpixel)
        xy, scores = np.asarray(xy), np.asarray(scores)
        start = 0
        for bboxes, boxes, box_scores, _ in pending:
            yield [Person(b, box, box.to_image(xy[start + i], input_size), scores[start + i],
                          float(s))
                   for i, (b, box, s) in enumerate(zip(bboxes, boxes, box_scores))]
            start += len(boxes)

    for image, bboxes, box_scores in photos:
        bboxes = list(bboxes) if bboxes else [None]
        box_scores = [1.0] * len(bboxes) if box_scores is None else list(box_scores)
        boxes = [cropping.inference_box(crop_mode, b, image.width, image.height)
                 for b in bboxes]
        photo = cropping.photo_array(image)
        pending.append((bboxes, boxes, box_scores,
                        np.stack([box.crop(photo, input_size) for box in boxes])))
        n_crops += len(boxes)
        if n_crops >= batch_size:
            yield from flush()
            pending, n_crops = [], 0
    if pending:
        yield from flush()


@functools.cache
def coco_sigmas() -> np.ndarray:
    """COCO's per-joint OKS sigmas (pycocotools' own table, COCO keypoint order)."""
    from pycocotools.cocoeval import Params

    return np.asarray(Params(iouType="keypoints").kpt_oks_sigmas, np.float64)


def oks(a: Person, b: Person, sigmas: np.ndarray) -> float:
    """Object keypoint similarity of two predicted poses, COCO's formula with every joint and
    the mean of the two areas as the scale: mean_j exp(-d_j^2 / (2 area (2 sigma_j)^2))."""
    d2 = np.sum((a.keypoints - b.keypoints) ** 2, axis=-1)
    area = (a.area + b.area) / 2
    return float(np.mean(np.exp(-d2 / (2 * max(area, np.finfo(float).eps)
                                       * (2 * sigmas) ** 2))))


def oks_nms(people: list[Person], threshold: float = OKS_NMS_THRESHOLD) -> list[Person]:
    """Greedy non-maximum suppression of one image's poses: best score first, dropping every
    pose whose OKS with a kept one exceeds `threshold`. Kept poses in score order."""
    sigmas = coco_sigmas()
    kept: list[Person] = []
    for person in sorted(people, key=lambda p: -p.score):
        if all(oks(person, k, sigmas) <= threshold for k in kept):
            kept.append(person)
    return kept
