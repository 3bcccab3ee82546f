"""PCK on hand-built heatmaps whose expected values are worked out here."""

import jax.numpy as jnp
import numpy as np
import pytest

from shg_jax.pck import add_counts, joint_hits, pck_counts, per_sample_pck, summarize

J, H = 17, 64


def peaks_to_maps(peaks, b=3):
    """{(sample, joint): (x, y)} -> (b, H, H, J) maps with a single 1 at each given peak."""
    maps = np.zeros((b, H, H, J), np.float32)
    for (s, j), (x, y) in peaks.items():
        maps[s, y, x, j] = 1.0
    return jnp.asarray(maps)


def test_threshold_is_half_of_a_tenth_of_the_map():
    # GT at (20, 20); predictions at distances 3 (correct), sqrt(10)=3.16 (correct, < 3.2),
    # sqrt(13)=3.61 (wrong), 4 (wrong), 0 (correct).
    offsets = [(3, 0), (3, 1), (2, 3), (0, 4), (0, 0)]
    gt = peaks_to_maps({(0, j): (20, 20) for j in range(5)})
    pred = peaks_to_maps({(0, j): (20 + dx, 20 + dy) for j, (dx, dy) in enumerate(offsets)})
    correct, annotated = joint_hits(pred, gt)
    assert correct[0, :5].tolist() == [True, True, False, False, True]
    assert annotated[0].tolist() == [True] * 5 + [False] * 12
    # The constants are c = H / 10 and r = 0.5: a larger normaliser accepts 3.61 too.
    correct, _ = joint_hits(pred, gt, normalizer=8.0)
    assert correct[0, :5].tolist() == [True, True, True, False, True]


def test_per_sample_mean_excludes_samples_without_annotations():
    # Sample 0: joints 0 (correct) and 7 (wrong) annotated -> 0.5.
    # Sample 1: joint 9 annotated and correct -> 1.0.
    # Sample 2: nothing annotated -> excluded (the mean is 0.75, not 0.5 or 0.833).
    gt = peaks_to_maps({(0, 0): (10, 10), (0, 7): (30, 30), (1, 9): (5, 5)})
    pred = peaks_to_maps({(0, 0): (11, 10), (0, 7): (40, 30), (1, 9): (5, 7), (2, 3): (1, 1)})
    vis = jnp.zeros((3, J)).at[0, 0].set(2).at[0, 7].set(1).at[1, 9].set(2)
    out = summarize(pck_counts(pred, gt, vis))
    assert out["all/pck"] == pytest.approx(0.75)
    assert out["all/samples"] == 2
    assert out["all/pooled"] == pytest.approx(2 / 3)
    assert out["all/per_joint"][0] == 1.0 and out["all/per_joint"][7] == 0.0
    assert out["all/per_joint"][9] == 1.0 and np.isnan(out["all/per_joint"][3])
    # v=2 only: sample 0 keeps joint 0 (correct) -> 1.0; sample 1 -> 1.0.
    assert out["visible/pck"] == pytest.approx(1.0) and out["visible/samples"] == 2
    # limbs only (7, 9 are limbs, 0 is not): sample 0 -> 0.0, sample 1 -> 1.0.
    assert out["limbs/pck"] == pytest.approx(0.5)
    assert out["limbs/pooled"] == pytest.approx(0.5)


def test_padding_rows_and_exact_combination_across_batches():
    gt = peaks_to_maps({(0, 0): (10, 10), (0, 1): (12, 12), (1, 2): (5, 5), (2, 5): (8, 8)})
    pred = peaks_to_maps({(0, 0): (10, 10), (0, 1): (40, 12), (1, 2): (5, 5), (2, 5): (50, 8)})
    vis = jnp.full((3, J), 2.0)
    whole = summarize(pck_counts(pred, gt, vis))
    assert whole["all/pck"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    split = add_counts(pck_counts(pred[:2], gt[:2], vis[:2]),
                       pck_counts(pred[2:], gt[2:], vis[2:]))
    np.testing.assert_equal(summarize(split), whole)   # NaN-aware, exact
    # The last row marked as padding is not counted at all.
    padded = summarize(pck_counts(pred, gt, vis, valid=jnp.array([True, True, False])))
    assert padded["all/pck"] == pytest.approx(0.75) and padded["all/samples"] == 2


def test_per_sample_pck_flags_empty_samples():
    correct = jnp.array([[True, False], [False, False]])
    annotated = jnp.array([[True, True], [False, False]])
    pck, has = per_sample_pck(correct, annotated)
    assert pck.tolist() == [0.5, 0.0] and has.tolist() == [True, False]


def test_nothing_counted_gives_nan():
    maps = jnp.zeros((1, H, H, J))
    out = summarize(pck_counts(maps, maps, jnp.zeros((1, J))))
    assert np.isnan(out["all/pck"]) and out["all/samples"] == 0


def test_thesis_test_protocol():
    # Four samples, one with no annotated joint at all.
    # Sample 0: joints 0 (v=2, correct), 7 (v=1, wrong), 9 (v=2, correct), 8 (v=2, correct).
    # Sample 1: joints 13 (v=2, wrong), 14 (v=2, correct), 15 (v=1, correct).
    # Sample 2: joint 5 (v=1, correct): no v=2 joint, no limb.
    # Sample 3: nothing annotated.
    gt = peaks_to_maps({(0, 0): (10, 10), (0, 7): (30, 30), (0, 9): (5, 5), (0, 8): (50, 50),
                        (1, 13): (20, 20), (1, 14): (40, 40), (1, 15): (9, 9),
                        (2, 5): (33, 33)}, b=4)
    pred = peaks_to_maps({(0, 0): (10, 11), (0, 7): (40, 30), (0, 9): (5, 5), (0, 8): (50, 52),
                          (1, 13): (29, 20), (1, 14): (40, 40), (1, 15): (9, 9),
                          (2, 5): (33, 33), (3, 0): (1, 1)}, b=4)
    vis = (jnp.zeros((4, J)).at[0, 0].set(2).at[0, 7].set(1).at[0, 9].set(2).at[0, 8].set(2)
           .at[1, 13].set(2).at[1, 14].set(2).at[1, 15].set(1).at[2, 5].set(1))
    out = summarize(pck_counts(pred, gt, vis))
    # Ours: per-sample over samples with annotations: (3/4 + 2/3 + 1) / 3.
    assert out["all/pck"] == pytest.approx((3 / 4 + 2 / 3 + 1) / 3)
    # Thesis "all": the same sum divided by all 4 samples.
    assert out["thesis_all/pck"] == pytest.approx((3 / 4 + 2 / 3 + 1) / 4)
    # Thesis "v=2 only": sample 0 -> 3/3, sample 1 -> 1/2, samples 2, 3 skipped; / 4.
    assert out["thesis_visible/pck"] == pytest.approx((1 + 0.5) / 4)
    assert out["visible/pck"] == pytest.approx((1 + 0.5) / 2)
    # Thesis "limbs only": pairs with an annotated map: sample 0 elbows (7 wrong, 8 right)
    # -> 0.5, wrists (9) -> 1; sample 1 knees (13 wrong, 14 right) -> 0.5, ankles (15) -> 1.
    assert out["thesis_limbs/pck"] == pytest.approx((0.5 + 1 + 0.5 + 1) / 4)
    # Ours, limbs: per sample over its limb joints: sample 0 -> 2/3, sample 1 -> 2/3.
    assert out["limbs/pck"] == pytest.approx(2 / 3)
    # Padding rows do not count as samples of the thesis' denominator.
    padded = summarize(pck_counts(pred, gt, vis, valid=jnp.array([True, True, True, False])))
    assert padded["thesis_all/pck"] == pytest.approx((3 / 4 + 2 / 3 + 1) / 3)


def test_threshold_and_normaliser_on_the_evaluation_path():
    """The eval step that training's validation and `shg_jax.evaluate` run scores a joint as
    the thesis does: correct when the argmax distance is < 0.5 * H / 10 heatmap pixels.
    On 256x256 maps the radius is 12.8: offsets (9, 9) = 12.73, (12, 0) and (0, 0) are hits,
    (10, 8) = 12.81, (8, 10) and (0, 13) are misses. Any threshold outside (0.4972, 0.5002],
    or a normaliser other than H / 10 (to 0.5 %), changes one of them."""
    from helpers import tiny_train_config
    from shg_jax.steps import Steps

    steps = Steps(tiny_train_config("unused", **{"config.model.input_size": 1024}),
                  (0.4, 0.4, 0.4))
    offsets = [(9, 9), (12, 0), (0, 0), (10, 8), (8, 10), (0, 13)]
    keypoints = np.zeros((1, J, 3), np.float32)
    pred = np.zeros((1, 256, 256, J), np.float32)
    for j, (dx, dy) in enumerate(offsets):
        keypoints[0, j] = (4 * 100, 4 * 120, 2)          # the GT map peaks at (100, 120)
        pred[0, 120 + dy, 100 + dx, j] = 1.0
    steps._forward_eval = lambda state, images: jnp.asarray(pred)[None]
    sums = steps._eval_step(None, {"images": np.zeros((1, 1024, 1024, 3), np.uint8),
                                   "keypoints": jnp.asarray(keypoints),
                                   "valid": jnp.ones(1, bool)})
    out = summarize(sums)
    assert out["all/per_joint"][:6] == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    assert out["all/pck"] == pytest.approx(0.5)


def test_limb_subsets_are_elbows_wrists_knees_ankles():
    """With every joint annotated, the limbs subset counts exactly COCO's elbows (7, 8),
    wrists (9, 10), knees (13, 14) and ankles (15, 16), and the thesis' limbs protocol sees
    four pairs per sample."""
    gt = peaks_to_maps({(0, j): (10 + j, 20) for j in range(J)}, b=1)
    counts = pck_counts(gt, gt, jnp.full((1, J), 2.0))
    out = summarize(counts)
    counted = [j for j in range(J) if not np.isnan(out["limbs/per_joint"][j])]
    assert counted == [7, 8, 9, 10, 13, 14, 15, 16]
    assert float(counts["thesis_limbs/pair_count"]) == 4.0
    assert out["thesis_limbs/pck"] == 1.0 and out["limbs/pck"] == 1.0
