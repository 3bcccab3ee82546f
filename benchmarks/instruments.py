"""Time the study's instruments (analysis.instrument) beside the PCA and K-Means they follow.

    python -m benchmarks.instruments [--rows 10000] [--dims 4096] [--ks 2-10]
        [--config configs/baseline.py] [--swap-pairs 512] [--components 8]

Two kinds of cost. Those that grow with the rows (the annotation profiles of every K, the
component correlations, the boundary, the claims; each factor's AMI per K and its linear
probes) run on random latent-like data (benchmarks.analysis.latent_like) with random
keypoints, boxes and factors. Those that do not (the decoded walks with their two
sensitivity tables, the latent swap of --swap-pairs pairs) run through the model of
--config at its size with fresh weights on random crops, batched as analysis.latent batches
them (--batch). Each prints one line `instrument NAME seconds=S`; the PCA and the K-Means
sweep print theirs first, for scale, and the last lines time three batches of the latent
extraction with and without the predictions the study adds to it.
"""

from __future__ import annotations

import resource
import runpy
import tempfile
import time

import jax
import numpy as np

from analysis import cluster, decoding, descriptors, factors, profiles
from analysis import pca as pca_lib
from analysis.common import parse_ks
from analysis.instrument import PROBE_COMPONENTS, PROFILE_COMPONENTS
from analysis.study import WALK_STEPS
from benchmarks.analysis import latent_like
from shg_jax import cli
from shg_jax.latents import latent_function
from shg_jax.models import STEM_STRIDE
from shg_jax.steps import Steps


def timed(name: str, fn):
    start = time.perf_counter()
    out = fn()
    print(f"instrument {name} seconds={time.perf_counter() - start:.2f}", flush=True)
    return out


def fake_annotations(rows: int, size: int, seed: int = 0) -> dict:
    """Random keypoints (about 3/4 labelled), boxes, photo sizes and five factors."""
    rng = np.random.default_rng(seed)
    keypoints = np.concatenate([rng.uniform(0, size, (rows, 17, 2)),
                                rng.choice([0, 1, 2], (rows, 17, 1), p=[0.25, 0.25, 0.5])],
                               -1).astype(np.float32)
    return {"keypoints": keypoints,
            "box": rng.uniform(0, 300, (rows, 4)).astype(np.float32),
            "photo_size": np.full((rows, 2), 640, np.int32),
            "factors": {"pose": (rng.integers(0, 6, rows).astype(np.float32), list("abcdef")),
                        "lit_side": (rng.integers(0, 2, rows).astype(np.float32), ["l", "r"]),
                        "height": (rng.uniform(0.45, 0.95, rows), None),
                        "tilt": (rng.uniform(-15, 15, rows), None),
                        "occluded": (rng.integers(0, 5, rows).astype(np.float32), None)}}


def row_instruments(x, pca, sweep, notes: dict, pck: np.ndarray) -> None:
    """The instruments whose cost grows with the rows, as analysis.instrument runs them."""
    coords = timed("projection", lambda: pca.project(
        x, min(x.shape[1], max(PROBE_COMPONENTS + (PROFILE_COMPONENTS,)))))

    def profile_all():
        described = descriptors.describe(notes["keypoints"], notes["box"],
                                         notes["photo_size"])
        for k in sweep.ks:
            profiles.cluster_profiles(sweep.labels[k], k, described, pck, 17)
            for v in described.values():
                profiles.correlation_ratio(v, sweep.labels[k])
        profiles.component_correlations(coords[:, :PROFILE_COMPONENTS], described)
        k = 2 if 2 in sweep.labels else sweep.best_k
        mask = profiles.boundary(np.asarray(x), sweep.centroids[k], sweep.labels[k])
        profiles.claims(described=described, coords=coords, labels=sweep.labels[k], k=k,
                        ratio=pca.ratio, boundary_mask=mask, pck=pck, movement=None)

    timed("profiles+claims", profile_all)

    def factor_all():
        for values, classes in notes["factors"].values():
            for k in sweep.ks:
                factors.cluster_ami(sweep.labels[k], values, classes)
            for k in PROBE_COMPONENTS:
                factors.linear_probe(coords[:, :k], values, classes, 0)

    timed("factors", factor_all)


def model_instruments(config, components: int, pairs: int, batch: int) -> None:
    """The decoded walks, both sensitivity tables and the swap through the model of
    `config` (fresh weights), on random crops."""
    size = config.model.input_size
    steps = Steps(config, np.full(3, 0.4, np.float32))
    state = steps.init_state()
    bound = decoding.model_decoding(steps, 3)
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    keypoints = np.concatenate([rng.uniform(0, size, (batch, 17, 2)),
                                np.full((batch, 17, 1), 2.0)], -1).astype(np.float32)
    latents, skips = bound.encode(state, crops[:1])
    dim = latents.shape[1]
    axes = np.linalg.qr(rng.normal(size=(dim, components)))[0].T.astype(np.float32)
    points = decoding.walk_points(np.asarray(latents[0]), axes, np.ones(components),
                                  WALK_STEPS)
    print(f"model: input {size}, heatmaps {size // STEM_STRIDE}, latent {dim}; "
          f"{len(points)} walk points, {pairs} swap pairs, batch {batch}", flush=True)

    def walks():
        for use in (True, False):
            decoding.in_batches(lambda z: bound.decode(state, z, skips, use), len(points),
                                batch, points)
            np.asarray(bound.velocity(state, np.asarray(latents[0]), axes, skips, use))

    timed("decoded-walks+sensitivity", walks)
    index = np.arange(pairs) % batch
    timed("latent-swap", lambda: decoding.in_batches(
        lambda a, b: bound.swap(state, crops[a], crops[b], keypoints[a], keypoints[b]),
        pairs, batch, index, (index + 1) % batch))
    # What the study adds to the extraction pass: each sample's predictions and PCK.
    for predictions in (False, True):
        fn = latent_function(steps, 3, predictions)
        one = {"images": crops, "keypoints": keypoints}
        jax.block_until_ready(fn(state, one))                      # compiled outside the time
        timed(f"extraction-batch-predictions={predictions}",
              lambda: jax.block_until_ready([fn(state, one) for _ in range(3)]))
    print(f"peak_rss_gb={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f}")


def load_config(path: str):
    try:
        return runpy.run_path(path)["get_config"]()
    except (OSError, KeyError) as e:
        raise cli.ArgumentError(f"--config {path}: not a config file with get_config() "
                                f"({e})") from None


@cli.command
def main(argv=None) -> None:
    p = cli.parser("python -m benchmarks.instruments", __doc__,
                   "python -m benchmarks.instruments --rows 10000 --ks 2-10")
    p.add_argument("--rows", type=cli.whole_number(3), default=10000, help="latent rows")
    p.add_argument("--dims", type=cli.whole_number(2), default=4096, help="latent dimension")
    p.add_argument("--ks", type=parse_ks, default="2-10", help="K range of the sweep")
    p.add_argument("--n-init", type=cli.whole_number(1), default=10, help="restarts per K")
    p.add_argument("--config", default="configs/baseline.py",
                   help="the model whose decoding is timed (fresh weights)")
    p.add_argument("--swap-pairs", type=cli.whole_number(1), default=512)
    p.add_argument("--components", type=cli.whole_number(1), default=8,
                   help="walked components (the thesis walks 8)")
    p.add_argument("--batch", type=cli.whole_number(1), default=64,
                   help="crops per decoding pass")
    args = p.parse_args(argv)
    config = load_config(args.config)
    with tempfile.TemporaryDirectory() as tmp:
        x = latent_like(f"{tmp}/latents.npy", args.rows, args.dims)
        print(f"rows = {args.rows}, dims = {args.dims}", flush=True)
        pca = timed("pca", lambda: pca_lib.fit(x))
        sweep = timed("kmeans+silhouette", lambda: cluster.sweep(
            x, args.ks, n_init=args.n_init, max_iter=1000, silhouette_sample=10000))
        notes = fake_annotations(args.rows, config.model.input_size)
        pck = np.random.default_rng(1).uniform(0, 1, args.rows)
        row_instruments(x, pca, sweep, notes, pck)
    model_instruments(config, args.components, args.swap_pairs, args.batch)


if __name__ == "__main__":
    main()
