"""What every analysis command shares: its flags and their checks against the run, loading
a run, and drawing samples with heatmaps."""

from __future__ import annotations

import argparse
import re

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
    p.add_argument("--batch-size", "--batch_size", dest="batch_size", default=64,
                   type=cli.whole_number(1), help="crops per forward pass")
    p.add_argument("--out", required=True, help="output folder (figures, numbers, index.html)")


def parse_ks(text: str) -> list[int]:
    """'2-10' -> [2, ..., 10]; '4' -> [4]. K starts at 2 (a silhouette needs two clusters);
    its upper end is checked against the data (`check_ks`)."""
    m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", text)
    low, high = (int(m.group(1)), int(m.group(2) or m.group(1))) if m else (0, -1)
    if not m or low < 2 or high < low:
        raise argparse.ArgumentTypeError(f"must be LOW-HIGH with 2 <= LOW <= HIGH (or one K "
                                         f">= 2), got {text!r}")
    return list(range(low, high + 1))


def check_ks(ks: list[int], samples: int, what: str) -> None:
    """K-Means needs more samples than clusters: --ks must lie in 2..samples-1."""
    if max(ks) >= samples:
        raise cli.ArgumentError(f"--ks {ks[0]}-{ks[-1]}: {what} has {samples} samples, so K "
                                f"must lie in 2..{samples - 1}; lower the range or use "
                                f"another --split")


def add_kmeans_arguments(p: argparse.ArgumentParser) -> None:
    """--ks, --n-init, --max-iter, --silhouette-sample, --kmeans, --seed: the K-Means sweep
    (thesis: K = 2..10, 10 restarts, max_iter 1000)."""
    p.add_argument("--ks", default="2-10", type=parse_ks,
                   help="K range for K-Means, LOW-HIGH")
    p.add_argument("--n-init", type=cli.whole_number(1), default=10,
                   help="K-Means restarts per K")
    p.add_argument("--max-iter", type=cli.whole_number(1), default=1000,
                   help="K-Means iterations per restart at most (thesis: 1000)")
    p.add_argument("--silhouette-sample", type=cli.whole_number(0), default=None,
                   help="silhouette on all samples up to this many, else on a random sample "
                        "of this many; 0: every sample, exact (default: every sample on an "
                        "accelerator, 10000 on a CPU)")
    p.add_argument("--kmeans", choices=cluster.IMPLS, default="jax",
                   help="K-Means implementation: ours in JAX (on the accelerator when there "
                        "is one) or scikit-learn's, for comparison")
    p.add_argument("--seed", type=cli.whole_number(0), default=0,
                   help="seed of random subsets, samples and restarts")


def kmeans_sweep(x: np.ndarray, settings, resume_dir) -> cluster.KSweep:
    """The K-Means sweep `settings` asks for (the fields of add_kmeans_arguments: ks,
    n_init, max_iter, seed, silhouette_sample, kmeans), each K kept in `resume_dir` as it
    finishes (a killed command reruns only the K values left)."""
    return cluster.sweep(x, list(settings.ks), n_init=settings.n_init,
                         max_iter=settings.max_iter, seed=settings.seed,
                         silhouette_sample=settings.silhouette_sample,
                         impl=settings.kmeans, resume_dir=resume_dir)


def open_run_split(args):
    """The run and split the flags of add_run_arguments name: (config, steps, state, record,
    split)."""
    config, steps, state, record = open_run(args.workdir, args.checkpoint, args.data_dir)
    return config, steps, state, record, data.Split(config.data_dir, args.split)


def gt_overlays(steps, images: np.ndarray, keypoints: np.ndarray) -> list[np.ndarray]:
    """Crops with their fused ground-truth heatmaps drawn over them (thesis' thumbnails)."""
    gt = np.asarray(steps.codec.targets(jnp.asarray(keypoints)))
    return [overlay_heatmap(img, fuse_heatmaps(m)) for img, m in zip(images, gt)]


def heat_overlays(images: np.ndarray, heatmaps: np.ndarray) -> list[np.ndarray]:
    return [overlay_heatmap(img, fuse_heatmaps(m)) for img, m in zip(images, heatmaps)]
