"""Bottleneck latents of a trained model, streamed to disk and reused: what the analyses
(PCA, K-Means, walks) study and what the autoencoder's stage 1 trains on.

One jitted function maps a batch of uint8 crops to the flattened output of the chosen
bottleneck residual (1-3; the thesis analyses the 3rd: 4x4x256 = 4,096 values) or the
autoencoder code ('code'), and, for the analyses, decodes that latent on to the heatmaps:
each sample's predicted joints and PCK come from the same pass. Rows are written into .npy memmaps as batches finish, so a split of
any size extracts within a fixed memory; the folder is written under a temporary name and
renamed when complete, and reused when the same checkpoint, split and layer are asked for.

    OUT/latents/SPLIT-layerL/latents.npy    float32 (N, D)
                            /image_id.npy ann_id.npy index.npy   int64 (N,)
                            /keypoints.npy  float32 (N, 17, 3) crop pixels
                            /n_labelled.npy int64 (N,) joints with v > 0
                            /pck.npy        float32 (N,) the thesis' per-sample PCK, NaN
                                            where no joint is annotated  } with
                            /predicted.npy  float32 (N, 17, 3) argmax    } predictions
                                            joints (x, y, peak) in crop pixels
                            /predicted_without_skips.npy  the same with the skip
                                            connections off (the thesis' ablation)
                            /meta.json      checkpoint, split, layer, count, dimension

Extraction runs on one host (several local devices are used through the mesh).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil

import jax
import jax.numpy as jnp
import numpy as np

from shg_jax import data, fileio, pck, placement
from shg_jax.checkpoint import Checkpoints
from shg_jax.progress import Progress
from shg_jax.runs import open_run
from shg_jax.steps import Steps

COLUMNS = ("image_id", "ann_id", "index", "keypoints", "n_labelled")
#: What extraction with predictions adds.
PREDICTION_COLUMNS = ("pck", "predicted", "predicted_without_skips")


@dataclasses.dataclass
class Latents:
    """Memory-mapped latents of one split with their sample information."""
    path: pathlib.Path
    latents: np.ndarray              # (N, D)
    image_id: np.ndarray
    ann_id: np.ndarray
    index: np.ndarray                # rows of the split
    keypoints: np.ndarray            # (N, 17, 3)
    n_labelled: np.ndarray
    meta: dict
    pck: np.ndarray | None = None           # (N,) with predictions, else None
    predicted: np.ndarray | None = None     # (N, 17, 3)
    predicted_without_skips: np.ndarray | None = None

    @staticmethod
    def columns(meta: dict) -> tuple:
        """The arrays of a latents folder whose meta.json is `meta`."""
        return ("latents",) + COLUMNS + tuple(meta["predictions"])

    @classmethod
    def load(cls, path) -> "Latents":
        path = pathlib.Path(path)
        meta = json.loads((path / "meta.json").read_text())
        arrays = {k: np.load(path / f"{k}.npy", mmap_mode="r") for k in cls.columns(meta)}
        return cls(path=path, meta=meta, **arrays)

    def subset(self, rows: np.ndarray) -> "Latents":
        rows = np.asarray(rows)
        return dataclasses.replace(self, **{k: np.asarray(getattr(self, k)[rows])
                                            for k in self.columns(self.meta)})


def latent_function(steps: Steps, layer, predictions: bool = False):
    """jitted (state, batch) -> {"latents": (B, D) float32 latents after bottleneck residual
    `layer`}, with `predictions` also the latent decoded: "pck" (B,) (NaN where no joint is
    annotated), "predicted" (B, J, 3) argmax joints (x, y, peak) in crop pixels, and
    "predicted_without_skips" the same decoded with the skip connections off."""
    def fn(state, batch):
        model = steps.eval_model(state)
        latent, skips = model.encode(steps.inputs(batch["images"]), layer)
        out = {"latents": latent.reshape(latent.shape[0], -1).astype(np.float32)}
        if predictions:
            heatmaps = model.decode(latent, skips, layer)
            correct, annotated = pck.joint_hits(heatmaps,
                                                steps.codec.targets(batch["keypoints"]))
            score, has = pck.per_sample_pck(correct, annotated)
            out["pck"] = jnp.where(has, score, jnp.nan).astype(np.float32)
            bare = model.decode(latent, skips, layer, use_skips=False)
            for key, maps in (("predicted", heatmaps), ("predicted_without_skips", bare)):
                xy, peak = steps.codec.decode(maps)
                out[key] = jnp.concatenate([xy, peak[..., None]], -1).astype(np.float32)
        return out

    return steps.jit(fn)


def extract(steps: Steps, state, split: data.Split, layer, out_dir, *, checkpoint: dict,
            batch_size: int = 64, predictions: bool = False) -> Latents:
    """Extracts (or reuses) the latents of every sample of `split`, with `predictions`
    also each sample's predicted joints and PCK (`latent_function`).

    `checkpoint` identifies the weights (workdir, kind, step) for the reuse check."""
    final = pathlib.Path(out_dir) / "latents" / f"{split.name}-layer{layer}"
    meta = dict(checkpoint=checkpoint, split=split.name, layer=str(layer), count=len(split),
                data_dir=str(split.dir.parent.resolve()),
                predictions=list(PREDICTION_COLUMNS) if predictions else [])
    if (final / "meta.json").is_file():
        cached = json.loads((final / "meta.json").read_text())
        if {k: cached.get(k) for k in meta} == meta:
            print(f"reusing latents in {final}")
            return Latents.load(final)
        shutil.rmtree(final)
    fn = latent_function(steps, layer, predictions)
    fileio.remove_tmp(final.parent)           # what a killed extraction left
    tmp = fileio.tmp_name(final)
    with fileio.cleaned_up(final, tmp):
        _extract_into(tmp, fn, steps, state, split, batch_size)
        fileio.write_json(tmp / "meta.json", dict(
            meta, dimension=int(np.load(tmp / "latents.npy", mmap_mode="r").shape[1])))
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    return Latents.load(final)


def _allocated(path: pathlib.Path, dtype, shape) -> np.memmap:
    """A new .npy memmap whose blocks are reserved on disk now: a disk too small for it
    fails here with ENOSPC (an OSError), not later with a SIGBUS inside a memmap write."""
    array = np.lib.format.open_memmap(path, "w+", dtype, shape)
    if hasattr(os, "posix_fallocate"):
        with open(path, "r+b") as f:
            os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
    return array


def _extract_into(tmp: pathlib.Path, fn, steps: Steps, state, split: data.Split,
                  batch_size: int) -> None:
    """Streams the latents and sample columns of every row of `split` into .npy memmaps in
    the new folder `tmp`."""
    tmp.mkdir(parents=True)
    n = len(split)
    arrays = None
    row = 0
    batches = data.eval_batches(split, batch_size)
    with Progress(data.steps_per_epoch(n, batch_size, train=False), f"latents {split.name}",
                  unit="img") as progress:
        for batch in data.prefetch(batches):
            out = jax.device_get(fn(state, placement.shard_batch(batch, steps.mesh)))
            valid = batch["valid"]
            if arrays is None:
                arrays = {k: _allocated(tmp / f"{k}.npy", dtype, (n,) + shape)
                          for k, dtype, shape in (
                              ("image_id", np.int64, ()), ("ann_id", np.int64, ()),
                              ("index", np.int64, ()), ("keypoints", np.float32, (17, 3)),
                              ("n_labelled", np.int64, ()))}
                arrays.update({k: _allocated(tmp / f"{k}.npy", v.dtype, (n,) + v.shape[1:])
                               for k, v in out.items()})
            k = int(valid.sum())
            for key, value in out.items():
                arrays[key][row:row + k] = value[valid]
            for key in ("image_id", "ann_id", "index", "keypoints"):
                arrays[key][row:row + k] = batch[key][valid]
            arrays["n_labelled"][row:row + k] = (batch["keypoints"][valid][..., 2] > 0).sum(-1)
            row += k
            progress.update(1, count=k)
    for a in arrays.values():
        a.flush()


def pretraining_latents(shg_workdir, checkpoint: str, data_dir, out_dir, *,
                        batch_size: int = 64) -> tuple[Latents, Latents, dict]:
    """Latents of the last bottleneck residual of an SHG run, for autoencoder pretraining:
    (train, val, source), extracted into OUT_DIR/latents once and reused; `source` names
    the checkpoint (workdir, kind, step) so that fine-tuning can find the same weights."""
    step = Checkpoints(shg_workdir, read_only=True).find(checkpoint)
    config, steps, state, record = open_run(shg_workdir, checkpoint, data_dir)
    source = {"workdir": str(pathlib.Path(shg_workdir).absolute()), "kind": checkpoint,
              "step": step}
    layer = config.model.n_bottleneck
    train, val = (extract(steps, state, data.Split(config.data_dir, name), layer, out_dir,
                          checkpoint=source, batch_size=batch_size)
                  for name in ("train", "val"))
    return train, val, source
