"""TensorBoard logging (tensorboardX), written by process 0 only."""

from __future__ import annotations

import pathlib

import jax
import numpy as np


class SummaryLogger:
    """Scalars and images under WORKDIR/tb; a no-op on processes other than 0."""

    def __init__(self, logdir, enabled: bool | None = None):
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self.writer = None
        if self.enabled:
            from tensorboardX import SummaryWriter
            pathlib.Path(logdir).mkdir(parents=True, exist_ok=True)
            self.writer = SummaryWriter(str(logdir))

    def scalars(self, values: dict, step: int) -> None:
        if self.writer:
            for tag, value in values.items():
                self.writer.add_scalar(tag, float(value), step)

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        """(H, W, 3) uint8."""
        if self.writer:
            self.writer.add_image(tag, image, step, dataformats="HWC")

    def flush(self) -> None:
        if self.writer:
            self.writer.flush()

    def close(self) -> None:
        if self.writer:
            self.writer.close()


class StepProfiler:
    """Traces `steps` training steps after `skip` warm-up steps of this process into
    `directory` (jax.profiler; TensorBoard's profile plugin or ui.perfetto.dev open it).
    A no-op without a directory. Call `step(loss)` after every train step."""

    def __init__(self, directory, skip: int = 5, steps: int = 5):
        self.directory, self.skip, self.steps = directory, skip, steps
        self.count = 0

    def step(self, loss) -> None:
        if not self.directory:
            return
        self.count += 1
        if self.count == self.skip:
            jax.block_until_ready(loss)
            jax.profiler.start_trace(str(self.directory), create_perfetto_trace=True)
        elif self.count == self.skip + self.steps:
            jax.block_until_ready(loss)
            jax.profiler.stop_trace()
            print(f"profile of {self.steps} steps written to {self.directory}")

    def close(self) -> None:
        """Stops a trace still running (a run shorter than skip + steps)."""
        if self.directory and self.skip <= self.count < self.skip + self.steps:
            jax.profiler.stop_trace()
            self.count = self.skip + self.steps
