"""COCO person keypoints -> person crops in memory-mappable NumPy shards: `prepare(coco_root,
out)`, which `python -m data_prep.coco` and the demo's synthetic cache run.

Reads annotations/person_keypoints_{train,val}2017.json and the train2017/ val2017/ image
folders. Crops: `shg_jax.crop` (the default "thesis" mode is the thesis' own code, its drops
included). Splits (DESIGN.md): val = val2017; test = --test-size crops drawn from the
train2017 crops by a seeded RNG, crop by crop as the thesis did (persons of one photo can be
in train and test), or with --test-split-by image whole photos at a time (no photo in two
splits); train = the rest.

The work is planned from the JSON alone (crop boxes and drops need only the image sizes),
then images are decoded and cropped on --workers processes in a fixed order, so the output is
byte-identical for any worker count. Each shard is written under a temporary name and
renamed; each split's meta.json follows its last shard and the top-level meta.json comes last.
A rerun resumes a killed run from its last complete shard, does nothing on a complete output,
and starts over with --overwrite.

Besides the crop, each row keeps where it came from (the COCO bbox, the photo's size) and,
when the annotations have a `factors` field ({"name": number or class name}, as the
synthetic data records how each figure was drawn), one array per factor; data without the
field gets none.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import io
import json
import multiprocessing
import os
import pathlib
import shutil
import sys

import numpy as np
from PIL import Image

from shg_jax import crop as cropping
from shg_jax import fileio, shards
from shg_jax.errors import UserError
from shg_jax.progress import Progress
from shg_jax.skeleton import N_JOINTS

SOURCES = {"train": "train2017", "val": "val2017"}


@dataclasses.dataclass
class Person:
    ann_id: int
    keypoints: np.ndarray            # (17, 3) image pixels
    box: cropping.CropBox
    bbox: tuple = (0.0, 0.0, 0.0, 0.0)   # the annotation's COCO bbox (x, y, w, h)
    factors: dict = dataclasses.field(default_factory=dict)   # its `factors` field, if any


@dataclasses.dataclass
class ImageTask:
    path: str
    image_id: int
    persons: list                    # of Person, in annotation-id order
    photo_size: tuple = (0, 0)       # width, height from the annotation file


@dataclasses.dataclass
class SplitPlan:
    tasks: list = dataclasses.field(default_factory=list)
    persons_seen: int = 0
    persons_with_keypoints: int = 0
    dropped: collections.Counter = dataclasses.field(default_factory=collections.Counter)


class InputError(UserError):
    """A missing or unusable input; the message names the path and what to do."""


def annotation_path(root: pathlib.Path, source: str) -> pathlib.Path:
    return root / "annotations" / f"person_keypoints_{source}.json"


def check_inputs(root: pathlib.Path) -> None:
    for source in SOURCES.values():
        ann = annotation_path(root, source)
        if not ann.is_file():
            raise InputError(f"annotation file not found: {ann} (download COCO 2017 "
                             f"annotations, or pass the right --coco-root)")
        if not (root / source).is_dir():
            raise InputError(f"image folder not found: {root / source} (download COCO 2017 "
                             f"{source} images, or pass the right --coco-root)")


def load_coco(path: pathlib.Path):
    from pycocotools.coco import COCO
    try:
        with contextlib.redirect_stdout(io.StringIO()):     # pycocotools prints timings
            return COCO(str(path))
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(f"cannot read {path} as COCO keypoint annotations: {e}") from e


def plan_source(root: pathlib.Path, source: str, crop_mode: str, limit: int | None
                ) -> list[tuple[ImageTask, int, int, collections.Counter]]:
    """Per image (sorted by id): its task, persons seen, persons with keypoints, drops."""
    coco = load_coco(annotation_path(root, source))
    person_cat = coco.getCatIds(catNms=["person"]) or [1]
    image_ids = sorted(i for i in coco.getImgIds() if coco.getAnnIds(imgIds=[i],
                                                                   catIds=person_cat))
    if limit:
        image_ids = image_ids[:limit]
    planned = []
    for image_id in image_ids:
        info = coco.imgs[image_id]
        anns = sorted(coco.loadAnns(coco.getAnnIds(imgIds=[image_id], catIds=person_cat)),
                      key=lambda a: a["id"])
        drops = collections.Counter()
        persons = []
        with_kps = 0
        for ann in anns:
            kps = np.asarray(ann.get("keypoints") or np.zeros(3 * N_JOINTS),
                             np.float64).reshape(N_JOINTS, 3)
            factors = ann.get(shards.FACTORS_FIELD) or {}
            if not isinstance(factors, dict) or not all(
                    isinstance(v, (str, int, float)) for v in factors.values()):
                raise InputError(f"{annotation_path(root, source)}: annotation {ann['id']} "
                                 f"has a {shards.FACTORS_FIELD!r} field that is not "
                                 f"{{name: number or class name}}; fix or remove it")
            if not np.any(kps[:, 2] > 0):
                drops["no_labelled_keypoint"] += 1
                continue
            with_kps += 1
            if ann.get("iscrowd", 0):
                drops["crowd"] += 1
                continue
            try:
                box = cropping.person_box(crop_mode, kps, ann["bbox"], info["width"],
                                          info["height"])
            except cropping.CropError as e:
                drops[e.reason] += 1
                continue
            persons.append(Person(ann["id"], kps, box, tuple(ann["bbox"]), factors))
        task = ImageTask(str(root / source / info["file_name"]), image_id, persons,
                         (info["width"], info["height"]))
        planned.append((task, len(anns), with_kps, drops))
    return planned


def plan_splits(root: pathlib.Path, crop_mode: str, test_size: int, seed: int,
                limit: int | None, test_split_by: str = "crop") -> dict[str, SplitPlan]:
    plans = {name: SplitPlan() for name in shards.SPLITS}

    def add(split, task, seen, with_kps, drops):
        plan = plans[split]
        plan.persons_seen += seen
        plan.persons_with_keypoints += with_kps
        plan.dropped.update(drops)
        if task.persons:
            plan.tasks.append(task)

    for item in plan_source(root, SOURCES["val"], crop_mode, limit):
        add("val", *item)
    train_items = plan_source(root, SOURCES["train"], crop_mode, limit)
    rng = np.random.default_rng(seed)
    if test_split_by == "crop":
        # The thesis' draw: test_size crops chosen one by one from all train2017 crops
        # (persons of one photo can land in both splits).
        crops = [(i, j) for i, item in enumerate(train_items)
                 for j in range(len(item[0].persons))]
        chosen = rng.choice(len(crops), size=min(test_size, len(crops)), replace=False)
        in_test = {crops[c] for c in chosen.tolist()}
        for i, (task, seen, with_kps, drops) in enumerate(train_items):
            test = [p for j, p in enumerate(task.persons) if (i, j) in in_test]
            train = [p for j, p in enumerate(task.persons) if (i, j) not in in_test]
            add("test", dataclasses.replace(task, persons=test), len(test), len(test), {})
            add("train", dataclasses.replace(task, persons=train), seen - len(test),
                with_kps - len(test), drops)
        return plans
    # By image: shuffled images, whole images at a time while they fit, until test_size
    # crops, so that no photo is in two splits.
    order = rng.permutation(len(train_items))
    in_test, n_test = set(), 0
    for i in order:
        n = len(train_items[i][0].persons)
        if n and n_test + n <= test_size:
            in_test.add(int(i))
            n_test += n
        if n_test == test_size:
            break
    for i, item in enumerate(train_items):
        add("test" if i in in_test else "train", *item)
    return plans


def process_image(task: ImageTask, size: int):
    """Decodes one image and crops its persons -> (crops, error); crops are tuples
    (image uint8 (S, S, 3), keypoints float32 (17, 3), image_id, ann_id, COCO bbox,
    photo size, factors dict)."""
    try:
        with Image.open(task.path) as im:
            im.load()
            photo = cropping.photo_array(im)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        return [], f"{type(e).__name__}: {e}"
    return [(p.box.crop(photo, size), p.box.to_crop(p.keypoints, size),
             task.image_id, p.ann_id, p.bbox, task.photo_size, p.factors)
            for p in task.persons], None


def factor_schema(plans: dict) -> dict:
    """{factor name: sorted class names, or None when every value is a number} over the
    `factors` fields of every planned person: the same codes in every split."""
    values: dict = collections.defaultdict(set)
    for plan in plans.values():
        for task in plan.tasks:
            for p in task.persons:
                for name, value in p.factors.items():
                    values[name].add(value)
    return {name: (None if all(isinstance(v, (int, float)) and not isinstance(v, bool)
                               for v in vs) else sorted(map(str, vs)))
            for name, vs in sorted(values.items())}


def factor_values(factors: dict, schema: dict) -> dict:
    """One person's factors as numbers: a class factor as its class index; NaN where the
    person lacks the factor."""
    out = {}
    for name, classes in schema.items():
        value = factors.get(name)
        out[name] = (np.nan if value is None
                     else float(value) if classes is None else classes.index(str(value)))
    return out


def _process(args):
    return process_image(*args)


@dataclasses.dataclass
class WriterState:
    """Where a split's writer stands; saved with every shard so that a rerun can resume."""
    next_task: int = 0
    shards: list = dataclasses.field(default_factory=list)     # [{"name", "count"}]
    dropped: dict = dataclasses.field(default_factory=dict)    # processing-time drops
    unreadable: list = dataclasses.field(default_factory=list)
    rgb_sum: list = dataclasses.field(default_factory=lambda: [0, 0, 0])  # exact
    pixels: int = 0

    @property
    def count(self) -> int:
        return sum(s["count"] for s in self.shards)


def resume_state(split_dir: pathlib.Path) -> WriterState:
    """The state after the last complete shard; removes temporary leftovers."""
    fileio.remove_tmp(split_dir)
    state = WriterState()
    index = 0
    while (split_dir / shards.shard_name(index) / shards.PROGRESS).is_file():
        index += 1
    if index:
        with open(split_dir / shards.shard_name(index - 1) / shards.PROGRESS) as f:
            state = WriterState(**json.load(f))
    # Shard folders past the resume point (none in practice) would be rewritten; drop them.
    for p in split_dir.iterdir() if split_dir.is_dir() else ():
        if p.is_dir() and p.name.isdigit() and int(p.name) >= index:
            shutil.rmtree(p)
    return state


def write_shard(split_dir: pathlib.Path, crops: list, state: WriterState,
                schema: dict) -> None:
    """Writes `crops` (process_image's tuples) as the split's next shard, with the factor
    arrays of `schema` (factor_schema)."""
    name = shards.shard_name(len(state.shards))
    final = split_dir / name
    tmp = fileio.tmp_name(final)
    columns = list(zip(*crops))
    arrays = dict(images=np.stack(columns[0]), keypoints=np.stack(columns[1]),
                  image_id=np.asarray(columns[2], np.int64),
                  ann_id=np.asarray(columns[3], np.int64),
                  box=np.asarray(columns[4], np.float32).reshape(-1, 4),
                  photo_size=np.asarray(columns[5], np.int32).reshape(-1, 2))
    values = [factor_values(f, schema) for f in columns[6]]
    for factor in schema:
        arrays[shards.factor_key(factor)] = np.asarray([v[factor] for v in values],
                                                       np.float32)
    channel_sums = arrays["images"].sum(axis=(0, 1, 2), dtype=np.uint64).tolist()
    state.rgb_sum = [a + int(b) for a, b in zip(state.rgb_sum, channel_sums)]
    state.pixels += int(np.prod(arrays["images"].shape[:3]))
    state.shards.append({"name": name, "count": len(crops)})
    with fileio.cleaned_up(final, tmp):
        tmp.mkdir(parents=True)
        for key, array in arrays.items():
            np.save(tmp / f"{key}.npy", array)
        fileio.write_json(tmp / shards.PROGRESS, dataclasses.asdict(state))
        os.replace(tmp, final)


def prepare_split(name: str, plan: SplitPlan, out: pathlib.Path, *, size: int,
                  shard_size: int, pool, schema: dict) -> dict:
    split_dir = out / name
    split_dir.mkdir(parents=True, exist_ok=True)
    state = resume_state(split_dir)
    tasks = plan.tasks[state.next_task:]
    if state.next_task:
        print(f"{name}: resuming at image {state.next_task}/{len(plan.tasks)} "
              f"({state.count} crops in {len(state.shards)} shards)", file=sys.stderr)
    work = [(t, size) for t in tasks]
    results = pool.imap(_process, work, chunksize=4) if pool else map(_process, work)
    pending: list = []
    with Progress(len(plan.tasks), name, unit="crops") as progress:
        progress.done = state.next_task
        for task, (crops, error) in zip(tasks, results):
            state.next_task += 1
            if error is not None:
                state.dropped["image_unreadable"] = (state.dropped.get("image_unreadable", 0)
                                                     + len(task.persons))
                state.unreadable.append({"file": task.path, "image_id": task.image_id,
                                         "error": error})
            pending.extend(crops)
            if len(pending) >= shard_size:
                write_shard(split_dir, pending, state, schema)
                pending = []
            progress.update(1, count=len(crops))
        if pending or not state.shards:
            if pending:
                write_shard(split_dir, pending, state, schema)
    dropped = collections.Counter(plan.dropped)
    dropped.update(state.dropped)
    mean = [s / (255.0 * state.pixels) if state.pixels else None for s in state.rgb_sum]
    offsets = [cropping.label_offsets_x(p.box, p.keypoints, size)
               for t in plan.tasks for p in t.persons]
    offsets = np.concatenate(offsets) if offsets else np.zeros(0)
    meta = dict(split=name, count=state.count, shards=state.shards,
                persons_seen=plan.persons_seen,
                persons_with_keypoints=plan.persons_with_keypoints,
                kept=state.count, dropped=dict(sorted(dropped.items())),
                negative_start=sum(p.box.negative_start for t in plan.tasks
                                   for p in t.persons),
                unreadable_images=state.unreadable, images=len(plan.tasks),
                mean_rgb=mean,
                label_offset_x=float(offsets.mean()) if len(offsets) else 0.0,
                factors=schema, format_version=shards.FORMAT_VERSION)
    fileio.write_json(split_dir / shards.META, meta)
    return meta


def prepare(coco_root, out, *, crop_mode: str = "thesis", size: int = 256,
            test_size: int = 5064, test_split_by: str = "crop", seed: int = 0,
            limit: int | None = None, shard_size: int = 1024, workers: int = 1,
            overwrite: bool = False) -> dict | None:
    """Prepares COCO_ROOT into OUT (the module docstring says how), resuming an unfinished
    preparation with the same settings. -> per split: its counts (count, persons_seen,
    dropped, unreadable_images, ...); None when OUT was complete already (nothing done)."""
    root, out = pathlib.Path(coco_root), pathlib.Path(out)
    check_inputs(root)
    settings = dict(source=str(root.resolve()), crop_mode=crop_mode, size=size,
                    test_size=test_size, test_split_by=test_split_by,
                    seed=seed, limit=limit,
                    shard_size=shard_size, format_version=shards.FORMAT_VERSION)
    settings_file = out / "prepare.json"
    if overwrite and out.exists():
        for p in [out / shards.META, settings_file, *(out / s for s in shards.SPLITS)]:
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    if (out / shards.META).is_file():
        return None
    if settings_file.is_file():
        with open(settings_file) as f:
            previous = json.load(f)
        if previous != settings:
            diff = {k: (previous.get(k), v) for k, v in settings.items()
                    if previous.get(k) != v}
            raise InputError(f"{out} holds an unfinished preparation with other settings "
                             f"{diff} (old, new); rerun with the same settings to resume, "
                             f"or pass --overwrite")
    # Planning reads every annotation file, so a malformed one stops here, before anything
    # is written.
    plans = plan_splits(root, crop_mode, test_size, seed, limit, test_split_by)
    out.mkdir(parents=True, exist_ok=True)
    fileio.write_json(settings_file, settings)
    if not plans["train"].tasks:
        print(f"warning: a test split of {test_size} takes every train2017 crop; the train "
              f"split is empty (pass a smaller --test-size to train on this data)",
              file=sys.stderr)
    metas = {}
    schema = factor_schema(plans)                  # the same class codes in every split
    pool = (multiprocessing.get_context("spawn").Pool(workers) if workers > 1 else None)
    try:
        for name in ("val", "test", "train"):
            split_meta = out / name / shards.META
            if split_meta.is_file():
                with open(split_meta) as f:
                    metas[name] = json.load(f)
                continue
            metas[name] = prepare_split(name, plans[name], out, size=size,
                                        shard_size=shard_size, pool=pool, schema=schema)
    finally:
        if pool:
            pool.terminate()
    keys = ("count", "persons_seen", "persons_with_keypoints", "kept", "dropped",
            "negative_start")
    summary = {name: {k: m[k] for k in keys} | {"unreadable_images": len(m["unreadable_images"])}
               for name, m in metas.items()}
    fileio.write_json(out / shards.META, dict(settings, splits=summary,
                                              mean_rgb=metas["train"]["mean_rgb"],
                                              label_offset_x=metas["train"].get(
                                                  "label_offset_x", 0.0),
                                              image_size=size))
    return summary
