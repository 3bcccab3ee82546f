"""K-Means over a range of K with silhouette scores: K-Means in JAX (analysis.kmeans) or
scikit-learn's, the silhouette computed exactly in row chunks by a jitted function (never an
N x N matrix), on all rows or a stated sample; each K resumable."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import os
import pathlib
from concurrent import futures

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.cluster import KMeans

from analysis import kmeans
from shg_jax import fileio
from shg_jax.progress import Progress


@functools.partial(jax.jit, static_argnames=("k",))
def _silhouette_chunk(rows, x, sq, labels, row_labels, counts, k):
    """Silhouette values of `rows` (C, D) against all points x (N, D)."""
    d2 = (jnp.sum(rows * rows, axis=1)[:, None] + sq[None, :]
          - 2.0 * jnp.dot(rows, x.T, precision=kmeans.HIGHEST))
    dist = jnp.sqrt(jnp.maximum(d2, 0.0))                             # (C, N)
    sums = jnp.dot(dist, jax.nn.one_hot(labels, k, dtype=dist.dtype),
                   precision=kmeans.HIGHEST)                          # (C, K)
    own = jax.nn.one_hot(row_labels, k, dtype=bool)
    own_count = counts[row_labels]
    a = jnp.sum(jnp.where(own, sums, 0.0), axis=1) / jnp.maximum(own_count - 1, 1)
    others = jnp.where(own | (counts[None, :] == 0), jnp.inf, sums / counts[None, :])
    b = jnp.min(others, axis=1)
    s = (b - a) / jnp.maximum(jnp.maximum(a, b), 1e-12)
    return jnp.where(own_count > 1, s, 0.0)        # singletons score 0, as scikit-learn


def silhouette_score(x: np.ndarray, labels: np.ndarray, *, chunk: int = 512,
                     clusters: int | None = None) -> float:
    """Mean silhouette (Euclidean), exact, O(N^2 D) time and O(chunk * N) memory.

    `clusters` (>= the largest label + 1): the cluster count the program is compiled for,
    so that a sweep over K compiles it once (empty clusters count for nothing)."""
    x = np.asarray(x, np.float32)
    x = jnp.asarray(x - x.mean(axis=0))            # centring improves float32 distances
    labels = jnp.asarray(labels, jnp.int32)
    k = max(int(labels.max()) + 1, clusters or 0)
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


IMPLS = ("jax", "sklearn")


def default_silhouette_sample() -> int:
    """0 (every row, exact) on an accelerator; 10,000 rows on a CPU, where the exact
    silhouette of the whole train split (124,040^2 x 4,096 multiply-adds) takes days."""
    return 0 if jax.default_backend() != "cpu" else 10000


def kmeans_fit(x, k: int, *, impl: str, n_init: int, max_iter: int, seed: int,
               progress: Progress | None = None, compiled=None) -> kmeans.KMeansResult:
    """One K: ours (analysis.kmeans, JAX; x may be kmeans.Rows, `compiled` its program
    for this K made ahead) or scikit-learn's (x an array), the best of `n_init` runs."""
    if impl == "sklearn":
        km = KMeans(n_clusters=k, n_init=n_init, max_iter=max_iter, random_state=seed).fit(x)
        return kmeans.KMeansResult(km.cluster_centers_, km.labels_, float(km.inertia_),
                                   int(km.n_iter_))
    if progress:
        progress.update(0, k=k, restarts=n_init)
    return kmeans.fit(x, k, n_init=n_init, max_iter=max_iter, seed=seed, compiled=compiled)


def sweep(x: np.ndarray, ks=range(2, 11), *, n_init: int = 10, max_iter: int = 1000,
          seed: int = 0, silhouette_sample: int | None = 10000, impl: str = "jax",
          resume_dir=None) -> KSweep:
    """K-Means (k-means++, `n_init` restarts of at most `max_iter` iterations) for every K on
    x (N, D) in full dimension, ours (JAX) or scikit-learn's (`impl`); the silhouette of each
    K on all rows when `silhouette_sample` is 0 or >= N, else on a seeded random sample of
    that many rows (None: default_silhouette_sample()).

    With `resume_dir`, each K's result is written there atomically when it is done and a
    rerun with the same data and settings computes only the K values not yet there."""
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    x = np.asarray(x, np.float32)
    if silhouette_sample is None:
        silhouette_sample = default_silhouette_sample()
    rng = np.random.default_rng(seed)
    sample = (np.arange(len(x)) if not silhouette_sample or len(x) <= silhouette_sample
              else np.sort(rng.choice(len(x), silhouette_sample, replace=False)))
    settings = dict(rows=len(x), dims=int(x.shape[1]), n_init=n_init, max_iter=max_iter,
                    seed=seed, impl=impl, silhouette_rows=len(sample),
                    data=hashlib.sha256(np.ascontiguousarray(x[::max(1, len(x) // 64)])
                                        .tobytes()).hexdigest())
    out = KSweep([], [], [], {}, {}, len(sample), 0)
    ks = list(ks)
    finished = {k: _load_k(resume_dir, k, settings) for k in ks}
    pending = [k for k in ks if finished[k] is None]
    with Progress(len(ks), f"k-means ({impl})", unit="K") as progress, \
            futures.ThreadPoolExecutor(max(1, min(len(pending), os.cpu_count() or 1))) as pool:
        if pending:
            data = kmeans.prepare(x) if impl == "jax" else x
            x_sample = np.asarray(x[sample])
        # Every K's program compiled ahead, while the first K runs (on a GPU compiling is
        # most of a K's time).
        programs = ({k: pool.submit(kmeans.compile_restarts, data, k, n_init=n_init,
                                    max_iter=max_iter) for k in pending}
                    if impl == "jax" else {})
        for k in ks:
            done = finished[k]
            if done is None:
                fit = kmeans_fit(data, k, impl=impl, n_init=n_init, max_iter=max_iter,
                                 seed=seed, progress=progress,
                                 compiled=programs[k].result() if programs else None)
                labels = fit.labels[sample]
                # The silhouette needs two clusters present in the sample.
                score = (silhouette_score(x_sample, labels, clusters=max(ks))
                         if len(np.unique(labels)) > 1 else float("nan"))
                done = dict(labels=np.asarray(fit.labels, np.int32),
                            centroids=np.asarray(fit.centroids, np.float32),
                            inertia=fit.inertia, silhouette=score)
                _save_k(resume_dir, k, settings, done)
            out.ks.append(int(k))
            out.inertias.append(float(done["inertia"]))
            out.labels[k], out.centroids[k] = done["labels"], done["centroids"]
            out.silhouettes.append(float(done["silhouette"]))
            progress.update(1, silhouette=f"{float(done['silhouette']):.4f}")
    out.best_k = int(out.ks[int(np.nanargmax(out.silhouettes))])
    return out


def _k_path(resume_dir, k: int) -> pathlib.Path:
    return pathlib.Path(resume_dir) / f"k{k:03d}.npz"


def _load_k(resume_dir, k: int, settings: dict) -> dict | None:
    """A finished K of an earlier run with the same settings, or None."""
    if resume_dir is None or not _k_path(resume_dir, k).is_file():
        return None
    with np.load(_k_path(resume_dir, k)) as f:
        if json.loads(str(f["settings"])) != settings:
            return None
        return {name: f[name] for name in ("labels", "centroids", "inertia", "silhouette")}


def _save_k(resume_dir, k: int, settings: dict, result: dict) -> None:
    if resume_dir is None:
        return
    pathlib.Path(resume_dir).mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez(buf, settings=json.dumps(settings, sort_keys=True), **result)
    fileio.write_bytes(_k_path(resume_dir, k), buf.getvalue())


def nearest_to_centroids(x: np.ndarray, centroids: np.ndarray) -> list[int]:
    """For each centroid, the row of x nearest to it."""
    x = np.asarray(x, np.float32)
    d = (np.sum(x * x, axis=1)[:, None] - 2 * x @ centroids.T.astype(np.float32)
         + np.sum(centroids * centroids, axis=1)[None, :])
    return [int(i) for i in np.argmin(d, axis=0)]
