"""Orbax checkpoints of a training run: one CheckpointManager, one folder per saved step.

    WORKDIR/checkpoints/STEP    every epoch end (with its validation metrics) and interrupt

A step is written once. What stays is the union of Orbax preservation policies: the last
`keep` saves (LatestN: interrupt saves leave with them), the epoch with the best validation
PCK and the epoch with the lowest validation loss (BestN, ties to the earlier epoch; kept
however old). `--checkpoint latest | best | best_loss | EPOCH` names one of them (`find`).

Each save holds the TrainState (parameters, BatchNorm statistics, optimizer state with the
learning rate, step) and a JSON RunRecord (versioned; one type for training, autoencoder
pretraining and converted weights): the config, the completed epochs, the data iterator's
position (epoch index and step within it), the plateau schedule, the history of epoch
metrics, and what opening the run needs without its data (mean RGB, label offset), with the
SHA-256 of every array (shg_jax.integrity). Orbax writes into a temporary folder and renames
it when complete, so a killed save is never restored.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import pathlib

import jax
import orbax.checkpoint as ocp

from shg_jax import integrity
from shg_jax.errors import RunStopped, UserError

KINDS = ("latest", "best", "best_loss")
#: The named best checkpoints: the validation metric each ranks by, and which end is best.
BEST = {"best": ("val_pck", "max"), "best_loss": ("val_loss", "min")}

#: The record format written now, and the only one read: any other version was written by
#: another shg-jax (older: a development version; newer: an update to install). The record
#: holds the run's config, so a change of the config's fields is a change of the format.
RECORD_VERSION = 3


@dataclasses.dataclass
class RunRecord:
    """The JSON record saved beside every checkpoint's state, for every kind of run: SHG
    training (shg_jax.train), autoencoder pretraining (`source` set), converted thesis
    weights (`converted_from` set)."""
    config: dict                          # the run's config (runs.config_json)
    epoch: int = 0                        # completed epochs
    step_in_epoch: int = 0                # steps of the epoch in progress (mid-epoch saves)
    global_step: int = 0
    history: list = dataclasses.field(default_factory=list)   # one dict per epoch
    best_pck: float | None = None         # best validation PCK so far (SHG runs)
    best_loss: float | None = None        # lowest validation loss so far
    schedule: dict | None = None          # the plateau schedule (SHG runs)
    epoch_loss_sum: float = 0.0           # training loss of the epoch in progress
    epoch_loss_count: int = 0
    mean_rgb: list | None = None          # the training data's, subtracted from inputs
    label_offset_x: float = 0.0           # the training labels' (the flip test's shift)
    source: dict | None = None            # stage 1: the SHG checkpoint of its latents
    converted_from: str | None = None
    version: int = RECORD_VERSION

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where="a checkpoint") -> "RunRecord":
        version = d.get("version")
        if version != RECORD_VERSION:
            by = ("a newer shg-jax: update shg-jax to open it" if isinstance(version, int)
                  and version > RECORD_VERSION else "an earlier development version of "
                  "shg-jax, which this one does not open: train it again into a new --workdir")
            raise CheckpointError(f"{where} has a record of version {version} (this shg-jax "
                                  f"reads version {RECORD_VERSION}), written by {by}")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


class CheckpointError(UserError):
    """No checkpoint where one was asked for; the message says what exists."""


class DamagedCheckpoint(CheckpointError):
    """A checkpoint whose files cannot be read back (a damaged or truncated array file,
    unreadable metadata); `step` says which, the message names the file Orbax failed on."""

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step


class WriteError(RunStopped, CheckpointError):
    """A checkpoint could not be written (disk full, permissions); earlier ones are intact."""


def _rank(metrics, name: str, mode: str) -> tuple:
    """Sort key of a checkpoint for one named best (larger is better; at equal values the
    earlier step wins, as "improved on the best so far" does); missing or NaN ranks last."""
    value = (metrics or {}).get(name)
    if value is None or value != value:
        return (-math.inf, 0)
    return (value if mode == "max" else -value, -metrics.get("step", 0))


class Checkpoints:
    """The checkpoints of one run. `best` names the BEST entries this run ranks (training:
    both; autoencoder pretraining: best_loss only)."""

    def __init__(self, workdir, keep: int = 3, *, read_only: bool = False,
                 best: tuple = tuple(BEST)):
        self.root = pathlib.Path(workdir).absolute() / "checkpoints"
        if read_only and not self.root.is_dir():
            raise CheckpointError(f"no checkpoints in {workdir} (expected {self.root}); "
                                  f"train with python main.py --workdir {workdir} first")
        self.best = best
        self.saving = None                    # the step of the last save started
        name, mode = BEST[best[0]]
        policies = [ocp.checkpoint_managers.LatestN(keep)] + [
            ocp.checkpoint_managers.BestN(
                get_metric_fn=functools.partial(_rank, name=BEST[b][0], mode=BEST[b][1]),
                n=1, keep_checkpoints_without_metrics=False) for b in best]
        options = ocp.CheckpointManagerOptions(
            read_only=read_only, create=not read_only, cleanup_tmp_directories=not read_only,
            save_interval_steps=0 if read_only else 1,
            # best_fn makes Orbax store each save's metrics (the policies read them back
            # when a run resumes); which checkpoints stay is the policies' decision.
            best_fn=functools.partial(_rank, name=name, mode=mode), best_mode="max",
            preservation_policy=None if read_only else
            ocp.checkpoint_managers.AnyPreservationPolicy(policies))
        self.manager = ocp.CheckpointManager(self.root, options=options)

    def save(self, state, record: RunRecord, metrics: dict | None = None) -> None:
        """Saves `state` and `record` at the record's global step (once). `metrics`: the
        epoch's validation numbers (val_pck, val_loss); None for an interrupt save, which
        no best ranks and LatestN lets go."""
        step = int(record.global_step)
        if step in self.manager.all_steps():
            return
        self.saving = step
        metrics = {} if metrics is None else dict(metrics, step=step)
        try:
            self.manager.save(step, args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                meta=ocp.args.JsonSave(dict(record.to_dict(),
                                            array_digests=integrity.array_digests(state)))),
                metrics=metrics)
        except (OSError, ValueError) as e:    # Orbax wraps a failed write in ValueError
            raise self._write_error(step, e) from e

    def _write_error(self, step, error) -> WriteError:
        kept = [s for s in self.steps() if s != step]
        return WriteError(f"cannot write checkpoint {self.root / str(step)} "
                          f"({integrity.reason(error)}); the checkpoints before it are intact "
                          f"(steps {kept}): free disk space and rerun the same command to "
                          f"resume from the latest")

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def record(self, step: int) -> RunRecord:
        """The record of a checkpoint."""
        return RunRecord.from_dict(self._meta(step), self.root / str(step))

    def _meta(self, step: int) -> dict:
        """The checkpoint's JSON as saved: the record, and the state's array digests."""
        try:
            meta = self.manager.restore(
                step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
        except Exception as e:       # Orbax raises what the file system or JSON raised
            raise self._damaged(step, e) from e
        if not isinstance(meta, dict):
            raise self._damaged(step, ValueError("its meta record is not a JSON object"))
        return meta

    def _damaged(self, step: int, error: BaseException) -> DamagedCheckpoint:
        return DamagedCheckpoint(f"checkpoint {self.root / str(step)} cannot be read: "
                                 f"{integrity.reason(error)}", step)

    def find(self, which: str) -> int:
        """'latest' | 'best' | 'best_loss' | an epoch number -> the step of that checkpoint.
        Weights converted from the thesis' PyTorch files (one step, no validation) answer
        to every name."""
        steps = self.steps()
        if not steps:
            raise CheckpointError(f"no checkpoint in {self.root}")
        if which == "latest":
            return steps[-1]
        if which in BEST:
            name, mode = BEST[which]
            ranked = [(_rank(self.manager.metrics(s), name, mode), s) for s in steps]
            best_rank, step = max(ranked)
            if best_rank[0] > -math.inf:
                return step
            if len(steps) == 1 and self.record(steps[0]).converted_from:
                return steps[0]
            raise CheckpointError(f"no {which!r} checkpoint in {self.root}: no epoch has "
                                  f"ended with a validation {name} yet")
        try:
            epoch = int(which)
        except ValueError:
            raise CheckpointError(f"checkpoint must be one of {KINDS} or an epoch number, "
                                  f"got {which!r}") from None
        records = {s: self.record(s) for s in steps}
        for step, rec in records.items():
            if rec.epoch == epoch and rec.step_in_epoch == 0:
                return step
        kept = sorted({r.epoch for r in records.values() if r.step_in_epoch == 0})
        raise CheckpointError(f"no checkpoint of epoch {epoch} in {self.root}; "
                              f"epochs kept: {kept}")

    def restore(self, step: int, target_state) -> tuple:
        """-> (state laid out like `target_state`, its RunRecord). Raises DamagedCheckpoint
        when the files cannot be read or an array is not the one saved, CheckpointError
        when they hold another model."""
        meta = self._meta(step)
        record = RunRecord.from_dict(meta, self.root / str(step))
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target_state)
        try:
            out = self.manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract)))
        except Exception as e:
            mismatch = integrity.shape_mismatch(self.root / str(step) / "state", abstract)
            if mismatch:
                raise CheckpointError(f"{self.root / str(step)} holds another model than "
                                      f"this config's ({mismatch})") from e
            raise self._damaged(step, e) from e
        changed = integrity.changed_array(meta.get("array_digests") or {}, out.state)
        if changed:
            raise self._damaged(step, ValueError(
                f"array {changed} is not the one saved (its SHA-256 differs: the files "
                f"changed on disk)"))
        return out.state, record

    def set_aside(self, step: int) -> pathlib.Path:
        """Moves a damaged checkpoint out of the run (integrity.set_aside: never deleted) so
        that the resumed run can write that step again; returns where it went."""
        target = integrity.set_aside(self.root, step)
        self.manager.reload()
        return target

    def wait(self) -> None:
        try:
            self.manager.wait_until_finished()
        except (OSError, ValueError) as e:
            raise self._write_error(self.saving, e) from e

    def close(self) -> None:
        self.manager.close()
