"""The SHG vs the SHG with a bottleneck autoencoder (thesis §8.2-8.4), in one command.

    python -m analysis.compare --ckpt runs/baseline --ckpt runs/ae --out DIR
        [--split test] [--latent-split train] [--checkpoint best]

For each run: PCK on --split (all / v=2 only / limbs only) beside the thesis' numbers, as a
markdown table and JSON; the latent each model is analysed at (the last bottleneck residual
for a plain SHG, the autoencoder code for an autoencoder model) extracted on --latent-split,
its PCA and the cumulative explained variance of both in one figure with the components
needed for 95 % (thesis Fig. 27: 541 vs 16, which are 0-based indices: 542 and 17
components); K-Means for K = 2..10 with silhouettes on the
autoencoder code (Fig. 26). DIR/index.html shows everything.
"""

from __future__ import annotations

import pathlib
import sys

import numpy as np

from analysis import figures
from analysis import pca as pca_lib
from analysis.common import add_kmeans_arguments, check_ks, kmeans_sweep
from shg_jax.latents import extract
from analysis.report import Report
from shg_jax import cli, data
from shg_jax.evaluation import evaluate_split
from shg_jax.models import CODE_LAYER
from shg_jax.runs import open_run

#: DESIGN.md's thesis numbers: (val PCK, test PCK, test v=2 only, test limbs only).
THESIS = {"SHG": {"val": {"all": 0.433}, "test": {"all": 0.441, "visible": 0.469,
                                                   "limbs": 0.32}},
          "SHG + autoencoder": {"val": {"all": 0.467},
                                "test": {"all": 0.474, "visible": 0.576, "limbs": 0.38}}}
SUBSETS = (("all", "all"), ("visible", "v=2 only"), ("limbs", "limbs only"))


def model_kind(config) -> str:
    return "SHG + autoencoder" if config.model.autoencoder else "SHG"


def markdown_table(rows: list[dict], split: str) -> str:
    """Ours (per-sample mean over samples with an annotated joint), the same predictions under
    the thesis' test protocol, and the numbers the thesis reported. The thesis' val number
    is its training-time validation PCK, computed as ours; its test numbers used its test
    protocol, so those compare with the middle columns."""
    head = (["run", "model", "epoch"] + [f"PCK {label}" for _, label in SUBSETS]
            + [f"thesis protocol {label}" for _, label in SUBSETS]
            + [f"thesis reported {label}" for _, label in SUBSETS])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        thesis = THESIS[r["model"]].get(split, {})
        cells = [r["run"], r["model"], str(r["epoch"])]
        cells += [f"{r['pck'][key]:.4f}" for key, _ in SUBSETS]
        cells += [f"{r['pck'][f'thesis_{key}']:.4f}" for key, _ in SUBSETS]
        cells += [f"{thesis[key]:.3f}" if key in thesis else "-" for key, _ in SUBSETS]
        lines.append("| " + " | ".join(cells) + " |")
    note = ("thesis reported val = its per-sample validation PCK (compare with PCK all)"
            if split == "val" else "thesis reported test numbers used the thesis protocol")
    return "\n".join(lines) + f"\n\n{note}\n"


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
        runs.append((workdir, config, steps, state, record, latent_split))
    report = Report(out, "SHG vs SHG + autoencoder: " + ", ".join(args.workdir))
    rows, pcas = [], {}
    for i, (workdir, config, steps, state, record, latent_split) in enumerate(runs):
        name = f"{workdir} ({cli.checkpoint_label(workdir, args.checkpoint, record)})"
        result = evaluate_split(steps, state, data.Split(config.data_dir, args.split),
                                args.batch_size, desc=f"{name} {args.split}")
        rows.append({"run": name, "workdir": str(workdir), "model": model_kind(config),
                     "epoch": record.epoch, "split": args.split,
                     "pck": {k: result[f"{k}/pck"] for key, _ in SUBSETS
                             for k in (key, f"thesis_{key}")},
                     "loss": result["loss"], "samples": result["count"]})
        layer = CODE_LAYER if config.model.autoencoder else config.model.n_bottleneck
        latents = extract(steps, state, latent_split, layer, out / f"run{i}",
                          batch_size=args.batch_size,
                          checkpoint={"workdir": str(workdir), "step": record.global_step})
        label = f"{name}: " + ("autoencoder code" if layer == CODE_LAYER
                               else f"bottleneck residual {layer}")
        pcas[label] = (pca_lib.fit(latents.latents), latents, layer)

    report.section(f"PCK on the {args.split} split")
    table = markdown_table(rows, args.split)
    report.markdown(table, "pck.md", "the PCK table with the thesis' numbers")
    report.json({"rows": rows, "thesis": THESIS}, "pck.json", "the same numbers",
                summary={r["run"]: f"{r['pck']['all']:.4f}" for r in rows})
    print(table)

    report.section(f"Latent spaces ({args.latent_split} split)")
    needed = {label: pca.components_for((0.95,))["95%"] for label, (pca, _, _) in pcas.items()}
    report.figure(figures.cumulative_variance_comparison(
                      {label: pca for label, (pca, _, _) in pcas.items()}, needed),
                  "cumulative_variance.png",
                  "cumulative explained variance; components for 95 % marked (Fig. 27)")
    report.json([{"latent": label, "dimension": int(latents.latents.shape[1]),
                  "components_95": needed[label], "thesis_index_95": needed[label] - 1,
                  "cumulative": np.cumsum(pca.ratio).tolist()}
                 for label, (pca, latents, _) in pcas.items()],
                "cumulative_variance.json", "the curves and counts", summary=needed)
    print("components for 95 % (thesis' 0-based index in brackets): " + ", ".join(
        f"{k}: {v} ({v - 1})" for k, v in needed.items()))

    for label, (pca, latents, layer) in pcas.items():
        if layer != CODE_LAYER:
            continue
        x = np.asarray(latents.latents)
        report.section(f"K-Means on the autoencoder code: {label}")
        slug = f"code{list(pcas).index(label)}"
        sweep = kmeans_sweep(x, args, report.dir / "kmeans" / slug)
        report.figure(figures.silhouette_curve(sweep.ks, sweep.silhouettes, sweep.best_k,
                                               sweep.silhouette_sample, len(x)),
                      f"{slug}-silhouette.png", "silhouette score per K (Fig. 26)")
        k = sweep.best_k
        report.figure(figures.clusters_2d(pca.project(x, 2), sweep.labels[k], k),
                      f"{slug}-clusters.png", f"the K = {k} clusters on the code's 2-D PCA")
        report.json({"ks": sweep.ks, "silhouette": sweep.silhouettes,
                     "inertia": sweep.inertias, "best_k": k,
                     "silhouette_rows": sweep.silhouette_sample},
                    f"{slug}-kmeans.json", "K-Means and silhouette numbers",
                    summary={"best K": k, "silhouette": round(max(sweep.silhouettes), 4)})
    print(f"wrote {report.write_index()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
