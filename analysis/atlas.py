"""The bottleneck atlas: one analysed subset's latent space as an interactive page.

`write(view, ...)` writes OUT/atlas/SUBSET/ from what the study computed for the subset
(analysis.study with --atlas): index.html, atlas.js and atlas.css (plain JavaScript, no
package, no network: the page opens from file://), data.js (every number of the page, its
arrays base64-encoded typed arrays: a script, since a page opened from file:// may not fetch
files), thumbs/NNN.jpg (crop thumbnails, THUMB pixels, SHEET x SHEET to a sheet), and what
the live server (analysis.serve) needs beside them: run.json (the run and latents it came
from), rows.npy (the subset's split rows) and walk.npz (the PCA mean, the walked axes and
their sqrt(eigenvalue) scales).

The page: every sample on the first two principal components (canvas), coloured by its
cluster for any K, by each annotation descriptor, by each known factor or by its PCK; hover
and click show a sample's crop, ground-truth and predicted skeletons (with and without the
skip connections), its cluster and its nearest neighbours (Euclidean, in the first
NEIGHBOUR_COMPONENTS components); a slider per walked component shows the decoded frame of
each step; the latent swap, the profiles and the claims as tables. Served by analysis.serve,
the sliders combine and decode live from the selected sample's latent.

At 124,040 samples every array stays (about 25 MB of data.js), and crop thumbnails are kept
for a seeded sample of at most `max_thumbnails` (the others show their skeletons on grey).
"""

from __future__ import annotations

import base64
import functools
import io
import json
import pathlib
import shutil

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from analysis.descriptors import DESCRIPTORS
from shg_jax import fileio
from shg_jax.draw import fuse_heatmaps
from shg_jax.skeleton import SKELETON

PAGE = pathlib.Path(__file__).with_name("atlas_page")
PAGE_FILES = ("index.html", "atlas.js", "atlas.css")
#: The run behind an atlas (workdir, checkpoint, step, layer, split, data dir, latents).
RUN_FILE = "run.json"
THUMB = 64
SHEET = 32
NEIGHBOURS = 8
NEIGHBOUR_COMPONENTS = 50
#: Thumbnails kept at most by default (a seeded sample beyond it).
MAX_THUMBNAILS = 20000


def b64(array: np.ndarray, dtype) -> str:
    """A little-endian typed array as base64 (the page decodes it into that typed array)."""
    return base64.b64encode(np.ascontiguousarray(array, dtype=np.dtype(dtype).newbyteorder("<"))
                            .tobytes()).decode()


def heatmap_png(heatmaps: np.ndarray) -> str:
    """(H, W, J) heatmaps -> a data: URI of their fused map as a red-on-black PNG."""
    fused = fuse_heatmaps(heatmaps)
    rgb = np.stack([fused * 255, fused * 60, fused * 40], -1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


@functools.partial(jax.jit, static_argnames="k")
def _neighbour_chunk(rows, x, sq, k):
    d2 = jnp.sum(rows * rows, 1)[:, None] + sq[None, :] - 2.0 * jnp.dot(
        rows, x.T, precision=jax.lax.Precision.HIGHEST)
    return jax.lax.top_k(-d2, k)[1]


def nearest_neighbours(coords: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """(N, P) -> (N, NEIGHBOURS) int32 rows of each sample's nearest others (Euclidean;
    fewer samples than that: padded with -1), in jitted row chunks (never N x N)."""
    x = jnp.asarray(coords, jnp.float32)
    n = len(coords)
    sq = jnp.sum(x * x, 1)
    out = np.full((n, NEIGHBOURS), -1, np.int32)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        rows = np.arange(start, start + chunk) % n
        found = np.asarray(_neighbour_chunk(x[rows], x, sq, min(NEIGHBOURS + 1, n)))[:m]
        other = found != np.arange(start, start + m)[:, None]        # never the sample itself
        first = np.argsort(~other, axis=1, kind="stable")[:, :NEIGHBOURS]
        chosen = np.take_along_axis(found, first, 1)
        out[start:start + m, :chosen.shape[1]] = np.where(
            np.take_along_axis(other, first, 1), chosen, -1)
    return out


def thumbnail_rows(n: int, limit: int, seed: int, keep=()) -> np.ndarray:
    """Which of n samples get a crop thumbnail: all when n <= limit, else a seeded sample of
    `limit` that holds the rows in `keep` (the reference sample, the swap pairs)."""
    if n <= limit:
        return np.arange(n)
    keep = np.unique(np.asarray(keep, np.int64))
    rest = np.setdiff1d(np.arange(n), keep)
    chosen = np.random.default_rng(seed).choice(rest, max(0, limit - len(keep)), replace=False)
    return np.sort(np.concatenate([keep, chosen]))


def write_thumbnails(out: pathlib.Path, split, split_rows: np.ndarray) -> list[str]:
    """Crop thumbnails of `split_rows` in order into out/thumbs/NNN.jpg sheets -> names."""
    (out / "thumbs").mkdir(parents=True, exist_ok=True)
    names, per_sheet = [], SHEET * SHEET
    for s in range(0, len(split_rows), per_sheet):
        crops = split.gather(split_rows[s:s + per_sheet], ("images",))["images"]
        sheet = Image.new("RGB", (SHEET * THUMB, SHEET * THUMB), (128, 128, 128))
        for i, crop in enumerate(crops):
            tile = Image.fromarray(crop).resize((THUMB, THUMB), Image.BILINEAR)
            sheet.paste(tile, ((i % SHEET) * THUMB, (i // SHEET) * THUMB))
        name = f"thumbs/{s // per_sheet:03d}.jpg"
        buf = io.BytesIO()
        sheet.save(buf, format="JPEG", quality=85)
        fileio.write_bytes(out / name, buf.getvalue())
        names.append(name)
    return names


def _keypoints(array: np.ndarray) -> str:
    """(N, J, >= 2) crop-pixel joints -> base64 Int16 of (x, y) in quarter pixels."""
    return b64(np.round(np.asarray(array)[..., :2] * 4), np.int16)


def _colourings(profiled: dict, pck, factored: dict) -> dict:
    """What the map can be coloured by, besides the clusters: descriptors, PCK, factors."""
    out = {name: {"kind": "number", "legend": DESCRIPTORS[name],
                  "values": b64(values, np.float32)}
           for name, values in profiled["described"].items()}
    if pck is not None:
        out["pck"] = {"kind": "number", "legend": "the sample's PCK (thesis)",
                      "values": b64(pck, np.float32)}
    for name, f in factored.items():
        out[f"factor: {name}"] = {"kind": "classes" if f["classes"] else "number",
                                  "classes": f["classes"], "legend": "known factor",
                                  "values": b64(f["values"], np.float32)}
    return out


def write(view, *, walked, swapped: dict, profiled: dict, factored: dict, title: str,
          run: dict, max_thumbnails: int = MAX_THUMBNAILS) -> pathlib.Path:
    """Writes the atlas of one analysed subset (analysis.instrument's SubsetView and the
    sections' results) into REPORT/atlas/SLUG, atomically (a temporary folder renamed);
    -> its index.html."""
    sub, sweep = view.sub, view.sweep
    final = view.report.dir / "atlas" / view.slug
    tmp = fileio.tmp_name(final)
    fileio.remove_tmp(final.parent)                 # what a killed writer left
    n = len(sub.index)
    shown_pairs = swapped["pairs"][:len(swapped["shown"]["swapped"])]
    keep = [walked.reference, *shown_pairs.ravel()]
    thumbed = thumbnail_rows(n, max_thumbnails, view.seed, keep)
    thumb_index = np.full(n, -1, np.int32)
    thumb_index[thumbed] = np.arange(len(thumbed))
    codec = view.steps.codec
    with fileio.cleaned_up(final, tmp):
        tmp.mkdir(parents=True)
        sheets = write_thumbnails(tmp, view.split, sub.index[thumbed])
        frames = {}
        for mode, maps in walked.heatmaps.items():
            xy = walked.keypoints[mode]
            frames[mode] = [[{"png": heatmap_png(maps[i * len(walked.steps) + j]),
                              "keypoints": np.round(xy[i * len(walked.steps) + j], 1).tolist()}
                             for j in range(len(walked.steps))]
                            for i in range(len(walked.components))]
        swap_shown = []
        for i, (a, b) in enumerate(shown_pairs):
            swap_shown.append({"a": int(a), "b": int(b), **{
                name: np.round(np.asarray(codec.decode(maps[i:i + 1])[0][0]), 1).tolist()
                for name, maps in swapped["shown"].items()}})
        data = {
            "title": title, "run": run, "n": n, "crop_size": int(view.split.image_size),
            "skeleton": [list(pair) for pair in SKELETON],
            "heatmap_size": int(codec.heatmap_size),
            "rows": b64(sub.index, np.int32), "image_id": b64(sub.image_id, np.float64),
            "ann_id": b64(sub.ann_id, np.float64),
            "coords": b64(view.coords[:, :2], np.float32),
            "explained": [float(r) for r in view.pca.ratio[:2]],
            "ks": list(sweep.ks), "best_k": int(sweep.best_k),
            "clusters": {str(k): b64(sweep.labels[k], np.uint8) for k in sweep.ks},
            "colourings": _colourings(profiled, sub.pck, factored),
            "truth": b64(np.round(sub.keypoints * [4, 4, 1]), np.int16),
            "predicted": _keypoints(sub.predicted),
            "predicted_without_skips": _keypoints(sub.predicted_without_skips),
            "neighbours": b64(nearest_neighbours(
                view.coords[:, :NEIGHBOUR_COMPONENTS]), np.int32),
            "neighbour_components": int(min(NEIGHBOUR_COMPONENTS, view.coords.shape[1])),
            "thumbs": {"size": THUMB, "per_row": SHEET, "sheets": sheets,
                       "index": b64(thumb_index, np.int32), "count": int(len(thumbed))},
            "walks": {"components": list(map(int, walked.components)),
                      "steps": [float(s) for s in walked.steps],
                      "reference": int(walked.reference), "frames": frames},
            "swap": {"scores": swapped["scores"], "shown": swap_shown},
            "profiles": {str(k): p for k, p in profiled["profiles"].items()},
            "claims": profiled["claims"],
            "factors": {name: {"classes": f["classes"], "ami": f["ami"],
                               "probes": f["probes"]} for name, f in factored.items()},
        }
        fileio.write_bytes(tmp / "data.js", ("window.ATLAS_DATA = " + json.dumps(
            finite(data), separators=(",", ":"), allow_nan=False) + ";\n").encode())
        for name in PAGE_FILES:
            shutil.copyfile(PAGE / name, tmp / name)
        fileio.write_json(tmp / RUN_FILE, run)
        np.save(tmp / "rows.npy", np.asarray(sub.index, np.int64))
        axes = view.pca.components[:, [c - 1 for c in walked.components]].T
        np.savez(tmp / "walk.npz", mean=view.pca.mean.astype(np.float32),
                 axes=axes.astype(np.float32),
                 scales=np.sqrt(view.pca.variances[[c - 1 for c in walked.components]])
                 .astype(np.float32),
                 components=np.asarray(walked.components), reference=walked.reference)
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    return final / "index.html"


def finite(obj):
    """`obj` for JSON: NumPy scalars as numbers, NaN and infinities as null, keys as
    strings."""
    if isinstance(obj, dict):
        return {str(k): finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj
