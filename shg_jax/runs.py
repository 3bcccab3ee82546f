"""Bookkeeping shared by the training loops (shg_jax.train, shg_jax.pretrain): the config
check on resume, Ctrl-C handling, and logging on process 0."""

from __future__ import annotations

import contextlib
import json
import signal

import jax
import ml_collections

#: Config fields that may change when a run is resumed; any other difference is refused.
RESUMABLE_FIELDS = ("num_epochs", "log_every_steps", "keep_checkpoints", "num_tb_images",
                    "data_dir", "eval_batch_size", "synthetic", "pretrain.num_epochs", "decode")


def log(*args, **kwargs) -> None:
    """print() on process 0 only."""
    if jax.process_index() == 0:
        print(*args, **kwargs)


class TrainingError(Exception):
    """Training cannot go on (non-finite loss, config mismatch); the message says why."""


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
