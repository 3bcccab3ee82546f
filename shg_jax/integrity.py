"""Checkpoint integrity: the digests saved with every checkpoint and checked on restore, the
reason a damaged one gives, and setting a damaged one aside (never deleting it).

Orbax stores arrays without checksums, so a flipped byte in an uncompressed chunk would
otherwise restore silently as different weights; and TensorStore's errors run to pages of
spec, of which a user needs the first line of the innermost cause.
"""

from __future__ import annotations

import hashlib
import math
import pathlib

import jax
import numpy as np
import orbax.checkpoint as ocp

from shg_jax import placement


def reason(error: BaseException, limit: int = 400) -> str:
    """The innermost cause's first line (TensorStore's names the array and the file), cut
    to `limit` characters."""
    while error.__cause__ is not None:
        error = error.__cause__
    text = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return text if len(text) <= limit else text[:limit - 3] + "..."


def array_digests(state) -> dict[str, str]:
    """{array path: SHA-256 of its bytes} of a state (every process holds the replicated
    state, so every process computes the same)."""
    host = placement.to_host(state)
    return {jax.tree_util.keystr(path): hashlib.sha256(
                np.ascontiguousarray(leaf).tobytes()).hexdigest()
            for path, leaf in jax.tree_util.tree_flatten_with_path(host)[0]}


def changed_array(saved: dict[str, str], state) -> str | None:
    """The path of the first array of `state` whose digest is not the `saved` one (or that
    one side lacks); None when every array is as saved."""
    restored = array_digests(state)
    changed = [name for name, digest in restored.items() if saved.get(name) != digest]
    changed = changed or sorted(set(saved) ^ set(restored))
    return changed[0] if changed else None


def shape_mismatch(folder: pathlib.Path, abstract) -> str | None:
    """Why the state saved in `folder` cannot take the shapes of `abstract` (None when it
    can, or when its metadata is unreadable too: then the files are what is wrong)."""
    try:
        stored = ocp.StandardCheckpointer().metadata(folder).item_metadata.tree
    except Exception:
        return None
    shapes = sorted(tuple(a.shape) for a in jax.tree.leaves(stored))
    wanted = sorted(tuple(a.shape) for a in jax.tree.leaves(abstract))
    if shapes == wanted:
        return None
    return (f"{len(shapes)} arrays of {sum(map(math.prod, shapes)):,} values stored, "
            f"{len(wanted)} arrays of {sum(map(math.prod, wanted)):,} values wanted")


def set_aside(root: pathlib.Path, step: int) -> pathlib.Path:
    """Moves checkpoint ROOT/STEP to WORKDIR/damaged_checkpoints/STEP[-N] (ROOT is
    WORKDIR/checkpoints) and returns where it went. Process 0 moves; every process waits
    for it."""
    target = root.parent / "damaged_checkpoints" / str(step)
    n = 1
    while target.exists():
        target, n = target.with_name(f"{step}-{n}"), n + 1
    if jax.process_index() == 0:
        target.parent.mkdir(exist_ok=True)
        (root / str(step)).rename(target)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(f"set aside checkpoint {step}")
    return target
