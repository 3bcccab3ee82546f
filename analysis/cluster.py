"""K-Means over a range of K with silhouette scores, the silhouette computed exactly in
row chunks by a jitted function (never an N x N matrix), on a stated sample for large N."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.cluster import KMeans

from shg_jax.progress import Progress


@functools.partial(jax.jit, static_argnames=("k",))
def _silhouette_chunk(rows, x, sq, labels, row_labels, counts, k):
    """Silhouette values of `rows` (C, D) against all points x (N, D)."""
    d2 = jnp.sum(rows * rows, axis=1)[:, None] + sq[None, :] - 2.0 * rows @ x.T
    dist = jnp.sqrt(jnp.maximum(d2, 0.0))                             # (C, N)
    sums = dist @ jax.nn.one_hot(labels, k, dtype=dist.dtype)         # (C, K)
    own = jax.nn.one_hot(row_labels, k, dtype=bool)
    own_count = counts[row_labels]
    a = jnp.sum(jnp.where(own, sums, 0.0), axis=1) / jnp.maximum(own_count - 1, 1)
    others = jnp.where(own | (counts[None, :] == 0), jnp.inf, sums / counts[None, :])
    b = jnp.min(others, axis=1)
    s = (b - a) / jnp.maximum(jnp.maximum(a, b), 1e-12)
    return jnp.where(own_count > 1, s, 0.0)        # singletons score 0, as scikit-learn


def silhouette_score(x: np.ndarray, labels: np.ndarray, *, chunk: int = 512) -> float:
    """Mean silhouette (Euclidean), exact, O(N^2 D) time and O(chunk * N) memory."""
    x = np.asarray(x, np.float32)
    x = jnp.asarray(x - x.mean(axis=0))            # centring improves float32 distances
    labels = jnp.asarray(labels, jnp.int32)
    k = int(labels.max()) + 1
    counts = jnp.bincount(labels, length=k).astype(jnp.float32)
    sq = jnp.sum(x * x, axis=1)
    total = 0.0
    n = x.shape[0]
    for s in range(0, n, chunk):
        rows = x[s:s + chunk]
        pad = chunk - rows.shape[0]                 # one compiled shape for every chunk
        rows_p = jnp.pad(rows, ((0, pad), (0, 0)))
        lab_p = jnp.pad(labels[s:s + chunk], (0, pad))
        vals = _silhouette_chunk(rows_p, x, sq, labels, lab_p, counts, k)
        total += float(jnp.sum(vals[:rows.shape[0]]))
    return total / n


@dataclasses.dataclass
class KSweep:
    ks: list
    silhouettes: list
    inertias: list
    labels: dict                 # K -> (N,) labels
    centroids: dict              # K -> (K, D)
    silhouette_sample: int       # rows the silhouette used (N when exact)
    best_k: int


def sweep(x: np.ndarray, ks=range(2, 11), *, n_init: int = 10, max_iter: int = 1000,
          seed: int = 0, silhouette_sample: int = 10000) -> KSweep:
    """K-Means (k-means++, `n_init` restarts of at most `max_iter` iterations) for every K on
    x (N, D) in full dimension; the silhouette of each K on all rows when
    N <= silhouette_sample, else on a seeded random sample of that many rows."""
    x = np.asarray(x, np.float32)
    rng = np.random.default_rng(seed)
    sample = (np.arange(len(x)) if len(x) <= silhouette_sample
              else np.sort(rng.choice(len(x), silhouette_sample, replace=False)))
    out = KSweep([], [], [], {}, {}, len(sample), 0)
    with Progress(len(list(ks)), "k-means", unit="K") as progress:
        for k in ks:
            km = KMeans(n_clusters=k, n_init=n_init, max_iter=max_iter,
                        random_state=seed).fit(x)
            out.ks.append(int(k))
            out.inertias.append(float(km.inertia_))
            out.labels[k], out.centroids[k] = km.labels_, km.cluster_centers_
            labels = km.labels_[sample]
            # The silhouette needs two clusters present in the sample.
            score = (silhouette_score(x[sample], labels) if len(np.unique(labels)) > 1
                     else float("nan"))
            out.silhouettes.append(score)
            progress.update(1, silhouette=score)
    out.best_k = int(out.ks[int(np.nanargmax(out.silhouettes))])
    return out


def nearest_to_centroids(x: np.ndarray, centroids: np.ndarray) -> list[int]:
    """For each centroid, the row of x nearest to it."""
    x = np.asarray(x, np.float32)
    d = (np.sum(x * x, axis=1)[:, None] - 2 * x @ centroids.T.astype(np.float32)
         + np.sum(centroids * centroids, axis=1)[None, :])
    return [int(i) for i in np.argmin(d, axis=0)]
