"""The 17 COCO keypoints: names, limb subset, left/right pairs and the drawn skeleton."""

JOINT_NAMES = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)
N_JOINTS = len(JOINT_NAMES)

#: Joints not of head or torso (elbows, wrists, knees, ankles): the thesis' "limbs only" PCK,
#: following Newell et al.'s validation curve.
LIMB_JOINTS = (7, 8, 9, 10, 13, 14, 15, 16)

#: The limb pairs of the thesis' test protocol: elbows, wrists, knees, ankles (left, right).
LIMB_PAIRS = ((7, 8), (9, 10), (13, 14), (15, 16))

#: Left/right pairs, for horizontal flips.
FLIP_PAIRS = ((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16))

#: COCO's skeleton (0-based joint indices), for drawing.
SKELETON = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7),
    (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
)
