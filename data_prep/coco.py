"""COCO person keypoints -> person crops in memory-mappable NumPy shards.

    python -m data_prep.coco --coco-root DIR --out DIR [--workers N] [--crop-mode thesis]
        [--size 256] [--test-size 5064] [--test-split-by crop] [--seed 0] [--limit N]
        [--shard-size 1024] [--overwrite]

Reads annotations/person_keypoints_{train,val}2017.json and the train2017/ val2017/ image
folders and writes the val, test and train splits (data_prep.prepare says how). A rerun
resumes a killed run from its last complete shard, does nothing on a complete output, and
starts over with --overwrite.
"""

from __future__ import annotations

import os
import sys

from data_prep.prepare import prepare
from shg_jax import cli
from shg_jax import crop as cropping


def parse_args(argv=None):
    p = cli.parser("python -m data_prep.coco", __doc__,
                   "python -m data_prep.coco --coco-root ~/data/coco --out "
                   "~/data/coco_prepared --workers 8")
    p.add_argument("--coco-root", required=True,
                   help="folder with annotations/, train2017/ and val2017/")
    p.add_argument("--out", required=True, help="output folder for the shards")
    p.add_argument("--workers", type=cli.whole_number(1), default=max(1, os.cpu_count() or 1),
                   help="decoding processes")
    p.add_argument("--crop-mode", choices=cropping.CROP_MODES, default="thesis",
                   help="person crop rule: thesis = the thesis' own code (drops persons it "
                   "cannot centre); square = centred square, drops only what cannot fit; "
                   "bbox_pad = 1.25 x COCO box, zero padded")
    p.add_argument("--size", type=cli.whole_number(8), default=256, help="crop side in pixels")
    p.add_argument("--test-size", type=cli.whole_number(0), default=5064,
                   help="crops drawn from train2017 for the test split")
    p.add_argument("--test-split-by", choices=("crop", "image"), default="crop",
                   help="crop: the thesis' draw, crop by crop; image: whole photos, so no "
                   "photo is in train and test")
    p.add_argument("--seed", type=cli.whole_number(0), default=0,
                   help="seed of the test-split draw")
    p.add_argument("--limit", type=cli.whole_number(1), default=None,
                   help="use only the first N images (by id) of each annotation file")
    p.add_argument("--shard-size", type=cli.whole_number(1), default=1024,
                   help="crops per shard (a shard ends at an image boundary)")
    p.add_argument("--overwrite", action="store_true", help="delete and redo a complete or "
                   "unfinished output")
    return p.parse_args(argv)


@cli.command
def main(argv=None) -> int:
    args = parse_args(argv)
    summary = prepare(args.coco_root, args.out, crop_mode=args.crop_mode, size=args.size,
                      test_size=args.test_size, test_split_by=args.test_split_by,
                      seed=args.seed, limit=args.limit, shard_size=args.shard_size,
                      workers=args.workers, overwrite=args.overwrite)
    if summary is None:
        print(f"{args.out} is already complete; nothing to do (--overwrite to redo it)")
        return 0
    for name in ("train", "val", "test"):
        m = summary[name]
        print(f"{name}: {m['count']} crops, {m['persons_seen']} persons seen, dropped "
              f"{m['dropped'] or 'none'}, {m['unreadable_images']} unreadable images")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
