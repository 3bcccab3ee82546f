"""The plateau rule on scripted validation-PCK sequences.

Known answers: each expected rate is worked out by hand from PyTorch's
`ReduceLROnPlateau.step` (torch/optim/lr_scheduler.py): better means
`a > best * (1 + threshold)` (mode "max", threshold_mode "rel"); a bad epoch counts, then a
cooldown epoch zeroes the count; the rate drops when the count exceeds `patience`, which
then restarts the count and the cooldown; the new rate is max(lr * factor, min_lr), taken
only when it is more than eps = 1e-8 (absolute) below the old one."""

import math

import pytest

from shg_jax.schedule import PlateauSchedule


def run(pcks, lr=2.5e-4, **kw):
    s = PlateauSchedule(lr=lr, **kw)
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


def test_improvement_is_relative_to_the_best_in_both_directions():
    """Relative, not absolute: near 10 an absolute 1e-4 would call 10.0005 better, the
    relative rule needs more than 10.001; near 0.001 the relative rule calls 0.0010002
    better, an absolute one would need 0.0011."""
    _, lrs = run([10.0, 10.0005, 10.0005], lr=1.0, factor=0.5, patience=1, min_lr=0.0)
    assert lrs == [1.0, 1.0, 0.5]             # two bad epochs > patience 1: a drop
    _, lrs = run([0.001, 0.0010002, 0.0010004], lr=1.0, factor=0.5, patience=1, min_lr=0.0)
    assert lrs == [1.0, 1.0, 1.0]             # each epoch better than the last


def test_patience_counts_bad_epochs_and_the_count_restarts_after_a_drop():
    """patience=2: the third bad epoch drops the rate; the count starts again from zero."""
    _, lrs = run([1.0] + [0.5] * 7, lr=1.0, factor=0.5, patience=2, min_lr=0.0)
    assert lrs == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25]


def test_cooldown_epochs_do_not_count_as_bad():
    """cooldown=2, patience=1: after the drop at epoch 3, epochs 4 and 5 are cooldown (their
    count is zeroed), so the next drop comes at epoch 7; without cooldown at epoch 5."""
    pcks = [1.0] + [0.9] * 7
    _, with_cooldown = run(pcks, lr=1.0, factor=0.5, patience=1, min_lr=0.0, cooldown=2)
    assert with_cooldown == [1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25]
    _, without = run(pcks, lr=1.0, factor=0.5, patience=1, min_lr=0.0)
    assert without == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25, 0.125, 0.125]


def test_min_lr_floors_the_rate_and_eps_is_absolute():
    """min_lr: 1.0 * 0.2 -> max(0.2, 0.3) = 0.3, then 0.3 stays. eps (1e-8, absolute): from
    2e-8 a drop by 0.2 to 4e-9 (1.6e-8 below) is taken; the next, to 8e-10 (3.2e-9 below), is
    not, and the rate stays 4e-9."""
    _, lrs = run([1.0, 0.5, 0.5, 0.5, 0.5], lr=1.0, factor=0.2, patience=1, min_lr=0.3)
    assert lrs == [1.0, 1.0, 0.3, 0.3, 0.3]
    s, lrs = run([1.0, 0.5, 0.5, 0.5, 0.5], lr=2e-8, factor=0.2, patience=1, min_lr=0.0)
    assert lrs == pytest.approx([2e-8, 2e-8, 4e-9, 4e-9, 4e-9], rel=1e-12, abs=0)
    assert s.drops == 1
