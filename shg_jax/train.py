"""The training loop: epochs of the data-parallel train step, validation, the plateau rule,
checkpoints and TensorBoard. `train_and_evaluate(config, workdir)` is what main.py calls.

One run = one workdir:
    WORKDIR/config.json     the config (also inside every checkpoint)
    WORKDIR/checkpoints/    Orbax, one folder per step: the latest few (epoch ends,
                            interrupts), best val PCK, lowest val loss (shg_jax.checkpoint)
    WORKDIR/tb/             TensorBoard events (process 0)
Rerunning the same command resumes from the latest checkpoint, at the exact batch.
"""

from __future__ import annotations

import itertools
import math
import pathlib
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from shg_jax import data, fileio
from shg_jax import placement
from shg_jax.checkpoint import Checkpoints, RunRecord
from shg_jax.draw import heatmap_grid
from shg_jax.evaluate import evaluate_split
from shg_jax.pretrain import finetune_state, pretrain_from_run
from shg_jax.progress import Progress
from shg_jax.runs import (TrainingError, config_json, interrupt_flag, log as _log,
                          resume_latest, workdir_lock)
from shg_jax.schedule import PlateauSchedule
from shg_jax.steps import Steps, current_learning_rate, with_learning_rate
from shg_jax.summary import StepProfiler, SummaryLogger
from shg_jax.validation import validate


class _Run:
    """Mutable bookkeeping of one training run (what a checkpoint record holds)."""

    def __init__(self, config, schedule):
        self.config = config
        self.schedule = schedule
        self.epoch = 0                   # completed epochs = index of the epoch in progress
        self.step_in_epoch = 0
        self.loss_sum, self.loss_count = 0.0, 0
        self.history: list[dict] = []
        self.best_pck, self.best_loss = -math.inf, math.inf

    def record(self, state, train_split: data.Split) -> RunRecord:
        """What a checkpoint stores beside the state; the training data's mean RGB and label
        offset let a run open (evaluate, predict) where its data is gone."""
        return RunRecord(config=config_json(self.config), epoch=self.epoch,
                         step_in_epoch=self.step_in_epoch, global_step=global_step(state),
                         schedule=self.schedule.to_dict(), epoch_loss_sum=self.loss_sum,
                         epoch_loss_count=self.loss_count, history=self.history,
                         best_pck=None if math.isinf(self.best_pck) else self.best_pck,
                         best_loss=None if math.isinf(self.best_loss) else self.best_loss,
                         mean_rgb=[float(m) for m in train_split.mean_rgb],
                         label_offset_x=train_split.label_offset_x)

    def load(self, record: dict) -> None:
        self.epoch, self.step_in_epoch = record["epoch"], record["step_in_epoch"]
        self.schedule = PlateauSchedule.from_dict(record["schedule"])
        self.loss_sum, self.loss_count = record["epoch_loss_sum"], record["epoch_loss_count"]
        self.history = record["history"]
        self.best_pck = -math.inf if record["best_pck"] is None else record["best_pck"]
        self.best_loss = math.inf if record["best_loss"] is None else record["best_loss"]


def _check_data(config, train_split: data.Split, n_devices: int) -> None:
    if train_split.image_size != config.model.input_size:
        raise TrainingError(f"the data in {config.data_dir} has {train_split.image_size}px "
                            f"crops but config.model.input_size is {config.model.input_size}")
    for name in ("batch_size", "eval_batch_size"):
        if config[name] % n_devices:
            raise TrainingError(f"config.{name}={config[name]} is not divisible by the "
                                f"{n_devices} devices")
    precise = _precise_bn(config)
    sizes = [("batch_size", config.batch_size)]
    if precise is not None:
        sizes.append(("precise_bn.batch_size", precise.batch_size))
    for field, size in sizes:
        if len(train_split) < size:
            raise TrainingError(f"the train split of {config.data_dir} has {len(train_split)} "
                                f"samples, fewer than one batch of config.{field}={size}")


def _precise_bn(config):
    """config.precise_bn when it is on; None when off (batches 0, or a run made before it)."""
    precise = config.get("precise_bn")
    return precise if precise is not None and precise.batches else None


def global_step(state) -> int:
    return int(placement.to_host(state.step))


def _log_images(logger, steps, state, split, config, epoch) -> None:
    """Every process runs the prediction (a collective); process 0 writes the grid."""
    n = min(config.num_tb_images, len(split))
    if n == 0:
        return
    # A fixed set: the first n validation crops, padded to a multiple of the device count.
    rows = placement.padded_size(n)
    batch = split.gather(np.arange(rows) % len(split))
    local = {k: v[placement.local_rows(rows)] for k, v in batch.items()}
    pred, target = placement.to_host(steps.heatmaps_and_targets(
        state, placement.shard_batch(local, steps.mesh)))
    logger.image("val/heatmaps (crop | GT | prediction)",
                 heatmap_grid(batch["images"][:n], target[:n], pred[:n]), epoch)


def _resume(state, record, run, config, workdir):
    """Continues a restored run: its bookkeeping into `run`, and the learning rate."""
    run.load(record)
    if config.learning_rate != record["config"]["learning_rate"]:
        # Allowed by the config check (--allow_config_change): an explicit new rate
        # replaces the one the run had reached.
        run.schedule.lr = config.learning_rate
        state = with_learning_rate(state, config.learning_rate)
        _log(f"learning rate set to {config.learning_rate} (was {record['schedule']['lr']})")
    _log(f"resuming {workdir} at epoch {run.epoch + 1}, step {run.step_in_epoch} "
          f"(global step {global_step(state)})")
    return state


def train_and_evaluate(config: ml_collections.ConfigDict, workdir,
                       *, allow_config_change: bool = False, profile_dir=None) -> dict:
    """Trains config.num_epochs epochs (resuming if WORKDIR has checkpoints); returns the
    history of epoch metrics and the final state. Raises data.DataError or TrainingError
    with a message. With `profile_dir`, steps 5-9 of this run are traced there.

    config.stage (configs/autoencoder.py) picks the stage: "pretrain" trains the bottleneck
    autoencoder alone on the latents of config.init_from (shg_jax.pretrain); "finetune"
    starts from stage 1's autoencoder inside its SHG; "scratch" and plain SHG configs start
    from random weights. A second run on a busy workdir is refused (runs.workdir_lock)."""
    validate(config, jax.device_count())
    with workdir_lock(workdir):
        if config.get("stage") == "pretrain":
            return pretrain_from_run(config, workdir, allow_config_change=allow_config_change)
        return _train(config, pathlib.Path(workdir), allow_config_change, profile_dir)


def _train(config, workdir: pathlib.Path, allow_config_change: bool, profile_dir) -> dict:
    """The SHG training loop of train_and_evaluate, inside the workdir's lock."""
    train_split = data.Split(config.data_dir, "train")
    val_split = data.Split(config.data_dir, "val")
    _check_data(config, train_split, len(jax.devices()))
    steps = Steps(config, train_split.mean_rgb, label_offset_x=train_split.label_offset_x)
    ckpts = Checkpoints(workdir, keep=config.keep_checkpoints)
    state = steps.init_state()
    run = _Run(config, PlateauSchedule.from_config(config))
    state, record = resume_latest(ckpts, state, config, workdir, allow_config_change)
    if record is not None:
        state = _resume(state, record, run, config, workdir)
    elif config.get("stage") == "finetune":
        state = finetune_state(steps, config)
    is_main = jax.process_index() == 0
    if is_main:
        workdir.mkdir(parents=True, exist_ok=True)
        fileio.write_json(workdir / "config.json", config_json(config))
    logger = SummaryLogger(workdir / "tb", enabled=is_main)
    profiler = StepProfiler(profile_dir)
    n_steps = data.steps_per_epoch(len(train_split), config.batch_size, train=True)
    try:
        with interrupt_flag() as interrupted:
            while run.epoch < config.num_epochs:
                state = _train_epoch(steps, state, run, train_split, config, n_steps,
                                     logger, profiler, interrupted)
                if interrupted["stop"]:
                    ckpts.save(state, run.record(state, train_split))
                    ckpts.wait()
                    _log(f"saved a checkpoint at epoch {run.epoch + 1}, step "
                          f"{run.step_in_epoch}; rerun the same command to resume")
                    return {"history": run.history, "interrupted": True, "state": state}
                state = _end_epoch(steps, state, run, val_split, config, logger, ckpts,
                                   train_split)
    finally:
        profiler.close()
        ckpts.wait()
        logger.close()
    return {"history": run.history, "interrupted": False, "state": state}


def _train_epoch(steps, state, run, train_split, config, n_steps, logger, profiler,
                 interrupted):
    """Runs the rest of epoch `run.epoch` and returns the state; stops early (position kept
    in `run`) on an interrupt."""
    batches = data.train_batches(train_split, config.batch_size, seed=config.seed,
                                 epoch=run.epoch, start_step=run.step_in_epoch,
                                 process_index=jax.process_index(),
                                 process_count=jax.process_count())
    batches = data.prefetch(batches, size=config.prefetch,
                            transform=lambda b: placement.shard_batch(b, steps.mesh))
    pending = []
    tick = time.perf_counter()
    progress = Progress(n_steps, f"epoch {run.epoch + 1}/{config.num_epochs}", unit="img",
                        enabled=jax.process_index() == 0)
    progress.done = run.step_in_epoch
    try:
        for batch in batches:
            state, loss = steps.train_step(state, batch)
            profiler.step(loss)
            pending.append(loss)
            run.step_in_epoch += 1
            last = run.step_in_epoch == n_steps
            if len(pending) >= config.log_every_steps or last or interrupted["stop"]:
                losses = np.asarray(placement.to_host(pending), np.float64)
                bad = np.nonzero(~np.isfinite(losses))[0]
                if len(bad):
                    step = global_step(state) - len(losses) + int(bad[0]) + 1
                    raise TrainingError(
                        f"loss is {losses[bad[0]]} at global step {step} (epoch "
                        f"{run.epoch + 1}); training stopped, the last good checkpoint is "
                        f"kept in checkpoints/")
                now = time.perf_counter()
                run.loss_sum += float(losses.sum())
                run.loss_count += len(losses)
                logger.scalars({"train/loss": losses.mean(),
                                "train/learning_rate": current_learning_rate(state),
                                "train/images_per_second":
                                    len(losses) * config.batch_size / (now - tick)},
                               global_step(state))
                tick = now
                progress.update(len(pending), count=len(pending) * config.batch_size,
                                loss=float(losses.mean()))
                pending = []
            if interrupted["stop"]:
                break
    finally:
        batches.close()
        progress.close()
    return state


def refresh_batch_stats(steps: Steps, state, split: data.Split, config, epoch: int):
    """Precise BatchNorm (config.precise_bn): the state with every running statistic replaced
    by its mean over the first `batches` global batches of `batch_size` crops of epoch
    `epoch`'s order of `split` (as many as it holds; _check_data asks for one), under the
    state's parameters. The crops are not augmented: the statistics are for evaluation. Off
    (the state as it is) when config.precise_bn is absent (runs made before it) or batches
    is 0."""
    precise = _precise_bn(config)
    if precise is None:
        return state
    batches = data.train_batches(split, precise.batch_size, seed=config.seed, epoch=epoch,
                                 process_index=jax.process_index(),
                                 process_count=jax.process_count())
    total, n = None, 0
    for batch in itertools.islice(batches, precise.batches):
        images = placement.shard_batch(batch, steps.mesh, keys=("images",))["images"]
        stats = steps.batch_statistics(state, images)
        total = stats if total is None else jax.tree.map(jnp.add, total, stats)
        n += 1
    return state._replace(batch_stats=jax.tree.map(lambda t: t / n, total))


def _end_epoch(steps, state, run, val_split, config, logger, ckpts, train_split):
    """Precise BatchNorm statistics if asked, validation, the plateau rule, TensorBoard,
    checkpoints; returns the state to go on."""
    state = refresh_batch_stats(steps, state, train_split, config, run.epoch)
    val = evaluate_split(steps, state, val_split, config.eval_batch_size,
                         desc=f"epoch {run.epoch + 1} validation")
    lr_used = current_learning_rate(state)
    if run.schedule.step(val["all/pck"]):
        state = with_learning_rate(state, run.schedule.lr)
    run.epoch += 1
    train_loss = run.loss_sum / max(run.loss_count, 1)
    record = {"epoch": run.epoch, "train_loss": train_loss, "val_loss": val["loss"],
              "val_pck": val["all/pck"], "val_pck_visible": val["visible/pck"],
              "val_pck_limbs": val["limbs/pck"], "learning_rate": lr_used,
              "global_step": global_step(state)}
    run.history.append(record)
    logger.scalars({"epoch/train_loss": train_loss, "epoch/val_loss": val["loss"],
                    "epoch/val_pck": val["all/pck"], "epoch/val_pck_visible": val["visible/pck"],
                    "epoch/val_pck_limbs": val["limbs/pck"], "epoch/learning_rate": lr_used},
                   run.epoch)
    _log_images(logger, steps, state, val_split, config, run.epoch)
    logger.flush()
    run.step_in_epoch, run.loss_sum, run.loss_count = 0, 0.0, 0
    best = val["all/pck"] > run.best_pck
    best_loss = val["loss"] < run.best_loss
    if best:
        run.best_pck = val["all/pck"]
    if best_loss:
        run.best_loss = val["loss"]
    ckpts.save(state, run.record(state, train_split),
               metrics={"val_pck": val["all/pck"], "val_loss": val["loss"]})
    _log(f"epoch {run.epoch}: train loss {train_loss:.4g}, val loss {val['loss']:.4g}, "
          f"val PCK {val['all/pck']:.4f} (v=2 {val['visible/pck']:.4f}, limbs "
          f"{val['limbs/pck']:.4f}), lr {lr_used:.3g}" + (", best" if best else ""),
          flush=True)
    return state
