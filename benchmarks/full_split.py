"""A prepared data folder of the thesis' size made from a small one, to time latent extraction
and the latent study at full scale without downloading COCO.

    python -m benchmarks.full_split --src PREPARED --out BIG [--rows 124040] [--workers 8]

The train split of BIG holds ROWS crops: row i is crop i mod n of SRC's train split, copy
c = i // n of it, mirrored when c is odd (keypoints mirrored and left/right swapped) and its
brightness scaled by a factor between 0.6 and 1.4 that changes with c, so the rows are
distinct images (their latents differ) without drawing 124,040 photos. val and test are
linked to SRC's. The folder is written under a temporary name (shards in parallel) and
renamed when complete, so an interrupted run leaves nothing that looks prepared (the next
run removes its remains). An existing OUT is replaced only with --overwrite.
"""

from __future__ import annotations

import json
import multiprocessing
import pathlib
import shutil

import numpy as np

from shg_jax import cli, data, fileio, shards
from shg_jax.augment import SWAP
from shg_jax.errors import UserError
from shg_jax.progress import Progress


def variant(images: np.ndarray, keypoints: np.ndarray, copy: int, copies: int
            ) -> tuple[np.ndarray, np.ndarray]:
    """Copy number `copy` of (n, S, S, 3) uint8 crops and their (n, 17, 3) keypoints."""
    gain = 0.6 + 0.8 * (copy // 2) / max(1, (copies - 1) // 2)
    images = np.clip(images.astype(np.float32) * gain, 0, 255).astype(np.uint8)
    keypoints = keypoints.copy()
    if copy % 2:
        images = images[:, :, ::-1]
        keypoints = keypoints[:, list(SWAP)]          # x -> S - 1 - x: augment's convention
        labelled = keypoints[..., 2] > 0
        keypoints[..., 0] = np.where(labelled, images.shape[2] - 1 - keypoints[..., 0], 0)
    return images, keypoints


def _write_shard(job: tuple) -> int:
    """Writes shard `index` (rows start..stop of the big split) into OUT/train."""
    src, out, index, start, stop, copies = job
    split = data.Split(src, "train")
    n = len(split)
    rows = np.arange(start, stop)
    arrays = {key: [] for key in split.keys}
    for copy in np.unique(rows // n):
        mine = rows[rows // n == copy] % n
        batch = split.gather(mine, split.keys)
        batch["images"], batch["keypoints"] = variant(batch["images"], batch["keypoints"],
                                                      int(copy), copies)
        for key in arrays:
            arrays[key].append(batch[key])
    folder = pathlib.Path(out) / "train" / shards.shard_name(index)
    folder.mkdir()
    for key, parts in arrays.items():
        np.save(folder / f"{key}.npy",
                np.concatenate(parts).astype(shards.DTYPES.get(key, np.float32)))
    return stop - start


@cli.command
def main(argv=None) -> int:
    p = cli.parser("python -m benchmarks.full_split", __doc__,
                   "python -m benchmarks.full_split --src runs/data --out /tmp/big")
    p.add_argument("--src", required=True, help="a prepared data folder (data_prep.coco)")
    p.add_argument("--out", required=True, help="the folder to write")
    p.add_argument("--rows", type=cli.whole_number(1), default=124040,
                   help="train crops to write (default: the thesis' 124,040)")
    p.add_argument("--shard-size", type=cli.whole_number(1), default=1024, help="crops per shard")
    p.add_argument("--workers", type=cli.whole_number(1),
                   default=max(1, multiprocessing.cpu_count() // 2),
                   help="writing processes")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    args = p.parse_args(argv)
    src, out = pathlib.Path(args.src).resolve(), pathlib.Path(args.out).resolve()
    if min(args.rows, args.shard_size, args.workers) < 1:
        raise UserError("--rows, --shard-size and --workers must be >= 1")
    if out == src or src in out.parents or out in src.parents:
        raise UserError(f"--out {out} overlaps --src {src}; choose a folder outside it")
    if out.exists() and not args.overwrite:
        raise UserError(f"{out} exists; pass --overwrite to replace it, or choose another --out")
    meta_all = data.load_meta(src)
    n = len(data.Split(src, "train"))
    if n == 0:
        raise UserError(f"{src} holds no train crops to copy")
    out.parent.mkdir(parents=True, exist_ok=True)
    fileio.remove_tmp(out.parent)                       # what a killed run left
    tmp = fileio.tmp_name(out)
    copies = -(-args.rows // n)
    with fileio.cleaned_up(out, tmp):
        _write(src, tmp, meta_all, copies, args)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    print(f"{out}: {args.rows} train crops ({copies} copies of {n}), val and test linked")
    return 0


def _write(src: pathlib.Path, out: pathlib.Path, meta_all: dict, copies: int, args) -> None:
    """The whole folder (train shards, split and top-level meta.json, val/test links)."""
    (out / "train").mkdir(parents=True)
    for name in ("val", "test"):
        (out / name).symlink_to(src / name)
    bounds = list(range(0, args.rows, args.shard_size)) + [args.rows]
    jobs = [(str(src), str(out), i, a, b, copies) for i, (a, b) in
            enumerate(zip(bounds[:-1], bounds[1:]))]
    with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
        with Progress(len(jobs), "shards", unit="crops") as progress:
            for count in pool.imap_unordered(_write_shard, jobs):
                progress.update(1, count=count)
    split_meta = json.loads((src / "train" / shards.META).read_text())
    split_meta.update(count=args.rows, kept=args.rows, shards=[
        {"name": shards.shard_name(i), "count": b - a} for _, _, i, a, b, _ in jobs])
    fileio.write_json(out / "train" / shards.META, split_meta)
    meta_all["splits"]["train"].update(count=args.rows, kept=args.rows)
    meta_all["source"] = f"{meta_all['source']} (train: {copies} varied copies)"
    fileio.write_json(out / shards.META, meta_all)


if __name__ == "__main__":
    raise SystemExit(main())
