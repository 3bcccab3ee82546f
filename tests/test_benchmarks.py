"""The benchmarks: full_split (a thesis-size train split made of varied copies of a small
one) and the instruments' timings."""

import re

import numpy as np

from benchmarks import full_split
from shg_jax import data
from shg_jax.augment import SWAP

from helpers import REPO


def test_full_split_rows_are_varied_copies_of_the_source(tiny_data, tmp_path):
    src = data.Split(tiny_data, "train")
    n = len(src)
    rows = 2 * n + 5                                    # copies 0, 1 and part of 2
    out = tmp_path / "big"
    assert full_split.main(["--src", str(tiny_data), "--out", str(out), "--rows", str(rows),
                            "--shard-size", "50", "--workers", "1"]) == 0
    big = data.Split(out, "train")
    assert len(big) == rows and data.load_meta(out)["splits"]["train"]["count"] == rows
    assert len(data.Split(out, "val")) == len(data.Split(tiny_data, "val"))
    i = 3                                               # < 5: copy 2 holds it
    original = src.gather(np.array([i]))
    copies = big.gather(np.array([i, n + i, 2 * n + i]))
    np.testing.assert_array_equal(copies["ann_id"], original["ann_id"].repeat(3))
    image = original["images"][0].astype(np.float32)
    # copy 0: darker (gain 0.6), same geometry; copy 1: the same gain, mirrored
    np.testing.assert_allclose(copies["images"][0], np.clip(image * 0.6, 0, 255).astype(np.uint8))
    np.testing.assert_array_equal(copies["images"][1], copies["images"][0][:, ::-1])
    np.testing.assert_array_equal(copies["keypoints"][0], original["keypoints"][0])
    mirrored = original["keypoints"][0][list(SWAP)]
    labelled = mirrored[:, 2] > 0
    assert labelled.any()
    np.testing.assert_array_equal(copies["keypoints"][1][labelled, 0],
                                  src.image_size - 1 - mirrored[labelled, 0])
    np.testing.assert_array_equal(copies["keypoints"][1][:, 1:], mirrored[:, 1:])
    # copy 2: brighter than copy 0 (the gain grows every second copy)
    assert copies["images"][2].mean() > copies["images"][0].mean() + 1


def test_full_split_refuses_to_replace_or_overlap_without_being_asked(tiny_data, tmp_path,
                                                                       capsys):
    out = tmp_path / "big"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    args = ["--src", str(tiny_data), "--rows", "10", "--workers", "1"]
    assert full_split.main(args + ["--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(out) in err and "--overwrite" in err
    assert (out / "keep.txt").read_text() == "user data"
    assert full_split.main(args + ["--out", str(tiny_data / "big")]) == 2
    assert "overlaps --src" in capsys.readouterr().err
    assert full_split.main(args + ["--out", str(out), "--overwrite"]) == 0
    assert len(data.Split(out, "train")) == 10 and not (out / "keep.txt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]   # no temporary left


def test_the_instruments_benchmark_times_every_instrument(capsys):
    """benchmarks.instruments, at a toy size: one timing line per instrument."""
    from benchmarks import instruments

    instruments.main(["--rows", "300", "--dims", "64", "--ks", "2-3", "--n-init", "1",
                      "--config", str(REPO / "configs" / "demo.py"), "--swap-pairs", "4",
                      "--components", "2",
                      "--batch", "4"])
    out = capsys.readouterr().out
    for name in ("pca", "kmeans+silhouette", "profiles+claims", "factors",
                 "decoded-walks+sensitivity", "latent-swap",
                 "extraction-batch-predictions=True"):
        assert re.search(rf"^instrument {re.escape(name)} seconds=\d+\.\d\d$", out, re.M), name
