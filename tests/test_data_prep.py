"""data_prep.coco on synthetic data and on the real COCO slice; data_prep.synthetic/preview."""

import errno
import filecmp
import json
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from data_prep import coco as prep
from data_prep import preview, synthesis
from shg_jax import data, shards

from helpers import REPO


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """A small synthetic COCO-layout folder (made once for the module)."""
    return synthesis.generate(tmp_path_factory.mktemp("synth"), train=160, val=20, seed=7,
                              size=128)


def run_prep(root, out, *extra):
    return prep.main(["--coco-root", str(root), "--out", str(out), "--size", "64",
                      "--test-size", "30", "--shard-size", "16", "--workers", "1", *extra])


def tree_files(root: pathlib.Path):
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


def assert_same_tree(a: pathlib.Path, b: pathlib.Path):
    files = tree_files(a)
    assert files == tree_files(b)
    for f in files:
        assert filecmp.cmp(a / f, b / f, shallow=False), f


# --- synthetic data -------------------------------------------------------------------

def test_synthetic_is_coco_and_has_occlusion_overlap_and_unlabelled(synth):
    coco = COCO(str(synth / "annotations" / "person_keypoints_train2017.json"))
    kps = np.array([a["keypoints"] for a in coco.anns.values()]).reshape(-1, 17, 3)
    v = kps[..., 2]
    assert (v == 2).mean() > 0.5 and (v == 1).any() and (v == 0).any()
    assert any(a["num_keypoints"] == 0 for a in coco.anns.values())   # background figures
    per_image = [len(coco.getAnnIds(imgIds=[i])) for i in coco.getImgIds()]
    assert max(per_image) >= 3 and min(per_image) == 1
    for info in list(coco.imgs.values())[:5]:
        with Image.open(synth / "train2017" / info["file_name"]) as im:
            assert im.size == (info["width"], info["height"]) and im.mode == "RGB"


def test_synthetic_is_deterministic(tmp_path):
    a = synthesis.generate(tmp_path / "a", train=3, val=2, seed=5, size=96)
    b = synthesis.generate(tmp_path / "b", train=3, val=2, seed=5, size=96)
    c = synthesis.generate(tmp_path / "c", train=3, val=2, seed=6, size=96)
    assert_same_tree(a, b)
    assert not filecmp.cmp(a / "train2017" / "000001000000.jpg",
                           c / "train2017" / "000001000000.jpg", shallow=False)


def test_figures_are_lit_from_either_side():
    """Shading must not tell a left limb from a right one (a mirrored crop would reverse
    that cue, and the flip test then loses): over 40 figures the brighter forearm is the
    left one about half the time. Both forearms share the skin colour; only the light
    differs."""
    from PIL import ImageDraw

    left_brighter = []
    for seed in range(40):
        rng = np.random.default_rng(seed)
        joints = synthesis.figure_joints("standing", rng) * 200 + (128, 150)
        img = Image.new("RGB", (256, 256))
        synthesis._draw_figure([(ImageDraw.Draw(img), None)], joints, 200, rng)
        pixels = np.asarray(img, np.int64)

        def forearm(elbow, wrist):
            x, y = np.round((joints[elbow] + joints[wrist]) / 2).astype(int)
            return pixels[y, x].sum()

        left, right = forearm(7, 9), forearm(8, 10)
        assert left != right
        left_brighter.append(left > right)
    assert 10 <= sum(left_brighter) <= 30, sum(left_brighter)


# --- preparation ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def prepared(synth, tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared") / "data"
    assert run_prep(synth, out) == 0
    return out


def test_synthetic_factors_are_read_back_from_the_prepared_shards(prepared, synth):
    """Each crop's generating factors, COCO box and photo size, as its annotation records
    them, come back from the shards of every split."""
    anns, images = {}, {}
    for source in ("train2017", "val2017"):
        coco = json.loads((synth / "annotations" / f"person_keypoints_{source}.json").read_text())
        anns.update({a["id"]: a for a in coco["annotations"]})
        images.update({i["id"]: i for i in coco["images"]})
    for name in shards.SPLITS:
        split = data.Split(prepared, name)
        assert set(split.factors) == set(synthesis.FACTORS)
        assert split.factors["pose"] == sorted(synthesis.POSES)
        assert split.factors["lit_side"] == ["left", "right"] and split.factors["tilt"] is None
        rows = split.gather(np.arange(len(split)), split.keys)
        for i, ann_id in enumerate(rows["ann_id"].tolist()):
            ann = anns[ann_id]
            for factor, classes in split.factors.items():
                value = rows[shards.factor_key(factor)][i]
                expected = ann[shards.FACTORS_FIELD][factor]
                if classes:
                    assert classes[int(value)] == expected
                else:
                    assert value == pytest.approx(expected, rel=1e-5, abs=1e-5)
            assert ann[shards.FACTORS_FIELD]["occluded"] == sum(
                v == 1 for v in ann["keypoints"][2::3])
            np.testing.assert_allclose(rows["box"][i], ann["bbox"], rtol=1e-6)
            image = images[ann["image_id"]]
            assert rows["photo_size"][i].tolist() == [image["width"], image["height"]]


def test_a_malformed_factors_field_exits_2_in_one_line(synth, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(synth, broken)
    ann_file = broken / "annotations" / "person_keypoints_val2017.json"
    coco = json.loads(ann_file.read_text())
    coco["annotations"][0][shards.FACTORS_FIELD] = ["standing"]
    ann_file.write_text(json.dumps(coco))
    assert run_prep(broken, tmp_path / "out") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(ann_file) in err and "factors" in err
    assert not (tmp_path / "out").exists()


def test_splits_counts_and_keypoints_inside(prepared, synth):
    meta = json.loads((prepared / shards.META).read_text())
    assert meta["splits"]["test"]["count"] == 30
    for name in shards.SPLITS:
        split = data.Split(prepared, name)
        batch = split.gather(np.arange(len(split)))
        assert batch["images"].shape[1:] == (64, 64, 3)
        kps = batch["keypoints"]
        labelled = kps[..., 2] > 0
        assert labelled.any(axis=1).all()
        # In the crop's frame (not the photo's): the thesis' rule moves every joint one
        # photo pixel up and left before scaling ((p - 1 - x0) * scale, floored), so a joint
        # on the crop's first row or column may land just outside it (heatmaps ignore it).
        xy = kps[..., :2][labelled]
        assert np.all((xy >= -2) & (xy < 64)) and np.mean((xy >= 0).all(-1)) > 0.99
        m = split.meta
        dropped = sum(n for r, n in m["dropped"].items() if r != "no_labelled_keypoint")
        assert m["kept"] + dropped == m["persons_with_keypoints"]
    ids = {n: data.Split(prepared, n).gather(np.arange(len(data.Split(prepared, n))))
           for n in shards.SPLITS}
    # The thesis' test draw is crop by crop: no crop is in two splits, photos may be.
    assert not set(ids["train"]["ann_id"].tolist()) & set(ids["test"]["ann_id"].tolist())
    assert meta["test_split_by"] == "crop"
    # ... and photos may be: on this data some photo gives crops to both train and test.
    assert set(ids["train"]["image_id"].tolist()) & set(ids["test"]["image_id"].tolist())
    assert len(meta["mean_rgb"]) == 3 and all(0 < c < 1 for c in meta["mean_rgb"])


def test_mean_rgb_is_the_mean_of_the_training_crops(prepared):
    """The thesis' formula: per channel, the mean over every pixel of every training crop,
    in [0, 1] (uint8 / 255); here against the stored crops themselves."""
    split = data.Split(prepared, "train")
    images = split.gather(np.arange(len(split)))["images"].astype(np.float64)
    expected = images.reshape(-1, 3).sum(0) / (255.0 * images[..., 0].size)
    np.testing.assert_allclose(data.load_meta(prepared)["mean_rgb"], expected, rtol=1e-12)
    np.testing.assert_allclose(split.mean_rgb, expected, rtol=1e-6)     # float32 there


def _one_person_coco(root: pathlib.Path, colours) -> None:
    """A COCO folder whose photos are 100x100 of one colour each, one person per photo
    (train2017 and val2017 alike)."""
    for split in ("train2017", "val2017"):
        (root / split).mkdir(parents=True)
        images, anns = [], []
        for i, colour in enumerate(colours, start=1):
            name = f"{i:012d}.png"
            Image.new("RGB", (100, 100), colour).save(root / split / name)
            images.append({"id": i, "file_name": name, "width": 100, "height": 100})
            anns.append({"id": i, "image_id": i, "category_id": 1, "iscrowd": 0,
                         "area": 1600.0, "bbox": [30, 30, 40, 40], "num_keypoints": 2,
                         "keypoints": [40, 35, 2] + [0, 0, 0] * 15 + [60, 65, 2]})
        (root / "annotations").mkdir(exist_ok=True)
        (root / "annotations" / f"person_keypoints_{split}.json").write_text(json.dumps(
            {"images": images, "annotations": anns,
             "categories": [{"id": 1, "name": "person", "keypoints": [], "skeleton": []}]}))


def test_mean_rgb_and_label_offset_known_answers(tmp_path):
    """Two photos of one colour each, square crops inside them: every crop pixel is its
    photo's colour, so the training mean is ((200 + 40) / 2, ...) / 255 exactly. Each crop
    is the 33 px square of 1.1 x the 30 px keypoint extent, resized to 64: continuous labels
    (p - x0) * 64/33 lie (1 - 64/33) / 2 px off the resize grid (crop.label_offsets_x)."""
    _one_person_coco(tmp_path / "coco", [(200, 100, 50), (40, 60, 80)])
    assert run_prep(tmp_path / "coco", tmp_path / "out", "--crop-mode", "square",
                    "--test-size", "0") == 0
    meta = data.load_meta(tmp_path / "out")
    assert data.Split(tmp_path / "out", "train").meta["count"] == 2
    assert meta["mean_rgb"] == pytest.approx([120 / 255, 80 / 255, 65 / 255], abs=1e-12)
    assert meta["label_offset_x"] == pytest.approx((1 - 64 / 33) / 2, abs=1e-6)  # float32
    assert data.Split(tmp_path / "out", "train").label_offset_x == meta["label_offset_x"]


def test_crop_split_is_a_seeded_draw(synth, prepared, tmp_path):
    def test_ids(root):
        split = data.Split(root, "test")
        return set(split.gather(np.arange(len(split)))["ann_id"].tolist())

    assert run_prep(synth, tmp_path / "seed1", "--seed", "1") == 0
    other = test_ids(tmp_path / "seed1")
    assert len(other) == 30 and other != test_ids(prepared)


def test_test_split_by_image_keeps_photos_whole(synth, prepared, tmp_path):
    out = tmp_path / "by_image"
    assert run_prep(synth, out, "--test-split-by", "image") == 0
    ids = {n: data.Split(out, n).gather(np.arange(len(data.Split(out, n))))
           for n in shards.SPLITS}
    images = {n: set(v["image_id"].tolist()) for n, v in ids.items()}
    assert not images["train"] & images["test"] and not images["val"] & images["train"]
    assert len(ids["test"]["ann_id"]) == 30
    # Both rules split the same crops: only the assignment to train/test differs.
    by_crop = {n: data.Split(prepared, n) for n in ("train", "test")}
    crops = set()
    for split in by_crop.values():
        crops |= set(split.gather(np.arange(len(split)))["ann_id"].tolist())
    assert crops == set(ids["train"]["ann_id"].tolist()) | set(ids["test"]["ann_id"].tolist())


def test_workers_give_identical_bytes(synth, prepared, tmp_path):
    out = tmp_path / "w2"
    assert run_prep(synth, out, "--workers", "2") == 0
    assert_same_tree(prepared, out)


def test_complete_output_is_left_alone_unless_overwrite(synth, tmp_path, capsys):
    out = tmp_path / "d"
    assert run_prep(synth, out, "--limit", "20") == 0
    stamp = (out / "val" / "00000" / "images.npy").stat().st_mtime_ns
    assert run_prep(synth, out, "--limit", "20") == 0
    assert "nothing to do" in capsys.readouterr().out
    assert (out / "val" / "00000" / "images.npy").stat().st_mtime_ns == stamp
    assert run_prep(synth, out, "--limit", "20", "--overwrite") == 0
    assert (out / "val" / "00000" / "images.npy").stat().st_mtime_ns != stamp


def test_killed_run_resumes_to_the_same_bytes(synth, prepared, tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "data_prep.coco", "--coco-root", str(synth), "--out",
           str(out), "--size", "64", "--test-size", "30", "--shard-size", "16",
           "--workers", "1"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (out / "train" / "00002").exists():
            assert proc.poll() is None, "finished before it could be killed"
            assert time.time() < deadline
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert not (out / shards.META).exists()                  # not presented as complete
    with pytest.raises(data.DataError):
        data.Split(out, "train")
    rerun = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "resuming" in rerun.stderr
    assert_same_tree(prepared, out)


def test_rerun_with_other_settings_is_refused(synth, tmp_path, capsys):
    out = tmp_path / "half"
    out.mkdir()
    (out / "prepare.json").write_text(json.dumps({"size": 128}))
    assert run_prep(synth, out) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_missing_inputs_exit_2_and_write_nothing(synth, tmp_path, capsys):
    broken = tmp_path / "noann"
    shutil.copytree(synth, broken)
    (broken / "annotations" / "person_keypoints_val2017.json").unlink()
    assert run_prep(broken, tmp_path / "out1") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "person_keypoints_val2017.json" in err
    shutil.rmtree(broken / "train2017")
    (broken / "annotations" / "person_keypoints_val2017.json").write_text("{}")
    assert run_prep(broken, tmp_path / "out2") == 2
    assert "train2017" in capsys.readouterr().err
    assert not (tmp_path / "out1").exists() and not (tmp_path / "out2").exists()


@pytest.mark.parametrize("text, why", [
    ('{"images": [], "annotations": [', "Expecting value"),             # cut short
    ('{"images": [{"id": 1}], "annotations": [{"id": 5}], "categories": []}', "'image_id'"),
])
def test_a_malformed_annotation_file_exits_2_in_one_line_and_writes_nothing(
        synth, tmp_path, capsys, text, why):
    broken = tmp_path / "broken"
    shutil.copytree(synth, broken)
    ann = broken / "annotations" / "person_keypoints_train2017.json"
    ann.write_text(text)
    assert run_prep(broken, tmp_path / "out") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(ann) in err and why in err
    assert not (tmp_path / "out").exists()


def test_a_full_disk_during_a_shard_write_keeps_the_complete_shards_and_resumes(
        synth, prepared, tmp_path, capsys, monkeypatch):
    out = tmp_path / "full"
    save, calls = np.save, []
    per_shard = len(data.Split(prepared, "val").keys)

    def save_until_the_disk_fills(path, array, *args, **kwargs):
        calls.append(path)
        if len(calls) == per_shard + 2:      # inside the second shard
            raise OSError(errno.ENOSPC, "No space left on device")
        save(path, array, *args, **kwargs)

    monkeypatch.setattr(np, "save", save_until_the_disk_fills)
    assert run_prep(synth, out) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]     # after the progress bar
    assert err == (f"error: cannot write {out / 'val' / '00001'}: No space left on device; "
                   f"free disk space (or fix the permissions) and rerun the same command: "
                   f"it goes on from its last complete output")
    assert sorted(p.name for p in (out / "val").iterdir()) == ["00000"]   # no partial shard
    assert not (out / shards.META).exists()
    monkeypatch.undo()
    assert run_prep(synth, out) == 0
    assert_same_tree(prepared, out)


def test_bad_images_are_skipped_and_odd_modes_converted(synth, prepared, tmp_path):
    root = tmp_path / "bad"
    shutil.copytree(synth, root)
    val = sorted((root / "val2017").iterdir())
    truncated, missing = val[0], val[1]
    truncated.write_bytes(truncated.read_bytes()[:300])
    missing.unlink()
    val[2].write_bytes(b"not a jpeg at all")
    Image.open(val[3]).convert("L").save(val[3], format="JPEG")
    Image.open(val[4]).convert("CMYK").save(val[4], format="JPEG")
    Image.open(val[5]).convert("RGBA").save(val[5], format="PNG")   # PNG named .jpg
    out = tmp_path / "out"
    assert run_prep(root, out) == 0
    meta = json.loads((out / "val" / shards.META).read_text())
    bad = {pathlib.Path(u["file"]).name for u in meta["unreadable_images"]}
    assert bad == {truncated.name, missing.name, val[2].name}
    coco = COCO(str(root / "annotations" / "person_keypoints_val2017.json"))
    # Lost: the crops the intact data set has from those photos (the crop rule's own drops
    # are counted under their reasons, as before).
    bad_ids = {i for i in coco.getImgIds() if coco.imgs[i]["file_name"] in bad}
    intact = data.Split(prepared, "val")
    intact_ids = intact.gather(np.arange(len(intact)))["image_id"].tolist()
    lost = sum(i in bad_ids for i in intact_ids)
    assert lost > 0 and meta["dropped"]["image_unreadable"] == lost
    split = data.Split(out, "val")
    kept_ids = set(split.gather(np.arange(len(split)))["image_id"].tolist())
    odd = {i for i in coco.getImgIds() if coco.imgs[i]["file_name"] in
           {val[3].name, val[4].name, val[5].name}} & set(intact_ids)
    assert odd and odd <= kept_ids          # converted photos still give their crops


def test_preview_writes_a_grid(prepared, tmp_path):
    out = tmp_path / "grid.png"
    assert preview.main([str(prepared / "train"), "--n", "5", "--out", str(out)]) == 0
    with Image.open(out) as im:
        assert im.size == (3 * 64, 2 * 64)


def test_preview_of_an_empty_split_is_one_line(synth, tmp_path, capsys):
    """A test split that takes every train crop leaves train empty (with a warning); its
    preview is a one-line error, not a traceback."""
    out = tmp_path / "out"
    assert run_prep(synth, out, "--limit", "3", "--test-size", "1000") == 0
    assert "the train split is empty" in capsys.readouterr().err
    assert preview.main([str(out / "train"), "--out", str(tmp_path / "g.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "no crops" in err
    assert not (tmp_path / "g.png").exists()


# --- the real COCO slice ----------------------------------------------------------------

@pytest.fixture(scope="module")
def coco_prepared(coco_sample, tmp_path_factory):
    """The real COCO slice prepared with every default (thesis crops, --test-size 5064, which
    takes all 117 train2017 crops into test)."""
    out = tmp_path_factory.mktemp("coco") / "data"
    assert prep.main(["--coco-root", str(coco_sample), "--out", str(out), "--workers", "2"]) == 0
    return out


def test_coco_sample_end_to_end(coco_prepared, coco_sample):
    for name, source in (("val", "val2017"), ("train", "train2017")):
        coco = COCO(str(coco_sample / "annotations" / f"person_keypoints_{source}.json"))
        with_kps = sum(1 for a in coco.anns.values() if a["num_keypoints"] > 0)
        metas = [json.loads((coco_prepared / s / shards.META).read_text())
                 for s in (("val",) if name == "val" else ("train", "test"))]
        kept = sum(m["kept"] for m in metas)
        dropped = sum(n for m in metas for r, n in m["dropped"].items()
                      if r != "no_labelled_keypoint")
        assert kept + dropped == with_kps
        assert sum(m["persons_seen"] for m in metas) == len(coco.anns)
    meta = json.loads((coco_prepared / shards.META).read_text())
    assert meta["crop_mode"] == "thesis" and meta["test_split_by"] == "crop"
    assert sum(m["negative_start"] for m in meta["splits"].values()) == 0


def test_coco_data_gets_its_boxes_and_photo_sizes_and_no_factors(coco_prepared, coco_sample):
    coco = COCO(str(coco_sample / "annotations" / "person_keypoints_val2017.json"))
    split = data.Split(coco_prepared, "val")
    assert split.factors == {} and split.keys == shards.ARRAYS
    assert not list((coco_prepared / "val").glob(f"*/{shards.FACTOR_PREFIX}*"))
    rows = split.gather(np.arange(len(split)), shards.ARRAYS)
    for ann_id, box, size in zip(rows["ann_id"], rows["box"], rows["photo_size"]):
        ann = coco.anns[int(ann_id)]
        np.testing.assert_allclose(box, ann["bbox"], rtol=1e-6)
        image = coco.imgs[ann["image_id"]]
        assert size.tolist() == [image["width"], image["height"]]


def test_coco_sample_defaults_keep_the_thesis_persons_and_pixels(coco_prepared):
    ref_file = REPO.parent / "shared" / "reference" / "thesis_crops" / "thesis_crops.json"
    if not ref_file.is_file():
        pytest.skip(f"thesis reference crops not found at {ref_file}")
    ref = {p["ann_id"]: p for p in json.loads(ref_file.read_text())["persons"]}
    rows = {}
    for name in shards.SPLITS:
        split = data.Split(coco_prepared, name)
        batch = split.gather(np.arange(len(split)))
        for i, ann_id in enumerate(batch["ann_id"].tolist()):
            rows[ann_id] = (batch["images"][i], batch["keypoints"][i])
    assert len(rows) == 342 and set(rows) == {a for a, p in ref.items() if p["kept"]}
    meta = json.loads((coco_prepared / shards.META).read_text())
    assert sum(m["dropped"].get("not_centrable", 0) for m in meta["splits"].values()) == 67
    for ann_id, (image, keypoints) in rows.items():
        theirs = np.array(ref[ann_id]["keypoints"], np.float32)
        labelled = theirs[:, 2] > 0
        np.testing.assert_array_equal(keypoints[labelled], theirs[labelled])
        if ref[ann_id].get("png"):
            with Image.open(ref_file.parent / ref[ann_id]["png"]) as im:
                png = np.asarray(im.convert("RGB"), np.float64)
            assert np.abs(image.astype(np.float64) - png).mean() <= 0.3


def test_square_crop_recomputed_from_the_photo(coco_sample, tmp_path):
    out = tmp_path / "square"
    assert prep.main(["--coco-root", str(coco_sample), "--out", str(out), "--limit", "8",
                      "--test-size", "4", "--crop-mode", "square", "--workers", "1"]) == 0
    split = data.Split(out, "val")
    row = split.gather(np.array([5]))
    coco = COCO(str(coco_sample / "annotations" / "person_keypoints_val2017.json"))
    ann = coco.anns[int(row["ann_id"][0])]
    info = coco.imgs[ann["image_id"]]
    # The square crop, written out independently of shg_jax.crop.
    k = np.array(ann["keypoints"], float).reshape(17, 3)
    pts = k[k[:, 2] > 0, :2]
    (x_lo, y_lo), (x_hi, y_hi) = pts.min(0), pts.max(0)
    side = min(int(round(1.1 * max(x_hi - x_lo, y_hi - y_lo))), info["width"], info["height"])
    x0 = min(max(int(round((x_lo + x_hi) / 2 - side / 2)), 0), info["width"] - side)
    y0 = min(max(int(round((y_lo + y_hi) / 2 - side / 2)), 0), info["height"] - side)
    photo = Image.open(coco_sample / "val2017" / info["file_name"]).convert("RGB")
    expected = np.asarray(photo.crop((x0, y0, x0 + side, y0 + side)).resize(
        (256, 256), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(row["images"][0], expected)
    vis = k[:, 2] > 0
    np.testing.assert_allclose(row["keypoints"][0][vis, :2],
                               (k[vis, :2] - (x0, y0)) * 256 / side, rtol=1e-5)
    np.testing.assert_array_equal(row["keypoints"][0][:, 2], k[:, 2])
