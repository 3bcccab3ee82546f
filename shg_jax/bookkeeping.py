"""A training run's bookkeeping, for the training loop (shg_jax.loop) of every stage: the
workdir lock, the Ctrl-C flag, the config check on resume, resuming from the newest readable
checkpoint, and logging on process 0."""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import pathlib
import signal
import socket

from typing import Any

import jax
import ml_collections

from shg_jax.checkpoint import CheckpointError, Checkpoints, DamagedCheckpoint, RunRecord
from shg_jax.errors import RunStopped

#: Config fields that may change when a run is resumed; any other difference is refused.
RESUMABLE_FIELDS = ("num_epochs", "log_every_steps", "keep_checkpoints", "num_tb_images",
                    "data_dir", "eval_batch_size", "synthetic", "pretrain.num_epochs", "decode")


def log(*args, **kwargs) -> None:
    """print() on process 0 only."""
    if jax.process_index() == 0:
        print(*args, **kwargs)


class TrainingError(RunStopped):
    """Training cannot go on (non-finite loss, busy workdir, config mismatch); the message
    says why."""


def config_differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted names of the fields whose values differ (missing fields included)."""
    diffs = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        name = prefix + key
        if name in RESUMABLE_FIELDS:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += config_differences(a, b, name + ".")
        elif a != b:
            diffs.append(f"{name}: {a!r} in the run, {b!r} now")
    return diffs


def config_json(config: ml_collections.ConfigDict) -> dict:
    return json.loads(config.to_json())


@contextlib.contextmanager
def interrupt_flag():
    """SIGINT sets flag['stop'] instead of raising; a second SIGINT raises as usual."""
    flag = {"stop": False}

    def handler(signum, frame):
        if flag["stop"]:
            raise KeyboardInterrupt
        flag["stop"] = True
        log("\ninterrupted: saving a checkpoint at the next step (Ctrl-C again to abort)",
            flush=True)

    try:
        previous = signal.signal(signal.SIGINT, handler)
    except ValueError:                                   # not the main thread
        yield flag
        return
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def workdir_lock(workdir):
    """Holds WORKDIR/.lock for one training run (process 0): a second run started on the same
    workdir is refused while the first one lives, instead of both writing checkpoints. An
    advisory flock, so the kernel releases it when the holder exits however it dies
    (SIGKILL included): a killed run never leaves a stale lock."""
    if jax.process_index() != 0:
        yield
        return
    path = pathlib.Path(workdir) / ".lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise TrainingError(f"{workdir} is in use by another training run ({holder}); "
                                f"wait for it to end, or use another --workdir") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()}, since "
                f"{datetime.datetime.now().isoformat(timespec='seconds')}\n")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def check_config(run_config: dict, config: ml_collections.ConfigDict, workdir,
                 allow_change: bool) -> list[str]:
    """Refuses to resume `workdir` (made with `run_config`) under a different config unless
    allowed; returns the differing fields."""
    diffs = config_differences(run_config, config_json(config))
    if diffs and not allow_change:
        raise TrainingError(f"{workdir} was made with a different config; differing "
                            f"fields:\n  " + "\n  ".join(diffs) +
                            "\nuse another --workdir, or --allow_config_change to resume")
    return diffs


def resume_latest(ckpts: Checkpoints, state, config: ml_collections.ConfigDict, workdir,
                  allow_change: bool) -> tuple[Any, RunRecord | None]:
    """Where every training run starts: WORKDIR's newest readable checkpoint restored in the
    layout of `state` (after the config check) and its record, or (state, None) for a new
    run. A damaged checkpoint (a killed disk, a truncated copy) is skipped with one line and
    moved to WORKDIR/damaged_checkpoints/, never deleted; when none is readable the run
    stops with the first one's reason."""
    damaged = []
    for step in reversed(ckpts.steps()):
        try:
            check_config(ckpts.record(step).config, config, workdir, allow_change)
            restored = ckpts.restore(step, state)
        except DamagedCheckpoint as e:
            damaged.append(e)
            continue
        except CheckpointError as e:            # another model under --allow_config_change
            raise TrainingError(f"cannot resume: {e}") from e
        for e in damaged:
            moved = ckpts.set_aside(e.step)
            log(f"warning: {e}; moved it to {moved} (kept, not deleted) and resuming from "
                f"step {step}")
        return restored
    if damaged:
        raise TrainingError(f"no readable checkpoint in {ckpts.root}: {damaged[0]}; move "
                            f"the folder aside to start this run again from scratch")
    return state, None
