"""What every analysis command shares: loading a run, and drawing samples with heatmaps."""

from __future__ import annotations

import argparse

import jax.numpy as jnp
import numpy as np

from analysis import cluster
from shg_jax import cli, data
from shg_jax.draw import fuse_heatmaps, overlay_heatmap
from shg_jax.runs import open_run


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """The run flags of every command (shg_jax.cli; --ckpt is --workdir), on the train split
    by default, and --batch-size, --out."""
    cli.add_run_arguments(p, split="train")
    p.add_argument("--batch-size", "--batch_size", dest="batch_size", type=int, default=64,
                   help="crops per forward pass")
    p.add_argument("--out", required=True, help="output folder (figures, numbers, index.html)")


def add_kmeans_arguments(p: argparse.ArgumentParser) -> None:
    """--ks, --n-init, --max-iter, --silhouette-sample, --kmeans, --seed: the K-Means sweep
    (thesis: K = 2..10, 10 restarts, max_iter 1000)."""
    p.add_argument("--ks", default="2-10", type=lambda s: list(range(
        int(s.split("-")[0]), int(s.split("-")[1]) + 1)), help="K range for K-Means")
    p.add_argument("--n-init", type=int, default=10, help="K-Means restarts per K")
    p.add_argument("--max-iter", type=int, default=1000,
                   help="K-Means iterations per restart at most (thesis: 1000)")
    p.add_argument("--silhouette-sample", type=int, default=None,
                   help="silhouette on all samples up to this many, else on a random sample "
                        "of this many; 0: every sample, exact (default: every sample on an "
                        "accelerator, 10000 on a CPU)")
    p.add_argument("--kmeans", choices=cluster.IMPLS, default="jax",
                   help="K-Means implementation: ours in JAX (on the accelerator when there "
                        "is one) or scikit-learn's, for comparison")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of random subsets, samples and restarts")


def kmeans_sweep(x: np.ndarray, args, resume_dir) -> cluster.KSweep:
    """The K-Means sweep the flags of add_kmeans_arguments ask for, each K kept in
    `resume_dir` as it finishes (a killed command reruns only the K values left)."""
    return cluster.sweep(x, args.ks, n_init=args.n_init, max_iter=args.max_iter,
                         seed=args.seed, silhouette_sample=args.silhouette_sample,
                         impl=args.kmeans, resume_dir=resume_dir)


def open_run_split(args):
    """The run and split the flags of add_run_arguments name: (config, steps, state, record,
    split)."""
    config, steps, state, record = open_run(args.workdir, args.checkpoint, args.data_dir)
    return config, steps, state, record, data.Split(config.data_dir, args.split)


def gt_overlays(steps, images: np.ndarray, keypoints: np.ndarray) -> list[np.ndarray]:
    """Crops with their fused ground-truth heatmaps drawn over them (thesis' thumbnails)."""
    gt = np.asarray(steps.targets(jnp.asarray(keypoints)))
    return [overlay_heatmap(img, fuse_heatmaps(m)) for img, m in zip(images, gt)]


def heat_overlays(images: np.ndarray, heatmaps: np.ndarray) -> list[np.ndarray]:
    return [overlay_heatmap(img, fuse_heatmaps(m)) for img, m in zip(images, heatmaps)]
