"""Poses of the people in photos with a trained model: crop, heatmaps, keypoints, drawing.

    python -m shg_jax.predict --workdir DIR --image PHOTO.jpg [--bbox x,y,w,h ...]
        [--checkpoint best] [--out PHOTO_pose.png] [--json PHOTO_pose.json]
    python -m shg_jax.predict --workdir DIR --image FOLDER [--boxes boxes.json] --out OUT_DIR

Each person box (COCO x, y, w, h in image pixels; none given: the whole image is one person)
is cropped with the crop code data_prep used (the run's crop mode: `thesis` and `square` crop
the square of side max(w, h) on the box centre inside the photo, `thesis` with its slice,
resize and 1-pixel shift; `bbox_pad` the padded 1.25x square), the model predicts heatmaps,
the keypoints are decoded (argmax, or as config.decode / --flip / --subpixel say) and mapped
back to image pixels. The picture shows each skeleton (limbs coloured by side: left orange,
right blue; joints below --threshold dimmed) and its crop box; the JSON holds per person the
keypoints as [x, y, score] (score = the heatmap peak) and their mean as the person's score.

For a folder, --boxes is a COCO-style JSON: "images" (id, file_name relative to the folder)
and "annotations" (image_id, bbox); images without annotations, or every image when no
--boxes is given, are predicted as one person filling the image.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image, ImageDraw, UnidentifiedImageError

from shg_jax import crop as cropping
from shg_jax import data, fileio
from shg_jax import sharding as shd
from shg_jax.checkpoint import CheckpointError
from shg_jax.draw import draw_skeleton
from shg_jax.evaluate import add_decode_arguments, load_run
from shg_jax.heatmap import decode_heatmaps

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class PredictError(Exception):
    """Bad input (image, box, boxes file); the message names it and what to do."""


@dataclasses.dataclass
class Person:
    bbox: tuple | None               # the box asked for (x, y, w, h), None = whole image
    box: cropping.CropBox            # the box that was cropped
    keypoints: np.ndarray            # (J, 2) image pixels (x, y)
    scores: np.ndarray               # (J,) heatmap peak values

    def to_json(self) -> dict:
        kps = np.concatenate([self.keypoints, self.scores[:, None]], axis=1)
        return {"bbox": None if self.bbox is None else [float(v) for v in self.bbox],
                "crop_box": self.box.as_list(),
                "keypoints": [[round(float(v), 2) for v in row] for row in kps],
                "score": float(np.mean(self.scores))}


def parse_bbox(text: str) -> tuple[float, float, float, float]:
    try:
        x, y, w, h = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--bbox must be x,y,w,h (4 numbers), got {text!r}")
    return x, y, w, h


def load_image(path) -> Image.Image:
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (OSError, UnidentifiedImageError) as e:
        raise PredictError(f"cannot read image {path}: {e}") from e


def check_bbox(bbox, width: int, height: int, where) -> None:
    x, y, w, h = bbox
    if w <= 0 or h <= 0 or x >= width or y >= height or x + w <= 0 or y + h <= 0:
        raise PredictError(f"{where}: box {list(bbox)} (x, y, w, h) is empty or outside the "
                           f"{width}x{height} image")


def predict_people(image: Image.Image, bboxes, heatmap_fn, *, input_size: int,
                   crop_mode: str, subpixel: bool = False) -> list[Person]:
    """One Person per bbox (None or [] = the whole image). `heatmap_fn` maps uint8 crops
    (N, S, S, 3) to heatmaps (N, H, W, J)."""
    bboxes = list(bboxes) if bboxes else [None]
    boxes = [cropping.inference_box(crop_mode, b, image.width, image.height) for b in bboxes]
    photo = cropping.photo_array(image)
    crops = np.stack([box.crop(photo, input_size) for box in boxes])
    xy, scores = decode_heatmaps(jnp.asarray(heatmap_fn(crops)), input_size=input_size,
                                 subpixel=subpixel)
    xy, scores = np.asarray(xy), np.asarray(scores)
    return [Person(b, box, box.to_image(xy[i], input_size), scores[i])
            for i, (b, box) in enumerate(zip(bboxes, boxes))]


def draw_people(image: Image.Image, people: list[Person], threshold: float) -> Image.Image:
    out = image
    for p in people:
        kps = np.concatenate([p.keypoints, np.full((len(p.keypoints), 1), 2.0)], axis=1)
        radius = max(2.0, max(p.box.width, p.box.height) / 80)
        out = draw_skeleton(out, kps, radius=radius, width=max(2, int(radius * 0.7)),
                            scores=p.scores, threshold=threshold)
        ImageDraw.Draw(out).rectangle(p.box.as_list(), outline=(200, 200, 200))
    return out


class Model:
    """A trained run as a heatmap function over uint8 crops, on every local device."""

    def __init__(self, workdir, checkpoint: str, *, flip=None, subpixel=None,
                 batch_size: int = 16):
        self.config, self.steps, self.state, self.record = load_run(
            workdir, checkpoint, flip=flip, subpixel=subpixel)
        self.batch_size = -(-batch_size // jax.device_count()) * jax.device_count()
        try:
            self.crop_mode = data.load_meta(self.config.data_dir)["crop_mode"]
        except data.DataError:
            self.crop_mode = "thesis"                  # data moved: the thesis' default

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        out = []
        for start in range(0, len(crops), self.batch_size):
            chunk = crops[start:start + self.batch_size]
            padded = np.zeros((self.batch_size,) + chunk.shape[1:], np.uint8)
            padded[:len(chunk)] = chunk
            batch = shd.shard_batch({"images": padded}, self.steps.mesh, keys=("images",))
            out.append(np.asarray(shd.to_host(self.steps.infer(self.state,
                                                               batch["images"])))[:len(chunk)])
        return np.concatenate(out)


def read_boxes(path, folder: pathlib.Path) -> list[tuple[pathlib.Path, int | None, list]]:
    """A COCO-style boxes file -> [(image path, image id, [bbox, ...])]."""
    try:
        spec = json.loads(pathlib.Path(path).read_text())
        images = {im["id"]: im["file_name"] for im in spec["images"]}
        boxes = {i: [] for i in images}
        for ann in spec.get("annotations", []):
            boxes[ann["image_id"]].append(tuple(float(v) for v in ann["bbox"]))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise PredictError(f"cannot read boxes file {path}: {e!r}; expected COCO-style JSON "
                           f"with 'images' (id, file_name) and 'annotations' (image_id, "
                           f"bbox)") from e
    return [(folder / images[i], i, boxes[i]) for i in sorted(images)]


def write_png(image: Image.Image, path: pathlib.Path) -> None:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    path.parent.mkdir(parents=True, exist_ok=True)
    fileio.write_bytes(path, buf.getvalue())


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m shg_jax.predict",
                                description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--workdir", required=True, help="a training run's folder")
    p.add_argument("--checkpoint", default="best",
                   help="best | latest | best_loss | an epoch number (default best)")
    p.add_argument("--image", required=True, help="a photo, or a folder of photos")
    p.add_argument("--bbox", action="append", type=parse_bbox, metavar="X,Y,W,H",
                   help="a person box in image pixels; repeatable (single image only)")
    p.add_argument("--boxes", help="COCO-style JSON of boxes for a folder of photos")
    p.add_argument("--out", help="annotated picture (single image; default PHOTO_pose.png "
                                 "in the current folder) or output folder (folder input)")
    p.add_argument("--json", help="keypoints JSON (default: beside --out)")
    p.add_argument("--threshold", type=float, default=0.1,
                   help="joints whose heatmap peak is below this are drawn dimmed")
    p.add_argument("--crop-mode", choices=cropping.CROP_MODES,
                   help="default: the crop mode of the data the run was trained on")
    add_decode_arguments(p)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    source = pathlib.Path(args.image)
    try:
        if source.is_dir():
            if args.bbox:
                raise PredictError("--bbox is for a single image; use --boxes for a folder")
            jobs = (read_boxes(args.boxes, source) if args.boxes else
                    [(f, None, []) for f in sorted(source.iterdir())
                     if f.suffix.lower() in IMAGE_SUFFIXES])
            out_dir = pathlib.Path(args.out or "predictions")
            pictures = {job[0]: out_dir / f"{job[0].stem}_pose.png" for job in jobs}
            json_path = pathlib.Path(args.json or out_dir / "predictions.json")
        elif source.is_file():
            jobs = [(source, None, args.bbox or [])]
            out = pathlib.Path(args.out or f"{source.stem}_pose.png")
            pictures = {source: out}
            json_path = pathlib.Path(args.json or out.with_suffix(".json"))
        else:
            raise PredictError(f"--image {source}: no such file or folder")
        if not jobs:
            raise PredictError(f"no images to predict in {source}")
        model = Model(args.workdir, args.checkpoint, flip=args.flip, subpixel=args.subpixel)
    except (PredictError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    crop_mode = args.crop_mode or model.crop_mode
    results, failed = [], []
    for path, image_id, bboxes in jobs:
        try:
            image = load_image(path)
            for b in bboxes:
                check_bbox(b, image.width, image.height, path)
        except PredictError as e:
            if len(jobs) == 1:
                print(f"error: {e}", file=sys.stderr)
                return 2
            print(f"skipped: {e}", file=sys.stderr)
            failed.append(str(path))
            continue
        people = predict_people(image, bboxes, model, input_size=model.config.model.input_size,
                                crop_mode=crop_mode, subpixel=model.steps.subpixel)
        write_png(draw_people(image, people, args.threshold), pictures[path])
        results.append({"image": str(path), "image_id": image_id,
                        "picture": str(pictures[path]),
                        "people": [p.to_json() for p in people]})
        print(f"{path}: {len(people)} person(s) -> {pictures[path]}")
    fileio.write_json(json_path, {"workdir": str(args.workdir), "checkpoint": args.checkpoint,
                                  "epoch": model.record["epoch"], "crop_mode": crop_mode,
                                  "decode": model.config.decode.to_dict(),
                                  "images": results, "skipped": failed})
    print(f"wrote {json_path}" + (f"; {len(failed)} unreadable image(s) skipped" if failed
                                  else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
