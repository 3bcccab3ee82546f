"""analysis.factors: cluster AMI and linear probes against known factors."""

import numpy as np
import pytest

from analysis import factors


def test_ami_is_one_for_the_factor_itself_and_about_zero_for_unrelated_labels():
    rng = np.random.default_rng(0)
    pose = rng.integers(0, 4, 2000)
    renamed = (pose + 1) % 4                                   # cluster ids are arbitrary
    assert factors.cluster_ami(renamed, pose.astype(float), ["a", "b", "c", "d"]) == \
        pytest.approx(1.0)
    unrelated = rng.integers(0, 4, 2000)
    assert abs(factors.cluster_ami(unrelated, pose.astype(float), ["a", "b", "c", "d"])) < 0.01
    # Rows without the factor (NaN) are left out, not counted as a class.
    values = pose.astype(float)
    values[:500] = np.nan
    assert factors.cluster_ami(renamed, values, ["a", "b", "c", "d"]) == pytest.approx(1.0)


def test_a_number_factor_is_cut_into_quantile_bins():
    values = np.arange(100.0)
    labels = factors.discretise(values, None)
    assert np.bincount(labels).tolist() == [20] * factors.QUANTILE_BINS
    assert factors.cluster_ami(labels, values, None) == pytest.approx(1.0)
    assert factors.discretise(np.array([0.0, 2, 1]), ["x", "y", "z"]).tolist() == [0, 2, 1]


def test_probes_read_a_linear_factor_and_not_noise():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2000, 6)).astype(np.float32)
    height = 3 * x[:, 1] - x[:, 4] + 0.05 * rng.normal(size=2000)
    probe = factors.linear_probe(x, height, None, seed=0)
    assert probe["metric"] == "R^2" and probe["score"] > 0.99
    assert abs(probe["baseline"]) < 0.01
    lit = (x[:, 2] > 0).astype(float)
    probe = factors.linear_probe(x, lit, ["left", "right"], seed=0)
    assert probe["metric"] == "accuracy" and probe["score"] > 0.9
    assert probe["baseline"] == pytest.approx(0.5, abs=0.05)
    noise = factors.linear_probe(x, rng.normal(size=2000), None, seed=0)
    assert noise["score"] < 0.02
    coin = factors.linear_probe(x, rng.integers(0, 2, 2000).astype(float), ["a", "b"], seed=0)
    assert coin["score"] < coin["baseline"] + 0.06
    # Only the first components: a factor the probe is not shown is not read.
    assert factors.linear_probe(x[:, :1], height, None, seed=0)["score"] < 0.05


def test_a_probe_holds_out_a_seeded_share_and_reports_too_few_samples():
    mask = factors.holdout_mask(100, seed=3)
    assert mask.sum() == round(factors.HOLDOUT * 100)
    np.testing.assert_array_equal(mask, factors.holdout_mask(100, seed=3))
    few = factors.linear_probe(np.zeros((5, 2)), np.arange(5.0), None, seed=0)
    assert few["score"] is None and few["samples"] == 5
