"""Clusters and principal components described by the annotations (analysis.descriptors),
and the thesis' readings of its latent-space figures stated beside the numbers that support
or contradict them.

The measures: Pearson's r between a component's coordinate and a descriptor; the correlation
ratio eta^2 of a descriptor over a clustering (the share of its variance that lies between
the clusters: 0 when every cluster has the same mean, 1 when each cluster is one value);
both over the samples where the descriptor is defined.
"""

from __future__ import annotations

import numpy as np


#: A claim is "supported" when its effect is at least moderate: |r| >= R_MODERATE, or
#: eta^2 >= R_MODERATE^2 (the same share of variance).
R_MODERATE = 0.3
#: A sample lies on a cluster boundary when its distance to its own centroid is at least
#: this fraction of its distance to the nearest other centroid.
BOUNDARY_RATIO = 0.9
#: "Components 50 and above act as noise" holds when a decoded pose moves less than this
#: fraction as far along them as along component 1 (per sqrt(eigenvalue)).
NOISE_FRACTION = 0.1
#: A boundary band whose mean PCK is this much below the rest's supports "misplaced samples
#: explain inaccuracy".
PCK_GAP = 0.05


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson's r over the rows where both are finite; NaN with fewer than 3 such rows or
    no spread."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3:
        return float("nan")
    x, y = x[ok] - x[ok].mean(), y[ok] - y[ok].mean()
    denominator = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / denominator) if denominator > 0 else float("nan")


def correlation_ratio(values: np.ndarray, labels: np.ndarray) -> float:
    """eta^2 of `values` over the clusters `labels`, on the finite values; NaN where they
    do not vary."""
    values, labels = np.asarray(values, np.float64), np.asarray(labels)
    ok = np.isfinite(values)
    values, labels = values[ok], labels[ok]
    total = ((values - values.mean()) ** 2).sum() if len(values) else 0.0
    if total <= 0:
        return float("nan")
    between = sum(np.sum(labels == c) * (values[labels == c].mean() - values.mean()) ** 2
                  for c in np.unique(labels))
    return float(between / total)


def component_correlations(coords: np.ndarray, described: dict) -> dict[str, list[float]]:
    """(N, C) component coordinates, {descriptor: (N,)} -> {descriptor: C values of r}."""
    return {name: [pearson(coords[:, c], values) for c in range(coords.shape[1])]
            for name, values in described.items()}


def cluster_profiles(labels: np.ndarray, k: int, described: dict, pck: np.ndarray | None,
                     n_joints: int) -> list[dict]:
    """Per cluster of one clustering: its size, the mean of each descriptor over the members
    where it is defined, the histogram of labelled joints (0..n_joints) and the mean
    per-sample PCK (NaN-free members; None without predictions)."""
    out = []
    for c in range(k):
        members = labels == c
        row = {"cluster": c, "size": int(members.sum())}
        for name, values in described.items():
            row[name] = _mean(values[members])
        row["labelled_histogram"] = np.bincount(
            described["labelled"][members].astype(int), minlength=n_joints + 1).tolist()
        row["pck"] = None if pck is None else _mean(pck[members])
        out.append(row)
    return out


def _mean(values: np.ndarray) -> float | None:
    """The mean of the finite values; None where there is none."""
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    return float(values.mean()) if len(values) else None


def boundary(x: np.ndarray, centroids: np.ndarray, labels: np.ndarray,
             ratio: float = BOUNDARY_RATIO) -> np.ndarray:
    """(N, D) samples, (K, D) centroids, (N,) labels -> (N,) bool: the samples nearly as
    close to another centroid as to their own."""
    d = np.stack([np.linalg.norm(np.asarray(x) - c, axis=1) for c in centroids], axis=1)
    own = d[np.arange(len(d)), labels]
    d[np.arange(len(d)), labels] = np.inf
    return own >= ratio * d.min(axis=1)


def _verdict(value: float, threshold: float, *, below: bool = False) -> str:
    if value is None or not np.isfinite(value):
        return "not measurable"
    return "supported" if (value < threshold if below else value >= threshold) else \
        "not supported"


def claims(*, described: dict, coords: np.ndarray, labels: np.ndarray, k: int,
           ratio: np.ndarray, boundary_mask: np.ndarray, pck: np.ndarray | None,
           movement: dict[int, float] | None) -> list[dict]:
    """The thesis' claims about its latent space, each with the number measured here, the
    rule and the verdict.

    `coords` (N, >= 1) the subset's principal-component coordinates, `labels` its K-Means
    clustering with `k` clusters (the thesis read K = 2), `ratio` the explained-variance
    ratios, `boundary_mask` (`boundary`), `pck` per-sample PCK, `movement` {component:
    mean joint movement of the decoded pose per sqrt(eigenvalue)} of the walked components.
    """
    rows = []

    def claim(text, where, measure, value, rule, verdict, **extra):
        rows.append(dict(claim=text, thesis=where, measure=measure,
                         value=None if value is None or not np.isfinite(value) else
                         round(float(value), 4), rule=rule, verdict=verdict, **extra))

    for text, where, name, what in (
            ("the clusters separate almost fully annotated from not fully annotated people",
             "§6.4, Fig. 18 (random 10,000, K = 2)", "labelled", "labelled joints"),
            ("the clusters separate stationary from moving people",
             "§6.4, Fig. 20 (fully annotated, K = 2)", "limb_spread", "limb spread")):
        eta = correlation_ratio(described[name], labels)
        claim(text, where, f"eta^2 of {what} over the K = {k} clusters", eta,
              f"supported if eta^2 >= {R_MODERATE ** 2:.2f}", _verdict(eta, R_MODERATE ** 2),
              cluster_means=[_mean(described[name][labels == c]) for c in range(k)])
    hip = pearson(coords[:, 0], described["hip_angle"])
    knee = pearson(coords[:, 0], described["knee_angle"])
    strongest = float(np.fmax(abs(hip), abs(knee)))        # fmax: the defined one
    claim("the first principal component tells sitting from standing",
          "§6.3, Fig. 15 (fully annotated)",
          "max |r| of PC 1 with the hip and the knee angle", strongest,
          f"supported if |r| >= {R_MODERATE}", _verdict(strongest, R_MODERATE),
          r_hip_angle=hip, r_knee_angle=knee)
    if movement and 1 in movement and any(c >= 50 for c in movement):
        late = float(np.mean([m for c, m in movement.items() if c >= 50]))
        share = late / movement[1] if movement[1] > 0 else float("nan")
        claim("components 50 and above act as noise", "§6.3, §8",
              "decoded joint movement along components >= 50 / along component 1", share,
              f"supported if < {NOISE_FRACTION}", _verdict(share, NOISE_FRACTION, below=True),
              variance_beyond_50=float(ratio[49:].sum()) if len(ratio) > 49 else 0.0)
    else:
        claim("components 50 and above act as noise", "§6.3, §8",
              "decoded joint movement along components >= 50 / along component 1", None,
              "needs walks along component 1 and one >= 50", "not measurable")
    on, off = ((_mean(pck[boundary_mask]), _mean(pck[~boundary_mask])) if pck is not None
               else (None, None))
    if on is not None and off is not None:
        claim("misplaced samples near the cluster boundary explain the model's errors",
              "§6.4", "mean PCK of the other samples minus that of the boundary samples",
              off - on, f"supported if >= {PCK_GAP}", _verdict(off - on, PCK_GAP),
              boundary_fraction=float(boundary_mask.mean()), pck_boundary=on,
              pck_rest=off)
    else:
        claim("misplaced samples near the cluster boundary explain the model's errors",
              "§6.4", "mean PCK of the other samples minus that of the boundary samples",
              None, "needs predictions and samples on both sides of the boundary",
              "not measurable")
    return rows

