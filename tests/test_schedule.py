"""The plateau rule on scripted validation-PCK sequences."""

import math

import pytest

from shg_jax.schedule import PlateauSchedule


def run(pcks, **kw):
    s = PlateauSchedule(lr=2.5e-4, **kw)
    lrs = []
    for p in pcks:
        s.step(p)
        lrs.append(s.lr)
    return s, lrs


def test_drops_once_after_six_epochs_without_improvement():
    # Best at epoch index 2; epochs 3..8 are six epochs without improvement: PyTorch drops
    # when the bad-epoch count exceeds patience=5, i.e. at the end of epoch 8.
    pcks = [0.1, 0.2, 0.3] + [0.3, 0.29, 0.25, 0.3, 0.1, 0.2] + [0.2] * 20
    s, lrs = run(pcks)
    assert lrs[:8] == [2.5e-4] * 8
    assert lrs[8] == pytest.approx(5e-5)
    assert all(lr == pytest.approx(5e-5) for lr in lrs[8:])   # the floor: never again
    assert s.drops == 1


def test_improvement_resets_the_count():
    pcks = [0.1, 0.1, 0.1, 0.1, 0.1, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2]
    _, lrs = run(pcks)
    # Improvement at index 5 resets; indices 6..10 are only 5 bad epochs: no drop yet.
    assert lrs == [2.5e-4] * 11
    _, lrs = run(pcks + [0.2])
    assert lrs[-1] == pytest.approx(5e-5)


def test_relative_threshold_and_nan():
    # 0.30002 is not better than 0.3 * (1 + 1e-4) = 0.30003: counts as a bad epoch.
    s = PlateauSchedule(lr=1.0)
    s.step(0.3)
    s.step(0.30002)
    assert s.bad_epochs == 1 and s.best == 0.3
    s.step(0.31)
    assert s.bad_epochs == 0 and s.best == 0.31
    s.step(math.nan)
    assert s.bad_epochs == 1


def test_without_floor_it_keeps_dropping_by_factor_and_never_below_min():
    s, lrs = run([0.5] + [0.1] * 30, min_lr=1e-6)
    # Drops at indices 6, 12, 18, 24, 30: 2.5e-4 * 0.2**k, floored at 1e-6.
    assert lrs[6] == pytest.approx(5e-5) and lrs[12] == pytest.approx(1e-5)
    assert lrs[18] == pytest.approx(2e-6) and lrs[24] == pytest.approx(1e-6)
    assert min(lrs) >= 1e-6 and s.drops == 4


def test_round_trip_through_a_dict():
    s, _ = run([0.1, 0.2, 0.1])
    t = PlateauSchedule.from_dict(s.to_dict())
    assert t == s
    fresh = PlateauSchedule(lr=1.0)
    assert PlateauSchedule.from_dict(fresh.to_dict()) == fresh


def test_milestones_drop_after_fixed_epochs_as_well():
    # Improving every epoch, so the plateau rule never fires; milestones 3 and 5 drop.
    s, lrs = run([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], milestones=(3, 5), min_lr=1e-7)
    assert lrs == pytest.approx([2.5e-4, 2.5e-4, 5e-5, 5e-5, 1e-5, 1e-5])
    assert s.drops == 2
    assert PlateauSchedule.from_dict(s.to_dict()) == s
