"""The thesis' figures as matplotlib functions: each takes arrays, returns a Figure."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.offsetbox import AnnotationBbox, OffsetImage

from analysis.pca import PCA


def variance_curves(pca: PCA, counts: dict[str, int], max_components: int = 300) -> Figure:
    """Explained-variance ratio per component and its cumulative sum (thesis §6.3)."""
    fig = Figure(figsize=(11, 4))
    ax1, ax2 = fig.subplots(1, 2)
    n = min(max_components, len(pca.ratio))
    ax1.plot(np.arange(1, n + 1), pca.ratio[:n])
    ax1.set(xlabel="principal component", ylabel="explained variance ratio", yscale="log",
            title=f"first {n} components")
    cum = np.cumsum(pca.ratio)
    ax2.plot(np.arange(1, len(cum) + 1), cum)
    for label, k in counts.items():
        ax2.axvline(k, ls="--", lw=0.8, color="grey")
        ax2.annotate(f"{label}: {k}", (k, cum[k - 1]), textcoords="offset points",
                     xytext=(5, -12), fontsize=8)
    ax2.set(xlabel="number of components", ylabel="cumulative explained variance",
            xscale="log", title="cumulative")
    return fig


def cumulative_variance_comparison(pcas: dict[str, PCA], needed: dict[str, int],
                                   fraction: float = 0.95) -> Figure:
    """Cumulative explained variance of several latent spaces, with the number of
    components each needs for `fraction` (thesis Fig. 27: SHG latent vs autoencoder code)."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    for label, pca in pcas.items():
        cum = np.cumsum(pca.ratio)
        line, = ax.plot(np.arange(1, len(cum) + 1), cum, label=f"{label} ({needed[label]})")
        ax.axvline(needed[label], ls="--", lw=0.8, color=line.get_color())
    ax.axhline(fraction, ls=":", lw=0.8, color="grey")
    ax.set(xlabel="number of components", ylabel="cumulative explained variance",
           xscale="log", title=f"components for {fraction:.0%} in brackets")
    ax.legend(fontsize=8)
    return fig


def projection_with_thumbnails(coords: np.ndarray, thumbs: list, thumb_rows: list,
                               explained: float) -> Figure:
    """2-D PCA scatter of every sample, with image thumbnails at some of them (Fig. 16)."""
    fig = Figure(figsize=(10, 9))
    ax = fig.subplots()
    ax.scatter(coords[:, 0], coords[:, 1], s=3, alpha=0.5)
    for image, row in zip(thumbs, thumb_rows):
        box = AnnotationBbox(OffsetImage(image, zoom=40 / image.shape[0]), coords[row],
                             frameon=True, pad=0.1)
        ax.add_artist(box)
    ax.set(xlabel="PC 1", ylabel="PC 2",
           title=f"latents on the first two components ({explained:.0%} of the variance)")
    return fig


def image_grid(rows: list[list[np.ndarray]], row_labels: list[str], col_labels: list[str],
               title: str = "", cell: float = 1.6) -> Figure:
    """A grid of uint8 images with row and column labels."""
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    fig = Figure(figsize=(cell * n_cols + 1, cell * n_rows + 0.6))
    axes = np.atleast_2d(fig.subplots(n_rows, n_cols, squeeze=False))
    for i, row in enumerate(rows):
        for j in range(n_cols):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(row):
                ax.imshow(row[j])
            else:
                ax.axis("off")
            if i == 0 and j < len(col_labels):
                ax.set_title(col_labels[j], fontsize=8)
            if j == 0 and i < len(row_labels):
                ax.set_ylabel(row_labels[i], fontsize=8)
    if title:
        height = cell * n_rows + 0.6
        fig.subplots_adjust(top=1 - 0.45 / height)        # the title just above the grid
        fig.suptitle(title, y=1 - 0.1 / height)
    return fig


def silhouette_curve(ks, scores, best_k: int, sample: int, n: int) -> Figure:
    """Silhouette score per K (Fig. 17)."""
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    ax.plot(ks, scores, "o-")
    ax.axvline(best_k, ls="--", color="grey")
    note = "all samples" if sample >= n else f"a random {sample} of {n} samples"
    ax.set(xlabel="K", ylabel="mean silhouette", title=f"K-Means silhouette ({note}); "
           f"best K = {best_k}")
    return fig


def cluster_panels(panels: list[tuple[np.ndarray, list, list]], cols: int = 3) -> Figure:
    """One panel per cluster: its samples on their own standardised 2-D PCA, with skeleton
    thumbnails at some of them (thesis Figs. 18, 20). `panels`: per cluster (coords (n, 2),
    thumbnails, the rows of coords they belong to)."""
    rows = -(-len(panels) // cols)
    fig = Figure(figsize=(5 * min(cols, len(panels)), 4.6 * rows))
    axes = np.atleast_1d(fig.subplots(rows, min(cols, len(panels)), squeeze=False)).ravel()
    for c, (ax, (coords, thumbs, thumb_rows)) in enumerate(zip(axes, panels)):
        ax.scatter(coords[:, 0], coords[:, 1], s=3, alpha=0.4)
        for image, row in zip(thumbs, thumb_rows):
            ax.add_artist(AnnotationBbox(OffsetImage(image, zoom=36 / image.shape[0]),
                                         coords[row], frameon=True, pad=0.1))
        ax.set(xlabel="PC 1", ylabel="PC 2", title=f"cluster {c} ({len(coords)} samples)")
    for ax in axes[len(panels):]:
        ax.axis("off")
    fig.suptitle("each cluster on its own standardised 2-D PCA")
    return fig


def clusters_2d(coords: np.ndarray, labels: np.ndarray, k: int) -> Figure:
    """K-Means clusters (fitted in full dimension) on the 2-D PCA projection (Fig. 18, 20)."""
    fig = Figure(figsize=(7, 6))
    ax = fig.subplots()
    for c in range(k):
        m = labels == c
        ax.scatter(coords[m, 0], coords[m, 1], s=3, alpha=0.6, label=f"cluster {c} ({m.sum()})")
    ax.legend(markerscale=4, fontsize=8)
    ax.set(xlabel="PC 1", ylabel="PC 2", title=f"K = {k} clusters on the first two components")
    return fig


#: The thesis' histogram bins of per-sample PCK: 0, 0.1, ..., 1.0 (Fig. 13).
PCK_BINS = np.linspace(0, 1, 11)


def pck_histograms(with_skips: np.ndarray, without: np.ndarray) -> Figure:
    """Per-sample PCK with and without the skip connections (Fig. 13), bins of 0.1."""
    fig = Figure(figsize=(11, 4))
    for ax, values, name in zip(fig.subplots(1, 2, sharey=True), (with_skips, without),
                                ("with skip connections", "without skip connections")):
        ax.hist(values, bins=PCK_BINS)
        ax.axvline(values.mean(), color="k", ls="--")
        ax.set(xlabel="per-sample PCK", title=f"{name}: mean {values.mean():.3f}")
    fig.axes[0].set_ylabel("samples")
    return fig


def matrix(values: np.ndarray, row_labels: list[str], col_labels: list[str], title: str,
           *, fmt: str = "{:.2f}", symmetric: bool = False) -> Figure:
    """An annotated table of numbers as colours (sensitivity, correlations, eta^2): rows x
    columns; `symmetric` centres the colour scale on 0 (signed values). NaN cells blank."""
    values = np.asarray(values, np.float64)
    fig = Figure(figsize=(1.0 + 0.55 * len(col_labels), 1.2 + 0.38 * len(row_labels)))
    ax = fig.subplots()
    finite = values[np.isfinite(values)]
    top = float(np.abs(finite).max()) if finite.size else 1.0
    top = top if top > 0 else 1.0
    image = ax.imshow(np.ma.masked_invalid(values), aspect="auto",
                      cmap="RdBu_r" if symmetric else "viridis",
                      vmin=-top if symmetric else 0.0, vmax=top)
    for (i, j), v in np.ndenumerate(values):
        if np.isfinite(v):
            ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=6,
                    color="k" if symmetric or v > top / 2 else "w")
    ax.set_xticks(range(len(col_labels)), col_labels, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(row_labels)), row_labels, fontsize=7)
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, shrink=0.8)
    return fig


def grouped_bars(groups: list[str], series: dict[str, list], title: str, ylabel: str,
                 *, baselines: dict[str, list] | None = None) -> Figure:
    """Bars of each series (legend) per group (x axis); None values are left out.
    `baselines`, per series, draws a black tick at each bar's baseline (e.g. a probe's
    majority or mean answer)."""
    fig = Figure(figsize=(max(6.0, 1.1 * len(groups) * max(1, len(series)) / 2), 4))
    ax = fig.subplots()
    width = 0.8 / max(1, len(series))
    for s, (name, values) in enumerate(series.items()):
        xs = np.arange(len(groups)) + (s - (len(series) - 1) / 2) * width
        heights = [np.nan if v is None else v for v in values]
        ax.bar(xs, heights, width, label=name)
        for x, b in zip(xs, (baselines or {}).get(name, [])):
            if b is not None:
                ax.plot([x - width / 2, x + width / 2], [b, b], color="k", lw=1.5)
    ax.set_xticks(range(len(groups)), groups, rotation=20, ha="right", fontsize=8)
    ax.set(ylabel=ylabel, title=title)
    ax.legend(fontsize=7)
    return fig


def profile_bars(profiles: list[dict], names: list[str], title: str, cols: int = 4) -> Figure:
    """One small bar chart per descriptor in `names`: its mean in each cluster of
    `profiles` (analysis.profiles.cluster_profiles)."""
    rows = -(-len(names) // cols)
    fig = Figure(figsize=(3.2 * cols, 2.5 * rows))
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax, name in zip(axes, names):
        values = [np.nan if p[name] is None else p[name] for p in profiles]
        ax.bar(range(len(profiles)), values, color=[f"C{c}" for c in range(len(profiles))])
        ax.set_xticks(range(len(profiles)), [f"{p['cluster']}\n({p['size']})"
                                             for p in profiles], fontsize=6)
        ax.set_title(name, fontsize=8)
        ax.tick_params(labelsize=6)
    for ax in axes[len(names):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def swap_bars(scores: dict, groups: list[str]) -> Figure:
    """The latent swap's PCK per joint group: one panel against A's ground truth, one
    against B's; a bar per decoding (analysis.decoding.swap_scores)."""
    fig = Figure(figsize=(12, 4))
    width = 0.8 / len(scores)
    for ax, who in zip(fig.subplots(1, 2, sharey=True), ("vs A", "vs B")):
        for s, (name, score) in enumerate(scores.items()):
            xs = np.arange(len(groups)) + (s - (len(scores) - 1) / 2) * width
            ax.bar(xs, [np.nan if score[who][g] is None else score[who][g] for g in groups],
                   width, label=name)
        ax.set_xticks(range(len(groups)), groups)
        ax.set(ylim=(0, 1), title=f"PCK against {who[3:]}'s ground truth")
    fig.axes[0].set_ylabel("PCK")
    fig.axes[0].legend(fontsize=7)
    return fig
