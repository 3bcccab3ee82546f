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
        fig.suptitle(title)
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
