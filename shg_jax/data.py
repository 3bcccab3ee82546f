"""Reading prepared shards: memory-mapped splits, seeded epochs, per-process slices, prefetch.

Batches are host NumPy dicts: images uint8 (b, S, S, 3), keypoints float32 (b, 17, 3) in crop
pixels, image_id / ann_id int64 (b,), index int64 (b,) (the row in the split), and for
evaluation valid bool (b,). uint8 images go to the device as they are; mean subtraction and
scaling happen inside the jitted step.

Order: epoch e of a training run visits the permutation drawn from (seed, e); the incomplete
last batch is dropped (so every step has the full global batch, as BatchNorm and the
data-parallel step want). Evaluation visits every sample once in order, padding the last batch
and marking the padding rows valid=False. With several processes, each reads only its own
contiguous slice of every global batch (process p of P takes rows [p*b, (p+1)*b), b = B/P).
"""

from __future__ import annotations

import json
import math
import pathlib
import queue
import threading
from typing import Callable, Iterator

import numpy as np

from shg_jax import shards
from shg_jax.errors import UserError


class DataError(UserError):
    """Prepared data missing or incomplete; the message says which command makes it."""


def _prepare_hint(data_dir: pathlib.Path) -> str:
    return (f"make it with: python -m data_prep.coco --coco-root COCO_DIR --out {data_dir} "
            f"(or python -m data_prep.synthetic for synthetic data)")


def load_meta(data_dir) -> dict:
    """The top-level meta.json of a prepared data folder (exists only once it is complete)."""
    data_dir = pathlib.Path(data_dir)
    path = data_dir / shards.META
    if not path.is_file():
        state = "unfinished" if data_dir.is_dir() else "missing"
        raise DataError(f"no complete prepared data at {data_dir} ({state}); "
                        + _prepare_hint(data_dir))
    with open(path) as f:
        return json.load(f)


class Split:
    """One prepared split, memory-mapped: len(split), split.gather(indices)."""

    def __init__(self, data_dir, name: str):
        data_dir = pathlib.Path(data_dir)
        self.meta_all = load_meta(data_dir)
        self.name = name
        self.dir = data_dir / name
        try:
            with open(self.dir / shards.META) as f:
                self.meta = json.load(f)
        except FileNotFoundError:
            raise DataError(f"split {name!r} missing in {data_dir}; "
                            + _prepare_hint(data_dir)) from None
        self.image_size = int(self.meta_all["image_size"])
        #: {factor name: its class names, or None for a number}: what the annotations
        #: carried in their `factors` field (synthetic data), in the shards as factor arrays.
        self.factors = dict(self.meta.get("factors", {}))
        self.keys = shards.ARRAYS + tuple(map(shards.factor_key, self.factors))
        self.shards = [self._open_shard(s) for s in self.meta["shards"]] or [
            dict(shards.empty_arrays(self.image_size),
                 **{k: np.zeros(0, np.float32) for k in self.keys[len(shards.ARRAYS):]})]
        counts = [len(s["image_id"]) for s in self.shards]
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        if self.offsets[-1] != self.meta["count"]:
            raise DataError(f"{self.dir} holds {self.offsets[-1]} samples but its meta.json "
                            f"says {self.meta['count']}; prepare it again with --overwrite")
        self.mean_rgb = np.asarray(self.meta_all["mean_rgb"], np.float32)
        # Data prepared before the offset was recorded: labels taken as pixel indices.
        self.label_offset_x = float(self.meta_all.get("label_offset_x", 0.0))

    def _open_shard(self, entry: dict) -> dict[str, np.ndarray]:
        """Memory-maps one shard's arrays, checking each against the split's meta.json (rows)
        and the data's crop size, so a truncated or damaged file is named here, before
        training starts, not met as a crash in the middle of an epoch."""
        arrays = {}
        for key in self.keys:
            path = self.dir / entry["name"] / f"{key}.npy"
            try:
                array = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as e:
                raise DataError(f"{path} is missing or damaged ({e}); prepare the data "
                                f"again: {self.remake_command()}") from None
            expected = shards.row_shape(key, self.image_size)
            if len(array) != entry["count"] or array.shape[1:] != expected:
                raise DataError(f"{path} holds an array of shape {array.shape}, its split's "
                                f"meta.json says ({entry['count']}, "
                                f"{', '.join(map(str, expected))}); prepare the data again: "
                                f"{self.remake_command()}")
            arrays[key] = array
        return arrays

    def remake_command(self) -> str:
        """The data_prep command that prepares this data again, with its recorded settings."""
        m = self.meta_all
        settings = {"--coco-root": m.get("source", "COCO_DIR"), "--out": self.dir.parent,
                    "--crop-mode": m.get("crop_mode"), "--size": self.image_size,
                    "--test-size": m.get("test_size"), "--test-split-by": m.get("test_split_by"),
                    "--seed": m.get("seed"), "--limit": m.get("limit"),
                    "--shard-size": m.get("shard_size")}
        return " ".join(["python -m data_prep.coco"] + [f"{k} {v}" for k, v in settings.items()
                                                        if v is not None] + ["--overwrite"])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def gather(self, indices: np.ndarray, keys=shards.CROP_ARRAYS) -> dict[str, np.ndarray]:
        """Rows `indices` (any order, repeats allowed) -> dict of arrays `keys` (of
        `self.keys`; by default what a batch needs) in that order, and "index"."""
        indices = np.asarray(indices, np.int64)
        out = {key: np.empty((len(indices),) + self.shards[0][key].shape[1:],
                             self.shards[0][key].dtype) for key in keys}
        shard_of = np.searchsorted(self.offsets, indices, side="right") - 1
        for s in np.unique(shard_of):
            rows = np.nonzero(shard_of == s)[0]
            local = indices[rows] - self.offsets[s]
            order = np.argsort(local, kind="stable")        # sequential reads from the file
            for key in keys:
                out[key][rows[order]] = self.shards[s][key][local[order]]
        out["index"] = indices
        return out


def train_batch_sizes(n: int, global_batch: int, *, drop_last: bool = False,
                      multiple: int = 1) -> list[int]:
    """The global batch sizes of one training epoch over `n` samples: the full batches, then
    (unless `drop_last`) the remainder, as PyTorch's DataLoader keeps it (the thesis': 124,040
    crops at batch 16 make 7,753 steps, the last of 8 crops). The remainder is cut to a
    multiple of `multiple` (the devices a batch is split over); the fewer than `multiple`
    samples cut sit out that epoch."""
    full, rest = divmod(n, global_batch)
    rest -= rest % multiple
    return [global_batch] * full + ([rest] if rest and not drop_last else [])


def steps_per_epoch(n: int, global_batch: int, *, train: bool, drop_last: bool = False,
                    multiple: int = 1) -> int:
    """Steps of a training epoch (`train_batch_sizes`) or of one evaluation pass (every
    sample once, the last batch padded)."""
    if train:
        return len(train_batch_sizes(n, global_batch, drop_last=drop_last, multiple=multiple))
    return math.ceil(n / global_batch)


def local_rows(global_batch: int, process_index: int, process_count: int) -> slice:
    """Process p of P owns rows [p*b, (p+1)*b) of each global batch, b = B/P."""
    if global_batch % process_count:
        raise ValueError(f"global batch {global_batch} is not divisible by the "
                         f"{process_count} processes")
    per = global_batch // process_count
    return slice(process_index * per, (process_index + 1) * per)


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The visiting order of epoch `epoch`: a function of (seed, epoch) only."""
    return np.random.default_rng((seed, epoch)).permutation(n)


def epoch_rows(n: int, global_batch: int, *, seed: int, epoch: int, start_step: int = 0,
               shuffle: bool = True, drop_last: bool = False, multiple: int = 1
               ) -> Iterator[np.ndarray]:
    """The sample indices of each global batch of epoch `epoch` (`train_batch_sizes`), from
    `start_step`: in the order drawn from (seed, epoch), or in storage order without
    `shuffle`."""
    sizes = train_batch_sizes(n, global_batch, drop_last=drop_last, multiple=multiple)
    order = epoch_permutation(n, seed, epoch) if shuffle else np.arange(n)
    for step in range(start_step, len(sizes)):
        yield order[step * global_batch:step * global_batch + sizes[step]]


def train_batches(split: Split, global_batch: int, *, seed: int, epoch: int,
                  start_step: int = 0, process_index: int = 0, process_count: int = 1,
                  drop_last: bool = False, multiple: int = 1) -> Iterator[dict]:
    """This process' part of each global batch of epoch `epoch` (`epoch_rows`), from
    `start_step`. `multiple` must be a multiple of `process_count`."""
    for rows in epoch_rows(len(split), global_batch, seed=seed, epoch=epoch,
                           start_step=start_step, drop_last=drop_last,
                           multiple=max(multiple, process_count)):
        yield split.gather(rows[local_rows(len(rows), process_index, process_count)])


def eval_batches(split: Split, global_batch: int, *, process_index: int = 0,
                 process_count: int = 1) -> Iterator[dict]:
    """Every sample once, in order; the last global batch padded, padding rows valid=False."""
    rows = local_rows(global_batch, process_index, process_count)
    n = len(split)
    for step in range(steps_per_epoch(n, global_batch, train=False)):
        index = np.arange(step * global_batch, (step + 1) * global_batch)[rows]
        valid = index < n
        batch = split.gather(np.where(valid, index, 0))
        batch["valid"] = valid
        yield batch


def prefetch(iterator: Iterator, size: int = 2, transform: Callable | None = None
             ) -> Iterator:
    """Runs `iterator` (and `transform`, e.g. a device put) `size` items ahead on a thread.

    Exceptions raised by the producer are re-raised in the consumer. Closing the returned
    generator stops the producer and waits for it, so that no thread is left inside a JAX
    call when the interpreter exits (which would abort the process)."""
    q: queue.Queue = queue.Queue(maxsize=size)
    stop = threading.Event()
    done = object()

    def produce():
        try:
            for item in iterator:
                item = transform(item) if transform else item
                while not stop.is_set():
                    try:
                        q.put((True, item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put((True, done))
        except BaseException as e:          # handed to the consumer
            q.put((False, e))

    thread = threading.Thread(target=produce, daemon=True, name="prefetch")
    thread.start()
    try:
        while True:
            ok, item = q.get()
            if not ok:
                raise item
            if item is done:
                return
            yield item
    finally:
        stop.set()
        thread.join(timeout=60)
