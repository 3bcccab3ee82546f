"""analysis.descriptors and analysis.profiles: what the annotations say about a sample, and
clusters, components and the thesis' claims measured by it; hand-placed skeletons and
hand-made clusterings with known answers."""

import numpy as np
import pytest

from analysis import descriptors, profiles
from shg_jax.skeleton import JOINT_NAMES

J = {name: i for i, name in enumerate(JOINT_NAMES)}


def skeleton(points: dict) -> np.ndarray:
    """(17, 3) keypoints with the named joints visible, the rest unlabelled."""
    k = np.zeros((17, 3))
    for name, (x, y) in points.items():
        k[J[name]] = (x, y, 2)
    return k


def both(part, left, right):
    return {f"left_{part}": left, f"right_{part}": right}


STANDING = skeleton({**both("shoulder", (66, 40), (54, 40)), **both("hip", (66, 100), (54, 100)),
                     **both("knee", (66, 140), (54, 140)), **both("ankle", (66, 180), (54, 180)),
                     **both("elbow", (74, 70), (46, 70)), **both("wrist", (76, 100), (44, 100))})
SITTING = skeleton({**both("shoulder", (70, 40), (50, 40)), **both("hip", (70, 100), (50, 100)),
                    **both("knee", (70, 100), (50, 100)), **both("ankle", (70, 150), (50, 150))})
# Sitting seen from the side: thighs forward (+x), shins down.
SITTING[J["left_knee"], :2] = (120, 100)
SITTING[J["right_knee"], :2] = (100, 100)
SITTING[J["left_ankle"], :2] = (120, 150)
SITTING[J["right_ankle"], :2] = (100, 150)
ARMS_UP = STANDING.copy()
ARMS_UP[J["left_wrist"], :2] = (80, 5)
ARMS_UP[J["right_wrist"], :2] = (40, 5)
LYING = skeleton({**both("shoulder", (100, 45), (100, 55)), **both("hip", (40, 45), (40, 55))})


def test_descriptors_of_hand_placed_skeletons():
    d = descriptors.pose_descriptors(np.stack([STANDING, SITTING, ARMS_UP, LYING]))
    np.testing.assert_allclose(d["hip_angle"][:3], [180, 90, 180], atol=1e-6)
    np.testing.assert_allclose(d["knee_angle"][:3], [180, 90, 180], atol=1e-6)
    np.testing.assert_allclose(d["torso_lean"], [0, 0, 0, 90], atol=1e-6)
    assert d["arms_raised"][0] == 0 and d["arms_raised"][2] == 1
    assert np.isnan(d["arms_raised"][1])                         # no wrists labelled
    assert np.isnan(d["hip_angle"][3]) and np.isnan(d["limb_spread"][3])
    # Raised arms reach further from the torso than hanging ones, in torso lengths.
    assert d["limb_spread"][2] > d["limb_spread"][0] > 0
    torso = 60.0                                                  # shoulders 40 -> hips 100
    centre = np.array([60.0, 70.0])
    ends = [(76, 100), (44, 100), (66, 180), (54, 180)]
    expected = np.mean([np.linalg.norm(np.subtract(e, centre)) for e in ends]) / torso
    assert d["limb_spread"][0] == pytest.approx(expected)


def test_a_one_sided_skeleton_uses_the_side_it_has():
    one = STANDING.copy()
    one[[J["right_hip"], J["right_knee"], J["right_ankle"]], 2] = 0
    bent = one.copy()
    bent[J["left_ankle"], :2] = (106, 140)                       # shin forward: 90 degrees
    d = descriptors.pose_descriptors(np.stack([one, bent]))
    np.testing.assert_allclose(d["knee_angle"], [180, 90], atol=1e-6)


def test_annotation_descriptors_count_joints_and_find_cut_off_boxes():
    k = np.zeros((3, 17, 3))
    k[0, :10, 2] = 2
    k[0, :4, 2] = 1
    box = np.array([[0, 10, 50, 100], [20, 20, 50, 100], [20, 20, 180, 100]], np.float32)
    photo = np.array([[200, 300], [200, 300], [200, 300]])
    d = descriptors.annotation_descriptors(k, box, photo)
    assert d["labelled"].tolist() == [10, 0, 0]
    assert d["visible_fraction"][0] == pytest.approx(0.6)
    assert d["occluded_fraction"][0] == pytest.approx(0.4)
    assert np.isnan(d["visible_fraction"][1])
    assert d["truncated"].tolist() == [1, 0, 1]                  # left edge, inside, right edge
    assert d["box_size"][1] == pytest.approx(np.sqrt(5000))
    assert d["box_aspect"][1] == pytest.approx(2.0)
    assert list(descriptors.describe(k, box, photo)) == list(descriptors.DESCRIPTORS)


def test_correlation_ratio_and_pearson_on_known_data():
    labels = np.array([0, 0, 1, 1])
    assert profiles.correlation_ratio(np.array([1.0, 1, 3, 3]), labels) == pytest.approx(1)
    assert profiles.correlation_ratio(np.array([1.0, 3, 1, 3]), labels) == pytest.approx(0)
    assert profiles.correlation_ratio(np.array([1.0, np.nan, 3, 3]), labels) == pytest.approx(1)
    assert np.isnan(profiles.correlation_ratio(np.ones(4), labels))
    x = np.arange(10.0)
    assert profiles.pearson(x, 2 * x + 1) == pytest.approx(1)
    assert profiles.pearson(x, -x) == pytest.approx(-1)
    y = 2 * x + 1
    y[3] = np.nan
    assert profiles.pearson(x, y) == pytest.approx(1)
    assert np.isnan(profiles.pearson(x, np.ones(10)))


def test_cluster_profiles_hold_each_clusters_means_and_histogram():
    labels = np.array([0, 0, 1])
    described = {"labelled": np.array([17.0, 15, 3]), "knee_angle": np.array([170, np.nan, 90])}
    pck = np.array([1.0, 0.5, np.nan])
    out = profiles.cluster_profiles(labels, 2, described, pck, 17)
    assert [p["size"] for p in out] == [2, 1]
    assert out[0]["labelled"] == 16 and out[0]["knee_angle"] == 170
    assert out[0]["pck"] == 0.75 and out[1]["pck"] is None
    assert out[0]["labelled_histogram"][17] == 1 and out[0]["labelled_histogram"][15] == 1
    assert out[1]["labelled_histogram"][3] == 1 and sum(out[1]["labelled_histogram"]) == 1


def test_boundary_samples_are_nearly_as_close_to_another_centroid():
    centroids = np.array([[0.0, 0], [10, 0]])
    x = np.array([[1.0, 0], [4.9, 0], [9, 0], [5.2, 0]])
    labels = np.array([0, 0, 1, 1])
    assert profiles.boundary(x, centroids, labels).tolist() == [False, True, False, True]


def _claims(**changes):
    rng = np.random.default_rng(0)
    n = 200
    coords = rng.normal(size=(n, 3))
    labels = (np.arange(n) < n // 2).astype(int)
    described = {"labelled": np.where(labels == 1, 17.0, 5.0) + rng.normal(0, 1, n),
                 "limb_spread": rng.normal(2, 0.3, n),
                 "hip_angle": 150 + 20 * coords[:, 0], "knee_angle": np.full(n, np.nan)}
    boundary_mask = np.arange(n) % 10 == 0
    pck = np.where(boundary_mask, 0.4, 0.8)
    kwargs = dict(described=described, coords=coords, labels=labels, k=2,
                  ratio=np.full(100, 0.01), boundary_mask=boundary_mask, pck=pck,
                  movement={1: 1.0, 50: 0.02})
    kwargs.update(changes)
    return profiles.claims(**kwargs)


def test_each_claims_verdict_follows_its_number():
    held = _claims()
    assert [c["verdict"] for c in held] == ["supported", "not supported", "supported",
                                            "supported", "supported"], held
    labelled = held[0]
    assert "annotated" in labelled["claim"]
    assert labelled["value"] > 0.9 and labelled["cluster_means"][1] > 15
    rng = np.random.default_rng(1)
    n = 200
    other = _claims(described={"labelled": rng.normal(10, 1, n),
                               "limb_spread": np.r_[np.full(100, 1.0), np.full(100, 3.0)],
                               "hip_angle": rng.normal(150, 5, n),
                               "knee_angle": rng.normal(150, 5, n)},
                    pck=np.full(n, 0.7), movement={1: 1.0, 60: 0.8})
    assert [c["verdict"] for c in other] == ["not supported", "supported",
                                                      "not supported", "not supported",
                                                      "not supported"]
    unmeasurable = _claims(pck=None, movement={1: 1.0, 10: 0.5})
    assert [c["verdict"] for c in unmeasurable][3:] == ["not measurable"] * 2
