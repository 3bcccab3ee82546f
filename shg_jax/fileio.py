"""Atomic file writes: a reader (or a rerun after a crash) never sees a half-written file,
and a failed write (a full disk, no permission) leaves nothing behind but one line."""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil

from shg_jax.errors import UserError


class StorageError(UserError):
    """A write failed (disk full, no permission); its temporary file or folder is gone."""

    def __init__(self, path, reason: str):
        super().__init__(f"cannot write {path}: {reason}; free disk space (or fix the "
                         f"permissions) and rerun the same command: it goes on from its "
                         f"last complete output")
        self.reason = reason


@contextlib.contextmanager
def cleaned_up(path: os.PathLike, tmp: os.PathLike):
    """Around writing `tmp` (a file or folder renamed to `path` once complete): a failed
    write removes `tmp` and becomes a StorageError naming `path`."""
    try:
        yield
    except (OSError, StorageError) as e:
        tmp = pathlib.Path(tmp)
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        reason = e.reason if isinstance(e, StorageError) else (e.strerror or str(e))
        raise StorageError(path, reason) from None


def tmp_name(path: os.PathLike) -> pathlib.Path:
    """A sibling temporary name, unique per process, that no reader accepts."""
    path = pathlib.Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def is_tmp(path: os.PathLike) -> bool:
    name = pathlib.Path(path).name
    return name.startswith(".") and ".tmp-" in name


def write_json(path: os.PathLike, obj) -> None:
    """Writes JSON to a temporary name, fsyncs, then renames over `path`."""
    write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def write_bytes(path: os.PathLike, data: bytes) -> None:
    path = pathlib.Path(path)
    tmp = tmp_name(path)
    with cleaned_up(path, tmp):
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:          # another user's live process
        return True
    return True


def remove_tmp(folder: os.PathLike) -> None:
    """Deletes temporary files and folders left in `folder` by a killed writer (one whose
    process is gone; a live writer's are its own)."""
    folder = pathlib.Path(folder)
    if folder.is_dir():
        for p in folder.iterdir():
            if not is_tmp(p):
                continue
            pid = p.name.rsplit(".tmp-", 1)[1]
            if pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid)):
                continue
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
