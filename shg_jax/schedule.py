"""The thesis' learning-rate rule: PyTorch's ReduceLROnPlateau, as a small explicit state.

The thesis used `ReduceLROnPlateau(mode="max", factor=0.2, patience=5, min_lr=5e-5)` on the
validation PCK with the defaults threshold=1e-4 (relative), cooldown=0 and eps=1e-8. With lr 2.5e-4 the
floor is reached by the first drop, so the rate drops once, by a factor 5, at the end of the
sixth consecutive epoch without a better PCK (PyTorch drops when the count of bad epochs
exceeds `patience`), and never again. The state is a plain dict-able dataclass so that it is
saved in every checkpoint. `milestones` (empty for the thesis) adds drops by the same factor
after fixed epochs, as PyTorch's MultiStepLR would.
"""

from __future__ import annotations

import dataclasses
import math

#: PyTorch's `eps`: a reduction smaller than this (absolute) leaves the rate as it is.
EPS = 1e-8


@dataclasses.dataclass
class PlateauSchedule:
    lr: float
    factor: float = 0.2
    patience: int = 5
    min_lr: float = 5e-5
    threshold: float = 1e-4          # relative: better means > best * (1 + threshold)
    cooldown: int = 0                # epochs after a reduction whose bad epochs do not count
    milestones: tuple = ()           # extension: also drop after these epochs (1-based)
    best: float = -math.inf
    bad_epochs: int = 0
    cooldown_left: int = 0
    drops: int = 0
    epochs: int = 0

    def step(self, metric: float) -> bool:
        """Records one epoch's validation metric (higher is better); returns True when the
        learning rate was lowered. A NaN metric counts as an epoch without improvement."""
        self.epochs += 1
        if metric > self.best * (1.0 + self.threshold):       # as PyTorch, mode="max", "rel"
            self.best, self.bad_epochs = float(metric), 0
        else:
            self.bad_epochs += 1
        if self.cooldown_left > 0:                             # PyTorch's in_cooldown
            self.cooldown_left -= 1
            self.bad_epochs = 0
        drop = self.epochs in self.milestones
        if self.bad_epochs > self.patience:
            self.bad_epochs, self.cooldown_left, drop = 0, self.cooldown, True
        if drop:
            new_lr = max(self.lr * self.factor, self.min_lr)
            if self.lr - new_lr > EPS:
                self.lr, self.drops = new_lr, self.drops + 1
                return True
        return False

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["best"] = None if math.isinf(self.best) else self.best
        d["milestones"] = list(self.milestones)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "PlateauSchedule":
        d = dict(d)
        d["best"] = -math.inf if d["best"] is None else d["best"]
        d["milestones"] = tuple(d["milestones"])
        return cls(**d)

    @classmethod
    def from_config(cls, config) -> "PlateauSchedule":
        p = config.plateau
        return cls(lr=config.learning_rate, factor=p.factor, patience=p.patience,
                   min_lr=p.min_lr, threshold=p.threshold, cooldown=p.cooldown,
                   milestones=tuple(p.milestones))
