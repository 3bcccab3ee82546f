"""The latent-space study of thesis §6.3-6.4 on any checkpoint, in one command.

    python -m analysis.latent --ckpt WORKDIR --out DIR [--checkpoint best] [--split train]
        [--layer 3] [--subset full-annotated --subset all --subset random:10000] [--atlas]

Extracts the bottleneck latents (cached in DIR/latents), then for each subset of samples
runs the study of analysis.study: PCA (Fig. 16), walks from the mean along components 1, 2,
3, 10, 30, 50, 100 and the last (on the autoencoder code: 1, 2, 3, 10, 20, 30, 40, 50, as
the thesis), and the negative-only walk (Fig. 15), K-Means for K = 2..10
with 10 restarts of at most 1000 iterations and the silhouette of each K (Fig. 17), the
clusters (Figs. 18, 20) and the samples nearest each centroid (Figs. 19, 21). Then what the
thesis read into those figures, as numbers (analysis.instrument): the walks decoded by the
network with a reference crop's skips and without skips, and how far each joint moves along
each component; the latent swap (--swap-pairs pairs: A's latent with B's skips, scored
against both); every cluster and the first components profiled by the annotations, with the
thesis' claims beside the numbers that support or contradict them; and, on data that records
them (the synthetic data), each generating factor's AMI with the clusters and linear probes.
With --atlas, each subset's interactive bottleneck atlas too (analysis.atlas). A subset
whose samples an earlier one already analysed is named and skipped. Every flag is checked
against the run before any work. Every figure is a PNG beside the numbers behind it;
DIR/index.html shows them all.
"""

from __future__ import annotations

import argparse
import math
import pathlib
import re
import sys

from shg_jax import cpu_flags

if __name__ == "__main__":
    cpu_flags.restart_with_hugepage_malloc()    # before the imports below (main.py)

from analysis.common import add_kmeans_arguments, add_run_arguments, check_ks, open_run_split
from analysis.report import Report
from analysis.study import (DEFAULT_SUBSETS, SUBSETS, THESIS_CODE_COMPONENTS,
                            THESIS_COMPONENTS, StudySettings, analyse_subset,
                            default_components, select)
from shg_jax import cli
from shg_jax.latents import extract
from shg_jax.models import CODE_LAYER, latent_layer, latent_layers, latent_shape
from shg_jax.runs import checkpoint_label


def parse_components(spec: str) -> list[int | str]:
    """'1,2,last' -> [1, 2, 'last'] (resolved against the latent dimension later)."""
    out = []
    for c in spec.split(","):
        c = c.strip()
        if c == "last":
            out.append(c)
        elif c.isdigit() and int(c) > 0:
            out.append(int(c))
        else:
            raise argparse.ArgumentTypeError(f"components are 1-based integers or 'last', "
                                             f"got {c!r}")
    return out


def check_components(components, dimension: int) -> None:
    beyond = [c for c in components if c != "last" and c > dimension]
    if beyond:
        raise cli.ArgumentError(f"--components {','.join(map(str, beyond))}: the latent has "
                                f"{dimension} dimensions, so components run from 1 to "
                                f"{dimension} ('last' = {dimension})")


def parse_subset(spec: str) -> str:
    """A --subset value: one of analysis.study.SUBSETS or 'random:N' (N >= 1)."""
    m = re.fullmatch(r"random:(\d+)", spec)
    if spec in SUBSETS or (m and int(m.group(1)) >= 1):
        return spec
    raise argparse.ArgumentTypeError(f"must be {', '.join(SUBSETS)} or random:N (N >= 1), "
                                     f"got {spec!r}")


def parse_args(argv=None):
    p = cli.parser("python -m analysis.latent", __doc__,
                   "python -m analysis.latent --ckpt runs/demo --out reports/latent --split train")
    add_run_arguments(p)
    p.add_argument("--layer", default="3", type=latent_layer_flag,
                   help="bottleneck residual 1, 2, 3, or 'code' (autoencoder models)")
    p.add_argument("--subset", action="append", type=parse_subset,
                   help="full-annotated (all 17 ground-truth heatmaps non-zero: the thesis' "
                        "'full') | all-labelled (all 17 joints v > 0) | random:N | all; "
                        "repeatable (default: "
                        + ", ".join(DEFAULT_SUBSETS) + ")")
    p.add_argument("--components", type=parse_components,
                   help="1-based components to walk along ('last' = the latent dimension; "
                        "default: the thesis' " + ",".join(map(str, THESIS_COMPONENTS))
                        + ", and on the autoencoder code its "
                        + ",".join(map(str, THESIS_CODE_COMPONENTS)) + ")")
    p.add_argument("--atlas", action="store_true",
                   help="also write each subset's interactive bottleneck atlas into "
                        "OUT/atlas/SUBSET/index.html (opens from file://; "
                        "python -m analysis.serve OUT/atlas/SUBSET serves it live)")
    p.add_argument("--swap-pairs", type=cli.whole_number(1), default=512,
                   help="seeded sample pairs (A, B) of the latent swap: A's latent decoded "
                        "with B's skip features")
    add_kmeans_arguments(p)
    return p.parse_args(argv)


def latent_layer_flag(text: str) -> int | str:
    """A --layer value: a bottleneck residual's number or 'code' (checked against the run's
    model by `check_layer`)."""
    try:
        layer = latent_layer(text)
    except ValueError:
        layer = 0
    if layer != CODE_LAYER and layer < 1:
        raise argparse.ArgumentTypeError(f"must be a bottleneck residual's number (1, 2, "
                                         f"...) or 'code', got {text!r}")
    return layer


def check_layer(layer, model_config) -> None:
    layers = latent_layers(model_config)
    if layer not in layers:
        raise cli.ArgumentError(f"--layer {layer}: the run's model has latents at "
                                f"{', '.join(map(str, layers))} only ('code' needs the "
                                f"autoencoder); pick one of those")


@cli.command
def main(argv=None) -> int:
    args = parse_args(argv)
    config, steps, state, record, split = open_run_split(args)
    check_layer(args.layer, config.model)
    dimension = math.prod(latent_shape(config.model, args.layer))
    components = args.components or default_components(args.layer, dimension)
    check_components(components, dimension)
    check_ks(args.ks, len(split), f"the {args.split} split")
    label = checkpoint_label(args.workdir, args.checkpoint, record)
    report = Report(args.out, f"Latent space: {args.workdir} ({label}, epoch "
                              f"{record.epoch}), {args.split} split, layer {args.layer}")
    settings = StudySettings(components=tuple(components), ks=tuple(args.ks),
                             n_init=args.n_init, max_iter=args.max_iter,
                             silhouette_sample=args.silhouette_sample, kmeans=args.kmeans,
                             seed=args.seed, swap_pairs=args.swap_pairs,
                             batch_size=args.batch_size)
    latents = extract(steps, state, split, args.layer, args.out, batch_size=args.batch_size,
                      predictions=True,
                      checkpoint={"workdir": str(args.workdir), "step": record.global_step})
    atlas_run = None if not args.atlas else {
        "workdir": str(pathlib.Path(args.workdir).resolve()),
        "checkpoint": args.checkpoint, "step": int(record.global_step),
        "layer": str(args.layer), "split": args.split, "data_dir": str(config.data_dir),
        "latents": str(latents.path.resolve()), "label": label, "epoch": int(record.epoch)}
    analysed = {}                        # rows -> the subset that analysed them
    for spec in args.subset or DEFAULT_SUBSETS:
        rows = select(latents, spec, args.seed, steps.codec)
        if rows.tobytes() in analysed:
            report.section(f"Subset {spec}: the same samples as subset "
                           f"{analysed[rows.tobytes()]} (the split is that small); not "
                           f"analysed again")
            continue
        analysed[rows.tobytes()] = spec
        analyse_subset(report, latents, spec, rows, steps=steps, state=state, split=split,
                       settings=settings, atlas_run=atlas_run)
    print(f"wrote {report.write_index()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
