"""analysis.kmeans (K-Means in JAX) against scikit-learn, its seeding and stopping rules, and
the resumable sweep of analysis.cluster."""

import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

from analysis import cluster, kmeans


def blobs(seed=0, sizes=(300, 200, 120, 80, 40), dim=16, spread=1.5):
    """Gaussian blobs of unequal sizes whose centres lie ~8 standard deviations apart."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 4, (len(sizes), dim))
    x = np.concatenate([rng.normal(c, spread, (n, dim)) for c, n in zip(centres, sizes)])
    return x.astype(np.float32), np.repeat(np.arange(len(sizes)), sizes)


@pytest.mark.parametrize("k", [3, 5, 8])
def test_best_of_restarts_matches_scikit_learn(k):
    """Inertia within 0.5 % of scikit-learn's best of 10 and the same partition (ARI >= 0.95)
    where the data has a stable one (K = 5 blobs); at other K the inertia still matches."""
    x, truth = blobs()
    ours = kmeans.fit(x, k, n_init=10, max_iter=300, seed=0)
    sk = KMeans(n_clusters=k, n_init=10, max_iter=300, random_state=0).fit(x)
    assert ours.inertia == pytest.approx(sk.inertia_, rel=5e-3)
    assert adjusted_rand_score(sk.labels_, ours.labels) >= (0.95 if k == 5 else 0.5)
    if k == 5:
        assert adjusted_rand_score(truth, ours.labels) >= 0.95
    # The result is self-consistent: each row is labelled with its nearest centroid, and the
    # inertia is the sum of those squared distances (computed here in float64).
    d = ((x[:, None, :].astype(np.float64) - ours.centroids[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(ours.labels, d.argmin(1))
    assert ours.inertia == pytest.approx(d.min(1).sum(), rel=1e-4)


def test_kmeans_plusplus_seeds_one_centre_in_each_far_group():
    """Three tight groups 100 apart: k-means++ puts its 3 seeds in 3 groups, even with one
    candidate per step (pure D^2 sampling; a uniform pick would repeat a group 7 times in
    9), and every seed is a data row."""
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(c, 0.1, (50, 4)) for c in (0, 100, 200)]).astype(
        np.float32)
    xj = jnp.asarray(x)
    for seed, trials in [(s, t) for s in range(5) for t in (1, 3)]:
        seeds = np.asarray(kmeans.kmeans_plusplus(xj, jnp.sum(xj * xj, 1),
                                                  jax.random.key(seed), 3, trials))
        assert all((np.abs(x - s).sum(1) == 0).any() for s in seeds)      # data rows
        assert sorted(int(round(s[0] / 100)) for s in seeds) == [0, 1, 2]


def test_lloyd_stops_on_max_iter_on_tol_and_on_unchanged_labels():
    x, _ = blobs(seed=2)
    xj = jnp.asarray(x - x.mean(0))
    sq = jnp.sum(xj * xj, 1)
    start = xj[:5]                                   # five rows of the first blob: poor
    _, _, inertia_1, n_1 = kmeans.lloyd(xj, sq, start, 0.0, 1)
    _, _, inertia_all, n_all = kmeans.lloyd(xj, sq, start, 0.0, 1000)
    assert int(n_1) == 1 and 1 < int(n_all) < 1000          # unchanged labels ended it
    assert float(inertia_all) < float(inertia_1)
    _, _, _, n_tol = kmeans.lloyd(xj, sq, start, 1e30, 1000)
    assert int(n_tol) == 1                                 # any shift is within tol


def test_an_empty_cluster_takes_the_farthest_point():
    x = np.array([[0.0], [1.0], [2.0], [10.0]], np.float32)
    xj = jnp.asarray(x)
    start = jnp.asarray([[1.0], [1000.0]])                 # the second centre attracts none
    centres, labels, inertia, _ = kmeans.lloyd(xj, jnp.sum(xj * xj, 1), start, 0.0, 1)
    # Step 1: all rows go to centre 0; centre 1 is empty and takes the farthest row (10).
    np.testing.assert_allclose(np.asarray(centres), [[3.25], [10.0]])
    assert np.asarray(labels).tolist() == [0, 0, 0, 1]


def test_sweep_reruns_only_the_k_values_not_done(tmp_path, monkeypatch):
    """Each K is written when it is done; a rerun (as after a kill) fits only the rest and
    gives the same numbers; other settings are not mistaken for done."""
    x, _ = blobs(seed=3, sizes=(60, 40, 30))
    first = cluster.sweep(x, [2, 3], n_init=2, resume_dir=tmp_path / "km")
    assert sorted(p.name for p in (tmp_path / "km").iterdir()) == ["k002.npz", "k003.npz"]
    fitted = []
    fit = cluster.kmeans_fit
    monkeypatch.setattr(cluster, "kmeans_fit", lambda x, k, **kw: fitted.append(k) or fit(
        x, k, **kw))
    again = cluster.sweep(x, [2, 3, 4], n_init=2, resume_dir=tmp_path / "km")
    assert fitted == [4]
    assert again.inertias[:2] == first.inertias and again.silhouettes[:2] == first.silhouettes
    np.testing.assert_array_equal(again.labels[3], first.labels[3])
    cluster.sweep(x, [2], n_init=3, resume_dir=tmp_path / "km")     # another n_init
    assert fitted == [4, 2]


def test_sweep_with_scikit_learn_and_silhouette_sample_rules():
    x, _ = blobs(seed=4, sizes=(50, 50))
    sk = cluster.sweep(x, [2], n_init=2, impl="sklearn", silhouette_sample=0)
    ours = cluster.sweep(x, [2], n_init=2, silhouette_sample=0)
    assert sk.silhouette_sample == ours.silhouette_sample == 100       # 0: every row
    assert ours.inertias[0] == pytest.approx(sk.inertias[0], rel=1e-4)
    assert cluster.sweep(x, [2], n_init=1, silhouette_sample=30).silhouette_sample == 30
    assert cluster.default_silhouette_sample() == (10000 if jax.default_backend() == "cpu"
                                                   else 0)
    with pytest.raises(ValueError, match="impl must be one of"):
        cluster.sweep(x, [2], impl="torch")


def test_a_sweep_compiles_the_silhouette_once_and_each_k_ahead(monkeypatch):
    """On a GPU compiling is most of a K's time: the silhouette program is compiled for the
    sweep's largest K once (padding with empty clusters changes nothing), and each K's
    restarts program is compiled once, in the sweep's thread pool, and handed to its fit."""
    x, _ = blobs(seed=5, sizes=(40, 30, 20))
    labels = kmeans.fit(x, 3, n_init=2).labels
    exact = cluster.silhouette_score(x, labels)
    assert cluster.silhouette_score(x, labels, clusters=7) == pytest.approx(exact, abs=1e-6)

    compiled, fitted = [], []
    compile_restarts, fit = kmeans.compile_restarts, cluster.kmeans_fit
    monkeypatch.setattr(kmeans, "compile_restarts", lambda rows, k, **kw: compiled.append(
        (k, threading.current_thread() is threading.main_thread()))
        or compile_restarts(rows, k, **kw))
    monkeypatch.setattr(cluster, "kmeans_fit", lambda x, k, **kw: fitted.append(
        (k, kw["compiled"] is not None)) or fit(x, k, **kw))
    before = cluster._silhouette_chunk._cache_size()
    cluster.sweep(x, [2, 3, 4], n_init=2, silhouette_sample=0)
    assert cluster._silhouette_chunk._cache_size() == before + 1
    assert sorted(compiled) == [(2, False), (3, False), (4, False)]
    assert fitted == [(2, True), (3, True), (4, True)]
