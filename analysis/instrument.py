"""The study as an instrument: on one subset's latent space, after the thesis' PCA and
K-Means, what the network decodes along the walks, what a latent carries when its skips are
swapped, what the clusters and components hold by the annotations, whether the thesis'
readings hold, and whether known generating factors are in the latent. Each section writes
its figures beside their numbers into the report (analysis.study calls them in order).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image

from analysis import decoding, descriptors, factors, figures, profiles
from analysis.common import gt_overlays
from analysis.report import Report
from shg_jax import shards
from shg_jax.draw import draw_skeleton, fuse_heatmaps, overlay_heatmap
from shg_jax.latents import Latents
from shg_jax.skeleton import JOINT_NAMES

#: The first k components each linear probe reads.
PROBE_COMPONENTS = (2, 10, 50)
#: Components the profiles correlate with the descriptors.
PROFILE_COMPONENTS = 10
#: Crop pairs shown in the swap figure.
SWAP_SHOWN = 4


@dataclasses.dataclass
class SubsetView:
    """What every section reads about one analysed subset."""
    report: Report
    slug: str                    # the subset's file-name prefix
    sub: Latents                 # its latents and sample columns
    pca: object                  # analysis.pca.PCA of sub.latents
    coords: np.ndarray           # (N, P) coordinates on the first P components
    sweep: object                # analysis.cluster.KSweep
    steps: object                # the run's Steps
    state: object                # its restored state
    layer: int | str
    split: object                # data.Split the latents came from
    seed: int
    batch_size: int

    @property
    def claim_k(self) -> int:
        """The K the thesis read its clusters at (2) when swept, else the best K."""
        return 2 if 2 in self.sweep.labels else self.sweep.best_k


def _decoded_thumbnail(codec, heatmaps: np.ndarray, background: np.ndarray) -> np.ndarray:
    """(H, W, J) decoded heatmaps drawn over a crop (S, S, 3): their fused map and the
    skeleton of their argmax joints."""
    xy, _ = codec.decode(heatmaps[None])
    keypoints = np.concatenate([np.asarray(xy[0]), np.full((xy.shape[1], 1), 2.0)], -1)
    size = background.shape[0]
    image = Image.fromarray(overlay_heatmap(background, fuse_heatmaps(heatmaps)))
    return np.asarray(draw_skeleton(image, keypoints, radius=size / 50,
                                    width=max(1, size // 64)))


@dataclasses.dataclass
class DecodedWalks:
    """What `decoded_walks` computed (the atlas shows it)."""
    reference: int                         # row of the subset nearest the mean
    components: list                       # 1-based
    steps: tuple                           # in sqrt(eigenvalue)
    heatmaps: dict                         # mode -> (C * S, H, W, J), component-major
    keypoints: dict                        # mode -> (C * S, J, 2) their argmax, crop pixels
    speed: dict                            # mode -> (C, J) cells per sqrt(eigenvalue)

    @property
    def movement(self) -> dict[int, float]:
        """{component: mean joint movement with the reference skips}."""
        return {c: float(self.speed["reference skips"][i].mean())
                for i, c in enumerate(self.components)}


def decoded_walks(view: SubsetView, components: list[int], steps: tuple,
                  nearest: dict[int, list[int]]) -> DecodedWalks:
    """Every point of the walks (mean + k sqrt(lambda) along each of `components`, k in
    `steps`, which hold 0) decoded with the skips of the sample nearest the mean and with
    the skips off, beside the nearest real sample (`nearest`: component -> rows of the
    subset); and the component x joint sensitivity table."""
    report, pca, slug = view.report, view.pca, view.slug
    model = decoding.model_decoding(view.steps, view.layer)
    reference = nearest[components[0]][list(steps).index(0)]     # k = 0: nearest the mean
    crop = view.split.gather(view.sub.index[[reference]])
    _, skips = model.encode(view.state, crop["images"])
    axes = pca.components[:, [c - 1 for c in components]].T
    scales = np.sqrt(pca.variances[[c - 1 for c in components]])
    points = decoding.walk_points(pca.mean, axes, scales, steps)
    grey = np.full_like(crop["images"][0], 128)
    modes = {"reference skips": (True, crop["images"][0]), "no skips": (False, grey)}
    short_mode = {"reference skips": "decoded", "no skips": "no skips"}
    decoded = {name: decoding.in_batches(
        lambda z, use=use: model.decode(view.state, z, skips, use),
        len(points), view.batch_size, points) for name, (use, _) in modes.items()}
    keypoints = {name: np.asarray(view.steps.codec.decode(maps)[0])
                 for name, maps in decoded.items()}
    rows, labels = [], []
    for i, c in enumerate(components):
        cells = slice(i * len(steps), (i + 1) * len(steps))
        for name, (_, background) in modes.items():
            rows.append([_decoded_thumbnail(view.steps.codec, h, background)
                         for h in decoded[name][cells]])
            labels.append(f"PC {c} {short_mode[name]}")
        batch = view.split.gather(view.sub.index[np.asarray(nearest[c])])
        rows.append(gt_overlays(view.steps, batch["images"], batch["keypoints"]))
        labels.append(f"PC {c} nearest")
    report.figure(figures.image_grid(rows, labels, [f"{k:+g} sqrt(lambda)" if k else "mean"
                                                    for k in steps],
                                     "the walks decoded by the network, beside the nearest "
                                     "real sample", cell=1.3),
                  f"{slug}-decoded_walks.png",
                  "each walk point decoded with the skip features of the sample nearest the "
                  f"mean (row {int(view.sub.index[reference])} of the split) and with the "
                  "skips off: the fused heatmaps and their argmax skeleton; then the nearest "
                  "real sample's ground truth")
    speeds = {}
    for name, (use, _) in modes.items():
        velocity = np.asarray(model.velocity(view.state, pca.mean.astype(np.float32),
                                             (axes * scales[:, None]).astype(np.float32),
                                             skips, use))
        speeds[name] = (velocity, np.linalg.norm(velocity, axis=-1))
    short = [n.replace("left_", "l_").replace("right_", "r_") for n in JOINT_NAMES]
    for name, (_, speed) in speeds.items():
        report.figure(figures.matrix(speed, [f"PC {c}" for c in components], short,
                                     f"joint movement of the decoded pose ({name}), heatmap "
                                     "cells per sqrt(eigenvalue)"),
                      f"{slug}-sensitivity-{name.replace(' ', '_')}.png",
                      f"component x joint sensitivity with {name}: how far each joint's "
                      "decoded position (local soft-argmax) moves per sqrt(eigenvalue) along "
                      "each component, the jvp at the mean")
    report.csv(["component", "skips", *JOINT_NAMES],
               [[c, name, *map(float, speed[i])] for name, (_, speed) in speeds.items()
                for i, c in enumerate(components)],
               f"{slug}-sensitivity.csv", "the sensitivity tables (cells per sqrt(eigenvalue))")
    report.json({"reference_row": int(view.sub.index[reference]), "steps": list(steps),
                 "components": components,
                 "method": "d/dt of the centroid of the positive heatmap within "
                           f"{decoding.WINDOW} cells of its argmax at mean + t sqrt(lambda) v, "
                           "by jax.jvp at t = 0",
                 "velocity_xy": {name: {c: v[i].tolist() for i, c in enumerate(components)}
                                 for name, (v, _) in speeds.items()},
                 "decoded_keypoints": {name: xy.round(2).tolist()
                                       for name, xy in keypoints.items()}},
                f"{slug}-decoded_walks.json",
                "the decoded walks: reference sample, the decoded joints of every walk point "
                "(crop pixels, component-major), and each joint's velocity (x, y)")
    return DecodedWalks(reference, components, tuple(steps), decoded, keypoints,
                        {name: speed for name, (_, speed) in speeds.items()})


def latent_swap(view: SubsetView, pairs: int) -> dict:
    """For `pairs` seeded pairs (A, B) of the subset: A's latent decoded with B's skips and
    with none, beside A's and B's own predictions, scored against A's and B's ground truth
    per joint group. -> {"scores" (decoding.swap_scores), "pairs" (rows A, B of the
    subset), and
    for the first SWAP_SHOWN pairs "shown": the decoded heatmaps "swapped" (A latent, B
    skips) and "bare" (A latent, no skips)}."""
    report, slug = view.report, view.slug
    model = decoding.model_decoding(view.steps, view.layer)
    n = len(view.sub.index)
    rng = np.random.default_rng(view.seed)
    a = rng.integers(0, n, pairs)                      # with replacement: any n >= 2
    b = (a + rng.integers(1, n, pairs)) % n            # never A itself
    rows_a, rows_b = view.sub.index[a], view.sub.index[b]

    def swap(ra, rb):
        x, y = view.split.gather(ra), view.split.gather(rb)
        return model.swap(view.state, x["images"], y["images"], x["keypoints"],
                          y["keypoints"])

    hits = decoding.in_batches(swap, pairs, view.batch_size, rows_a, rows_b)
    scores = decoding.swap_scores(hits)
    groups = ["all", *decoding.GROUPS]
    report.figure(figures.swap_bars(scores, groups), f"{slug}-latent_swap.png",
                  f"latent swap over {pairs} seeded pairs: PCK of each decoding against A's "
                  "and against B's ground truth, per joint group")
    report.table(["decoding", "scored against", *groups],
                 [[name, who, *(s[who][g] for g in groups)] for name, s in scores.items()
                  for who in ("vs A", "vs B")],
                 f"{slug}-latent_swap.csv",
                 "PCK of A's latent decoded with A's, B's or no skips (and B's own), against "
                 "A's and B's ground truth: a pose carried by the bottleneck follows A")
    shown = np.arange(min(SWAP_SHOWN, pairs))
    x, y = view.split.gather(rows_a[shown]), view.split.gather(rows_b[shown])
    (latents, _), (_, skips_b) = (decoding.in_batches(
        lambda images: model.encode(view.state, images), len(shown), view.batch_size, i)
        for i in (x["images"], y["images"]))
    swapped, bare = (decoding.in_batches(
        lambda z, s, use=use: model.decode(view.state, z, s, use), len(shown),
        view.batch_size, latents, skips_b) for use in (True, False))
    codec = view.steps.codec
    grid = [[gt_a, gt_b, _decoded_thumbnail(codec, swapped[i], y["images"][i]),
             _decoded_thumbnail(codec, bare[i], x["images"][i])]
            for i, (gt_a, gt_b) in enumerate(zip(
                gt_overlays(view.steps, x["images"], x["keypoints"]),
                gt_overlays(view.steps, y["images"], y["keypoints"])))]
    report.figure(figures.image_grid(grid, [f"pair {i}" for i in shown],
                                     ["A (truth)", "B (truth)", "A latent + B skips",
                                      "A latent, no skips"]),
                  f"{slug}-latent_swap_pairs.png", "the first pairs of the swap")
    report.json({"pairs": [[int(i), int(j)] for i, j in zip(rows_a, rows_b)],
                 "scores": scores}, f"{slug}-latent_swap.json",
                "the swap's pairs (split rows A, B) and scores")
    return {"scores": scores, "pairs": np.stack([a, b], 1),
            "shown": {"swapped": swapped, "bare": bare}}


def annotation_profiles(view: SubsetView, movement: dict[int, float] | None) -> dict:
    """Every cluster of every K profiled by the annotations (analysis.descriptors) and its
    per-sample PCK; the first components' correlation with each descriptor; the thesis'
    claims beside the numbers (analysis.profiles.claims). -> {"described": each
    descriptor (N,), "profiles": K -> cluster profiles, "claims"}."""
    report, slug, sub, sweep = view.report, view.slug, view.sub, view.sweep
    source = view.split.gather(sub.index, shards.SOURCE_ARRAYS)
    described = descriptors.describe(sub.keypoints, source["box"], source["photo_size"])
    measured = dict(described, **({} if sub.pck is None else {"pck": sub.pck}))
    names = list(measured)
    all_profiles = {k: profiles.cluster_profiles(sweep.labels[k], k, described, sub.pck,
                                                 sub.keypoints.shape[1]) for k in sweep.ks}
    report.json({"descriptors": descriptors.DESCRIPTORS, "profiles": all_profiles},
                f"{slug}-profiles.json", "every cluster of every K: size, the mean of each "
                "descriptor, the labelled-joint histogram, mean PCK")
    report.csv(["K", "cluster", "size", *names],
               [[k, p["cluster"], p["size"], *(p[n] for n in names)]
                for k, ps in all_profiles.items() for p in ps], f"{slug}-profiles.csv",
               "the cluster profiles as a table")
    for k in sorted({view.claim_k, sweep.best_k}):
        report.figure(figures.profile_bars(all_profiles[k], names,
                                           f"the K = {k} clusters by their annotations"),
                      f"{slug}-profiles-k{k}.png",
                      f"each descriptor's mean per cluster at K = {k} (x: cluster (size)); "
                      "descriptors: " + "; ".join(f"{n}: {t}" for n, t in
                                                  descriptors.DESCRIPTORS.items()))
    eta = {k: {n: profiles.correlation_ratio(v, sweep.labels[k]) for n, v in measured.items()}
           for k in sweep.ks}
    report.figure(figures.matrix([[eta[k][n] for n in names] for k in sweep.ks],
                                 [f"K = {k}" for k in sweep.ks], names,
                                 "eta^2: share of each descriptor's variance between clusters"),
                  f"{slug}-cluster_separation.png",
                  "how much of each descriptor the clusters of each K separate (eta^2)")
    components = min(PROFILE_COMPONENTS, view.coords.shape[1])
    correlations = profiles.component_correlations(view.coords[:, :components], measured)
    report.figure(figures.matrix(np.array([correlations[n] for n in names]).T,
                                 [f"PC {c + 1}" for c in range(components)], names,
                                 "Pearson r of each component with each descriptor",
                                 symmetric=True),
                  f"{slug}-component_correlations.png",
                  f"the first {components} components against the annotations")
    report.csv(["component", *names],
               [[c + 1, *(correlations[n][c] for n in names)] for c in range(components)],
               f"{slug}-component_correlations.csv", "Pearson r per component and descriptor")
    k = view.claim_k
    x = np.asarray(sub.latents)
    stated = profiles.claims(
        described=described, coords=view.coords, labels=sweep.labels[k], k=k,
        ratio=view.pca.ratio, boundary_mask=profiles.boundary(x, sweep.centroids[k],
                                                              sweep.labels[k]),
        pck=sub.pck, movement=movement)
    report.table(["claim", "thesis", "measure", "value", "rule", "verdict"],
                 [[c[h] for h in ("claim", "thesis", "measure", "value", "rule", "verdict")]
                  for c in stated], f"{slug}-claims.csv",
                 f"the thesis' readings of its latent space beside this subset's numbers "
                 f"(clusters at K = {k})")
    report.json(stated, f"{slug}-claims.json", "the claims with every number measured")
    return {"described": described, "profiles": all_profiles, "claims": stated}


def known_factors(view: SubsetView) -> dict:
    """Per generating factor the data records (data.Split.factors): the AMI between it and
    the clusters of every K, and linear probes from the first PROBE_COMPONENTS components
    against their baselines. Data without factors gets one line saying so. -> {factor:
    {"classes", "values" (N,), "ami", "probes"}}."""
    report, slug, sweep = view.report, view.slug, view.sweep
    if not view.split.factors:
        report.json({"factors": []}, f"{slug}-factors.json",
                    "the data records no generating factors (only synthetic data does)")
        return {}
    values = view.split.gather(view.sub.index,
                               tuple(map(shards.factor_key, view.split.factors)))
    ks = [k for k in PROBE_COMPONENTS if k <= view.coords.shape[1]]
    result = {}
    for name, classes in view.split.factors.items():
        v = values[shards.factor_key(name)]
        result[name] = {"classes": classes,
                        "ami": {k: factors.cluster_ami(sweep.labels[k], v, classes)
                                for k in sweep.ks},
                        "probes": {k: factors.linear_probe(view.coords[:, :k], v, classes,
                                                           view.seed) for k in ks}}
    best = sweep.best_k
    names = list(result)
    report.figure(figures.grouped_bars(
        names, {f"first {k} components": [result[n]["probes"][k]["score"] for n in names]
                for k in ks}, "linear probes: accuracy (classes) or R^2 (numbers); black: "
        "majority / mean baseline", "score",
        baselines={f"first {k} components": [result[n]["probes"][k]["baseline"]
                                             for n in names] for k in ks}),
        f"{slug}-factor_probes.png", "is each known factor linearly readable from the latent?")
    report.figure(figures.grouped_bars(
        names, {f"K = {k}": [result[n]["ami"][k] for n in names] for k in sweep.ks},
        "adjusted mutual information between the clusters and each factor", "AMI"),
        f"{slug}-factor_ami.png", "do the clusters separate each known factor?")
    report.table(["factor", "kind", f"AMI at best K = {best}",
                  *(f"probe, first {k} PCs (score / baseline)" for k in ks)],
                 [[n, "classes" if r["classes"] else "number", r["ami"][best],
                   *(_score(r["probes"][k]) for k in ks)] for n, r in result.items()],
                 f"{slug}-factors.csv", "known factors: cluster AMI and linear probes "
                 "(accuracy for classes, R^2 for numbers, each / its baseline)")
    report.json(result, f"{slug}-factors.json", "every factor's AMI per K and probes")
    return {name: dict(r, values=values[shards.factor_key(name)]) for name, r in result.items()}


def _score(probe: dict) -> str:
    if probe["score"] is None:
        return "-"
    return f"{probe['score']:.3f} / {probe['baseline']:.3f}"
