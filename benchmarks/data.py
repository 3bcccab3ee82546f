"""Data throughput: shard reader images/s and preparation crops/s per worker.

    python -m benchmarks.data [--coco-root DIR] [--images 400] [--workers 1 2]

Without --coco-root it generates synthetic COCO-format photos of COCO's typical size (640 px
on the longer side) in a temporary folder. Prints one line per measurement.
"""

from __future__ import annotations

import pathlib
import tempfile
import time

from data_prep import coco as prep
from data_prep import synthesis
from shg_jax import cli, data


def time_prepare(root: pathlib.Path, out: pathlib.Path, workers: int, limit: int | None
                 ) -> tuple[int, float]:
    args = ["--coco-root", str(root), "--out", str(out), "--workers", str(workers),
            "--test-size", "0", "--overwrite"]
    if limit:
        args += ["--limit", str(limit)]
    start = time.perf_counter()
    assert prep.main(args) == 0
    seconds = time.perf_counter() - start
    meta = data.load_meta(out)
    return sum(s["count"] for s in meta["splits"].values()), seconds


def time_reader(data_dir: pathlib.Path, batch: int, epochs: int) -> tuple[int, float]:
    split = data.Split(data_dir, "train")
    n, start = 0, time.perf_counter()
    for epoch in range(epochs):
        for b in data.prefetch(data.train_batches(split, batch, seed=0, epoch=epoch)):
            n += len(b["images"])
    return n, time.perf_counter() - start


@cli.command
def main(argv=None) -> None:
    p = cli.parser("python -m benchmarks.data", __doc__,
                   "python -m benchmarks.data --images 400 --workers 1 2")
    p.add_argument("--coco-root", help="a COCO-layout folder (default: synthetic photos)")
    p.add_argument("--images", type=cli.whole_number(1), default=400,
                   help="synthetic training images")
    p.add_argument("--limit", type=cli.whole_number(1), default=None,
                   help="images per annotation file")
    p.add_argument("--workers", type=cli.whole_number(1), nargs="+", default=[1, 2],
                   help="decoding processes of data_prep.coco to time")
    p.add_argument("--batch", type=cli.whole_number(1), default=16, help="reader batch size")
    p.add_argument("--epochs", type=cli.whole_number(1), default=3, help="reader epochs timed")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        root = pathlib.Path(args.coco_root) if args.coco_root else synthesis.generate(
            tmp / "coco", train=args.images, val=max(1, args.images // 10), size=640)
        out = tmp / "prepared"
        print(f"source: {root}")
        for workers in args.workers:
            crops, seconds = time_prepare(root, out, workers, args.limit)
            print(f"prepare: workers={workers} {crops} crops in {seconds:.2f} s = "
                  f"{crops / seconds:.0f} crops/s ({crops / seconds / workers:.0f} per worker)")
        n, seconds = time_reader(out, args.batch, args.epochs)
        print(f"reader: batch={args.batch} {n} images in {seconds:.2f} s = "
              f"{n / seconds:.0f} images/s (shuffled, memory-mapped, prefetched)")


if __name__ == "__main__":
    main()
