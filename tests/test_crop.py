"""Crop boxes, pixel crops and keypoint transforms of every crop mode; the thesis mode
against what the thesis' own code made of ../shared/data/coco_sample."""

import json
import math

import numpy as np
import pytest
from PIL import Image

from shg_jax import crop

from helpers import REPO

REFERENCE = REPO.parent / "shared" / "reference" / "thesis_crops"


def kps(points):
    out = np.zeros((17, 3))
    for j, (x, y, v) in points.items():
        out[j] = (x, y, v)
    return out


# --- thesis mode: hand-worked cases of the thesis' crop_image / resize_img ------------------

def test_thesis_box_square_case_worked_by_hand():
    # bbox -> (90, 40, 130, 160), squared to (50, 40, 170, 160); keypoint centre (110, 100);
    # side 100 * 1.1 = 110.00000000000001, so each side moves in by int((120 - side) // 2) = 4.
    k = kps({0: (100, 50, 2), 15: (120, 150, 1)})
    box = crop.thesis_box(k, [90, 40, 40, 120], 640, 480)
    assert box.as_list() == [54, 44, 166, 156] and box.crop_hw == (112, 112)
    c = box.to_crop(k, 256)
    # (p - 1 - corner) * 256 // 112, floored: the thesis' integers.
    assert c[0].tolist() == [45 * 256 // 112, 5 * 256 // 112, 2] == [102, 11, 2]
    assert c[15].tolist() == [148, 240, 1]
    assert c[1].tolist() == [0, 0, 0]                      # v=0 -> (0, 0, 0)


def test_thesis_box_at_the_right_edge_is_narrower():
    # Worked by hand: bbox (148, 149, 200, 153), squared to (148, 125, 200, 177); side
    # 49 * 1.1 = 53.9 grows x by int(-1.9 // 2) = -1 a side to (147, 201), which leaves the
    # 200-px image by 1: x1 = 200 and x0 moves in by 1 too (y shrinks by 1 a side), then y is
    # set to the side: 52 wide, 54 high (a non-square thesis crop).
    k = kps({5: (150, 150, 2), 6: (199, 152, 2)})
    box = crop.thesis_box(k, [148, 149, 52, 4], 200, 300)
    assert box.as_list() == [148, 124, 200, 178] and box.crop_hw == (54, 52)
    c = box.to_crop(k, 256)
    assert c[5].tolist() == [1 * 256 // 52, 25 * 256 // 54, 2] == [4, 118, 2]
    assert c[6].tolist() == [246, 128, 2]
    # A labelled joint left of the slice keeps the thesis' negative integer.
    left = crop.ThesisBox(10, 0, 60, 50, 200, 100).to_crop(kps({0: (10, 20, 2)}), 256)
    assert left[0].tolist() == [-1 * 256 // 50, 19 * 256 // 50, 2] == [-6, 97, 2]


def test_thesis_drop_test_and_reasons():
    with pytest.raises(crop.CropError) as e:        # centre x 15, half the y extent 100
        crop.thesis_box(kps({0: (10, 100, 2), 1: (20, 300, 2)}), [5, 95, 20, 210], 640, 480)
    assert e.value.reason == "not_centrable"
    with pytest.raises(crop.CropError) as e:
        crop.thesis_box(kps({}), [5, 5, 20, 20], 640, 480)
    assert e.value.reason == "no_labelled_keypoint"


def test_thesis_slice_has_numpy_semantics():
    box = crop.ThesisBox(10, -5, 50, 100, 200, 100)  # negative start: numpy wraps round
    assert box.negative_start and box.crop_hw == (5, 40)
    photo = np.arange(100 * 200 * 3, dtype=np.uint32).reshape(100, 200, 3)
    rows, cols = box.slices()
    np.testing.assert_array_equal(photo[rows, cols], photo[-5:100, 10:50])
    clipped = crop.ThesisBox(150, 0, 260, 80, 200, 100)
    assert not clipped.negative_start and clipped.crop_hw == (80, 50)


def test_thesis_to_image_inverts_to_crop():
    box = crop.ThesisBox(30, 20, 130, 150, 640, 480)
    k = kps({0: (61, 87, 2), 9: (120, 140, 1)})
    c = box.to_crop(k, 256)
    back = box.to_image(c[[0, 9], :2], 256)
    # The floor loses less than one crop pixel: (width / 256, height / 256) image pixels.
    assert np.all(back <= k[[0, 9], :2] + 1e-9)
    assert np.all(back > k[[0, 9], :2] - np.array([100, 130]) / 256)


def gaussian_weights(sigma):
    radius = int(4 * sigma + 0.5)
    w = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    return w / w.sum()


def test_resize_like_skimage_known_answers():
    # Up-scaling 2 -> 4 (no anti-aliasing), mirror edges, pixel-area grid: 1/4 and 3/4 mixes.
    up = crop.resize_like_skimage(np.array([[0, 255], [0, 255]], np.uint8), (2, 4))
    np.testing.assert_allclose(up, [[0.25, 0.25, 0.75, 0.75]] * 2, atol=1e-12)
    # Down-scaling 4 -> 2: Gaussian sigma (2 - 1) / 2 = 0.5 (radius 2, mirror edges), then
    # samples at 0.5 and 2.5 (means of neighbours). Signal [0, 0, 1, 1].
    w0, w1, w2 = gaussian_weights(0.5)[2:]
    expected = [(w1 + 3 * w2) / 2, (2 * w0 + 3 * w1 + w2) / 2]
    down = crop.resize_like_skimage(np.tile(np.array([0, 0, 255, 255], np.uint8), (4, 1)),
                                    (2, 2))
    np.testing.assert_allclose(down, [expected] * 2, atol=1e-12)
    rgb = np.zeros((6, 6, 3), np.uint8)
    rgb[..., 1] = 200
    out = crop.resize_like_skimage(rgb, (3, 3))
    assert out.shape == (3, 3, 3)
    np.testing.assert_allclose(out[..., 1], 200 / 255) and np.testing.assert_allclose(
        out[..., 0], 0)


def test_thesis_crop_truncates_to_uint8():
    photo = np.tile(np.array([0, 255], np.uint8)[None, :, None], (2, 1, 3))
    out = crop.ThesisBox(0, 0, 2, 2, 2, 2).crop(photo, 4)
    # 0.25 * 255 = 63.75 and 0.75 * 255 = 191.25: truncated, not rounded.
    assert out.dtype == np.uint8 and out[:, :, 0].tolist() == [[63, 63, 191, 191]] * 4


# --- the thesis' own output on the real COCO slice -----------------------------------------

@pytest.fixture(scope="module")
def reference(coco_sample):
    if not (REFERENCE / "thesis_crops.json").is_file():
        pytest.skip(f"thesis reference crops not found at {REFERENCE}")
    ref = json.loads((REFERENCE / "thesis_crops.json").read_text())
    anns, images = {}, {}
    for source in ("train2017", "val2017"):
        coco = json.loads((coco_sample / "annotations" /
                           f"person_keypoints_{source}.json").read_text())
        anns.update({a["id"]: a for a in coco["annotations"]})
        images.update({i["id"]: (source, i) for i in coco["images"]})
    return ref, anns, images


def test_thesis_mode_keeps_and_boxes_what_the_thesis_did(reference):
    ref, anns, images = reference
    kept, boxes, keypoints = set(), {}, {}
    for person in ref["persons"]:
        ann = anns[person["ann_id"]]
        _, info = images[ann["image_id"]]
        try:
            box = crop.thesis_box(ann["keypoints"], ann["bbox"], info["width"], info["height"])
        except crop.CropError as e:
            assert e.reason == "not_centrable", person["ann_id"]
            continue
        kept.add(person["ann_id"])
        boxes[person["ann_id"]] = (box.as_list(), list(box.crop_hw), box.negative_start)
        keypoints[person["ann_id"]] = box.to_crop(ann["keypoints"], 256)
    expected = {p["ann_id"] for p in ref["persons"] if p["kept"]}
    assert len(expected) == 342 and kept == expected
    for person in ref["persons"]:
        if not person["kept"]:
            continue
        assert boxes[person["ann_id"]] == (person["box"], person["crop_hw"],
                                           person["negative_start"]), person["ann_id"]
        theirs = np.array(person["keypoints"], np.float64)
        labelled = theirs[:, 2] > 0
        np.testing.assert_array_equal(keypoints[person["ann_id"]][labelled], theirs[labelled])
    assert sum(b[1][0] != b[1][1] for b in boxes.values()) == 9      # non-square crops


def test_thesis_mode_pixels_match_the_thesis_pngs(reference, coco_sample):
    ref, anns, images = reference
    with_png = [p for p in ref["persons"] if p.get("png")]
    assert len(with_png) == 12
    for person in with_png:
        ann = anns[person["ann_id"]]
        source, info = images[ann["image_id"]]
        box = crop.thesis_box(ann["keypoints"], ann["bbox"], info["width"], info["height"])
        with Image.open(coco_sample / source / info["file_name"]) as im:
            ours = box.crop(crop.photo_array(im), 256).astype(np.float64)
        with Image.open(REFERENCE / person["png"]) as im:
            theirs = np.asarray(im.convert("RGB"), np.float64)
        mad = np.abs(ours - theirs).mean()
        assert mad <= 0.3, (person["png"], mad)


# --- square and bbox_pad modes ------------------------------------------------------------

def test_square_box_centre_side_shift_and_drop():
    k = kps({0: (100, 50, 2), 15: (120, 150, 1)})
    box = crop.square_box(k, [0, 0, 1, 1], 640, 480)
    assert box.as_list() == [55, 45, 165, 155]                        # 1.1 x 100, centred
    near_edge = crop.square_box(kps({0: (5, 50, 2), 1: (25, 150, 2)}), [0, 0, 1, 1], 640, 480)
    assert near_edge.x0 == 0                                          # shifted back inside
    shrunk = crop.square_box(kps({0: (10, 5, 2), 1: (20, 195, 2)}), [0, 0, 1, 1], 300, 200)
    assert shrunk.as_list()[1::2] == [0, 200] and shrunk.width == 200  # largest square
    with pytest.raises(crop.CropError) as e:
        crop.square_box(kps({0: (0, 5, 2), 1: (299, 6, 2)}), [0, 0, 1, 1], 300, 200)
    assert e.value.reason == "keypoints_cannot_fit"
    single = crop.square_box(kps({3: (50, 50, 2)}), [30, 20, 40, 80], 640, 480)
    assert single.as_list() == [10, 20, 90, 100]                      # square COCO bbox


def test_keypoints_to_crop_and_back():
    box = crop.CropBox(40, 10, 240, 210)
    k = kps({0: (140, 110, 2), 5: (41, 209, 1), 9: (300, 20, 2)})
    c = box.to_crop(k, 256)
    np.testing.assert_allclose(c[0], [128, 128, 2])
    np.testing.assert_allclose(c[5], [1.28, 254.72, 1], rtol=1e-6)
    assert c[9].tolist() == [0, 0, 0]            # outside the crop: unlabelled
    assert c[1].tolist() == [0, 0, 0]            # v=0 stays (0, 0, 0)
    np.testing.assert_allclose(box.to_image(c[[0, 5], :2], 256), [[140, 110], [41, 209]],
                               rtol=1e-6)


def test_bbox_pad_crop_pads_with_black():
    photo = np.zeros((60, 100, 3), np.uint8)
    photo[:] = (200, 100, 50)
    box = crop.person_box("bbox_pad", kps({0: (50, 30, 2)}), [20, 10, 60, 40], 100, 60)
    assert box.as_list() == [12, -8, 87, 67]
    assert not box.negative_start            # it starts above the photo but pads, never wraps
    out = box.crop(photo, 64)
    assert out.shape == (64, 64, 3)
    assert out[0, 32].tolist() == [0, 0, 0] and out[32, 32].tolist() == [200, 100, 50]
    with pytest.raises(ValueError, match="crop mode"):
        crop.person_box("centred", kps({0: (1, 1, 2)}), [0, 0, 1, 1], 10, 10)


def test_mode_names():
    assert crop.CROP_MODES == ("thesis", "square", "bbox_pad")
    assert math.isclose(crop.THESIS_MARGIN, 0.1)


# --- crop pixels of a photo whose content is known ------------------------------------------

def ramp_photo() -> np.ndarray:
    """128x128 photo: red = 2x, green = 2y, blue = 77 at pixel (x, y)."""
    y, x = np.mgrid[0:128, 0:128]
    return np.stack([2 * x, 2 * y, np.full_like(x, 77)], -1).astype(np.uint8)


@pytest.mark.parametrize("box", [crop.CropBox(10, 20, 74, 84),
                                 crop.ThesisBox(10, 20, 74, 84, 128, 128)],
                         ids=["square", "thesis"])
def test_crop_without_resize_is_the_photo_slice(box):
    out = box.crop(ramp_photo(), 64).astype(int)
    expected = ramp_photo()[20:84, 10:74].astype(int)
    if isinstance(box, crop.ThesisBox):   # thesis: x / 255 * 255 truncated, 1 level low at most
        assert np.all((expected - out >= 0) & (expected - out <= 1))
        assert np.mean(out == expected) > 0.5
    else:
        np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("mode", ["square", "thesis"])
def test_halving_crop_samples_the_photo_at_pixel_centres(mode):
    """A 64-px box shrunk to 32: away from the borders a linear ramp stays linear under both
    resizers' symmetric filters, so output pixel (i, j) holds the ramp at the input
    coordinate of its centre, x0 + 2j + 0.5: red 2 * (x0 + 2j + 0.5), an integer. Sampling
    at pixel corners or the nearest pixel is off by a whole level; the thesis' uint8
    truncation may lose one level to float rounding, never more."""
    box = (crop.CropBox(32, 16, 96, 80) if mode == "square"
           else crop.ThesisBox(32, 16, 96, 80, 128, 128))
    out = box.crop(ramp_photo(), 32).astype(int)[3:-3, 3:-3]
    j = np.arange(3, 29)
    red, green = 2 * (32 + 2 * j + 0.5), 2 * (16 + 2 * j + 0.5)
    diffs = [out[..., 0] - red[None, :], out[..., 1] - green[:, None], out[..., 2] - 77]
    for channel, diff in enumerate(diffs):
        if mode == "square":
            assert np.all(diff == 0)
        else:
            assert np.all((diff <= 0) & (diff >= -1))
            if channel < 2:                          # a ramp: mostly exact, never all low
                assert np.mean(diff == 0) > 0.3


def test_bbox_pad_crop_keeps_the_photo_and_pads_black_outside():
    """A 96-px box hanging 32 px over the photo's top-left corner, kept at 96 px: the part
    over the photo is the photo, the rest is black."""
    out = crop.CropBox(-32, -32, 64, 64).crop(ramp_photo(), 96)
    np.testing.assert_array_equal(out[:32], 0)
    np.testing.assert_array_equal(out[:, :32], 0)
    np.testing.assert_array_equal(out[32:, 32:], ramp_photo()[:64, :64])


# --- where a photo pixel lands in the crop, and how far the labels lie from it -------------

@pytest.mark.parametrize("box", [crop.CropBox(20, 10, 60, 50),          # upscaled x1.6
                                 crop.CropBox(0, 0, 100, 100),          # shrunk to 0.64
                                 crop.ThesisBox(20, 10, 60, 50, 100, 80),
                                 crop.ThesisBox(0, 0, 100, 80, 100, 80)],
                         ids=["square-up", "square-down", "thesis-up", "thesis-down"])
def test_pixel_to_crop_is_where_the_resize_puts_the_pixel(box):
    """A bright 5x5 square centred on pixel p of a black photo: the intensity centroid of
    the resized crop (both resizes interpolate with symmetric kernels) is `pixel_to_crop`
    of p, within the 0.1 px that sampling at a non-integer ratio moves a centroid (the
    label rules lie 0.18 px and more away in these boxes)."""
    size = 64
    for p in [(37, 29), (41, 33)]:
        photo = np.zeros((80, 100, 3), np.uint8)
        photo[p[1] - 2:p[1] + 3, p[0] - 2:p[0] + 3] = 255
        img = box.crop(photo, size)[..., 0].astype(np.float64)
        ys, xs = np.mgrid[:size, :size]
        centroid = np.array([(img * xs).sum(), (img * ys).sum()]) / img.sum()
        np.testing.assert_allclose(centroid, box.pixel_to_crop(np.array(p), size), atol=0.1)


def test_label_offsets_of_each_crop_mode():
    """Labels minus where their pixels land, in crop pixels: "square"/"bbox_pad" label
    (p - x0) * scale, (1 - scale) / 2 off the resize grid; the thesis' floored
    (p - 1 - x0) * scale lies exactly 1 pixel left at scale 1, and 2.5 at scale 2."""
    k = kps({0: (30, 20, 2), 9: (45, 40, 1), 10: (0, 0, 0)})
    square = crop.CropBox(20, 10, 60, 50)                          # 40 px wide
    np.testing.assert_allclose(crop.label_offsets_x(square, k, 40), [0, 0])
    np.testing.assert_allclose(crop.label_offsets_x(square, k, 80), [-0.5, -0.5])
    np.testing.assert_allclose(crop.label_offsets_x(square, k, 20), [0.25, 0.25])
    thesis = crop.ThesisBox(20, 10, 60, 50, 100, 80)
    np.testing.assert_allclose(crop.label_offsets_x(thesis, k, 40), [-1, -1])
    np.testing.assert_allclose(crop.label_offsets_x(thesis, k, 80), [-2.5, -2.5])
    # A labelled joint outside the crop (possible in bbox_pad mode) does not count.
    outside = kps({0: (30, 20, 2), 1: (70, 20, 2)})
    np.testing.assert_allclose(crop.label_offsets_x(square, outside, 40), [0])
