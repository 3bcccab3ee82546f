"""Training of the Stacked Hourglass, and the one place a run's stage is chosen:
`train_and_evaluate(config, workdir)` is what main.py calls.

One run = one workdir:
    WORKDIR/config.json     the config (also inside every checkpoint)
    WORKDIR/checkpoints/    Orbax, one folder per step: the latest few (epoch ends,
                            interrupts), best val PCK, lowest val loss (shg_jax.checkpoint)
    WORKDIR/tb/             TensorBoard events (process 0)
Rerunning the same command resumes from the latest checkpoint, at the exact batch
(shg_jax.loop, which runs every stage).
"""

from __future__ import annotations

import itertools
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from shg_jax import data, loop, placement
from shg_jax.bookkeeping import TrainingError, log, workdir_lock
from shg_jax.checkpoint import RunRecord
from shg_jax.draw import heatmap_grid
from shg_jax.evaluation import evaluate_split
from shg_jax.pretrain import AutoencoderStage, finetune_state
from shg_jax.schedule import PlateauSchedule
from shg_jax.steps import Steps, with_learning_rate
from shg_jax.summary import StepProfiler, SummaryLogger
from shg_jax.validation import validate


def train_and_evaluate(config: ml_collections.ConfigDict, workdir,
                       *, allow_config_change: bool = False, profile_dir=None) -> dict:
    """Trains the stage config.stage names (resuming WORKDIR if it has checkpoints); returns
    {"history", "interrupted", "state"}. Raises a UserError with a message when the config,
    the data or the workdir does not allow it. With `profile_dir`, steps 5-9 of an SHG run
    are traced there.

    The stages (configs/autoencoder.py): "pretrain" trains the bottleneck autoencoder alone
    on the latents of the SHG in config.init_from (shg_jax.pretrain); "finetune" trains the
    SHG with stage 1's autoencoder inside, starting from both; "scratch" and configs without
    a stage train the SHG from random weights. A second run on a busy workdir is refused
    (bookkeeping.workdir_lock)."""
    validate(config, jax.device_count())
    return run_stage(config, workdir, allow_config_change=allow_config_change,
                     profile_dir=profile_dir)


def run_stage(config: ml_collections.ConfigDict, workdir, *, allow_config_change: bool = False,
              profile_dir=None) -> dict:
    """train_and_evaluate for a config that `validation.validate` has accepted (main.py
    validates once, before it makes the synthetic data)."""
    workdir = pathlib.Path(workdir)
    with workdir_lock(workdir):
        if config.get("stage") == "pretrain":
            stage, profiler = AutoencoderStage.from_run(config, workdir), None
        else:
            stage = HourglassStage(config, finetune=config.get("stage") == "finetune")
            profiler = StepProfiler(profile_dir)
        return loop.run(stage, config, workdir, allow_config_change=allow_config_change,
                        profiler=profiler)


def check_data(config, train_split: data.Split) -> None:
    """The prepared data against the config, before anything is trained."""
    if train_split.image_size != config.model.input_size:
        raise TrainingError(f"the data in {config.data_dir} has {train_split.image_size}px "
                            f"crops but config.model.input_size is {config.model.input_size}")
    sizes = [("batch_size", config.batch_size)]
    if config.precise_bn.batches:
        sizes.append(("precise_bn.batch_size", config.precise_bn.batch_size))
    for field, size in sizes:
        if len(train_split) < size:
            raise TrainingError(f"the train split of {config.data_dir} has {len(train_split)} "
                                f"samples, fewer than one batch of config.{field}={size}")


class HourglassStage:
    """The Stacked Hourglass on its prepared crops (shg_jax.loop.Stage): the data-parallel
    train step, precise BatchNorm statistics if asked, validation, the plateau schedule,
    heatmap images in TensorBoard. `finetune`: a new run starts from stage 1's autoencoder
    inside its SHG (pretrain.finetune_state)."""

    name, unit, epoch_prefix, step_summaries = "epoch", "img", "epoch/", True
    best = ("best", "best_loss")

    def __init__(self, config: ml_collections.ConfigDict, *, finetune: bool = False):
        self.config, self.finetune = config, finetune
        self.train_split = data.Split(config.data_dir, "train")
        self.val_split = data.Split(config.data_dir, "val")
        check_data(config, self.train_split)
        self.steps = Steps(config, self.train_split.mean_rgb,
                           label_offset_x=self.train_split.label_offset_x)
        self.schedule = PlateauSchedule.from_config(config)
        self.num_epochs, self.batch_size = config.num_epochs, config.batch_size
        # The last partial batch is kept (config.drop_last False: the thesis' DataLoader),
        # cut to a multiple of the devices it is split over.
        self.batching = dict(drop_last=config.drop_last, multiple=jax.device_count())
        self.steps_per_epoch = data.steps_per_epoch(len(self.train_split), config.batch_size,
                                                    train=True, **self.batching)

    def init_state(self):
        return self.steps.init_state()

    def start(self, state):
        return finetune_state(self.steps, self.config) if self.finetune else state

    def resume(self, state, record: RunRecord):
        self.schedule = PlateauSchedule.from_dict(record.schedule)
        if self.config.learning_rate != record.config["learning_rate"]:
            # Allowed by the config check (--allow_config_change): an explicit new rate
            # replaces the one the run had reached.
            log(f"learning rate set to {self.config.learning_rate} (was "
                f"{self.schedule.lr})")
            self.schedule.lr = self.config.learning_rate
            state = with_learning_rate(state, self.config.learning_rate)
        return state

    def begin_epoch(self, state, epoch: int):
        return state

    def batches(self, epoch: int, start_step: int):
        batches = data.train_batches(self.train_split, self.config.batch_size,
                                     seed=self.config.seed, epoch=epoch,
                                     start_step=start_step, process_index=jax.process_index(),
                                     process_count=jax.process_count(), **self.batching)
        return data.prefetch(batches, size=self.config.prefetch,
                             transform=lambda b: placement.shard_batch(b, self.steps.mesh))

    def train_step(self, state, batch):
        return self.steps.train_step(state, batch)

    def end_epoch(self, state, epoch: int, logger: SummaryLogger):
        """Precise BatchNorm statistics if asked, validation, the plateau rule, the heatmap
        images of the first validation crops."""
        state = refresh_batch_stats(self.steps, state, self.train_split, self.config, epoch)
        val = evaluate_split(self.steps, state, self.val_split, self.config.eval_batch_size,
                             desc=f"epoch {epoch + 1} validation")
        if self.schedule.step(val["all/pck"]):
            state = with_learning_rate(state, self.schedule.lr)
        log_images(logger, self.steps, state, self.val_split, self.config, epoch + 1)
        return state, {"val_loss": val["loss"], "val_pck": val["all/pck"],
                       "val_pck_visible": val["visible/pck"],
                       "val_pck_limbs": val["limbs/pck"]}

    def record_fields(self) -> dict:
        """What opening the run needs without its data: the training data's mean RGB and
        label offset; and the schedule."""
        return dict(schedule=self.schedule.to_dict(),
                    mean_rgb=[float(m) for m in self.train_split.mean_rgb],
                    label_offset_x=self.train_split.label_offset_x)

    @staticmethod
    def describe(m: dict) -> str:
        return (f"val loss {m['val_loss']:.4g}, val PCK {m['val_pck']:.4f} (v=2 "
                f"{m['val_pck_visible']:.4f}, limbs {m['val_pck_limbs']:.4f})")


def log_images(logger, steps, state, split, config, epoch) -> None:
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


def refresh_batch_stats(steps: Steps, state, split: data.Split, config, epoch: int):
    """Precise BatchNorm (config.precise_bn): the state with every running statistic replaced
    by its mean over the first `batches` global batches of `batch_size` crops of epoch
    `epoch`'s order of `split` (as many as it holds; check_data asks for one), under the
    state's parameters. The crops are not augmented: the statistics are for evaluation. Off
    (the state as it is) when batches is 0."""
    precise = config.precise_bn
    if not precise.batches:
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
