"""A grid of prepared crops with their stored skeletons: how a user checks data by eye.

    python -m data_prep.preview DATA_DIR/train [--n 16] [--out grid.png] [--seed 0]

Visible joints (v=2) are filled dots, occluded ones (v=1) rings; left limbs orange, right
blue. Each tile is labelled with its COCO image and annotation ids.
"""

from __future__ import annotations

import pathlib
import sys

import numpy as np

from shg_jax import cli, data
from shg_jax.draw import crop_grid
from shg_jax.fileio import tmp_name


@cli.command
def main(argv=None) -> int:
    p = cli.parser("python -m data_prep.preview", __doc__,
                   "python -m data_prep.preview ~/data/coco_prepared/train --n 16 --out "
                   "train_grid.png")
    p.add_argument("split_dir", help="a prepared split folder, e.g. DATA_DIR/train")
    p.add_argument("--n", type=cli.whole_number(1), default=16, help="crops to show")
    p.add_argument("--out", default="grid.png", help="output PNG")
    p.add_argument("--seed", type=cli.whole_number(0), default=0,
                   help="which random crops to show")
    args = p.parse_args(argv)
    split_dir = pathlib.Path(args.split_dir)
    split = data.Split(split_dir.parent, split_dir.name)
    if not len(split):
        raise cli.ArgumentError(f"{split_dir} holds no crops; preview another split")
    rng = np.random.default_rng(args.seed)
    indices = np.sort(rng.choice(len(split), size=min(args.n, len(split)), replace=False))
    out = pathlib.Path(args.out)
    batch = split.gather(indices)
    labels = [f"img {i} ann {a}" for i, a in zip(batch["image_id"], batch["ann_id"])]
    tmp = tmp_name(out)
    crop_grid(batch["images"], batch["keypoints"], labels).save(tmp, format="PNG")
    tmp.replace(out)
    print(f"wrote {out} ({len(indices)} crops of {len(split)} in {split_dir})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
