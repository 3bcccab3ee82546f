"""The COCO keypoint definitions, pinned by literal tables written from COCO's own annotation
files (person category, 1-based skeleton) and from the thesis' limb subsets."""

import json

from shg_jax import skeleton

# COCO 2017 person_keypoints_*.json, categories[0]["keypoints"], in file order.
COCO_KEYPOINTS = ["nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder",
                  "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
                  "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle",
                  "right_ankle"]
# categories[0]["skeleton"], 1-based as COCO writes it.
COCO_SKELETON_1BASED = [[16, 14], [14, 12], [17, 15], [15, 13], [12, 13], [6, 12], [7, 13],
                        [6, 7], [6, 8], [7, 9], [8, 10], [9, 11], [2, 3], [1, 2], [1, 3],
                        [2, 4], [3, 5], [4, 6], [5, 7]]


def test_keypoint_order_and_skeleton_are_cocos():
    assert list(skeleton.JOINT_NAMES) == COCO_KEYPOINTS and skeleton.N_JOINTS == 17
    assert [list(p) for p in skeleton.SKELETON] == [[a - 1, b - 1] for a, b in
                                                    COCO_SKELETON_1BASED]


def test_flip_pairs_are_every_left_right_pair():
    assert skeleton.FLIP_PAIRS == ((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14),
                                   (15, 16))
    for left, right in skeleton.FLIP_PAIRS:
        assert COCO_KEYPOINTS[left] == "left_" + COCO_KEYPOINTS[right][len("right_"):]


def test_limb_subsets_of_the_thesis():
    # "Limbs only": elbows, wrists, knees, ankles; the thesis' test protocol pairs them.
    assert [COCO_KEYPOINTS[j] for j in skeleton.LIMB_JOINTS] == [
        "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_knee", "right_knee",
        "left_ankle", "right_ankle"]
    assert skeleton.LIMB_PAIRS == ((7, 8), (9, 10), (13, 14), (15, 16))


def test_the_tables_match_the_real_coco_files(coco_sample):
    for source in ("train2017", "val2017"):
        path = coco_sample / "annotations" / f"person_keypoints_{source}.json"
        person = json.loads(path.read_text())["categories"][0]
        assert person["keypoints"] == COCO_KEYPOINTS, path
        assert person["skeleton"] == COCO_SKELETON_1BASED, path


def test_synthetic_data_writes_the_same_category(tmp_path):
    from data_prep import synthesis

    root = synthesis.generate(tmp_path / "s", train=1, val=1, seed=0, size=64)
    person = json.loads((root / "annotations" / "person_keypoints_val2017.json")
                        .read_text())["categories"][0]
    assert person["keypoints"] == COCO_KEYPOINTS
    assert person["skeleton"] == COCO_SKELETON_1BASED
