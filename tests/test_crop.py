"""Crop boxes and keypoint transforms (shared by data preparation and inference)."""

import numpy as np
import pytest
from PIL import Image

from shg_jax import crop


def kps(points):
    out = np.zeros((17, 3))
    for j, (x, y, v) in points.items():
        out[j] = (x, y, v)
    return out


def test_thesis_box_centre_side_shift_and_drop():
    k = kps({0: (100, 50, 2), 15: (120, 150, 1)})
    box = crop.thesis_box(k, [0, 0, 1, 1], 640, 480)
    assert box.side == 110 and (box.x0, box.y0) == (55, 45)      # 1.1 x 100, centred
    near_edge = crop.thesis_box(kps({0: (5, 50, 2), 1: (25, 150, 2)}), [0, 0, 1, 1], 640, 480)
    assert near_edge.x0 == 0                                       # shifted back inside
    shrunk = crop.thesis_box(kps({0: (10, 5, 2), 1: (20, 195, 2)}), [0, 0, 1, 1], 300, 200)
    assert shrunk.side == 200 and shrunk.y0 == 0                   # largest square that fits
    with pytest.raises(crop.CropError) as e:
        crop.thesis_box(kps({0: (0, 5, 2), 1: (299, 6, 2)}), [0, 0, 1, 1], 300, 200)
    assert e.value.reason == "keypoints_cannot_fit"
    single = crop.thesis_box(kps({3: (50, 50, 2)}), [30, 20, 40, 80], 640, 480)
    assert single.side == 80 and (single.x0, single.y0) == (10, 20)   # square COCO bbox


def test_keypoints_to_crop_and_back():
    box = crop.CropBox(40, 10, 200)
    k = kps({0: (140, 110, 2), 5: (41, 209, 1), 9: (300, 20, 2)})
    c = box.to_crop(k, 256)
    np.testing.assert_allclose(c[0], [128, 128, 2])
    np.testing.assert_allclose(c[5], [1.28, 254.72, 1], rtol=1e-6)
    assert c[9].tolist() == [0, 0, 0]            # outside the crop: unlabelled
    assert c[1].tolist() == [0, 0, 0]            # v=0 stays (0, 0, 0)
    np.testing.assert_allclose(box.to_image(c[[0, 5], :2], 256), [[140, 110], [41, 209]],
                               rtol=1e-6)


def test_bbox_pad_crop_pads_with_black():
    image = Image.new("RGB", (100, 60), (200, 100, 50))
    box = crop.person_box("bbox_pad", kps({0: (50, 30, 2)}), [20, 10, 60, 40], 100, 60)
    assert box.side == 75 and (box.x0, box.y0) == (12, -8)
    out = crop.crop_image(image, box, 64)
    assert out.shape == (64, 64, 3)
    assert out[0, 32].tolist() == [0, 0, 0] and out[32, 32].tolist() == [200, 100, 50]
    with pytest.raises(ValueError, match="crop mode"):
        crop.person_box("square", kps({0: (1, 1, 2)}), [0, 0, 1, 1], 10, 10)
