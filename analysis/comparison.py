"""The SHG against the SHG with a bottleneck autoencoder (thesis §8.2-8.4): the PCK table
beside the thesis' numbers, both latent spaces' cumulative explained variance (Fig. 27) and
K-Means on the autoencoder code (Fig. 26), written into one report: what
`python -m analysis.compare` runs."""

from __future__ import annotations

import pathlib

import numpy as np

from analysis import figures
from analysis import pca as pca_lib
from analysis.common import kmeans_sweep
from analysis.report import Report
from shg_jax import data
from shg_jax.evaluation import evaluate_split
from shg_jax.latents import extract
from shg_jax.models import CODE_LAYER

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


def compare(runs: list, out, *, split: str, latent_split_name: str, batch_size: int,
            settings) -> tuple[Report, str, dict]:
    """`runs`: (name, workdir, config, steps, state, record, latent split) per run (an SHG,
    then an SHG with the autoencoder). Evaluates each on `split`, extracts the latent it is
    analysed at (the last bottleneck residual, or the autoencoder code) into OUT/runI, and
    writes the report; `settings` holds the K-Means sweep's fields
    (analysis.common.kmeans_sweep). -> (report, the PCK table, components for 95 % per
    latent)."""
    out = pathlib.Path(out)
    report = Report(out, "SHG vs SHG + autoencoder: " + ", ".join(str(r[0]) for r in runs))
    rows, pcas = [], {}
    for i, (name, workdir, config, steps, state, record, latent_split) in enumerate(runs):
        result = evaluate_split(steps, state, data.Split(config.data_dir, split),
                                batch_size, desc=f"{name} {split}")
        rows.append({"run": name, "workdir": str(workdir), "model": model_kind(config),
                     "epoch": record.epoch, "split": split,
                     "pck": {k: result[f"{k}/pck"] for key, _ in SUBSETS
                             for k in (key, f"thesis_{key}")},
                     "loss": result["loss"], "samples": result["count"]})
        layer = CODE_LAYER if config.model.autoencoder else config.model.n_bottleneck
        latents = extract(steps, state, latent_split, layer, out / f"run{i}",
                          batch_size=batch_size,
                          checkpoint={"workdir": str(workdir), "step": record.global_step})
        label = f"{name}: " + ("autoencoder code" if layer == CODE_LAYER
                               else f"bottleneck residual {layer}")
        pcas[label] = (pca_lib.fit(latents.latents), latents, layer)

    report.section(f"PCK on the {split} split")
    table = markdown_table(rows, split)
    report.markdown(table, "pck.md", "the PCK table with the thesis' numbers")
    report.json({"rows": rows, "thesis": THESIS}, "pck.json", "the same numbers",
                summary={r["run"]: f"{r['pck']['all']:.4f}" for r in rows})

    report.section(f"Latent spaces ({latent_split_name} split)")
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

    for label, (pca, latents, layer) in pcas.items():
        if layer != CODE_LAYER:
            continue
        x = np.asarray(latents.latents)
        report.section(f"K-Means on the autoencoder code: {label}")
        slug = f"code{list(pcas).index(label)}"
        sweep = kmeans_sweep(x, settings, report.dir / "kmeans" / slug)
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
    return report, table, needed
