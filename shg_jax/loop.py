"""The training loop every stage runs: the Stacked Hourglass (shg_jax.train) and the
autoencoder's stage 1 (shg_jax.pretrain) differ only in the `Stage` they hand to `run`.

`run(stage, ...)` owns what makes a run safe to stop and resume, once for every stage:
    resume      the newest readable checkpoint of WORKDIR (bookkeeping.resume_latest), at
                the exact batch it was saved at, with its RunRecord; else the stage's start
    record      one RunRecord, updated in place and saved with every checkpoint
    summary     train/ scalars every config.log_every_steps, the stage's epoch scalars
    Ctrl-C      a checkpoint at the next step, then a clean return (a second Ctrl-C aborts)
    non-finite  a NaN or infinite loss stops the run, naming the global step
    waits       every checkpoint write has finished before `run` returns or raises
A stage supplies its state, batches, train step, and what happens at an epoch's end.
"""

from __future__ import annotations

import pathlib
import time
from typing import Any, Generator, Protocol

import jax
import ml_collections
import numpy as np

from shg_jax import fileio, placement
from shg_jax.bookkeeping import (TrainingError, config_json, interrupt_flag, log,
                                 resume_latest)
from shg_jax.checkpoint import BEST, Checkpoints, RunRecord
from shg_jax.progress import Progress
from shg_jax.steps import current_learning_rate
from shg_jax.summary import SummaryLogger


class Stage(Protocol):
    """What one kind of training brings to the loop."""

    name: str              # "epoch", "autoencoder epoch": progress and log lines
    unit: str              # what a step's rows are: "img", "latent"
    num_epochs: int
    batch_size: int        # global rows per step
    steps_per_epoch: int
    best: tuple            # the checkpoint.BEST names it ranks, the first one reported
    epoch_prefix: str      # TensorBoard prefix of its epoch scalars ("epoch/", "ae/")
    step_summaries: bool   # whether train/ scalars are logged every log_every_steps

    def init_state(self) -> Any: ...

    def start(self, state) -> Any:
        """The first state of a new run (e.g. weights of an earlier stage)."""

    def resume(self, state, record: RunRecord) -> Any:
        """A restored run's state, after the stage read what it keeps in `record`."""

    def begin_epoch(self, state, epoch: int) -> Any: ...

    def batches(self, epoch: int, start_step: int) -> Generator:
        """The epoch's batches from `start_step`; closed when the epoch stops early."""

    def train_step(self, state, batch) -> tuple[Any, jax.Array]: ...

    def end_epoch(self, state, epoch: int, logger: SummaryLogger) -> tuple[Any, dict]:
        """-> (state, the epoch's validation metrics: val_loss, and val_pck where ranked);
        images or other summaries of its own go to `logger`."""

    def record_fields(self) -> dict:
        """The stage's own RunRecord fields (schedule, mean RGB, source, ...)."""

    def describe(self, metrics: dict) -> str:
        """The validation part of the epoch's log line."""


def global_step(state) -> int:
    return int(placement.to_host(state.step))


def run(stage: Stage, config: ml_collections.ConfigDict, workdir, *,
        allow_config_change: bool = False, profiler=None) -> dict:
    """Trains `stage` to stage.num_epochs epochs in WORKDIR (resuming it); returns
    {"history", "interrupted", "state"}. Raises TrainingError when the run cannot go on.
    The caller holds the workdir's lock (bookkeeping.workdir_lock)."""
    workdir = pathlib.Path(workdir)
    ckpts = Checkpoints(workdir, keep=config.keep_checkpoints, best=stage.best)
    logger = SummaryLogger(workdir / "tb", enabled=jax.process_index() == 0)
    state, record = resume_latest(ckpts, stage.init_state(), config, workdir,
                                  allow_config_change)
    if record is None:
        record = RunRecord(config=config_json(config))
        state = stage.start(state)
    else:
        state = stage.resume(state, record)      # reads the run's config as it was
        record.config = config_json(config)      # then the fields allowed to change
        log(f"resuming {workdir} at {stage.name} {record.epoch + 1}, step "
            f"{record.step_in_epoch} (global step {global_step(state)})")
    if jax.process_index() == 0:
        workdir.mkdir(parents=True, exist_ok=True)
        fileio.write_json(workdir / "config.json", record.config)

    def save(state, metrics=None):
        record.global_step = global_step(state)
        for name, value in stage.record_fields().items():
            setattr(record, name, value)
        ckpts.save(state, record, metrics=metrics)

    try:
        with interrupt_flag() as interrupted:
            while record.epoch < stage.num_epochs:
                if record.step_in_epoch == 0:
                    state = stage.begin_epoch(state, record.epoch)
                state = _train_epoch(stage, state, record, config, logger, profiler,
                                     interrupted)
                if interrupted["stop"]:
                    save(state)
                    ckpts.wait()
                    log(f"saved a checkpoint at {stage.name} {record.epoch + 1}, step "
                        f"{record.step_in_epoch}; rerun the same command to resume")
                    return {"history": record.history, "interrupted": True, "state": state}
                state = _end_epoch(stage, state, record, logger)
                save(state, {k: v for k, v in record.history[-1].items() if k in
                             {BEST[b][0] for b in stage.best}})
    finally:
        if profiler is not None:
            profiler.close()
        ckpts.wait()
        logger.close()
    return {"history": record.history, "interrupted": False, "state": state}


def _train_epoch(stage: Stage, state, record: RunRecord, config, logger, profiler,
                 interrupted):
    """The rest of epoch `record.epoch` from step `record.step_in_epoch`; stops early (the
    position kept in `record`) on an interrupt."""
    batches = stage.batches(record.epoch, record.step_in_epoch)
    pending = []
    tick = time.perf_counter()
    progress = Progress(stage.steps_per_epoch, f"{stage.name} {record.epoch + 1}/"
                        f"{stage.num_epochs}", unit=stage.unit,
                        enabled=jax.process_index() == 0)
    progress.done = record.step_in_epoch
    try:
        for batch in batches:
            state, loss = stage.train_step(state, batch)
            if profiler is not None:
                profiler.step(loss)
            pending.append(loss)
            record.step_in_epoch += 1
            last = record.step_in_epoch == stage.steps_per_epoch
            if len(pending) >= config.log_every_steps or last or interrupted["stop"]:
                losses = np.asarray(placement.to_host(pending), np.float64)
                bad = np.nonzero(~np.isfinite(losses))[0]
                if len(bad):
                    step = global_step(state) - len(losses) + int(bad[0]) + 1
                    raise TrainingError(
                        f"loss is {losses[bad[0]]} at global step {step} ({stage.name} "
                        f"{record.epoch + 1}); training stopped, the last good checkpoint "
                        f"is kept in checkpoints/")
                now = time.perf_counter()
                record.epoch_loss_sum += float(losses.sum())
                record.epoch_loss_count += len(losses)
                if stage.step_summaries:
                    logger.scalars({"train/loss": losses.mean(),
                                    "train/learning_rate": current_learning_rate(state),
                                    "train/images_per_second":
                                        len(losses) * stage.batch_size / (now - tick)},
                                   global_step(state))
                tick = now
                progress.update(len(pending), count=len(pending) * stage.batch_size,
                                loss=float(losses.mean()))
                pending = []
            if interrupted["stop"]:
                break
    finally:
        batches.close()
        progress.close()
    return state


def _end_epoch(stage: Stage, state, record: RunRecord, logger):
    """Validation (the stage's), the history entry, the best values, the epoch's scalars
    and log line; the record is left at the start of the next epoch."""
    lr_used = current_learning_rate(state)
    state, metrics = stage.end_epoch(state, record.epoch, logger)
    record.epoch += 1
    train_loss = record.epoch_loss_sum / max(record.epoch_loss_count, 1)
    entry = {"epoch": record.epoch, "train_loss": train_loss, **metrics,
             "learning_rate": lr_used, "global_step": global_step(state)}
    record.history.append(entry)
    logger.scalars({stage.epoch_prefix + k: v for k, v in entry.items()
                    if k not in ("epoch", "global_step")}, record.epoch)
    logger.flush()
    record.step_in_epoch, record.epoch_loss_sum, record.epoch_loss_count = 0, 0.0, 0
    improved = {}
    for name, (metric, mode) in BEST.items():
        if metric not in metrics:
            continue
        field = "best_pck" if name == "best" else "best_loss"
        old, new = getattr(record, field), metrics[metric]
        better = new == new and (old is None or (new > old if mode == "max" else new < old))
        improved[name] = better
        if better:
            setattr(record, field, new)
    best = improved.get(stage.best[0], False)
    log(f"{stage.name} {record.epoch}: train loss {train_loss:.4g}, "
        f"{stage.describe(metrics)}, lr {lr_used:.3g}" + (", best" if best else ""),
        flush=True)
    return state
