"""The analysis commands: latents, PCA, K-Means/silhouette, skip ablation, reports."""

import html.parser
import json
import re
import signal
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from sklearn.metrics import silhouette_score as sk_silhouette

from analysis import ablation, cluster, figures, latent, skips, study
from analysis import pca as pca_lib
from shg_jax.latents import extract
from shg_jax import data
from shg_jax.runs import open_run

from helpers import REPO


@pytest.fixture(scope="module")
def run(tiny_run):
    workdir, _ = tiny_run
    config, steps, state, record = open_run(workdir, "latest")
    return dict(workdir=workdir, config=config, steps=steps, state=state, record=record,
                split=data.Split(config.data_dir, "val"))


def test_extraction_equals_the_models_bottleneck_and_is_deterministic(run, tmp_path):
    ck = {"workdir": "w", "step": run["record"].global_step}
    a = extract(run["steps"], run["state"], run["split"], 3, tmp_path / "a", checkpoint=ck,
                batch_size=8)
    n = len(run["split"])
    assert a.latents.shape == (n, 4 * 4 * 16)
    b = extract(run["steps"], run["state"], run["split"], 3, tmp_path / "b", checkpoint=ck,
                batch_size=16)
    # Another batch size: the same rows in the same order; XLA:CPU may pick another
    # convolution tiling for another batch shape, so values agree to float32 rounding.
    np.testing.assert_allclose(a.latents, b.latents, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(a.image_id, b.image_id)
    again = extract(run["steps"], run["state"], run["split"], 3, tmp_path / "c", checkpoint=ck,
                    batch_size=8)
    np.testing.assert_array_equal(a.latents, again.latents)        # same shape: bit for bit
    # Against the model's own forward pass (evaluation mode), row by row.
    rows = np.arange(min(n, 5))
    batch = run["split"].gather(rows)
    model = run["steps"]
    from flax import nnx
    m = nnx.merge(model.graphdef_eval, run["state"].params, run["state"].batch_stats)
    out = m.forward(model.inputs(batch["images"]))
    np.testing.assert_allclose(a.latents[rows], np.asarray(out.bottlenecks[2]).reshape(
        len(rows), -1), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(a.n_labelled, (a.keypoints[..., 2] > 0).sum(-1))
    # Reused from disk for the same checkpoint; redone for another.
    stamp = (tmp_path / "a" / "latents" / "val-layer3" / "latents.npy").stat().st_mtime_ns
    extract(run["steps"], run["state"], run["split"], 3, tmp_path / "a", checkpoint=ck)
    assert (tmp_path / "a" / "latents" / "val-layer3" /
            "latents.npy").stat().st_mtime_ns == stamp
    other = extract(run["steps"], run["state"], run["split"], 1, tmp_path / "a",
                    checkpoint=ck)
    assert other.meta["layer"] == "1" and not np.array_equal(other.latents, a.latents)


#: Latent extraction of a run's val split (batches of 8) SIGKILLed after its second batch.
KILLED_IN_EXTRACTION = textwrap.dedent("""
    import os, signal, sys
    from shg_jax import data, latents
    from shg_jax.runs import open_run

    workdir, out, step = sys.argv[1:]
    config, steps, state, _ = open_run(workdir, "latest")
    update = latents.Progress.update

    def die_after_two(self, *args, **kwargs):
        update(self, *args, **kwargs)
        if self.done == 2:
            os.kill(os.getpid(), signal.SIGKILL)

    latents.Progress.update = die_after_two
    latents.extract(steps, state, data.Split(config.data_dir, "val"), 3, out,
                    checkpoint={"workdir": "w", "step": int(step)}, batch_size=8)
""")


def test_sigkill_during_latent_extraction_then_rerun_gives_identical_latents(run, tmp_path):
    ck = {"workdir": "w", "step": run["record"].global_step}
    out = tmp_path / "killed"
    proc = subprocess.run([sys.executable, "-c", KILLED_IN_EXTRACTION, str(run["workdir"]),
                           str(out), str(ck["step"])], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    left = list((out / "latents").iterdir())
    assert [p.name[:len(".val-layer3.tmp-")] for p in left] == [".val-layer3.tmp-"]
    assert not (out / "latents" / "val-layer3").exists()      # nothing complete-looking
    again = extract(run["steps"], run["state"], run["split"], 3, out, checkpoint=ck,
                    batch_size=8)
    clean = extract(run["steps"], run["state"], run["split"], 3, tmp_path / "clean",
                    checkpoint=ck, batch_size=8)
    for key in ("latents", "image_id", "ann_id", "index", "keypoints", "n_labelled"):
        np.testing.assert_array_equal(getattr(again, key), getattr(clean, key), err_msg=key)
    assert again.meta == clean.meta
    assert [p.name for p in (out / "latents").iterdir()] == ["val-layer3"]  # leftover gone


def test_pca_component_counts_on_known_variances():
    rng = np.random.default_rng(0)
    # Independent columns with variances 60, 25, 12, 3 (cumulative .60 .85 .97 1) in 8-D,
    # rotated by a random orthogonal matrix: 90 % needs 3 components, 95 % 3, 99 % 4.
    z = rng.standard_normal((200_000, 4)) * np.sqrt([60, 25, 12, 3])
    q, _ = np.linalg.qr(rng.standard_normal((8, 8)))
    x = (np.concatenate([z, np.zeros((len(z), 4))], 1) @ q.T).astype(np.float32)
    p = pca_lib.fit(x, chunk=30_000)
    assert p.components_for() == {"90%": 3, "95%": 3, "99%": 4}
    np.testing.assert_allclose(p.ratio[:4], [0.6, 0.25, 0.12, 0.03], atol=0.005)
    assert p.ratio[4:].max() < 1e-6


def test_walk_targets_are_the_nearest_samples():
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((500, 6)) * [5, 3, 2, 1, 1, 1]).astype(np.float32)
    p = pca_lib.fit(x)
    for c in (0, 2):
        found = pca_lib.walk_targets(p, x, c, (-2, 0, 3))
        for k, row in zip((-2, 0, 3), found):
            target = p.mean + k * np.sqrt(p.variances[c]) * p.components[:, c]
            assert row == int(np.argmin(((x - target) ** 2).sum(1)))


def test_chunked_silhouette_equals_scikit_learn():
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.normal(0, 1, (300, 10)), rng.normal(2, 1, (217, 10)),
                        rng.normal(-3, 2, (90, 10))]).astype(np.float32)
    labels = np.repeat([0, 1, 2], [300, 217, 90])
    labels[:5] = 2                                  # a few misfits
    ours = cluster.silhouette_score(x, labels, chunk=128)   # 607 rows: chunks do not divide
    assert ours == pytest.approx(sk_silhouette(x, labels), abs=1e-5)


def test_kmeans_finds_two_well_separated_blobs():
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(0, 1, (150, 20)), rng.normal(12, 1, (150, 20))])
    sweep = cluster.sweep(x, range(2, 6), n_init=3)
    assert sweep.best_k == 2
    assert sorted(np.bincount(sweep.labels[2]).tolist()) == [150, 150]
    centres = cluster.nearest_to_centroids(x, sweep.centroids[2])
    assert {int(sweep.labels[2][i]) for i in centres} == {0, 1}


class _Links(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.links = []

    def handle_starttag(self, tag, attrs):
        self.links += [v for k, v in attrs if k in ("href", "src")]


def assert_index_complete(out):
    parser = _Links()
    parser.feed((out / "index.html").read_text())
    assert parser.links
    for link in parser.links:
        assert (out / link).is_file(), link


def test_latent_command_writes_every_figure_it_links(run, tmp_path, capsys):
    out = tmp_path / "latent"
    assert latent.main(["--ckpt", str(run["workdir"]), "--checkpoint", "latest",
                        "--split", "val", "--out", str(out), "--subset", "random:10",
                        "--subset", "all", "--subset", "random:500",
                        "--components", "1,2,256,last", "--ks", "2-4",
                        "--n-init", "2", "--batch-size", "8"]) == 0
    assert_index_complete(out)
    # random:500 of a smaller split is every sample: said once, not analysed twice.
    assert not list(out.glob("random500-*"))
    assert "Subset random:500: the same samples as subset all" in (out / "index.html").read_text()
    # Each stage without a progress bar says how long it took, per subset.
    err = capsys.readouterr().err
    for stage in (f"all: PCA of {len(run['split'])} x 256: ", "all: component walks: ",
                  "all: cluster figures: ",
                  "random:10: PCA of 10 x 256: "):
        assert re.search(re.escape(stage) + r"\d+\.\d s\n", err), stage
    pca_json = json.loads((out / "all-pca.json").read_text())
    assert pca_json["thesis_index_for"] == {f: k - 1 for f, k in
                                            pca_json["components_for"].items()}
    negative = json.loads((out / "all-pca_walks_negative.json").read_text())
    assert set(negative) == {"1", "2", "256"}                 # 'last' = the 256th of 4x4x16
    assert [w["step"] for w in negative["1"]] == [-2, -2.25, -2.5, -2.75, -3]
    assert (out / "all-cluster_panels.png").stat().st_size > 10_000
    km = json.loads((out / "all-kmeans.json").read_text())
    assert km["ks"] == [2, 3, 4]
    assert km["best_k"] == km["ks"][int(np.nanargmax(km["silhouette"]))]
    assert len(km["cluster_sizes"]) == km["best_k"]
    # The projection table's cluster column is the best K's clustering of every sample.
    import csv
    with open(out / "all-projection.csv") as f:
        clusters = [int(row["cluster"]) for row in csv.DictReader(f)]
    assert len(clusters) == len(run["split"])
    assert np.bincount(clusters, minlength=km["best_k"]).tolist() == km["cluster_sizes"]
    walks = json.loads((out / "random10-pca_walks.json").read_text())
    assert set(walks) == {"1", "2", "256"}                   # 256 and 'last': walked once
    assert (out / "all-pca_projection.png").stat().st_size > 10_000
    # The instruments, on every subset.
    for stage in ("decoded walks", "latent swap", "profiles and claims", "known factors"):
        assert re.search(re.escape(f"all: {stage}: ") + r"\d+\.\d s\n", err), stage
    with open(out / "all-sensitivity.csv") as f:
        table = list(csv.DictReader(f))
    assert [(r["component"], r["skips"]) for r in table] == [
        (c, m) for m in ("reference skips", "no skips") for c in ("1", "2", "256")]
    assert all(float(r["nose"]) >= 0 for r in table)
    decoded = json.loads((out / "all-decoded_walks.json").read_text())
    assert np.asarray(decoded["decoded_keypoints"]["no skips"]).shape == (3 * 7, 17, 2)
    swap = json.loads((out / "all-latent_swap.json").read_text())
    assert len(swap["pairs"]) == 512 and all(a != b for a, b in swap["pairs"])
    assert set(swap["scores"]) == {"A latent, A skips", "A latent, B skips",
                                   "A latent, no skips", "B latent, B skips"}
    with open(out / "all-claims.csv") as f:
        claims = list(csv.DictReader(f))
    assert len(claims) == 5 and {c["verdict"] for c in claims} <= {
        "supported", "not supported", "not measurable"}
    profiles = json.loads((out / "all-profiles.json").read_text())["profiles"]
    assert [sum(p["size"] for p in profiles[str(k)]) for k in (2, 3, 4)] == [len(run["split"])] * 3
    factors = json.loads((out / "all-factors.json").read_text())
    assert set(factors) == {"pose", "lit_side", "height", "tilt", "occluded"}
    assert set(factors["pose"]["ami"]) == {"2", "3", "4"}
    assert "<table" in (out / "index.html").read_text()          # the claims, shown inline


def test_skip_ablation_changes_predictions_and_reports(run, tmp_path):
    res = ablation.run_ablation(run["steps"], run["state"], run["split"], 8)
    assert len(res["with"]) == len(run["split"])
    assert not np.array_equal(res["with"], res["without"])
    fn = ablation.ablation_function(run["steps"])
    from shg_jax import placement
    batch = run["split"].gather(np.arange(8))
    batch["valid"] = np.ones(8, bool)
    out = jax.device_get(fn(run["state"], placement.shard_batch(batch, run["steps"].mesh)))
    assert np.abs(out["pred_with"] - out["pred_without"]).max() > 1e-3
    out_dir = tmp_path / "skips"
    assert skips.main(["--ckpt", str(run["workdir"]), "--checkpoint", "latest", "--split",
                       "val", "--out", str(out_dir), "--batch-size", "8"]) == 0
    assert_index_complete(out_dir)
    summary = json.loads((out_dir / "skips.json").read_text())
    has = res["has"]
    assert summary["mean_pck_with_skips"] == pytest.approx(res["with"][has].mean())


def test_analysis_errors_are_one_line(tmp_path, capsys):
    assert latent.main(["--ckpt", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "no checkpoints" in err and err.count("\n") == 1


def exit_status(main, argv) -> int:
    """A command's exit status, whether it returns it or argparse exits with it."""
    try:
        return main(argv)
    except SystemExit as e:
        return e.code


@pytest.mark.parametrize("command, flags, named", [
    ("latent", ["--subset", "bogus"], "--subset"),
    ("latent", ["--subset", "random:0"], "--subset"),
    ("latent", ["--components", "5000"], "--components 5000"),
    ("latent", ["--components", "0"], "--components"),
    ("latent", ["--ks", "1-3"], "--ks"),
    ("latent", ["--ks", "2-1000"], "--ks 2-1000"),
    ("latent", ["--layer", "7"], "--layer 7"),
    ("latent", ["--layer", "code"], "--layer code"),
    ("latent", ["--batch-size", "0"], "--batch-size"),
    ("latent", ["--checkpoint", "99"], "epoch 99"),
    ("skips", ["--limit", "0"], "--limit"),
    ("skips", ["--batch-size", "x"], "--batch-size"),
    ("compare", ["--ks", "2-1000"], "--ks 2-1000"),
    ("compare", ["--n-init", "0"], "--n-init"),
])
def test_every_bad_argument_is_refused_in_one_line_before_any_work(run, tmp_path, capsys,
                                                                   command, flags, named):
    """Each kind of bad value: exit status 2, one line starting with `error:` that names the
    flag, and nothing written (the output folder is not even made)."""
    from analysis import compare

    out = tmp_path / "out"
    ckpt = ["--ckpt", str(run["workdir"])]
    main, split = {"latent": (latent.main, "--split"), "skips": (skips.main, "--split"),
                   "compare": (compare.main, "--latent-split")}[command]
    argv = ckpt * (2 if command == "compare" else 1) + [split, "val", "--out", str(out)]
    assert exit_status(main, argv + flags) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert named in err and "Traceback" not in err
    assert not out.exists()


def test_a_checkpoint_folder_names_its_checkpoint(run, tmp_path, capsys):
    """--ckpt takes one checkpoint folder of a run as well as the run's workdir."""
    from shg_jax import evaluate
    from shg_jax.checkpoint import Checkpoints

    ckpts = Checkpoints(run["workdir"], read_only=True)
    folder = ckpts.root / str(ckpts.find("latest"))
    assert evaluate.main(["--ckpt", str(folder), "--out", str(tmp_path / "a.json")]) == 0
    assert evaluate.main(["--ckpt", str(run["workdir"]), "--checkpoint", "latest",
                          "--out", str(tmp_path / "b.json")]) == 0
    a, b = (json.loads((tmp_path / f).read_text()) for f in ("a.json", "b.json"))
    assert a["all/pck"] == b["all/pck"] and a["global_step"] == b["global_step"]
    assert a["checkpoint"] == f"step{ckpts.find('latest')}" and b["checkpoint"] == "latest"
    assert exit_status(evaluate.main, ["--ckpt", str(folder), "--checkpoint", "99"]) == 2
    assert "epoch 99" in capsys.readouterr().err


def test_subsets_full_annotated_is_every_heatmap_non_zero(run):
    """'full-annotated' is the thesis' "full" set: all 17 target heatmaps non-zero (labelled
    and inside the crop: the rule the targets are rendered with); 'all-labelled' counts
    labels only."""
    import types

    size = run["config"].model.input_size
    full = np.concatenate([np.full((17, 2), size / 2), np.full((17, 1), 2.0)], -1)
    outside, unlabelled, edge = full.copy(), full.copy(), full.copy()
    outside[5, 0] = size + 3                   # labelled, beyond the crop's right edge
    unlabelled[9] = 0                          # v = 0
    edge[2, 1] = size - 0.4                    # inside: the last heatmap row
    kps = np.stack([full, outside, unlabelled, edge]).astype(np.float32)
    latents = types.SimpleNamespace(image_id=np.arange(4), keypoints=kps,
                                    n_labelled=(kps[..., 2] > 0).sum(-1))
    codec = run["steps"].codec
    np.testing.assert_array_equal(study.select(latents, "full-annotated", 0, codec), [0, 3])
    np.testing.assert_array_equal(study.select(latents, "all-labelled", 0, codec), [0, 1, 3])
    maps = np.asarray(codec.targets(kps))
    assert [bool(np.all(maps[i].reshape(-1, 17).max(0) > 0)) for i in range(4)] == [
        True, False, False, True]


def test_thesis_analysis_defaults():
    args = latent.parse_args(["--ckpt", "w", "--out", "o"])
    assert args.max_iter == 1000 and args.n_init == 10 and args.ks == list(range(2, 11))
    assert args.components is None
    assert study.default_components(3, 4096) == (1, 2, 3, 10, 30, 50, 100, "last")
    assert study.default_components(3, 64) == (1, 2, 3, 10, 30, 50, "last")
    assert study.default_components("code", 50) == (1, 2, 3, 10, 20, 30, 40, 50)
    assert study.default_components("code", 8) == (1, 2, 3)
    assert study.resolve_components(study.THESIS_COMPONENTS, 4096)[-1] == 4096
    assert study.resolve_components([1, "last", 256], 256) == [1, 256]
    from shg_jax.cli import ArgumentError
    with pytest.raises(ArgumentError, match="--components 300,400: the latent has 256 "):
        latent.check_components([1, 300, "last", 400], 256)
    latent.check_components([1, "last", 256], 256)
    assert list(figures.PCK_BINS) == pytest.approx([i / 10 for i in range(11)])
    fig = figures.pck_histograms(np.array([0.05, 0.5, 1.0]), np.array([0.0, 0.25, 0.95]))
    assert [len(ax.patches) for ax in fig.axes] == [10, 10]         # bars of width 0.1
    assert [p.get_height() for p in fig.axes[0].patches] == [1, 0, 0, 0, 0, 1, 0, 0, 0, 1]


def test_kmeans_max_iter_is_honoured():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(c, 1.0, (200, 5)) for c in (0, 3, 6)]).astype(np.float32)
    one = cluster.sweep(x, [3], n_init=1, max_iter=1, silhouette_sample=100)
    full = cluster.sweep(x, [3], n_init=1, max_iter=1000, silhouette_sample=100)
    assert one.inertias[0] > full.inertias[0] * (1 + 1e-6)


def test_standardised_projection_scales_each_dimension():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 3)) * np.array([100.0, 1.0, 1.0])
    x[:, 1] += 0.9 * x[:, 2]                                   # correlated small dimensions
    coords = pca_lib.standardised_projection(x, 2)
    # Without standardising, PC 1 would be the large first dimension; standardised, the
    # correlated pair carries the most variance and PC 1 follows it.
    z = (x - x.mean(0)) / x.std(0)
    pair = (z[:, 1] + z[:, 2]) / np.sqrt(2)
    assert abs(np.corrcoef(coords[:, 0], pair)[0, 1]) > 0.99


def test_skeleton_thumbnails_draw_the_argmax_joints(run):
    size = run["split"].image_size
    kps = np.zeros((2, 17, 3), np.float32)
    kps[0, 5] = (16, 16, 2)                  # left shoulder
    kps[0, 7] = (44, 40, 1)                  # left elbow (occluded: drawn all the same)
    thumbs = study.skeleton_thumbnails(run["steps"], kps, size)
    assert [t.shape for t in thumbs] == [(size, size, 3)] * 2
    drawn = np.any(thumbs[0] != 255, axis=-1)
    # Joints sit at their heatmap cell in crop pixels (within a cell), the limb between them.
    cell = size // 16
    for x, y in ((16, 16), (44, 40), (30, 28)):
        assert drawn[y - cell:y + cell + 1, x - cell:x + cell + 1].any(), (x, y)
    assert not drawn[:, size - 8:].any() and not np.any(thumbs[1] != 255)   # nothing else
