"""Poses of the people in photos with a trained model: crop, heatmaps, keypoints, drawing.

    python -m shg_jax.predict --workdir DIR --image PHOTO.jpg [--bbox x,y,w,h ...]
        [--checkpoint best] [--out PHOTO_pose.png] [--json PHOTO_pose.json]
    python -m shg_jax.predict --workdir DIR --image FOLDER [--boxes boxes.json] --out OUT_DIR
    python -m shg_jax.predict --workdir DIR --image FOLDER --person-boxes DETECTIONS.json

Each person box (COCO x, y, w, h in image pixels; none given: the whole image is one person)
is cropped with the crop code data_prep used (the run's crop mode: `thesis` and `square`,
whose training boxes need keypoints, crop the square of side max(w, h) on the box centre
inside the photo, `thesis` with its slice, resize and 1-pixel shift; `bbox_pad` the padded
1.25x square), the model predicts heatmaps, the keypoints are decoded (argmax, or as
config.decode / --flip / --subpixel say) and mapped back to image pixels (shg_jax.topdown).
The picture shows each skeleton (limbs coloured by side: left orange, right blue; joints below
--threshold dimmed) and its crop box; the JSON holds per person the keypoints as [x, y, score]
(score = the heatmap peak), the box score and the person's score (box score x mean peak).

For a folder, --boxes is a COCO-style JSON: "images" (id, file_name relative to the folder)
and "annotations" (image_id, bbox); images without annotations, or every image when no
--boxes is given, are predicted as one person filling the image. --person-boxes takes a
detector's output in the COCO detection-results format (a list of image_id, bbox, score,
category_id; only category 1, person, is used), e.g. the person detections published with
HRNet for val2017; photos are matched by the COCO image id their names spell
(000000000139.jpg), photos without detections are left out, and each photo's poses go
through OKS-NMS (threshold 0.9) as in COCO AP evaluation with detector boxes.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import io
import json
import pathlib
import sys

from shg_jax import cpu_flags

if __name__ == "__main__":
    cpu_flags.restart_with_hugepage_malloc()    # before the imports below (main.py)

import numpy as np
from PIL import Image, ImageDraw

from shg_jax import cli, coco_eval, data, fileio, topdown
from shg_jax import crop as cropping
from shg_jax.draw import draw_skeleton
from shg_jax.errors import UserError
from shg_jax.runs import checkpoint_label, open_run

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class PredictError(UserError):
    """Bad input (image, box, boxes file); the message names it and what to do."""


def parse_bbox(text: str) -> tuple[float, float, float, float]:
    try:
        x, y, w, h = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--bbox must be x,y,w,h (4 numbers), got {text!r}")
    return x, y, w, h


def check_bbox(bbox, width: int, height: int, where) -> None:
    x, y, w, h = bbox
    if w <= 0 or h <= 0 or x >= width or y >= height or x + w <= 0 or y + h <= 0:
        raise PredictError(f"{where}: box {list(bbox)} (x, y, w, h) is empty or outside the "
                           f"{width}x{height} image")


def draw_people(image: Image.Image, people: list[topdown.Person],
                threshold: float) -> Image.Image:
    out = image
    for p in people:
        kps = np.concatenate([p.keypoints, np.full((len(p.keypoints), 1), 2.0)], axis=1)
        radius = max(2.0, max(p.box.width, p.box.height) / 80)
        out = draw_skeleton(out, kps, radius=radius, width=max(2, int(radius * 0.7)),
                            scores=p.scores, threshold=threshold)
        ImageDraw.Draw(out).rectangle(p.box.as_list(), outline=(200, 200, 200))
    return out


def run_crop_mode(config) -> str:
    """The crop mode of the data a run was trained on (the thesis' if the data moved)."""
    try:
        return data.load_meta(config.data_dir)["crop_mode"]
    except data.DataError:
        return "thesis"


@dataclasses.dataclass
class Job:
    """One photo to predict: its person boxes (none = the whole photo is one person) and,
    for detector boxes, their scores (the poses are then OKS-NMS'd)."""
    path: pathlib.Path
    image_id: int | None = None
    bboxes: list = dataclasses.field(default_factory=list)
    box_scores: list | None = None


def read_boxes(path, folder: pathlib.Path) -> list[Job]:
    """A COCO-style boxes file -> one Job per image it lists."""
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
    return [Job(folder / images[i], i, boxes[i]) for i in sorted(images)]


def detection_jobs(path, photos: list[pathlib.Path]) -> list[Job]:
    """A COCO detection-results file -> one Job per photo with detections; photos are
    matched by COCO image id = the number their name spells (000000000139.jpg is 139)."""
    by_id = {}
    for photo in photos:
        if photo.stem.isdigit():
            by_id[int(photo.stem)] = photo
    detections = coco_eval.read_person_boxes(path, set(by_id), known_as="the photos' names "
                                             "(COCO image ids, e.g. 000000000139.jpg)")
    return [Job(by_id[i], i, [b for b, _ in dets], [s for _, s in dets])
            for i, dets in sorted(detections.items())]


def write_png(image: Image.Image, path: pathlib.Path) -> None:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    path.parent.mkdir(parents=True, exist_ok=True)
    fileio.write_bytes(path, buf.getvalue())


def parse_args(argv=None):
    p = cli.parser("python -m shg_jax.predict", __doc__,
                   "python -m shg_jax.predict --workdir runs/demo --image photo.jpg --bbox "
                   "40,30,120,200 --out predictions", notes=__doc__.split("\n\n", 1)[1])
    cli.add_run_arguments(p, split=None)
    p.add_argument("--image", required=True, help="a photo, or a folder of photos")
    p.add_argument("--bbox", action="append", type=parse_bbox, metavar="X,Y,W,H",
                   help="a person box in image pixels; repeatable (single image only)")
    p.add_argument("--boxes", help="COCO-style JSON of boxes for a folder of photos")
    p.add_argument("--person-boxes", metavar="DETECTIONS.json",
                   help="person detections in the COCO results format (image_id, bbox, "
                        "score, category_id), photos named by COCO image id; person score = "
                        "box score x mean joint peak, OKS-NMS per photo")
    p.add_argument("--out", help="annotated picture (single image; default PHOTO_pose.png "
                                 "in the current folder) or output folder (folder input)")
    p.add_argument("--json", help="keypoints JSON (default: beside --out)")
    p.add_argument("--threshold", type=float, default=0.1,
                   help="joints whose heatmap peak is below this are drawn dimmed")
    p.add_argument("--crop-mode", choices=cropping.CROP_MODES,
                   help="default: the crop mode of the data the run was trained on")
    cli.add_decode_arguments(p)
    return p.parse_args(argv)


@cli.command
def main(argv=None) -> int:
    args = parse_args(argv)
    source = pathlib.Path(args.image)
    if args.person_boxes and (args.bbox or args.boxes):
        raise PredictError("--person-boxes replaces --bbox and --boxes; give one of them")
    if source.is_dir():
        if args.bbox:
            raise PredictError("--bbox is for a single image; use --boxes for a folder")
        photos = [f for f in sorted(source.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
        jobs = (detection_jobs(args.person_boxes, photos) if args.person_boxes else
                read_boxes(args.boxes, source) if args.boxes else
                [Job(f) for f in photos])
        out_dir = pathlib.Path(args.out or "predictions")
        pictures = {job.path: out_dir / f"{job.path.stem}_pose.png" for job in jobs}
        json_path = pathlib.Path(args.json or out_dir / "predictions.json")
    elif source.is_file():
        jobs = (detection_jobs(args.person_boxes, [source]) if args.person_boxes else
                [Job(source, None, args.bbox or [])])
        out = pathlib.Path(args.out or f"{source.stem}_pose.png")
        pictures = {source: out}
        json_path = pathlib.Path(args.json or out.with_suffix(".json"))
    else:
        raise PredictError(f"--image {source}: no such file or folder")
    if not jobs:
        raise PredictError(f"no images to predict in {source}" + (
            f" with detections in {args.person_boxes}" if args.person_boxes else ""))
    config, steps, state, record = open_run(args.workdir, args.checkpoint, args.data_dir,
                                            **cli.decode_overrides(args))
    crop_mode = args.crop_mode or run_crop_mode(config)
    results, failed, loaded = [], [], collections.deque()

    def photos():
        """The readable photos with valid boxes, in order; the others are skipped."""
        for job in jobs:
            try:
                image = topdown.load_photo(job.path)
                for b in job.bboxes:
                    check_bbox(b, image.width, image.height, job.path)
            except (PredictError, topdown.PhotoError) as e:
                if len(jobs) == 1:
                    raise PredictError(str(e)) from e
                print(f"skipped: {e}", file=sys.stderr)
                failed.append(str(job.path))
                continue
            loaded.append((job, image))
            yield image, job.bboxes, job.box_scores

    people_per_photo = topdown.predict_photos(
        photos(), topdown.RunHeatmaps(steps, state), input_size=config.model.input_size,
        crop_mode=crop_mode, subpixel=steps.codec.subpixel)
    for people in people_per_photo:
        job, image = loaded.popleft()
        if job.box_scores is not None:
            people = topdown.oks_nms(people)
        write_png(draw_people(image, people, args.threshold), pictures[job.path])
        results.append({"image": str(job.path), "image_id": job.image_id,
                        "picture": str(pictures[job.path]),
                        "people": [p.to_json() for p in people]})
        print(f"{job.path}: {len(people)} person(s) -> {pictures[job.path]}")
    fileio.write_json(json_path, {"workdir": str(args.workdir),
                                  "checkpoint": checkpoint_label(args.workdir,
                                                                     args.checkpoint, record),
                                  "epoch": record.epoch,
                                  "crop_mode": crop_mode,
                                  "decode": config.decode.to_dict(),
                                  "images": results, "skipped": failed})
    print(f"wrote {json_path}" + (f"; {len(failed)} unreadable image(s) skipped" if failed
                                  else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
