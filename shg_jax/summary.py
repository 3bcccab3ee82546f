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
