"""Time the latent-space analysis at the thesis' scale on random latent-like data: PCA, then
the K-Means sweep with silhouettes, ours (analysis.kmeans, JAX) and scikit-learn's side by side.

    python -m benchmarks.analysis [--rows 10000 124000] [--dims 4096] [--ks 2-10]
        [--n-init 10] [--max-iter 1000] [--impl ours|sklearn|both] [--silhouette-sample N]

Latents are memory-mapped from a temporary .npy, as analysis.latent reads them. Each sweep
runs in a fresh process (so its peak memory is its own) and ends with one line:

    kmeans sweep rows=N dims=D ks=A-B impl=NAME seconds=S best_inertia=I peak_rss_gb=M

(best_inertia: each K's best-of-restarts inertia, summed over K). This machine's
OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE slow numpy and scikit-learn: time scikit-learn a second
time with `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m benchmarks.analysis ...`.
"""

from __future__ import annotations

import multiprocessing
import resource
import tempfile
import time

import jax
import numpy as np

from analysis import cluster
from analysis import pca as pca_lib
from shg_jax import cli

IMPL_NAMES = {"ours": "jax", "sklearn": "sklearn"}


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def device_peak() -> str:
    """The accelerator allocator's peak, as a field of the sweep line ('' on a CPU)."""
    stats = jax.devices()[0].memory_stats() if jax.default_backend() != "cpu" else None
    return f" device_peak_gb={stats['peak_bytes_in_use'] / 1e9:.2f}" if stats else ""


def latent_like(path: str, rows: int, dims: int, seed: int = 0) -> np.ndarray:
    """Latent-like data written to a .npy memmap: a few strong directions, ReLU-positive,
    plus noise."""
    rng = np.random.default_rng(seed)
    x = np.lib.format.open_memmap(path, "w+", np.float32, (rows, dims))
    basis = rng.standard_normal((32, dims)).astype(np.float32)
    for s in range(0, rows, 8192):
        m = min(8192, rows - s)
        z = rng.standard_normal((m, 32)).astype(np.float32) * np.geomspace(
            8, 0.5, 32, dtype=np.float32)
        x[s:s + m] = np.maximum(z @ basis + rng.standard_normal(
            (m, dims)).astype(np.float32), 0)
    x.flush()
    return np.load(path, mmap_mode="r")


def _sweep(path: str, ks: list, impl: str, n_init: int, max_iter: int,
           silhouette_sample: int, results) -> None:
    """One sweep in this (child) process; puts (seconds, inertia sum, peak RSS GB, device
    peak field, best K, per-K (K, inertia, silhouette)) on results."""
    x = np.load(path, mmap_mode="r")
    start = time.perf_counter()
    sweep = cluster.sweep(x, ks, n_init=n_init, max_iter=max_iter, impl=IMPL_NAMES[impl],
                          silhouette_sample=silhouette_sample)
    results.put((time.perf_counter() - start, float(sum(sweep.inertias)), peak_gb(),
                 device_peak(), sweep.best_k, list(zip(sweep.ks, sweep.inertias, sweep.silhouettes))))


@cli.command
def main(argv=None) -> None:
    p = cli.parser("python -m benchmarks.analysis", __doc__,
                   "python -m benchmarks.analysis --rows 10000 --dims 4096 --ks 2-10 "
                   "--impl both")
    p.add_argument("--rows", "--n", type=cli.whole_number(1), nargs="+", default=[10000, 124000],
                   help="latent rows of each run")
    p.add_argument("--dims", "--dim", type=cli.whole_number(1), default=4096,
                   help="latent dimension")
    p.add_argument("--ks", default="2-10", help="K range of the K-Means sweep")
    p.add_argument("--n-init", type=cli.whole_number(1), default=10, help="K-Means restarts per K")
    p.add_argument("--max-iter", type=cli.whole_number(1), default=1000,
                   help="Lloyd iterations per restart at most (thesis: 1000)")
    p.add_argument("--impl", choices=("ours", "sklearn", "both"), default="both",
                   help="which K-Means to time")
    p.add_argument("--silhouette-sample", type=cli.whole_number(0), default=10000,
                   help="rows the silhouette is computed on (0: every row)")
    args = p.parse_args(argv)
    lo, hi = (int(v) for v in args.ks.split("-"))
    impls = ["ours", "sklearn"] if args.impl == "both" else [args.impl]
    spawn = multiprocessing.get_context("spawn")
    for rows in args.rows:
        with tempfile.TemporaryDirectory() as tmp:
            x = latent_like(f"{tmp}/latents.npy", rows, args.dims)
            print(f"rows = {rows}, dims = {args.dims} ({x.nbytes / 1e9:.1f} GB of float32)",
                  flush=True)
            start = time.perf_counter()
            pca = pca_lib.fit(x)
            pca.project(x, 2)
            print(f"  PCA (covariance + eigh) and 2-D projection: "
                  f"{time.perf_counter() - start:.1f} s", flush=True)
            for impl in impls:
                results = spawn.Queue()
                child = spawn.Process(target=_sweep, args=(
                    f"{tmp}/latents.npy", list(range(lo, hi + 1)), impl, args.n_init,
                    args.max_iter, args.silhouette_sample, results))
                child.start()
                seconds, inertia, peak, device, best_k, per_k = results.get()
                child.join()
                for k, k_inertia, silhouette in per_k:
                    print(f"  {impl} K={k}: inertia {k_inertia:.6g}, silhouette "
                          f"{silhouette:.4f}", flush=True)
                print(f"kmeans sweep rows={rows} dims={args.dims} ks={lo}-{hi} impl={impl} "
                      f"seconds={seconds:.1f} best_inertia={inertia:.6g} "
                      f"peak_rss_gb={peak:.2f} best_k={best_k}{device}", flush=True)


if __name__ == "__main__":
    main()
