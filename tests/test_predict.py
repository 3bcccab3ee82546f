"""Prediction on photos (crop -> heatmap -> image round trip, drawing, errors), the
flip test, and COCO keypoint AP through pycocotools."""

import json
import pathlib

import jax.numpy as jnp
import numpy as np
import pytest

from shg_jax import coco_eval, data, predict, runs, topdown
from shg_jax import crop as cropping
from shg_jax.codec import HeatmapCodec
from shg_jax.heatmap import (HEATMAP_STYLES, flip_shift, heatmap_argmax, render_heatmaps,
                             shift_width, unflip_heatmaps)


@pytest.fixture(scope="module")
def val_coco(tiny_data):
    """The synthetic COCO val annotations behind tiny_data, and its image folder."""
    root = tiny_data.parent / "coco"
    return json.loads((root / "annotations" / "person_keypoints_val2017.json").read_text()), \
        root / "val2017"


def _image_with_people(coco, n=2):
    for im in coco["images"]:
        anns = [a for a in coco["annotations"] if a["image_id"] == im["id"]
                and a["num_keypoints"] >= 8]
        if len(anns) >= n:
            return im, anns
    raise AssertionError("no synthetic image with enough people")


@pytest.mark.parametrize("mode", cropping.CROP_MODES)
def test_gt_heatmaps_round_trip_to_image_pixels(val_coco, mode):
    """A 'model' that outputs the ground-truth heatmaps of each crop: the keypoints come back
    within half a heatmap cell (the resolution of argmax decoding) of the truth."""
    coco, folder = val_coco
    info, anns = _image_with_people(coco)
    image = topdown.load_photo(folder / info["file_name"])
    size = 64
    bboxes = [tuple(a["bbox"]) for a in anns]
    truth = [np.asarray(a["keypoints"], np.float32).reshape(17, 3) for a in anns]
    photo = np.asarray(image.convert("RGB"))
    expected_crops = [cropping.inference_box(mode, b, image.width, image.height).crop(
        photo, size) for b in bboxes]
    seen = {}

    def gt_model(crops):
        seen["crops"] = crops
        kps = [cropping.inference_box(mode, b, image.width, image.height).to_crop(t, size)
               for b, t in zip(bboxes, truth)]
        return np.asarray(render_heatmaps(jnp.asarray(np.stack(kps)), input_size=size,
                                          heatmap_size=size // 4, style="thesis"))

    people = topdown.predict_people(image, bboxes, gt_model, input_size=size, crop_mode=mode)
    np.testing.assert_array_equal(seen["crops"], np.stack(expected_crops))
    checked = 0
    for person, t in zip(people, truth):
        crop_kps = person.box.to_crop(t, size)
        # Labelled and inside the crop, and not in the last half cell, where rendering
        # clamps the centre (the thesis' "floor if that hits 64" rule).
        xy = crop_kps[:, :2]
        inside = (crop_kps[:, 2] > 0) & np.all((xy >= 0) & (xy < size - 2), axis=1)
        cell = person.box.width / (size // 4)            # one heatmap pixel in image pixels
        # The thesis' integer keypoints floor: up to one more crop pixel on the way in.
        floor = person.box.width / size if mode == "thesis" else 0.0
        err = np.abs(person.keypoints[inside] - t[inside, :2])
        assert np.all(err <= 0.5 * cell + floor + 1e-3), (err.max(), cell)
        assert np.all(person.scores[inside] > 0.15)      # thesis peaks: 0.62 (v=2), 0.16 (v=1)
        checked += int(inside.sum())
    assert checked >= 16


def test_whole_image_box_and_bbox_checks():
    box = cropping.inference_box("thesis", None, 200, 100)
    assert box.as_list() == [0, -50, 200, 150] and type(box) is cropping.CropBox
    # Thesis and square rule: the square of side max(w, h) on the bbox centre (25, 40) starts
    # at x = -5, so it is shifted back inside; bbox_pad keeps it centred and pads.
    thesis = cropping.inference_box("thesis", (10, 10, 30, 60), 200, 100)
    assert thesis == cropping.ThesisBox(0, 10, 60, 70, 200, 100)
    assert cropping.inference_box("square", (10, 10, 30, 60), 200, 100) == \
        cropping.CropBox(0, 10, 60, 70)
    assert cropping.inference_box("bbox_pad", (10, 10, 30, 60), 200, 100) == \
        cropping.CropBox(-12, 2, 63, 77)
    predict.check_bbox((10, 10, 30, 60), 200, 100, "x")
    for bad in [(250, 10, 30, 30), (10, 10, 0, 30), (-50, 10, 40, 30)]:
        with pytest.raises(predict.PredictError, match="outside"):
            predict.check_bbox(bad, 200, 100, "photo.jpg")


def test_predict_cli_draws_and_writes_json(tiny_run, val_coco, tmp_path, capsys):
    coco, folder = val_coco
    info, anns = _image_with_people(coco)
    photo = folder / info["file_name"]
    args = ["--workdir", str(tiny_run[0]), "--image", str(photo), "--out",
            str(tmp_path / "pose.png")]
    for a in anns:
        args += ["--bbox", ",".join(str(v) for v in a["bbox"])]
    assert predict.main(args) == 0
    from PIL import Image
    drawn = Image.open(tmp_path / "pose.png")
    original = Image.open(photo).convert("RGB")
    assert drawn.size == original.size
    assert np.any(np.asarray(drawn) != np.asarray(original))     # something was drawn
    out = json.loads((tmp_path / "pose.json").read_text())
    people = out["images"][0]["people"]
    assert len(people) == len(anns) and all(len(p["keypoints"]) == 17 for p in people)
    assert out["decode"] == {"flip": False, "subpixel": False, "flip_shift": None}
    assert out["crop_mode"] == "thesis"

    # Errors: one line, exit 2, nothing written.
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    for argv, message in [
            (["--workdir", str(tiny_run[0]), "--image", str(bad)], "cannot read image"),
            (["--workdir", str(tiny_run[0]), "--image", str(photo), "--bbox", "5000,0,10,10"],
             "outside"),
            (["--workdir", str(tmp_path), "--image", str(photo)], "no checkpoints")]:
        assert predict.main(argv + ["--out", str(tmp_path / "x.png")]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_prediction_json_holds_known_image_coordinates(tiny_run, tmp_path, monkeypatch):
    """A model whose heatmaps peak where this test puts them. Photo 200x100, box (10, 10, 30,
    60): the thesis crop is the slice x 0..60, y 10..70 (worked out by hand in
    test_whole_image_box_and_bbox_checks), shrunk from 60 to 64 px; heatmap cell (hx, hy) is
    crop pixel (4 hx, 4 hy), i.e. image pixel (1 + 4 hx * 60 / 64, 11 + 4 hy * 60 / 64) with
    the thesis' 1-pixel shift. The JSON lists [x, y, score], x first."""
    peaks = [((j + 2) % 16, (3 * j + 1) % 16) for j in range(17)]
    scores = [0.5 + j / 100 for j in range(17)]

    def known_heatmaps(self, crops):
        h = np.zeros((len(crops), 16, 16, 17), np.float32)
        for j, (hx, hy) in enumerate(peaks):
            h[:, hy, hx, j] = scores[j]
        return h

    monkeypatch.setattr(topdown.RunHeatmaps, "__call__", known_heatmaps)
    photo = tmp_path / "photo.png"
    from PIL import Image
    Image.new("RGB", (200, 100), (90, 90, 90)).save(photo)
    assert predict.main(["--workdir", str(tiny_run[0]), "--image", str(photo), "--bbox",
                         "10,10,30,60", "--out", str(tmp_path / "pose.png")]) == 0
    (person,) = json.loads((tmp_path / "pose.json").read_text())["images"][0]["people"]
    assert person["bbox"] == [10, 10, 30, 60] and person["crop_box"] == [0, 10, 60, 70]
    assert person["keypoints"][0] == [8.5, 14.75, 0.5]        # joint 0: cell (2, 1)
    assert person["keypoints"][1] == [12.25, 26.0, 0.51]      # joint 1: cell (3, 4)
    expected = [[1 + 3.75 * hx, 11 + 3.75 * hy, sc] for (hx, hy), sc in zip(peaks, scores)]
    np.testing.assert_allclose(person["keypoints"], expected, atol=1e-9)
    assert person["score"] == pytest.approx(np.mean(scores))


def test_predict_folder_with_boxes_file(tiny_run, val_coco, tmp_path):
    import shutil

    coco, folder = val_coco
    photos = tmp_path / "photos"
    photos.mkdir()
    images = coco["images"][:2]
    for im in images:
        shutil.copy(folder / im["file_name"], photos / im["file_name"])
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    anns = [a for a in coco["annotations"] if a["image_id"] == images[0]["id"]]
    boxes = {"images": [{"id": im["id"], "file_name": im["file_name"]} for im in images]
             + [{"id": 99, "file_name": "broken.jpg"}],
             "annotations": [{"image_id": a["image_id"], "bbox": a["bbox"]} for a in anns]}
    (tmp_path / "boxes.json").write_text(json.dumps(boxes))
    status = predict.main(["--workdir", str(tiny_run[0]), "--image", str(photos), "--boxes",
                           str(tmp_path / "boxes.json"), "--out", str(tmp_path / "out")])
    assert status == 1                                   # one unreadable image, reported
    out = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert [r["image_id"] for r in out["images"]] == [im["id"] for im in images]
    assert len(out["images"][0]["people"]) == len(anns)
    assert len(out["images"][1]["people"]) == 1          # no boxes: the whole image
    assert out["skipped"] == [str(photos / "broken.jpg")]
    assert all((tmp_path / "out" / f"{pathlib.Path(im['file_name']).stem}_pose.png").is_file()
               for im in images)


#: COCO's left/right swap, joint by joint (nose; eyes, ears, shoulders, elbows, wrists, hips,
#: knees, ankles as left/right pairs), written out from the COCO keypoint order.
MIRRORED_JOINT = [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15]


def literal_unflip(h: np.ndarray) -> np.ndarray:
    """(..., H, W, 17) maps of a mirrored crop -> the crop's frame, from the table above."""
    return h[..., ::-1, :][..., MIRRORED_JOINT]


def test_unflip_heatmaps_mirrors_and_swaps():
    # Joint j peaks at row j // 4 + 1, column j % 8 with value j + 1: after unflipping, the
    # map of joint MIRRORED_JOINT[j] peaks at column 7 - j % 8 of the same row.
    h = np.zeros((1, 8, 8, 17), np.float32)
    for j in range(17):
        h[0, j // 4 + 1, j % 8, j] = j + 1
    u = np.asarray(unflip_heatmaps(jnp.asarray(h)))
    for j in range(17):
        m = MIRRORED_JOINT[j]
        assert u[0, j // 4 + 1, 7 - j % 8, m] == j + 1, j
        assert np.count_nonzero(u[..., m]) == 1
    np.testing.assert_array_equal(np.asarray(unflip_heatmaps(jnp.asarray(u))), h)


def literal_shift(h: np.ndarray, frac: float) -> np.ndarray:
    """(..., H, W, J) maps moved `frac` (0 < frac < 1) cells right: (1 - frac) F[c] +
    frac F[c - 1], column 0 repeated at the left border."""
    left = np.concatenate([h[..., :1, :], h[..., :-1, :]], axis=-2)
    return (1 - frac) * h + frac * left


def test_shift_width_known_answers():
    h = np.zeros((1, 1, 6, 1), np.float32)
    h[0, 0, :, 0] = [8, 0, 4, 0, 0, 0]
    row = lambda s: np.asarray(shift_width(jnp.asarray(h), s))[0, 0, :, 0].tolist()
    assert row(0.75) == [8, 6, 1, 3, 0, 0]              # 0.25 F[c] + 0.75 F[c-1], F[-1] = F[0]
    assert row(1.0) == [8, 8, 0, 4, 0, 0]
    assert row(2.5) == [8, 8, 8, 4, 2, 2]
    assert row(-1.0) == [0, 4, 0, 0, 0, 0]              # the right border repeats F[5] = 0
    assert row(-0.5) == [4, 2, 2, 0, 0, 0]
    np.testing.assert_allclose(np.asarray(shift_width(jnp.asarray(h), 0.3)),
                               literal_shift(h, 0.3), rtol=1e-6)


def test_flip_shift_formula():
    """(s - 1 + 2 d) / s: 3/4 cell for pixel-index labels at stride 4; labels 1 px left of
    their pixel (the thesis rule at scale 1) need 1/4; half a pixel right, 1."""
    assert flip_shift(4) == 0.75
    assert flip_shift(4, -1.0) == 0.25
    assert flip_shift(4, 0.5) == 1.0
    assert flip_shift(2, 0.0) == 0.5


@pytest.mark.parametrize("size", [64, 256])
@pytest.mark.parametrize("style", HEATMAP_STYLES)
def test_unflipped_ground_truth_peaks_are_unbiased(size, style):
    """Pixel-index labels at every x of a crop and at its mirror S-1-x: the mirror's
    ground-truth map, flipped back with `flip_shift`, peaks on average within 0.3 cells of
    x/4 (the bare mirror: 0.75 cells to the left), and the flip-test average of the two maps
    peaks exactly where the map of x does."""
    x = np.arange(size, dtype=np.float32)
    kps = np.zeros((size, 17, 3), np.float32)
    kps[:, 0] = np.stack([x, np.full(size, size / 2), np.full(size, 2)], axis=1)  # the nose
    mirrored = kps.copy()
    mirrored[:, 0, 0] = size - 1 - x
    render = lambda k: render_heatmaps(jnp.asarray(k), input_size=size,
                                       heatmap_size=size // 4, style=style)
    original, of_mirror = render(kps), render(mirrored)

    def mean_error(maps):
        return float(np.mean(np.asarray(heatmap_argmax(maps)[0])[:, 0, 0] - x / 4))

    bare = unflip_heatmaps(of_mirror)
    shifted = unflip_heatmaps(of_mirror, flip_shift(4))
    print(f"mean x error of the unflipped peak, cells: bare {mean_error(bare):+.3f}, "
          f"shifted {mean_error(shifted):+.3f}")
    assert mean_error(bare) < -0.6
    assert abs(mean_error(shifted)) <= 0.3
    np.testing.assert_array_equal(np.asarray(heatmap_argmax((original + shifted) / 2)[0]),
                                  np.asarray(heatmap_argmax(original)[0]))


def test_flip_test_on_a_symmetric_input_is_consistent_with_swapping(tiny_data):
    from helpers import tiny_train_config
    from shg_jax import placement
    from shg_jax.steps import Steps

    plain = tiny_train_config(tiny_data, **{"config.batch_size": 2})
    flipped = tiny_train_config(tiny_data, **{"config.batch_size": 2})
    flipped.decode.flip = True
    flipped.decode.flip_shift = 0.75
    rng = np.random.default_rng(0)
    half = rng.integers(0, 256, (2, 64, 32, 3), dtype=np.uint8)
    symmetric = np.concatenate([half, half[:, :, ::-1]], axis=2)  # mirror image of itself
    images = placement.shard_batch({"images": symmetric}, Steps(plain, (0.4,) * 3).mesh,
                             keys=("images",))["images"]
    s_plain, s_flip = Steps(plain, (0.4,) * 3), Steps(flipped, (0.4,) * 3)
    p = np.asarray(s_plain.infer(s_plain.init_state(), images))
    h = np.asarray(s_flip.infer(s_flip.init_state(), images))
    # The crop is its own mirror image, so the flip test averages p with p mirrored,
    # left/right swapped and moved 3/4 cell right (built here from the literal tables, not
    # from unflip_heatmaps).
    swapped = literal_shift(literal_unflip(p), 0.75)
    assert np.abs(p - swapped).max() > 1e-3              # the model itself is not symmetric
    np.testing.assert_allclose(h, (p + swapped) / 2, atol=1e-5)
    # Without config.decode.flip_shift, the shift follows the training labels' offset.
    flipped.decode.flip_shift = None
    assert HeatmapCodec.from_config(flipped, label_offset_x=-1.0).flip_shift == 0.25
    assert HeatmapCodec.from_config(flipped).flip_shift == 0.75


def test_coco_ap_perfect_and_shifted_predictions(tiny_data):
    """The GT crop keypoints fed through the evaluation path give AP 1; shifted by a known
    offset (crop pixels) they give less, and less the larger the offset."""
    split = data.Split(tiny_data, "val")
    rows = split.gather(np.arange(len(split)))
    meta = data.load_meta(tiny_data)
    coco = coco_eval.val_annotations(meta)
    scores = np.ones((len(split), 17), np.float32)

    def ap(offset):
        xy = rows["keypoints"][..., :2] + offset
        return coco_eval.crop_predictions_ap(coco, meta["crop_mode"], split.image_size,
                                             rows["ann_id"], rows["image_id"], xy, scores)

    perfect = ap(0.0)
    assert perfect["AP"] == pytest.approx(1.0) and perfect["persons"] == len(split)
    # (Thesis crops store floored integers, so a +1 px offset, about +0.5 px from the truth on
    # average, can still score 1.0; larger offsets must cost AP.)
    aps = [ap(d)["AP"] for d in (2.0, 4.0, 8.0)]
    print("COCO AP for offsets 0, 2, 4, 8 crop px:", perfect["AP"], aps)
    assert 1.0 > aps[0] > aps[1] > aps[2]


#: COCO's per-joint OKS sigmas (pycocotools, COCO keypoint order).
COCO_SIGMAS = np.array([.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07,
                        .87, .87, .89, .89]) / 10


@pytest.mark.parametrize("shift,expected_ap", [(0.0, 1.0), (3.0, 0.9), (5.0, 0.8),
                                               (10.0, 0.3)])
def test_coco_ap_of_one_person_shifted_by_a_known_offset(shift, expected_ap):
    """One person (area 10,000, 17 labelled joints), one prediction: every joint shifted
    right by `shift` px. OKS = mean_j exp(-shift^2 / (2 area (2 sigma_j)^2)): 0.9487 for 3 px,
    0.8712 for 5, 0.6470 for 10; a single match makes AP at threshold t 1 if OKS >= t, else
    0, so AP is the share of t in 0.50, 0.55, ..., 0.95 at or below the OKS."""
    rng = np.random.default_rng(0)
    xy = rng.uniform(100, 300, (17, 2))
    oks = np.mean(np.exp(-shift ** 2 / (2 * 10000 * (2 * COCO_SIGMAS) ** 2)))
    assert np.mean(np.arange(10) * 0.05 + 0.5 <= oks + 1e-12) == pytest.approx(expected_ap)
    gt = {"images": [{"id": 7, "width": 400, "height": 400, "file_name": "x.jpg"}],
          "categories": [{"id": 1, "name": "person"}],
          "annotations": [{"id": 70, "image_id": 7, "category_id": 1, "iscrowd": 0,
                           "area": 10000.0, "bbox": [100, 100, 200, 200], "num_keypoints": 17,
                           "keypoints": np.concatenate([xy, np.full((17, 1), 2)], 1)
                           .reshape(-1).tolist()}]}
    predictions = coco_eval.results([7], (xy + [shift, 0.0])[None], np.ones((1, 17)))
    stats = coco_eval.keypoint_ap(gt, predictions, [70])
    assert stats["AP"] == pytest.approx(expected_ap, abs=1e-9)
    assert stats["persons"] == 1 and stats["ignored_persons"] == 0


def test_coco_ap_counts_the_labelled_joints_at_the_annotations_area():
    """COCOeval's OKS takes the scale from the annotation's `area` (not its box: 200 x 200
    here) and averages over the joints labelled in the annotation: 12 labelled joints 4 px
    off and 5 unlabelled ones 60 px off give OKS = mean over the 12 of exp(-16 / (2 * 10,000
    * (2 sigma_j)^2)) = 0.9288, so AP = 0.9 (thresholds 0.50..0.90 pass); counting the
    unlabelled joints would give OKS 0.657 and AP 0.4, the box's area 40,000 OKS 0.981 and
    AP 1.0."""
    rng = np.random.default_rng(1)
    xy = rng.uniform(100, 300, (17, 2))
    v = np.full(17, 2.0)
    unlabelled = [1, 2, 7, 12, 16]
    v[unlabelled] = 0
    shift = np.tile([4.0, 0.0], (17, 1))
    shift[unlabelled] = (60.0, 0.0)
    labelled = v > 0
    oks = np.mean(np.exp(-16 / (2 * 10000 * (2 * COCO_SIGMAS[labelled]) ** 2)))
    assert oks == pytest.approx(0.9288, abs=1e-4)
    gt_keypoints = np.concatenate([np.where(labelled[:, None], xy, 0), v[:, None]], 1)
    gt = {"images": [{"id": 7, "width": 400, "height": 400, "file_name": "x.jpg"}],
          "categories": [{"id": 1, "name": "person"}],
          "annotations": [{"id": 70, "image_id": 7, "category_id": 1, "iscrowd": 0,
                           "area": 10000.0, "bbox": [100, 100, 200, 200], "num_keypoints": 12,
                           "keypoints": gt_keypoints.reshape(-1).tolist()}]}
    predictions = coco_eval.results([7], (xy + shift)[None], np.ones((1, 17)))
    assert coco_eval.keypoint_ap(gt, predictions, [70])["AP"] == pytest.approx(0.9, abs=1e-9)


def test_evaluate_coco_ap_cli(tiny_run, tmp_path, capsys):
    """The CLI reports what the library computes for the run (with --subpixel honoured, every
    val crop once); the library's arithmetic is pinned by the known-answer test above."""
    from shg_jax import coco_ap, evaluate

    out = tmp_path / "eval.json"
    assert evaluate.main(["--workdir", str(tiny_run[0]), "--split", "val", "--coco-ap",
                          "--subpixel", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["decode"]["subpixel"] is True
    _, steps, state, _ = runs.open_run(tiny_run[0], "best", subpixel=True)
    split = data.Split(steps.config.data_dir, "val")
    expected = coco_ap.evaluate_coco_ap(steps, state, split, 8)
    assert result["coco"]["persons"] == len(split) == expected["persons"]
    assert result["coco"]["AP"] == pytest.approx(expected["AP"], abs=1e-12)
    assert "top-down with ground-truth person boxes" in capsys.readouterr().out
    assert evaluate.main(["--workdir", str(tiny_run[0]), "--split", "test", "--coco-ap"]) == 2
    assert "--split val" in capsys.readouterr().err


# --- COCO AP with detector boxes, and prediction from a detections file ----------------------

def _detections_file(path, detections) -> str:
    path.write_text(json.dumps(detections))
    return str(path)


def test_read_person_boxes_keeps_persons_best_first_and_names_bad_fields(tmp_path):
    good = [{"image_id": 5, "bbox": [1, 2, 30, 40], "score": 0.4, "category_id": 1},
            {"image_id": 5, "bbox": [3, 4, 10, 20], "score": 0.9, "category_id": 1},
            {"image_id": 6, "bbox": [0, 0, 5, 5], "score": 0.7, "category_id": 2},   # a dog
            {"image_id": 7, "bbox": [0, 0, 8, 9.5], "score": 1, "category_id": 1}]
    boxes = coco_eval.read_person_boxes(_detections_file(tmp_path / "d.json", good),
                                        {5, 7}, "the test's ids")
    assert boxes == {5: [((3, 4, 10, 20), 0.9), ((1, 2, 30, 40), 0.4)],
                     7: [((0, 0, 8, 9.5), 1.0)]}
    bad = tmp_path / "bad.json"
    for content, message in [
            ("{not json", "not JSON"),
            (json.dumps({"annotations": []}), "expected a JSON list of detections"),
            (json.dumps([7]), "detection 0 is a int"),
            (json.dumps([dict(good[0], bbox=None) for _ in range(2)][:1]), "'bbox' must be"),
            (json.dumps([good[0], {k: v for k, v in good[1].items() if k != "score"}]),
             "detection 1 has no 'score'"),
            (json.dumps([dict(good[0], bbox=[1, 2, 0, 4])]), "'bbox' must be [x, y, w, h]"),
            (json.dumps([dict(good[0], image_id="5")]), "'image_id' must be an integer"),
            (json.dumps([dict(good[0], image_id=99)]), "'image_id' 99 is not among the test's")]:
        bad.write_text(content)
        with pytest.raises(coco_eval.CocoEvalError) as e:
            coco_eval.read_person_boxes(bad, {5, 7}, "the test's ids")
        assert str(bad) in str(e.value) and message in str(e.value), str(e.value)
        assert "\n" not in str(e.value)
    with pytest.raises(coco_eval.CocoEvalError, match="cannot read"):
        coco_eval.read_person_boxes(tmp_path / "missing.json", {5}, "ids")


def _pose(xy, score, bbox=(0, 0, 100, 100)):
    """A pose whose box asked for (area 10,000) is not the box cropped (40,000): OKS-NMS
    scales by the former."""
    return topdown.Person(bbox, cropping.CropBox(0, 0, 200, 200), np.asarray(xy, float),
                          np.full(17, score), 1.0)


def test_coco_sigmas_are_cocos():
    np.testing.assert_allclose(topdown.coco_sigmas(), COCO_SIGMAS, rtol=0, atol=1e-12)


def test_oks_and_oks_nms_known_answers():
    """OKS of two poses 3 px apart on every joint, area 10,000: mean_j exp(-9 / (2 * 10,000 *
    (2 sigma_j)^2)) = 0.9487 (the value the AP known-answer test above derives). NMS keeps
    the best of poses above 0.9 OKS and both of poses below."""
    rng = np.random.default_rng(0)
    xy = rng.uniform(100, 300, (17, 2))
    a, b = _pose(xy, 0.5), _pose(xy + [3, 0], 0.6)
    expected = np.mean(np.exp(-9 / (2 * 10000 * (2 * COCO_SIGMAS) ** 2)))
    assert topdown.oks(a, b, topdown.coco_sigmas()) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(0.9487, abs=1e-4)
    assert topdown.oks_nms([a, b]) == [b]                          # 0.9487 > 0.9: one person
    far = _pose(xy + [10, 0], 0.4)                                 # OKS 0.647
    assert topdown.oks_nms([a, far, b]) == [b, far]
    # The person score is box score x mean joint peak, and orders the NMS.
    boxed = topdown.Person((0, 0, 100, 100), a.box, xy, np.full(17, 0.5), box_score=0.9)
    assert boxed.score == pytest.approx(0.45)
    assert topdown.oks_nms([boxed, a]) == [a]


@pytest.fixture(scope="module")
def bbox_pad_data(tiny_data, tmp_path_factory):
    """tiny_data's photos prepared again with the box-only crop rule (bbox_pad)."""
    from data_prep import coco as prep

    out = tmp_path_factory.mktemp("bbox_pad") / "prepared"
    assert prep.main(["--coco-root", str(tiny_data.parent / "coco"), "--out", str(out),
                      "--size", "64", "--test-size", "16", "--workers", "1",
                      "--crop-mode", "bbox_pad"]) == 0
    return out


def test_ground_truth_boxes_as_detections_give_the_ground_truth_path_ap(tiny_run,
                                                                         bbox_pad_data,
                                                                         tmp_path):
    """Under a crop rule that uses only the box, the ground-truth boxes fed as detections
    with score 1 must give the AP of the ground-truth path: same crops, same heatmaps, same
    scores. The 'model' here looks each crop up among the prepared val crops and returns the
    ground-truth heatmaps moved 0, 2, 4 or 6 px right (so that AP is neither 0 nor 1); a
    crop the detection path made differently would not be found."""
    from shg_jax import coco_ap

    _, steps, state, _ = runs.open_run(tiny_run[0], "best", data_dir=bbox_pad_data)
    split = data.Split(bbox_pad_data, "val")
    rows = split.gather(np.arange(len(split)))
    moved = rows["keypoints"].copy()
    moved[:, :, 0] += 2.0 * (np.arange(len(split)) % 4)[:, None]
    truth = np.asarray(render_heatmaps(jnp.asarray(moved), input_size=64, heatmap_size=16,
                                       style="newell"))
    lookup = {crop.tobytes(): maps for crop, maps in zip(rows["images"], truth)}

    def oracle(state, images):
        out = []
        for crop in np.asarray(images):
            if not crop.any():                                    # a padding row
                out.append(np.zeros(truth.shape[1:], np.float32))
            else:
                out.append(lookup[crop.tobytes()])
        return np.stack(out)

    steps.infer = oracle
    coco = coco_eval.val_annotations(data.load_meta(bbox_pad_data))
    kept = set(rows["ann_id"].tolist())
    detections = [{"image_id": a["image_id"], "bbox": a["bbox"], "score": 1.0,
                   "category_id": 1} for a in coco["annotations"] if a["id"] in kept]
    path = _detections_file(tmp_path / "gt.json", detections)
    gt_path = coco_ap.evaluate_coco_ap(steps, state, split, 8)
    detected = coco_ap.evaluate_person_boxes(steps, state, split, 8, path)
    print("AP with ground-truth boxes:", gt_path["AP"], "as detections:", detected["AP"])
    assert 0.2 < gt_path["AP"] < 0.95
    assert detected["kept_after_nms"] == detected["detections"] == len(split)
    for name in coco_eval.STAT_NAMES:
        assert detected[name] == pytest.approx(gt_path[name], abs=1e-12), name


def test_evaluate_person_boxes_cli(tiny_run, val_coco, tmp_path, capsys):
    """The synthetic data's stand-in detector file (every val box, score 1) through the CLI:
    every val photo and every annotated person counts; bad files end in one line naming the
    file and the field, exit status 2."""
    from shg_jax import evaluate

    coco, folder = val_coco
    detections = folder.parent / "annotations" / "person_detections_val2017.json"
    out = tmp_path / "eval.json"
    assert evaluate.main(["--workdir", str(tiny_run[0]), "--person-boxes", str(detections),
                          "--out", str(out)]) == 0
    result = json.loads(out.read_text())["coco_person_boxes"]
    assert result["detections"] == len(coco["annotations"])
    assert result["images"] == len(coco["images"])
    assert result["persons"] == sum(a["num_keypoints"] > 0 for a in coco["annotations"])
    assert result["detections_file"] == str(detections)
    assert "top-down with the person boxes of" in capsys.readouterr().out
    path = _detections_file(tmp_path / "dets.json",
                            [{"image_id": 1, "bbox": [0, 0, 10, 10], "category_id": 1}])
    assert evaluate.main(["--workdir", str(tiny_run[0]), "--person-boxes", path]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and path in err and "has no 'score'" in err
    assert evaluate.main(["--workdir", str(tiny_run[0]), "--person-boxes", path,
                          "--split", "test"]) == 2
    assert "--split val" in capsys.readouterr().err


def test_predict_folder_with_person_boxes(tiny_run, val_coco, tmp_path):
    """Photos named by COCO image id, a detections file: each photo's poses are scored box
    score x mean peak and OKS-NMS'd (a duplicate box is dropped); photos without detections
    and non-person detections are left out."""
    coco, folder = val_coco
    photos = tmp_path / "photos"
    photos.mkdir()
    ids = [im["id"] for im in coco["images"][:3]]
    for im in coco["images"][:3]:
        (photos / f"{im['id']:012d}.jpg").write_bytes((folder / im["file_name"]).read_bytes())
    (first,) = [a for a in coco["annotations"] if a["image_id"] == ids[0]][:1]
    dets = [{"image_id": ids[0], "bbox": first["bbox"], "score": 0.8, "category_id": 1},
            {"image_id": ids[0], "bbox": first["bbox"], "score": 0.5, "category_id": 1},
            {"image_id": ids[1], "bbox": [0, 0, 20, 20], "score": 0.9, "category_id": 3}]
    path = _detections_file(tmp_path / "dets.json", dets)
    out = tmp_path / "out"
    assert predict.main(["--workdir", str(tiny_run[0]), "--image", str(photos),
                         "--person-boxes", path, "--out", str(out)]) == 0
    result = json.loads((out / "predictions.json").read_text())
    assert [im["image_id"] for im in result["images"]] == [ids[0]]
    (person,) = result["images"][0]["people"]
    assert person["box_score"] == 0.8 and person["bbox"] == first["bbox"]
    assert person["score"] == pytest.approx(0.8 * np.mean([k[2] for k in person["keypoints"]]),
                                            abs=1e-3)
    assert (out / f"{ids[0]:012d}_pose.png").is_file()
    unknown = _detections_file(tmp_path / "u.json", [dict(dets[0], image_id=123456789)])
    assert predict.main(["--workdir", str(tiny_run[0]), "--image", str(photos),
                         "--person-boxes", unknown, "--out", str(out)]) == 2


def test_a_run_records_its_label_offset_and_derives_the_flip_shift(tiny_run, tiny_data):
    """tiny_data holds thesis crops, whose floored labels lie left of their pixels: the run's
    checkpoint keeps the training split's offset, and the flip test's shift follows from it
    unless --flip-shift (config.decode.flip_shift) gives one."""
    offset = data.Split(tiny_data, "train").label_offset_x
    _, steps, _, record = runs.open_run(tiny_run[0], "best", flip=True)
    assert record.label_offset_x == offset < -1.0
    assert steps.codec.flip
    assert steps.codec.flip_shift == pytest.approx(flip_shift(4, offset))
    _, steps, _, _ = runs.open_run(tiny_run[0], "best", flip=True, flip_shift=0.5)
    assert steps.codec.flip_shift == 0.5


def test_evaluate_augment_val_scores_one_fixed_transformed_copy(tiny_run, tmp_path, capsys):
    """--augment-val scores the val split transformed sample by sample (draws from each
    sample's index): the same numbers at any batch size, not the plain split's, in a file of
    its own; COCO AP cannot be asked for with it."""
    from shg_jax import evaluate, evaluation

    workdir = tiny_run[0]
    assert evaluate.main(["--workdir", str(workdir), "--augment-val", "--batch-size", "8"]) == 0
    assert "on the transformed copy" in capsys.readouterr().out
    first = json.loads((workdir / "eval" / "val-best-augmented.json").read_text())
    assert first["augment_val"]["rotation"] == 30.0
    out = tmp_path / "again.json"
    assert evaluate.main(["--workdir", str(workdir), "--augment-val", "--batch-size", "5",
                          "--out", str(out)]) == 0
    again = json.loads(out.read_text())
    assert again["loss"] == pytest.approx(first["loss"], rel=1e-5)
    assert again["all/pck"] == pytest.approx(first["all/pck"], abs=1e-9)
    _, steps, state, _ = runs.open_run(workdir, "best")
    plain = evaluation.evaluate_split(steps, state, data.Split(steps.config.data_dir, "val"), 8)
    assert first["count"] == plain["count"]
    assert first["loss"] != pytest.approx(plain["loss"], rel=1e-3)
    with pytest.raises(SystemExit) as e:
        evaluate.main(["--workdir", str(workdir), "--augment-val", "--coco-ap"])
    assert e.value.code == 2 and "drop --coco-ap" in capsys.readouterr().err
