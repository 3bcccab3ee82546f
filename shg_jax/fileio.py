"""Atomic file writes: a reader (or a rerun after a crash) never sees a half-written file."""

from __future__ import annotations

import json
import os
import pathlib
import shutil


def tmp_name(path: os.PathLike) -> pathlib.Path:
    """A sibling temporary name, unique per process, that no reader accepts."""
    path = pathlib.Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def is_tmp(path: os.PathLike) -> bool:
    name = pathlib.Path(path).name
    return name.startswith(".") and ".tmp-" in name


def write_json(path: os.PathLike, obj) -> None:
    """Writes JSON to a temporary name, fsyncs, then renames over `path`."""
    path = pathlib.Path(path)
    tmp = tmp_name(path)
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_bytes(path: os.PathLike, data: bytes) -> None:
    path = pathlib.Path(path)
    tmp = tmp_name(path)
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def remove_tmp(folder: os.PathLike) -> None:
    """Deletes temporary files and folders left in `folder` by a killed writer."""
    folder = pathlib.Path(folder)
    if folder.is_dir():
        for p in folder.iterdir():
            if is_tmp(p):
                shutil.rmtree(p) if p.is_dir() else p.unlink()
