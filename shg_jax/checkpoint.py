"""Orbax checkpoints of a training run.

    WORKDIR/checkpoints/latest/STEP     the last `keep` saves (every epoch end, interrupts)
    WORKDIR/checkpoints/best/STEP       the epoch with the best validation PCK
    WORKDIR/checkpoints/best_loss/STEP  the epoch with the lowest validation loss

Each save holds the TrainState (parameters, BatchNorm statistics, optimizer state with the
learning rate, step) and a JSON RunRecord (versioned; one type for training, autoencoder
pretraining and converted weights): the config, the completed epochs, the data iterator's
position (epoch index and step within it), the plateau schedule, the history of epoch
metrics, and what opening the run needs without its data (mean RGB, label offset). Orbax writes into a temporary folder and renames it when complete, so a killed save
is never restored.
"""

from __future__ import annotations

import dataclasses
import pathlib

import jax
import orbax.checkpoint as ocp

from shg_jax.errors import UserError

KINDS = ("latest", "best", "best_loss")

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


class CheckpointError(UserError):
    """No checkpoint where one was asked for; the message says what exists."""


class Checkpoints:
    def __init__(self, workdir, keep: int = 3, *, read_only: bool = False):
        self.root = pathlib.Path(workdir).absolute() / "checkpoints"
        if read_only and not self.root.is_dir():
            raise CheckpointError(f"no checkpoints in {workdir} (expected {self.root}); "
                                  f"train with python main.py --workdir {workdir} first")

        def manager(kind, max_to_keep):
            options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=not read_only,
                                                   read_only=read_only,
                                                   cleanup_tmp_directories=not read_only)
            return ocp.CheckpointManager(self.root / kind, options=options)

        self.managers = {"latest": manager("latest", keep), "best": manager("best", 1),
                         "best_loss": manager("best_loss", 1)}

    def save(self, kind: str, state, record: RunRecord) -> None:
        step = int(record.global_step)
        mgr = self.managers[kind]
        if step in mgr.all_steps():
            return
        # One save in flight at a time: with several processes, Orbax names its commit
        # barrier by step, so two managers saving the same step at once would collide.
        self.wait()
        mgr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                               meta=ocp.args.JsonSave(record.to_dict())))

    def latest_step(self, kind: str = "latest") -> int | None:
        return self.managers[kind].latest_step()

    def record(self, kind: str, step: int) -> dict:
        """The record of a checkpoint, every field present (RunRecord.to_dict)."""
        meta = self.managers[kind].restore(
            step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
        return RunRecord.from_dict(meta, self.root / kind / str(step)).to_dict()

    def find(self, which: str) -> tuple[str, int]:
        """'latest' | 'best' | 'best_loss' | an epoch number -> (kind, step)."""
        if which in KINDS:
            step = self.latest_step(which)
            if step is None:
                raise CheckpointError(f"no {which!r} checkpoint in {self.root}")
            return which, step
        try:
            epoch = int(which)
        except ValueError:
            raise CheckpointError(f"checkpoint must be one of {KINDS} or an epoch number, "
                                  f"got {which!r}") from None
        for kind in KINDS:
            for step in self.managers[kind].all_steps():
                rec = self.record(kind, step)
                if rec["epoch"] == epoch and rec["step_in_epoch"] == 0:
                    return kind, step
        kept = sorted({self.record(k, s)["epoch"] for k in KINDS
                       for s in self.managers[k].all_steps()})
        raise CheckpointError(f"no checkpoint of epoch {epoch} in {self.root}; "
                              f"epochs kept: {kept}")

    def restore(self, kind: str, step: int, target_state) -> tuple:
        """-> (state laid out like `target_state`, its record)."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target_state)
        out = self.managers[kind].restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
        where = self.root / kind / str(step)
        return out.state, RunRecord.from_dict(out.meta, where).to_dict()

    def wait(self) -> None:
        for mgr in self.managers.values():
            mgr.wait_until_finished()

    def close(self) -> None:
        for mgr in self.managers.values():
            mgr.close()
