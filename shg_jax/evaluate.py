"""Evaluation of a checkpoint: PCK (all / v=2 only / limbs only, per joint) and loss.

    python -m shg_jax.evaluate --workdir DIR [--checkpoint best|latest|best_loss|EPOCH]
        [--split val|test] [--data_dir DIR] [--out FILE.json]

The same evaluation training runs after every epoch, so on `--split val` it reproduces the
numbers training logged for that epoch.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import jax
import ml_collections
import numpy as np

from shg_jax import data, fileio, pck
from shg_jax import sharding as shd
from shg_jax.checkpoint import CheckpointError, Checkpoints
from shg_jax.progress import Progress
from shg_jax.skeleton import JOINT_NAMES
from shg_jax.steps import Steps


def evaluate_split(steps: Steps, state, split: data.Split, batch_size: int, *,
                   desc: str | None = None) -> dict:
    """Every sample of `split` once -> {"loss", "samples", and pck.summarize's keys}.

    Sums stay on device until the end; every process feeds its slice of each global batch,
    and the sums are global, so the result is the same for any number of processes."""
    batches = data.eval_batches(split, batch_size, process_index=jax.process_index(),
                                process_count=jax.process_count())
    total = data.steps_per_epoch(len(split), batch_size, train=False)
    sums = None
    with Progress(total, desc or f"eval {split.name}", unit="img",
                  enabled=jax.process_index() == 0) as progress:
        for batch in data.prefetch(batches, transform=lambda b: shd.shard_batch(b,
                                                                                steps.mesh)):
            out = steps.eval_step(state, batch)
            sums = out if sums is None else pck.add_counts(sums, out)
            progress.update(1, count=batch_size)
    sums = shd.to_host(sums)
    result = pck.summarize({k: v for k, v in sums.items() if "/" in k})
    count = float(sums["count"])
    result["loss"] = float(sums["loss_sum"]) / count if count else float("nan")
    result["count"] = int(count)
    return result


def format_table(result: dict) -> str:
    lines = [f"{'subset':<10}{'PCK':>8}{'pooled':>9}{'samples':>9}"]
    for s in pck.SUBSETS:
        lines.append(f"{s:<10}{result[f'{s}/pck']:>8.4f}{result[f'{s}/pooled']:>9.4f}"
                     f"{result[f'{s}/samples']:>9}")
    lines.append(f"loss {result['loss']:.4g} over {result['count']} samples")
    lines.append(f"{'joint':<16}{'PCK':>8}")
    for name, v in zip(JOINT_NAMES, result["all/per_joint"]):
        lines.append(f"{name:<16}{v:>8.4f}")
    return "\n".join(lines)


def load_run(workdir, checkpoint: str = "best", data_dir: str | None = None):
    """A trained run -> (config, steps, state, record) for evaluation or analysis."""
    ckpts = Checkpoints(workdir, read_only=True)
    kind, step = ckpts.find(checkpoint)
    record = ckpts.record(kind, step)
    config = ml_collections.ConfigDict(record["config"])
    if data_dir:
        config.data_dir = str(data_dir)
    mean = record.get("mean_rgb") or data.load_meta(config.data_dir)["mean_rgb"]
    steps = Steps(config, mean)
    state, record = ckpts.restore(kind, step, steps.init_state())
    return config, steps, state, record


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m shg_jax.evaluate",
                                description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--workdir", required=True, help="a training run's folder")
    p.add_argument("--checkpoint", default="best",
                   help="best | latest | best_loss | an epoch number")
    p.add_argument("--split", default="val", choices=("val", "test", "train"))
    p.add_argument("--data_dir", help="prepared data (default: the run's config.data_dir)")
    p.add_argument("--batch_size", type=int, help="default: the run's eval_batch_size")
    p.add_argument("--out", help="JSON output (default WORKDIR/eval/SPLIT-CHECKPOINT.json)")
    args = p.parse_args(argv)
    try:
        config, steps, state, record = load_run(args.workdir, args.checkpoint, args.data_dir)
        split = data.Split(config.data_dir, args.split)
    except (CheckpointError, data.DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    result = evaluate_split(steps, state, split, args.batch_size or config.eval_batch_size)
    result.update(checkpoint=args.checkpoint, epoch=record["epoch"], split=args.split,
                  global_step=record["global_step"])
    print(f"{args.workdir}: checkpoint {args.checkpoint} (epoch {record['epoch']}), "
          f"split {args.split}")
    print(format_table(result))
    out = pathlib.Path(args.out or pathlib.Path(args.workdir) / "eval" /
                       f"{args.split}-{args.checkpoint}.json")
    if jax.process_index() == 0:
        out.parent.mkdir(parents=True, exist_ok=True)
        fileio.write_json(out, json.loads(json.dumps(result, default=_jsonable)))
        print(f"wrote {out}")
    return 0


def _jsonable(x):
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(type(x))


if __name__ == "__main__":
    sys.exit(main())
