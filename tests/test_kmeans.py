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


# --- known answers worked out by hand (scikit-learn's rules) -------------------------------

def test_kmeans_plusplus_keeps_the_best_of_its_greedy_candidates():
    """200 points at 0, two at 100, one at 90; k = 2. From a first centre at 0 every
    candidate is one of the far points (D^2 sampling gives the zeros no weight); with the
    second centre at 100 the potential is 10^2 = 100 (the 90), at 90 it is 2 x 10^2 = 200:
    the greedy rule keeps 100. (20 trials draw both values for these seeds.)"""
    x = np.concatenate([np.zeros(200), [100.0, 100.0, 90.0]]).astype(np.float32)[:, None]
    xj = jnp.asarray(x)
    for seed in range(4):
        seeds = np.asarray(kmeans.kmeans_plusplus(xj, jnp.sum(xj * xj, 1),
                                                  jax.random.key(seed), 2, 20))
        assert sorted(seeds[:, 0].tolist()) == [0.0, 100.0], seed


def test_the_tolerance_scales_with_the_mean_feature_variance():
    """scikit-learn's tol: 1e-4 x the mean over features of their (population) variance:
    columns (0, 2, 0, 2) and (0, 0, 4, 4) have variances 1 and 4, so tol = 2.5e-4."""
    rows = kmeans.prepare(np.array([[0, 0], [2, 0], [0, 4], [2, 4]], np.float32))
    assert float(rows.tol) == pytest.approx(2.5e-4, rel=1e-6)
    np.testing.assert_allclose(np.asarray(rows.mean), [1.0, 2.0])


def test_the_restart_with_the_lowest_inertia_is_kept():
    """Of restarts with inertias 5, 2 and 9 the second is returned, its centres moved back
    by the mean that prepare() took off, with its labels and iteration count."""
    x = np.array([[1.0, 1.0], [3.0, 5.0]], np.float32)
    rows = kmeans.prepare(x)
    centres = jnp.asarray([[[0.0, 0.0]], [[1.0, -1.0]], [[5.0, 5.0]]])
    labels = jnp.asarray([[0, 0], [0, 0], [0, 0]], jnp.int32)

    def restarts(*args):
        return centres, labels, jnp.asarray([5.0, 2.0, 9.0]), jnp.asarray([4, 7, 1])

    result = kmeans.fit(rows, 1, n_init=3, compiled=restarts)
    assert result.inertia == 2.0 and result.n_iter == 7
    np.testing.assert_allclose(result.centroids, [[1.0 + 2.0, -1.0 + 3.0]])


def test_silhouette_a_and_b_by_hand():
    """1-D points 0, 1, 4 | 10, 11 | 30. a = mean distance to the own cluster's other points
    (n - 1 of them); b = the smallest mean distance to another cluster; s = (b - a) /
    max(a, b); a singleton scores 0. Point 0: a 2.5, b 10.5 -> 0.761905; 1: 2, 9.5 ->
    0.789474; 4: 3.5, 6.5 -> 0.461538; 10: 1, 25/3 -> 0.88; 11: 1, 28/3 -> 0.892857;
    30: 0. Mean 0.630962."""
    x = np.array([0.0, 1.0, 4.0, 10.0, 11.0, 30.0], np.float32)[:, None]
    labels = np.array([0, 0, 0, 1, 1, 2])
    expected = np.mean([8 / 10.5, 7.5 / 9.5, 3 / 6.5, (25 / 3 - 1) / (25 / 3),
                        (28 / 3 - 1) / (28 / 3), 0.0])
    assert expected == pytest.approx(0.630962, abs=1e-6)
    assert cluster.silhouette_score(x, labels, chunk=4) == pytest.approx(expected, abs=1e-6)
