"""Opening a trained run for evaluation, prediction and analysis: `open_run(path)` -> its
config, compiled steps, restored state and record, for every command that reads a run.

A run is named by its workdir (WORKDIR, with checkpoints/ inside) and a checkpoint name
(best | latest | best_loss | an epoch number), or by one checkpoint folder of it
(WORKDIR/checkpoints/STEP), which names its checkpoint itself.
"""

from __future__ import annotations

import pathlib
from typing import Any, NamedTuple

import ml_collections

from shg_jax.checkpoint import CheckpointError, Checkpoints, RunRecord
from shg_jax.steps import Steps
from shg_jax.validation import validate


class OpenRun(NamedTuple):
    config: ml_collections.ConfigDict    # the run's config (data_dir and decode as asked)
    steps: Steps                         # the compiled steps for that config
    state: Any                           # the restored TrainState
    record: RunRecord                    # the checkpoint's record (epoch, history, ...)


def is_checkpoint_folder(path) -> bool:
    """Whether `path` names one checkpoint (WORKDIR/checkpoints/STEP), not a workdir."""
    path = pathlib.Path(path)
    return path.parent.name == "checkpoints" and path.name.isdigit()


def workdir_of(path) -> pathlib.Path:
    """The workdir of a workdir, of its checkpoints/ folder or of one checkpoint folder."""
    path = pathlib.Path(path)
    if is_checkpoint_folder(path):
        return path.parent.parent
    if path.name == "checkpoints" and not (path / "checkpoints").is_dir():
        return path.parent
    return path


def checkpoint_label(path, checkpoint: str | None, record: RunRecord) -> str:
    """How a command names the checkpoint it opened: the name asked for, "best" by
    default, or "stepN" for a checkpoint folder (`locate`)."""
    if checkpoint:
        return checkpoint
    return f"step{record.global_step}" if is_checkpoint_folder(path) else "best"


def locate(path, checkpoint: str | None = None) -> tuple[Checkpoints, int]:
    """(the run's checkpoints, step) of a run's checkpoint: `path` is a workdir
    (`checkpoint`, default "best", picks one of its checkpoints) or one checkpoint folder
    WORKDIR/checkpoints/STEP (then `checkpoint` must be None or name that same folder)."""
    path, workdir = pathlib.Path(path), workdir_of(path)
    ckpts = Checkpoints(workdir, read_only=True)
    if is_checkpoint_folder(path):
        step = int(path.name)
        if step not in ckpts.steps():
            raise CheckpointError(f"{path} is not a checkpoint of {workdir} (its checkpoints: "
                                  f"steps {ckpts.steps()})")
        if checkpoint is not None and ckpts.find(checkpoint) != step:
            raise CheckpointError(f"--checkpoint {checkpoint} names another checkpoint than "
                                  f"the folder {path}: give the workdir {workdir} with "
                                  f"--checkpoint, or the folder alone")
        return ckpts, step
    return ckpts, ckpts.find(checkpoint or "best")


def open_run(path, checkpoint: str | None = None, data_dir=None, *,
             flip: bool | None = None, subpixel: bool | None = None,
             flip_shift: float | None = None) -> OpenRun:
    """A trained run's checkpoint (see `locate`), ready to evaluate, predict or analyse.
    `data_dir` replaces the run's; `flip` / `subpixel` / `flip_shift` override its
    config.decode (None keeps it). The mean RGB and label offset come from the record."""
    ckpts, step = locate(path, checkpoint)
    record = ckpts.record(step)
    config = ml_collections.ConfigDict(record.config)
    if data_dir:
        config.data_dir = str(data_dir)
    for name, value in (("flip", flip), ("subpixel", subpixel), ("flip_shift", flip_shift)):
        if value is not None:
            config.decode[name] = value
    validate(config)
    steps = Steps(config, record.mean_rgb, label_offset_x=record.label_offset_x)
    state, record = ckpts.restore(step, steps.init_state())
    return OpenRun(config, steps, state, record)
