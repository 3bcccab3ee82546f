"""PCA of latents (N x D, memory-mapped) by the eigen-decomposition of their covariance.

The covariance is accumulated over row chunks (D x D: 64 MB for D = 4,096), so N is bounded
by disk, not memory; the decomposition is numpy's float64 `eigh`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

FRACTIONS = (0.90, 0.95, 0.99)


@dataclasses.dataclass
class PCA:
    mean: np.ndarray             # (D,)
    components: np.ndarray       # (D, D): column k is the k-th principal axis
    variances: np.ndarray        # (D,) eigenvalues, descending

    @property
    def ratio(self) -> np.ndarray:
        total = self.variances.sum()
        return self.variances / total if total > 0 else np.zeros_like(self.variances)

    def components_for(self, fractions=FRACTIONS) -> dict[str, int]:
        """Smallest number of components whose cumulative explained variance reaches each
        fraction."""
        cum = np.cumsum(self.ratio)
        return {f"{f:.0%}": int(min(np.searchsorted(cum, f - 1e-12) + 1, len(cum)))
                for f in fractions}

    def project(self, x: np.ndarray, k: int, chunk: int = 8192) -> np.ndarray:
        """(N, D) -> (N, k) coordinates on the first k axes."""
        out = np.empty((len(x), k), np.float32)
        axes = self.components[:, :k].astype(np.float32)
        mean = self.mean.astype(np.float32)
        for s in range(0, len(x), chunk):
            out[s:s + chunk] = (np.asarray(x[s:s + chunk], np.float32) - mean) @ axes
        return out


def thesis_index(counts: dict[str, int]) -> dict[str, int]:
    """The thesis reported `np.argmax(cumulative >= f)`, a 0-based index: count - 1 (its
    "541 vs 16 components for 95 %" are 542 and 17 components)."""
    return {f: k - 1 for f, k in counts.items()}


def standardised_projection(x: np.ndarray, k: int = 2) -> np.ndarray:
    """(n, D) -> (n, k): StandardScaler (unit variance per dimension; constant dimensions
    left at 0) then PCA, as the thesis' per-cluster figures did."""
    x = np.asarray(x, np.float64)
    std = x.std(axis=0)
    z = (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)
    return fit(z).project(z, k)


def fit(x: np.ndarray, chunk: int = 8192) -> PCA:
    """x: (N, D) array or memmap, N >= 2."""
    n, d = x.shape
    mean = np.zeros(d, np.float64)
    for s in range(0, n, chunk):
        mean += np.asarray(x[s:s + chunk], np.float64).sum(axis=0)
    mean /= n
    cov = np.zeros((d, d), np.float64)
    for s in range(0, n, chunk):
        c = np.asarray(x[s:s + chunk], np.float32) - mean.astype(np.float32)
        cov += (c.T @ c).astype(np.float64)
    cov /= max(n - 1, 1)
    variances, vectors = np.linalg.eigh(cov)
    order = np.argsort(variances)[::-1]
    variances = np.clip(variances[order], 0, None)
    vectors = vectors[:, order]
    # A deterministic sign: the largest-magnitude entry of each axis is positive.
    signs = np.sign(vectors[np.abs(vectors).argmax(axis=0), np.arange(d)])
    return PCA(mean, vectors * np.where(signs == 0, 1, signs), variances)


def walk_targets(pca: PCA, x: np.ndarray, component: int, steps=(-3, -2, -1, 0, 1, 2, 3),
                 chunk: int = 8192) -> list[int]:
    """Rows of x nearest (Euclidean, = in PC space) to mean + k * sqrt(lambda_c) * axis_c for
    each k of `steps` (component is 0-based); k = 0 is the sample nearest to the mean."""
    axis = pca.components[:, component].astype(np.float32)
    mean = pca.mean.astype(np.float32)
    scale = float(np.sqrt(pca.variances[component]))
    sq, proj = np.empty(len(x), np.float64), np.empty(len(x), np.float64)
    for s in range(0, len(x), chunk):
        c = np.asarray(x[s:s + chunk], np.float32) - mean
        sq[s:s + chunk] = np.einsum("ij,ij->i", c, c)
        proj[s:s + chunk] = c @ axis
    # ||x - (mean + t axis)||^2 = ||x - mean||^2 - 2 t proj + t^2
    return [int(np.argmin(sq - 2 * k * scale * proj + (k * scale) ** 2)) for k in steps]
