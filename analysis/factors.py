"""Does the latent carry a factor known to be in the data, and do the clusters separate it?

For data whose annotations record how each sample was made (the synthetic data's pose class,
lit side, height, tilt and occluded-joint count: data_prep.synthesis.FACTORS), two numbers
per factor:

- the adjusted mutual information (AMI) between the K-Means clusters and the factor: 1 when
  the clusters are the factor's classes, about 0 when they are unrelated to it; a number
  factor is cut into QUANTILE_BINS equally filled bins first;
- a linear probe from the first k principal components: ridge regression fitted in closed
  form (jitted, float32 at full precision) on a seeded part of the samples and scored on
  the held-out HOLDOUT share:
  accuracy for a class factor (one-hot targets, argmax) against always answering the
  training part's majority class, R^2 for a number against always answering its mean.
  A probe above its baseline says the factor is linearly readable from the latent.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.metrics import adjusted_mutual_info_score

QUANTILE_BINS = 5
#: The share of samples held out to score the probe on.
HOLDOUT = 0.25
#: Ridge penalty, relative to the mean feature variance (the features are standardised).
RIDGE = 1e-3


def discretise(values: np.ndarray, classes) -> np.ndarray:
    """A factor's values as integer labels: class indices as they are, numbers cut at their
    quantiles into QUANTILE_BINS bins (fewer where values repeat)."""
    values = np.asarray(values, np.float64)
    if classes is not None:
        return values.astype(np.int64)
    edges = np.unique(np.quantile(values, np.linspace(0, 1, QUANTILE_BINS + 1)[1:-1]))
    return np.searchsorted(edges, values, side="right")


def cluster_ami(labels: np.ndarray, values: np.ndarray, classes) -> float:
    """AMI between cluster labels and a factor (`discretise`), over its finite values."""
    ok = np.isfinite(values)
    if ok.sum() < 2:
        return float("nan")
    return float(adjusted_mutual_info_score(discretise(values[ok], classes), labels[ok]))


@jax.jit
def _ridge(x_train, y_train, x_test):
    """Standardise on the training rows, fit ridge regression with an intercept in closed
    form, predict the test rows: (n, k), (n, t), (m, k) -> (m, t)."""
    with jax.default_matmul_precision("highest"):           # at trace time: every product
        mean, std = x_train.mean(0), x_train.std(0)
        std = jnp.where(std > 0, std, 1.0)
        a, b = (x_train - mean) / std, (x_test - mean) / std
        y_mean = y_train.mean(0)
        gram = a.T @ a + RIDGE * a.shape[0] * jnp.eye(a.shape[1], dtype=a.dtype)
        w = jnp.linalg.solve(gram, a.T @ (y_train - y_mean))
        return b @ w + y_mean


def holdout_mask(n: int, seed: int) -> np.ndarray:
    """(n,) bool: the seeded HOLDOUT share of rows a probe is scored on."""
    test = np.zeros(n, bool)
    test[np.random.default_rng(seed).permutation(n)[:max(1, int(round(HOLDOUT * n)))]] = True
    return test


def linear_probe(features: np.ndarray, values: np.ndarray, classes, seed: int) -> dict:
    """Probe one factor from (N, k) features: {"metric", "score", "baseline", "samples"}
    on the held-out rows (`holdout_mask`) of the samples where the factor is defined."""
    ok = np.isfinite(values)
    x = np.asarray(features, np.float32)[ok]
    y = np.asarray(values, np.float64)[ok]
    test = holdout_mask(len(y), seed)
    if len(y) < 8 or test.all() or not test.any():
        return {"metric": "accuracy" if classes is not None else "R^2", "score": None,
                "baseline": None, "samples": int(len(y))}
    if classes is not None:
        labels = y.astype(np.int64)
        targets = np.eye(len(classes), dtype=np.float32)[labels]
        predicted = np.asarray(_ridge(x[~test], targets[~test], x[test])).argmax(1)
        majority = np.bincount(labels[~test], minlength=len(classes)).argmax()
        return {"metric": "accuracy", "score": float((predicted == labels[test]).mean()),
                "baseline": float((labels[test] == majority).mean()),
                "samples": int(len(y))}
    predicted = np.asarray(_ridge(x[~test], y[~test, None].astype(np.float32),
                                  x[test]))[:, 0]
    return {"metric": "R^2", "score": r_squared(y[test], predicted),
            "baseline": r_squared(y[test], np.full(test.sum(), y[~test].mean())),
            "samples": int(len(y))}


def r_squared(y: np.ndarray, predicted: np.ndarray) -> float:
    """1 - residual / total sum of squares (about its own mean); NaN if y is constant."""
    total = ((y - y.mean()) ** 2).sum()
    return float(1 - ((y - predicted) ** 2).sum() / total) if total > 0 else float("nan")
