"""K-Means in JAX, jitted, on the accelerator when there is one: what the thesis' study runs
with scikit-learn, at full COCO scale (124,040 x 4,096 latents).

The algorithm is scikit-learn's `KMeans(init="k-means++", algorithm="lloyd")`:
- data centred first (float32 distances lose less), as scikit-learn does;
- k-means++ seeding, greedy: the first centre a uniform draw, each next one the best (lowest
  potential) of 2 + floor(ln k) candidates drawn proportionally to the squared distance to
  the nearest centre so far;
- Lloyd iterations until the labels stop changing ("strict convergence") or the squared
  centre shift summed over the centres is <= tol x mean per-feature variance (tol 1e-4),
  at most `max_iter` (thesis: 1,000); then the labels of the final centres;
- empty clusters take the points farthest from their centres;
- `n_init` restarts, the lowest inertia kept; they run together, vmapped.
The random draws are JAX's (seeded from `seed`), not NumPy's: the centres are not scikit-
learn's bit for bit; the quality is (tests/test_kmeans.py, benchmarks/README.md).

Memory: the rows are copied to the device once (float32, N x D), and every step is a few
(N, K) or (K, D) arrays beside them; no N x N matrix exists.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

TOL = 1e-4                   # scikit-learn's default relative tolerance
# Every product in full float32: on NVIDIA GPUs since Ampere JAX's default precision runs
# float32 matrix products as TensorFloat-32 (10-bit mantissa), too coarse for the
# |x|^2 - 2 x.c + |c|^2 distances between clusters. No effect on a CPU.
HIGHEST = jax.lax.Precision.HIGHEST


@dataclasses.dataclass
class KMeansResult:
    centroids: np.ndarray    # (K, D) in the data's frame
    labels: np.ndarray       # (N,) int32
    inertia: float           # sum of squared distances to the assigned centroid
    n_iter: int              # Lloyd iterations of the kept restart


def _sq_distances(x, x_sq, centers):
    """(N, D), (N,), (K, D) -> (N, K) squared Euclidean distances (clipped at 0)."""
    d = (x_sq[:, None] - 2.0 * jnp.dot(x, centers.T, precision=HIGHEST)
         + jnp.sum(centers * centers, axis=1)[None, :])
    return jnp.maximum(d, 0.0)


@functools.partial(jax.jit, static_argnames=("k", "n_trials"))
def kmeans_plusplus(x, x_sq, key, k: int, n_trials: int):
    """Greedy k-means++ seeding (scikit-learn's `_kmeans_plusplus`) -> (k, D) centres."""
    n = x.shape[0]
    key, sub = jax.random.split(key)
    first = jax.random.randint(sub, (), 0, n)
    centers = jnp.zeros((k, x.shape[1]), x.dtype).at[0].set(x[first])
    closest = _sq_distances(x, x_sq, x[first][None])[:, 0]           # (N,)

    def add_centre(c, carry):
        centers, closest, key = carry
        key, sub = jax.random.split(key)
        draws = jax.random.uniform(sub, (n_trials,), x.dtype) * jnp.sum(closest)
        candidates = jnp.clip(jnp.searchsorted(jnp.cumsum(closest), draws), 0, n - 1)
        trial = jnp.minimum(closest[None, :], _sq_distances(x, x_sq, x[candidates]).T)
        best = jnp.argmin(jnp.sum(trial, axis=1))
        return centers.at[c].set(x[candidates[best]]), trial[best], key

    centers, _, _ = jax.lax.fori_loop(1, k, add_centre, (centers, closest, key))
    return centers


@functools.partial(jax.jit, static_argnames=("max_iter",))
def lloyd(x, x_sq, centers, tol, max_iter: int):
    """Lloyd iterations from `centers` -> (centres, labels, inertia, iterations)."""
    k = centers.shape[0]

    def assign(centers):
        d = _sq_distances(x, x_sq, centers)
        return jnp.argmin(d, axis=1).astype(jnp.int32), jnp.min(d, axis=1)

    def new_centers(labels, dist, centers):
        onehot = jax.nn.one_hot(labels, k, dtype=x.dtype)               # (N, K)
        counts = jnp.sum(onehot, axis=0)
        means = jnp.dot(onehot.T, x, precision=HIGHEST) / jnp.maximum(counts, 1.0)[:, None]
        # Empty clusters take the points farthest from their centres, in order.
        empty = counts == 0
        far = jax.lax.top_k(dist, k)[1]
        rank = jnp.clip(jnp.cumsum(empty) - 1, 0, k - 1)
        return jnp.where(empty[:, None], x[far[rank]], means)

    def cond(carry):
        i, _, _, done = carry
        return (i < max_iter) & ~done

    def step(carry):
        i, centers, labels_old, _ = carry
        labels, dist = assign(centers)
        moved = new_centers(labels, dist, centers)
        shift = jnp.sum((moved - centers) ** 2)
        done = jnp.all(labels == labels_old) | (shift <= tol)
        return i + 1, moved, labels, done

    start = (0, centers, jnp.full(x.shape[0], -1, jnp.int32), jnp.asarray(False))
    n_iter, centers, _, _ = jax.lax.while_loop(cond, step, start)
    labels, dist = assign(centers)            # the labels of the final centres
    return centers, labels, jnp.sum(dist), n_iter


@functools.partial(jax.jit, static_argnames=("k", "n_trials", "max_iter"))
def _restarts(x, x_sq, keys, tol, k: int, n_trials: int, max_iter: int):
    """Every restart at once (vmapped over `keys`): each Lloyd iteration then reads the rows
    once for all restarts in larger products, which a CPU or GPU runs more efficiently than
    one small product per restart (10,000 x 4,096, K = 2..10: 267 s instead of 309 s on a
    2-core CPU); the loop runs until the slowest restart stops, the others standing still."""
    def restart(key):
        return lloyd(x, x_sq, kmeans_plusplus(x, x_sq, key, k, n_trials), tol, max_iter)

    return jax.vmap(restart)(keys)


@dataclasses.dataclass
class Rows:
    """The rows on the device, centred, with what every K of a sweep needs of them: made
    once per sweep (`prepare`), so a 2 GB latent matrix is copied to the device once."""
    x: jax.Array             # (N, D) centred float32
    x_sq: jax.Array          # (N,) squared norms
    mean: jax.Array          # (D,) the mean taken off
    tol: jax.Array           # the absolute tolerance: tol x mean per-feature variance


def prepare(x, tol: float = TOL) -> Rows:
    """x (N, D), a memmap included (read once) -> Rows."""
    x = jnp.asarray(np.asarray(x, np.float32))
    mean = jnp.mean(x, axis=0)
    x = x - mean
    return Rows(x, jnp.sum(x * x, axis=1), mean, jnp.mean(jnp.var(x, axis=0)) * tol)


def compile_restarts(rows: Rows, k: int, *, n_init: int = 10, max_iter: int = 1000):
    """The compiled program of one K's restarts on these rows. On a GPU compiling it takes
    longer than running it (124,000 x 4,096 on an H200: 11 s against 2.5 s), so a sweep
    compiles every K ahead, in threads (XLA compiles without the GIL)."""
    keys = jax.ShapeDtypeStruct((n_init,), jax.random.key(0).dtype)
    return _restarts.lower(rows.x, rows.x_sq, keys, rows.tol, k=k,
                           n_trials=2 + int(math.log(k)), max_iter=max_iter).compile()


def fit(x, k: int, *, n_init: int = 10, max_iter: int = 1000, seed: int = 0,
        compiled=None) -> KMeansResult:
    """The best of `n_init` k-means++ / Lloyd runs (run together) on x (N, D) or on Rows
    prepared for several K; `compiled`: compile_restarts(rows, k, ...) of the same
    settings, made ahead."""
    rows = x if isinstance(x, Rows) else prepare(x)
    if compiled is None:
        compiled = compile_restarts(rows, k, n_init=n_init, max_iter=max_iter)
    keys = jax.random.split(jax.random.key(seed), n_init)
    centers, labels, inertia, n_iter = compiled(rows.x, rows.x_sq, keys, rows.tol)
    best = int(jnp.argmin(inertia))
    return KMeansResult(np.asarray(centers[best] + rows.mean), np.asarray(labels[best]),
                        float(inertia[best]), int(n_iter[best]))
