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
metrics, and what opening the run needs without its data (mean RGB, label offset). Orbax writes into a temporary folder and renames it when complete, so a killed save
is never restored.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import math
import pathlib

import jax
import numpy as np
import orbax.checkpoint as ocp

from shg_jax import placement
from shg_jax.errors import UserError

KINDS = ("latest", "best", "best_loss")
#: The named best checkpoints: the validation metric each ranks by, and which end is best.
BEST = {"best": ("val_pck", "max"), "best_loss": ("val_loss", "min")}

#: The record format written now. Records without a version are this format too (they were
#: written before the field existed); a higher version was written by a newer shg-jax.
RECORD_VERSION = 1


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
    label_offset_x: float | None = None   # the training labels' (the flip test's shift)
    source: dict | None = None            # stage 1: the SHG checkpoint of its latents
    converted_from: str | None = None
    version: int = RECORD_VERSION

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where="a checkpoint") -> "RunRecord":
        version = d.get("version", RECORD_VERSION)
        if version > RECORD_VERSION:
            raise CheckpointError(f"{where} has a record of version {version}, written by a "
                                  f"newer shg-jax (this one reads up to {RECORD_VERSION}); "
                                  f"update shg-jax to open it")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


class _OrbaxNotices(logging.Filter):
    """Drops two Orbax warnings that say nothing to a user: that a read-only manager is
    read-only (every command that opens a run does so on purpose, and the line would follow
    each of them), and that a state folder has no metadata file of its own (ours never
    have one; the shape check of a failed restore reads it)."""

    NOTICES = ("Given directory is read only", "Metadata file does not exist")

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.NOTICES)


logging.getLogger("absl").addFilter(_OrbaxNotices())


class CheckpointError(UserError):
    """No checkpoint where one was asked for; the message says what exists."""


class DamagedCheckpoint(CheckpointError):
    """A checkpoint whose files cannot be read back (a damaged or truncated array file,
    unreadable metadata); `step` says which, the message names the file Orbax failed on."""

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step


class WriteError(CheckpointError):
    """A checkpoint could not be written (disk full, permissions); earlier ones are intact."""


def _reason(error: BaseException, limit: int = 400) -> str:
    """The innermost cause's first line (TensorStore's names the array and the file), cut
    to `limit` characters: what a damaged-checkpoint message needs, without the spec dump."""
    while error.__cause__ is not None:
        error = error.__cause__
    text = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _rank(metrics, name: str, mode: str) -> tuple:
    """Sort key of a checkpoint for one named best (larger is better; at equal values the
    earlier step wins, as "improved on the best so far" does); missing or NaN ranks last."""
    value = (metrics or {}).get(name)
    if value is None or value != value:
        return (-math.inf, 0)
    return (value if mode == "max" else -value, -metrics.get("step", 0))


def array_digests(state) -> dict[str, str]:
    """{array path: SHA-256 of its bytes} of a state: saved with every checkpoint and checked
    on restore, because Orbax stores arrays without checksums, so a flipped byte in an
    uncompressed chunk would otherwise restore silently as different weights."""
    host = placement.to_host(state)              # every process holds the replicated state
    return {jax.tree_util.keystr(path): hashlib.sha256(
                np.ascontiguousarray(leaf).tobytes()).hexdigest()
            for path, leaf in jax.tree_util.tree_flatten_with_path(host)[0]}


class Checkpoints:
    """The checkpoints of one run. `best` names the BEST entries this run ranks (training:
    both; autoencoder pretraining: best_loss only)."""

    def __init__(self, workdir, keep: int = 3, *, read_only: bool = False,
                 best: tuple = tuple(BEST)):
        self.root = pathlib.Path(workdir).absolute() / "checkpoints"
        if read_only and not self.root.is_dir():
            raise CheckpointError(f"no checkpoints in {workdir} (expected {self.root}); "
                                  f"train with python main.py --workdir {workdir} first")
        if (self.root / "latest").is_dir():
            raise CheckpointError(
                f"{self.root} holds checkpoints in the layout of shg-jax before 2026-11-26 "
                f"(latest/, best/, best_loss/ folders), which this version does not read; "
                f"open it with that version (git checkout a8269df) or retrain into a new "
                f"--workdir")
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
                                            array_digests=array_digests(state)))),
                metrics=metrics)
        except (OSError, ValueError) as e:    # Orbax wraps a failed write in ValueError
            raise self._write_error(step, e) from e

    def _write_error(self, step, error) -> WriteError:
        kept = [s for s in self.steps() if s != step]
        return WriteError(f"cannot write checkpoint {self.root / str(step)} "
                          f"({_reason(error)}); the checkpoints before it are intact "
                          f"(steps {kept}): free disk space and rerun the same command to "
                          f"resume from the latest")

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def record(self, step: int) -> dict:
        """The record of a checkpoint, every field present (RunRecord.to_dict)."""
        return RunRecord.from_dict(self._meta(step), self.root / str(step)).to_dict()

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
                                 f"{_reason(error)}", step)

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
            if len(steps) == 1 and self.record(steps[0])["converted_from"]:
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
            if rec["epoch"] == epoch and rec["step_in_epoch"] == 0:
                return step
        kept = sorted({r["epoch"] for r in records.values() if r["step_in_epoch"] == 0})
        raise CheckpointError(f"no checkpoint of epoch {epoch} in {self.root}; "
                              f"epochs kept: {kept}")

    def restore(self, step: int, target_state) -> tuple:
        """-> (state laid out like `target_state`, its record). Raises DamagedCheckpoint
        when the files cannot be read, CheckpointError when they hold another model."""
        meta = self._meta(step)
        record = RunRecord.from_dict(meta, self.root / str(step)).to_dict()
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target_state)
        try:
            out = self.manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract)))
        except Exception as e:
            mismatch = self._shape_mismatch(step, abstract)
            if mismatch:
                raise CheckpointError(f"{self.root / str(step)} holds another model than "
                                      f"this config's ({mismatch})") from e
            raise self._damaged(step, e) from e
        saved = meta.get("array_digests")             # None: saved before digests existed
        if saved is not None:
            restored = array_digests(out.state)
            changed = [name for name, digest in restored.items() if saved.get(name) != digest]
            if changed or set(saved) != set(restored):
                raise self._damaged(step, ValueError(
                    f"array {(changed or sorted(set(saved) ^ set(restored)))[0]} is not the "
                    f"one saved (its SHA-256 differs: the files changed on disk)"))
        return out.state, record

    def _shape_mismatch(self, step: int, abstract) -> str | None:
        """Why the checkpoint's arrays cannot take the shapes of `abstract` (None when they
        can, or when its metadata is unreadable too: then the files are what is wrong)."""
        try:
            stored = ocp.StandardCheckpointer().metadata(
                self.root / str(step) / "state").item_metadata.tree
        except Exception:
            return None
        shapes = sorted(tuple(a.shape) for a in jax.tree.leaves(stored))
        wanted = sorted(tuple(a.shape) for a in jax.tree.leaves(abstract))
        if shapes == wanted:
            return None
        return (f"{len(shapes)} arrays of {sum(map(math.prod, shapes)):,} values stored, "
                f"{len(wanted)} arrays of {sum(map(math.prod, wanted)):,} values wanted")

    def set_aside(self, step: int) -> pathlib.Path:
        """Moves a damaged checkpoint out of the run's checkpoints (never deletes it), to
        WORKDIR/damaged_checkpoints/STEP[-N], so that the resumed run can write that step
        again; returns where it went. Process 0 moves, every process then rereads."""
        target = self.root.parent / "damaged_checkpoints" / str(step)
        n = 1
        while target.exists():
            target, n = target.with_name(f"{step}-{n}"), n + 1
        if jax.process_index() == 0:
            target.parent.mkdir(exist_ok=True)
            (self.root / str(step)).rename(target)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            multihost_utils.sync_global_devices(f"set aside checkpoint {step}")
        self.manager.reload()
        return target

    def wait(self) -> None:
        try:
            self.manager.wait_until_finished()
        except (OSError, ValueError) as e:
            raise self._write_error(self.saving, e) from e

    def close(self) -> None:
        self.manager.close()
