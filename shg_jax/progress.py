"""A dependency-free progress bar for long loops (data preparation, epochs, extraction).

On a terminal it redraws one line; in a log file it prints a line every `log_interval`
seconds, so redirected output stays readable.
"""

from __future__ import annotations

import contextlib
import sys
import time


def format_seconds(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    """progress = Progress(total, "train", unit="crops"); progress.update(n, loss=0.1)."""

    def __init__(self, total: int, desc: str, *, unit: str = "it", stream=None,
                 log_interval: float = 10.0, enabled: bool = True):
        self.total, self.desc, self.unit, self.enabled = total, desc, unit, enabled
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.interval = 0.2 if self.tty else log_interval
        self.done = 0
        self.count = 0                       # items of `unit` (may differ from `done`)
        self.start = self.last = time.perf_counter()

    def update(self, steps: int = 1, count: int | None = None, **postfix) -> None:
        """Advances by `steps` of `total`, and by `count` units (default: `steps`)."""
        self.done += steps
        self.count += steps if count is None else count
        now = time.perf_counter()
        if self.enabled and (now - self.last >= self.interval or self.done >= self.total):
            self.last = now
            self._draw(now, postfix)

    def _draw(self, now: float, postfix: dict) -> None:
        elapsed = max(now - self.start, 1e-9)
        rate = self.count / elapsed
        eta = (self.total - self.done) * elapsed / max(self.done, 1)
        extra = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                         for k, v in postfix.items())
        pct = 100.0 * self.done / max(self.total, 1)
        line = (f"{self.desc}: {self.done}/{self.total} ({pct:.0f}%) {rate:.1f} {self.unit}/s "
                f"elapsed {format_seconds(elapsed)} ETA {format_seconds(eta)} {extra}").rstrip()
        self.stream.write(("\r" + line + "\033[K") if self.tty else line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self.enabled:
            self.stream.write("\n")
            self.stream.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@contextlib.contextmanager
def timed(desc: str, stream=None):
    """Prints "DESC: S s" when the block ends: the stages of a long command that have no
    progress bar of their own (a PCA, a figure), so a log says where the time went."""
    start = time.perf_counter()
    yield
    print(f"{desc}: {time.perf_counter() - start:.1f} s", file=stream or sys.stderr, flush=True)
