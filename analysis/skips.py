"""The skip-connection ablation of thesis §6.2: the same weights with and without the
hourglass skip connections.

    python -m analysis.skips --ckpt WORKDIR --out DIR [--checkpoint best] [--split train]

Per-sample PCK with and without the skips over a split (the thesis used the training data),
the two histograms with their means (Fig. 13), and a grid of 20 samples that score PCK 1.0
with skips: crop, ground truth, prediction with skips, prediction without (Fig. 14); the
arithmetic and the figures are analysis.ablation's.
"""

from __future__ import annotations

import sys

from shg_jax import cpu_flags

if __name__ == "__main__":
    cpu_flags.restart_with_hugepage_malloc()    # before the imports below (main.py)

from analysis import ablation
from analysis.common import add_run_arguments, open_run_split
from analysis.report import Report
from shg_jax import cli
from shg_jax.runs import checkpoint_label


@cli.command
def main(argv=None) -> int:
    p = cli.parser("python -m analysis.skips", __doc__,
                   "python -m analysis.skips --ckpt runs/demo --out reports/skips --split val")
    add_run_arguments(p)
    p.add_argument("--limit", type=cli.whole_number(1),
                   help="only the first N samples of the split")
    p.add_argument("--grid", type=cli.whole_number(1), default=20,
                   help="samples in the grid figure")
    p.add_argument("--seed", type=cli.whole_number(0), default=0,
                   help="seed of the samples drawn")
    args = p.parse_args(argv)
    config, steps, state, record, split = open_run_split(args)
    res = ablation.run_ablation(steps, state, split, args.batch_size, args.limit)
    label = checkpoint_label(args.workdir, args.checkpoint, record)
    report = Report(args.out, f"Skip-connection ablation: {args.workdir} ({label}, "
                              f"epoch {record.epoch}), {args.split} split")
    summary = ablation.write_report(report, res, steps, state, split, grid=args.grid,
                                    seed=args.seed)
    print(f"PCK with skips {summary['mean_pck_with_skips']:.4f}, without "
          f"{summary['mean_pck_without_skips']:.4f} over {summary['samples']} samples")
    print(f"wrote {report.write_index()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
