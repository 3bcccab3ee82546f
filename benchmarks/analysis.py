"""Time the latent-space analysis at the thesis' scale on random latents.

    python -m benchmarks.analysis [--n 10000 124000] [--dim 4096] [--ks 2-10] [--n-init 10]

For each N: PCA (chunked covariance + eigh), projection, K-Means for every K with n_init
restarts, and the silhouette (exact for N <= --silhouette-sample, else on that sample).
Latents are memory-mapped from a temporary .npy, as analysis.latent reads them. Prints one
line per step with seconds and the peak resident memory so far.
"""

from __future__ import annotations

import resource
import tempfile
import time

import numpy as np

from analysis import cluster
from analysis import pca as pca_lib
from shg_jax import cli


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def timed(label: str, fn):
    start = time.perf_counter()
    out = fn()
    print(f"  {label}: {time.perf_counter() - start:.1f} s (peak RSS {peak_gb():.1f} GB)",
          flush=True)
    return out


def main(argv=None) -> None:
    p = cli.parser("python -m benchmarks.analysis", __doc__,
                   "python -m benchmarks.analysis --n 10000 --dim 4096 --ks 2-10")
    p.add_argument("--n", type=int, nargs="+", default=[10000, 124000],
                   help="latent rows of each run")
    p.add_argument("--dim", type=int, default=4096, help="latent dimension")
    p.add_argument("--ks", default="2-10", help="K range of the K-Means sweep")
    p.add_argument("--n-init", type=int, default=10, help="K-Means restarts per K")
    p.add_argument("--silhouette-sample", type=int, default=10000,
                   help="rows the silhouette is computed on")
    args = p.parse_args(argv)
    lo, hi = (int(v) for v in args.ks.split("-"))
    rng = np.random.default_rng(0)
    for n in args.n:
        with tempfile.TemporaryDirectory() as tmp:
            x = np.lib.format.open_memmap(f"{tmp}/latents.npy", "w+", np.float32,
                                          (n, args.dim))
            # Latent-like data: a few strong directions, ReLU-positive, plus noise.
            basis = rng.standard_normal((32, args.dim)).astype(np.float32)
            for s in range(0, n, 8192):
                m = min(8192, n - s)
                z = rng.standard_normal((m, 32)).astype(np.float32) * np.geomspace(
                    8, 0.5, 32, dtype=np.float32)
                x[s:s + m] = np.maximum(z @ basis + rng.standard_normal(
                    (m, args.dim)).astype(np.float32), 0)
            x.flush()
            x = np.load(f"{tmp}/latents.npy", mmap_mode="r")
            print(f"N = {n}, D = {args.dim} ({x.nbytes / 1e9:.1f} GB of float32)")
            pca = timed("PCA (covariance + eigh)", lambda: pca_lib.fit(x))
            timed("2-D projection", lambda: pca.project(x, 2))
            total = time.perf_counter()
            sweep = timed(f"K-Means K={lo}..{hi} x {args.n_init} restarts + silhouette",
                          lambda: cluster.sweep(x, range(lo, hi + 1), n_init=args.n_init,
                                                silhouette_sample=args.silhouette_sample))
            sil = time.perf_counter()
            cluster.silhouette_score(np.asarray(x[:sweep.silhouette_sample]),
                                     sweep.labels[sweep.best_k][:sweep.silhouette_sample])
            print(f"  one silhouette on {sweep.silhouette_sample} rows: "
                  f"{time.perf_counter() - sil:.1f} s; whole analysis "
                  f"{time.perf_counter() - total:.0f} s after PCA")


if __name__ == "__main__":
    main()
