"""The latent-space study of thesis §6.3-6.4 on one run's latents (shg_jax.latents), subset
by subset, written into an analysis report: what `python -m analysis.latent` runs.

For each subset (all samples, the fully annotated ones, a seeded random sample): PCA
(explained variance, components for 90/95/99 %, the 2-D projection with ground-truth
heatmap thumbnails: Fig. 16), walks from the mean along chosen components with steps of
+-1, 2, 3 sqrt(eigenvalue) and the thesis' negative-only walk, with the nearest real samples
(Fig. 15), K-Means with the silhouette of each K (Fig. 17), the best K's clusters on the
shared projection and each cluster on its own standardised 2-D PCA with skeleton thumbnails
(Figs. 18, 20), and the samples nearest each centroid (Figs. 19, 21). Then the
instruments of analysis.instrument: the walks decoded by the network and each joint's
sensitivity to each component, the latent swap, the clusters' and components' profiles by
the annotations with the thesis' claims beside the numbers, and the known generating factors
(AMI, linear probes) where the data records them.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
from PIL import Image

from analysis import atlas, cluster, figures, instrument
from analysis import pca as pca_lib
from analysis.common import gt_overlays, kmeans_sweep
from analysis.report import Report
from shg_jax.draw import draw_skeleton
from shg_jax.heatmap import decode_heatmaps
from shg_jax.latents import Latents
from shg_jax.models import CODE_LAYER, latent_layer
from shg_jax.progress import timed

WALK_STEPS = (-3, -2, -1, 0, 1, 2, 3)
#: The thesis' second, negative-only walk (shape_analysis.ipynb): -2 to -3 sqrt(lambda) by
#: 0.25.
NEGATIVE_WALK_STEPS = (-2, -2.25, -2.5, -2.75, -3)
#: The thesis' walked components (1-based); "last" is the D-th (4,096 for its latent).
THESIS_COMPONENTS = (1, 2, 3, 10, 30, 50, 100, "last")
#: The components the thesis walked on the autoencoder's 50-value code (Fig. 26's study).
THESIS_CODE_COMPONENTS = (1, 2, 3, 10, 20, 30, 40, 50)


def default_components(layer, dimension: int) -> tuple:
    """The thesis' walked components for a latent layer (the code's list for "code") that
    a latent of `dimension` values has."""
    wanted = THESIS_CODE_COMPONENTS if layer == CODE_LAYER else THESIS_COMPONENTS
    return tuple(c for c in wanted if c == "last" or c <= dimension)
#: The subsets studied when none are named: the thesis' two and the whole split (before
#: the random sample, which a split of at most 10,000 samples makes the same).
DEFAULT_SUBSETS = ("full-annotated", "all", "random:10000")


@dataclasses.dataclass(frozen=True)
class StudySettings:
    """What the study varies: the walked components (1-based ints or "last"), the K-Means
    sweep (analysis.cluster.sweep) with its seed (also of subsets, samples and swap
    pairs), the latent swap's pairs, and the batch of the decoding passes."""
    components: tuple = THESIS_COMPONENTS
    ks: tuple = tuple(range(2, 11))
    n_init: int = 10
    max_iter: int = 1000
    silhouette_sample: int | None = None
    kmeans: str = "jax"
    seed: int = 0
    swap_pairs: int = 512
    batch_size: int = 64


def resolve_components(components, dimension: int) -> list[int]:
    """1-based components, 'last' = dimension, in order, once; each must exist in
    `dimension` (analysis.latent refuses the others before any work)."""
    out = []
    for c in components:
        c = dimension if c == "last" else c
        if c not in out:
            out.append(c)
    return out


#: The named subsets besides 'random:N', with what each holds (the report says it).
SUBSETS = {"all": "every sample of the split",
           "full-annotated": "the thesis' 'full' set: all 17 ground-truth heatmaps non-zero "
                             "(labelled and inside the crop)",
           "all-labelled": "all 17 joints labelled (v > 0), inside the crop or not"}


def select(latents: Latents, spec: str, seed: int, codec) -> np.ndarray:
    """Rows of a subset: 'all'; 'full-annotated', the thesis' "full" set: samples whose 17
    ground-truth heatmaps are all non-zero (labelled and inside the crop, by the rule the
    `codec` renders targets with; 7,017 of the thesis' train split); 'all-labelled', the
    samples with all 17 joints labelled (v > 0) wherever they lie; or 'random:N', a seeded
    sample."""
    n = len(latents.image_id)
    if spec == "all":
        return np.arange(n)
    if spec == "full-annotated":
        return np.nonzero(np.all(np.asarray(codec.annotated(np.asarray(latents.keypoints))),
                                 axis=-1))[0]
    if spec == "all-labelled":
        return np.nonzero(np.asarray(latents.n_labelled) == latents.keypoints.shape[1])[0]
    k = min(int(spec.split(":")[1]), n)
    return np.sort(np.random.default_rng(seed).choice(n, k, replace=False))


def analyse_subset(report: Report, latents: Latents, spec: str, rows: np.ndarray, *, steps,
                   state, split, settings: StudySettings, atlas_run: dict | None = None
                   ) -> None:
    """The study of one subset of `latents` (`rows`, `select`ed by `spec`): PCA, walks, the K-Means sweep and
    the cluster figures, then the instruments (analysis.instrument), written into
    `report`. `steps` and `state` are the run's model (it decodes walks and swaps and draws
    the thumbnails from the crops of `split`, the latents' split). With `atlas_run` (what
    analysis.serve needs to reopen the run: workdir, checkpoint, step, layer, split, data
    dir, latents) the subset's bottleneck atlas is written too (analysis.atlas)."""
    slug = spec.replace(":", "")
    what = SUBSETS.get(spec, "a seeded random sample")
    report.section(f"Subset {spec} ({what}): {len(rows)} of {len(latents.image_id)} samples")
    if len(rows) < max(3, max(settings.ks) + 1):
        report.json({"samples": int(len(rows))}, f"{slug}-skipped.json",
                    "too few samples for PCA and K-Means; nothing computed")
        return
    sub = latents.subset(rows)
    x = sub.latents

    def thumbs(r):
        batch = split.gather(sub.index[np.asarray(r)])
        return gt_overlays(steps, batch["images"], batch["keypoints"])

    def skeletons(r):
        batch = split.gather(sub.index[np.asarray(r)])
        return skeleton_thumbnails(steps, batch["keypoints"], batch["images"].shape[1])

    # PCA
    with timed(f"{spec}: PCA of {x.shape[0]} x {x.shape[1]}"):
        pca = pca_lib.fit(x)
    counts = pca.components_for()
    report.figure(figures.variance_curves(pca, counts), f"{slug}-pca_variance.png",
                  "explained variance ratio and cumulative curve")
    cum = np.cumsum(pca.ratio)
    report.csv(["component", "explained_variance_ratio", "cumulative"],
               [[i + 1, float(r), float(c)] for i, (r, c) in enumerate(zip(pca.ratio, cum))],
               f"{slug}-pca_variance.csv", "explained variance per component")
    report.json({"samples": int(len(rows)), "dimension": int(x.shape[1]),
                 "components_for": counts,
                 "thesis_index_for": pca_lib.thesis_index(counts),
                 "first_two_explain": float(cum[1])},
                f"{slug}-pca.json", "PCA summary (thesis_index_for: the thesis' 0-based "
                "argmax, i.e. components_for - 1; its 541 = 542 components)", summary=counts)
    coords = pca.project(x, min(x.shape[1], max(instrument.PROBE_COMPONENTS
                                                 + (instrument.PROFILE_COMPONENTS, 2))))
    shown = np.sort(np.random.default_rng(settings.seed).choice(len(rows), min(40, len(rows)),
                                                            replace=False))
    report.figure(figures.projection_with_thumbnails(coords[:, :2], thumbs(shown),
                                                     list(shown),
                                                     float(cum[1])),
                  f"{slug}-pca_projection.png",
                  "the first two components with ground-truth heatmap thumbnails (Fig. 16)")
    # Component walks: +-1..3 sqrt(lambda), then the thesis' negative-only walk
    comps = resolve_components(settings.components, x.shape[1])
    with timed(f"{spec}: component walks"):
        nearest = _walks(report, pca, x, sub, comps, slug, thumbs)
    # K-Means and silhouette
    sweep = kmeans_sweep(x, settings, report.dir / "kmeans" / slug)
    report.figure(figures.silhouette_curve(sweep.ks, sweep.silhouettes, sweep.best_k,
                                           sweep.silhouette_sample, len(rows)),
                  f"{slug}-silhouette.png", "silhouette score per K (Fig. 17)")
    with timed(f"{spec}: cluster figures"):
        _cluster_figures(report, x, coords[:, :2], sweep, sub, slug, thumbs, skeletons,
                         settings.seed)
    view = instrument.SubsetView(report, slug, sub, pca, coords, sweep, steps, state,
                                 latent_layer(latents.meta["layer"]), split, settings.seed,
                                 settings.batch_size)
    report.section(f"Subset {spec}: the walks decoded by the network")
    with timed(f"{spec}: decoded walks"):
        walked = instrument.decoded_walks(view, comps, WALK_STEPS, nearest)
    report.section(f"Subset {spec}: latent swap")
    with timed(f"{spec}: latent swap"):
        swapped = instrument.latent_swap(view, settings.swap_pairs)
    report.section(f"Subset {spec}: profiles from the annotations, and the thesis' claims")
    with timed(f"{spec}: profiles and claims"):
        profiled = instrument.annotation_profiles(view, walked.movement)
    report.section(f"Subset {spec}: known factors")
    with timed(f"{spec}: known factors"):
        factored = instrument.known_factors(view)
    if atlas_run is not None:
        report.section(f"Subset {spec}: bottleneck atlas")
        with timed(f"{spec}: atlas"):
            page = atlas.write(view, walked=walked, swapped=swapped, profiled=profiled,
                               factored=factored, title=f"{report.title}, subset {spec}",
                               run=dict(atlas_run, subset=spec))
        report.link(page.relative_to(report.dir).as_posix(),
                    "the bottleneck atlas of this subset: every sample, interactive")


def _walks(report: Report, pca, x: np.ndarray, sub: Latents, comps: list[int], slug: str,
           thumbs) -> dict[int, list[int]]:
    """The walks from the mean along components `comps` (+-1..3 sqrt(lambda), then the
    thesis' negative-only walk): the nearest real samples, as figures and JSON. -> the
    first walk's nearest samples (rows of `sub`) per component."""
    first = None
    for name, walk_steps, what in (
            ("pca_walks", WALK_STEPS, "walks from the mean along components (Fig. 15)"),
            ("pca_walks_negative", NEGATIVE_WALK_STEPS,
             "negative-only walks, -2 to -3 sqrt(lambda) by 0.25")):
        walks, grid = {}, []
        for c in comps:
            nearest = pca_lib.walk_targets(pca, x, c - 1, walk_steps)
            walks[c] = [{"step": k, "row": int(sub.index[i]), "image_id": int(sub.image_id[i]),
                         "ann_id": int(sub.ann_id[i]), "subset_row": int(i)}
                        for k, i in zip(walk_steps, nearest)]
            grid.append(thumbs(nearest))
        report.figure(figures.image_grid(grid, [f"PC {c}" for c in comps],
                                         [f"{k:+g} sqrt(lambda)" if k else "mean"
                                          for k in walk_steps],
                                         "nearest real samples along principal components"),
                      f"{slug}-{name}.png", what)
        report.json(walks, f"{slug}-{name}.json", "the samples of the walks")
        first = first or {c: [w["subset_row"] for w in walks[c]] for c in comps}
    return first


def _cluster_figures(report: Report, x: np.ndarray, coords: np.ndarray, sweep, sub: Latents,
                     slug: str, thumbs, skeletons, seed: int) -> None:
    """The figures and numbers of the sweep's best K: clusters on the shared projection,
    each cluster on its own standardised PCA, the samples nearest the centroids."""
    k = sweep.best_k
    report.figure(figures.clusters_2d(coords, sweep.labels[k], k), f"{slug}-clusters.png",
                  f"the K = {k} clusters on the shared 2-D projection")
    report.figure(figures.cluster_panels(cluster_panels(x, sweep.labels[k], k, skeletons,
                                                        seed)),
                  f"{slug}-cluster_panels.png", f"each of the K = {k} clusters on its own "
                  "standardised 2-D PCA, with skeleton thumbnails (Figs. 18, 20)")
    nearest = cluster.nearest_to_centroids(x, sweep.centroids[k])
    report.figure(figures.image_grid([thumbs(nearest)], ["nearest"],
                                     [f"cluster {c}" for c in range(k)]),
                  f"{slug}-centroids.png", "the samples nearest each centroid (Fig. 19, 21)")
    report.json({"ks": sweep.ks, "silhouette": sweep.silhouettes, "inertia": sweep.inertias,
                 "best_k": k, "silhouette_rows": sweep.silhouette_sample,
                 "cluster_sizes": np.bincount(sweep.labels[k], minlength=k).tolist(),
                 "nearest_to_centroid": [int(sub.index[i]) for i in nearest]},
                f"{slug}-kmeans.json", "K-Means and silhouette numbers",
                summary={"best K": k, "silhouette": round(max(sweep.silhouettes), 4)})
    report.csv(["row", "image_id", "ann_id", "pc1", "pc2", "cluster"],
               [[int(r), int(i), int(a), float(p1), float(p2), int(c)] for r, i, a, (p1, p2), c
                in zip(sub.index, sub.image_id, sub.ann_id, coords, sweep.labels[k])],
               f"{slug}-projection.csv",
               f"every sample's 2-D coordinates and cluster (K = {k}): the projection figures")


def skeleton_thumbnails(steps, keypoints: np.ndarray, size: int) -> list[np.ndarray]:
    """The skeletons of the ground-truth heatmaps' argmax joints (the thesis' thumbnails), drawn
    on white at the crop size: (N, J, 3) crop keypoints -> N (size, size, 3) uint8 images."""
    xy, peak = decode_heatmaps(steps.codec.targets(jnp.asarray(keypoints)), input_size=size)
    kps = np.concatenate([np.asarray(xy), np.where(np.asarray(peak) > 0, 2.0, 0.0)[..., None]],
                         axis=-1)
    return [np.asarray(draw_skeleton(Image.new("RGB", (size, size), "white"), k,
                                     radius=size / 40, width=max(2, size // 40))) for k in kps]


def cluster_panels(x: np.ndarray, labels: np.ndarray, k: int, skeletons, seed: int,
                   n_thumbs: int = 12) -> list:
    """Per cluster: its standardised 2-D PCA coordinates and skeleton thumbnails of a seeded
    sample of its members (the thesis' per-cluster figures)."""
    panels = []
    rng = np.random.default_rng(seed)
    for c in range(k):
        members = np.nonzero(labels == c)[0]
        if len(members) < 3:
            coords = np.zeros((len(members), 2), np.float32)
        else:
            coords = pca_lib.standardised_projection(np.asarray(x)[members], 2)
        shown = np.sort(rng.choice(len(members), min(n_thumbs, len(members)), replace=False))
        panels.append((coords, skeletons(members[shown]) if len(shown) else [], list(shown)))
    return panels
