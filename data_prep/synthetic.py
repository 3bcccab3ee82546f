"""A synthetic COCO-format person-keypoint data set of drawn articulated figures, written in
COCO's layout (data_prep.synthesis says what is drawn).

    python -m data_prep.synthetic --out DIR [--train N] [--val M] [--seed S] [--size 256]

`python -m data_prep.coco --coco-root DIR` prepares it unchanged.
"""

from __future__ import annotations

import sys

from data_prep.synthesis import generate
from shg_jax import cli


@cli.command
def main(argv=None) -> int:
    p = cli.parser("python -m data_prep.synthetic", __doc__,
                   "python -m data_prep.synthetic --out ~/data/synthetic --train 2000 --val 300")
    p.add_argument("--out", required=True, help="output folder (COCO layout)")
    p.add_argument("--train", type=cli.whole_number(1), default=2000, help="training images")
    p.add_argument("--val", type=cli.whole_number(1), default=300, help="validation images")
    p.add_argument("--seed", type=cli.whole_number(0), default=0, help="seed of the drawing")
    p.add_argument("--size", type=cli.whole_number(64), default=256,
                   help="longer image side in pixels")
    args = p.parse_args(argv)
    out = generate(args.out, train=args.train, val=args.val, seed=args.seed, size=args.size)
    print(f"wrote {out}: prepare it with python -m data_prep.coco --coco-root {out} "
          f"--out DATA_DIR")
    return 0


if __name__ == "__main__":
    sys.exit(main())
