"""The SHG vs the SHG with a bottleneck autoencoder (thesis §8.2-8.4), in one command.

    python -m analysis.compare --ckpt runs/baseline --ckpt runs/ae --out DIR
        [--split test] [--latent-split train] [--checkpoint best]

For each run: PCK on --split (all / v=2 only / limbs only) beside the thesis' numbers, as a
markdown table and JSON; the latent each model is analysed at (the last bottleneck residual
for a plain SHG, the autoencoder code for an autoencoder model) extracted on --latent-split,
its PCA and the cumulative explained variance of both in one figure with the components
needed for 95 % (thesis Fig. 27: 541 vs 16, which are 0-based indices: 542 and 17
components); K-Means for K = 2..10 with silhouettes on the
autoencoder code (Fig. 26), by analysis.comparison. DIR/index.html shows everything.
"""

from __future__ import annotations

import pathlib
import sys

from analysis import comparison
from analysis.common import add_kmeans_arguments, check_ks
from shg_jax import cli, data
from shg_jax.runs import checkpoint_label, open_run

def parse_args(argv=None):
    p = cli.parser("python -m analysis.compare", __doc__,
                   "python -m analysis.compare --ckpt runs/demo --ckpt runs/demo_ae_finetune "
                   "--out reports/compare")
    # --workdir (or --ckpt) twice: the SHG run, then the SHG + autoencoder run; --split is
    # the split of the PCK table.
    cli.add_run_arguments(p, split="test", many=True)
    p.add_argument("--latent-split", default="train", choices=cli.SPLIT_NAMES,
                   help="split whose latents PCA and K-Means use")
    p.add_argument("--batch-size", "--batch_size", dest="batch_size", default=64,
                   type=cli.whole_number(1), help="crops per forward pass")
    add_kmeans_arguments(p)
    p.add_argument("--out", required=True, help="output folder")
    return p.parse_args(argv)


@cli.command
def main(argv=None) -> int:
    args = parse_args(argv)
    out = pathlib.Path(args.out)
    runs = []
    for workdir in args.workdir:                   # every run opened before any work
        config, steps, state, record = open_run(workdir, args.checkpoint, args.data_dir)
        latent_split = data.Split(config.data_dir, args.latent_split)
        check_ks(args.ks, len(latent_split), f"the {args.latent_split} split of {workdir}")
        name = f"{workdir} ({checkpoint_label(workdir, args.checkpoint, record)})"
        runs.append((name, workdir, config, steps, state, record, latent_split))
    report, table, needed = comparison.compare(
        runs, out, split=args.split, latent_split_name=args.latent_split,
        batch_size=args.batch_size, settings=args)
    print(table)
    print("components for 95 % (thesis' 0-based index in brackets): " + ", ".join(
        f"{k}: {v} ({v - 1})" for k, v in needed.items()))
    print(f"wrote {report.write_index()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
