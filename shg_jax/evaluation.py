"""Evaluation of a model on a prepared split: loss and every PCK of shg_jax.pck (all / v=2
only / limbs only, per joint, the thesis' test protocol), as training validates after every
epoch and `python -m shg_jax.evaluate` reports.

The sums stay on device until the end; every process feeds its slice of each global batch
and the sums are global, so the result is the same for any number of processes.
"""

from __future__ import annotations

import jax
import ml_collections
import numpy as np

from shg_jax import augment, data, pck, placement
from shg_jax.progress import Progress
from shg_jax.skeleton import JOINT_NAMES
from shg_jax.steps import Steps


def evaluate_split(steps: Steps, state, split: data.Split, batch_size: int, *,
                   desc: str | None = None,
                   augment_val: ml_collections.ConfigDict | None = None) -> dict:
    """Every sample of `split` once -> {"loss", "samples", and pck.summarize's keys}.

    Sums stay on device until the end; every process feeds its slice of each global batch,
    and the sums are global, so the result is the same for any number of processes.
    `augment_val` (augment.augment_config ranges): score a rotated/scaled/mirrored copy of
    the split instead, each sample transformed by draws from its index (augment_samples)."""
    batches = data.eval_batches(split, batch_size, process_index=jax.process_index(),
                                process_count=jax.process_count())
    if augment_val is not None:
        batches = _transformed(batches, augment_val)
    total = data.steps_per_epoch(len(split), batch_size, train=False)
    sums = None
    with Progress(total, desc or f"eval {split.name}", unit="img",
                  enabled=jax.process_index() == 0) as progress:
        for batch in data.prefetch(batches, transform=lambda b: placement.shard_batch(b,
                                                                                steps.mesh)):
            out = steps.eval_step(state, batch)
            sums = out if sums is None else pck.add_counts(sums, out)
            progress.update(1, count=batch_size)
    sums = placement.to_host(sums)
    result = pck.summarize({k: v for k, v in sums.items() if "/" in k})
    count = float(sums["count"])
    result["loss"] = float(sums["loss_sum"]) / count if count else float("nan")
    result["count"] = int(count)
    return result


def _transformed(batches, config: ml_collections.ConfigDict):
    """eval_batches' batches with crops and keypoints transformed (float32 crops), each by
    the draws of its split row (the batch's `index`)."""
    transform = jax.jit(lambda images, keypoints, index: augment.augment_samples(
        images, keypoints, index, config))
    for batch in batches:
        images, keypoints = transform(batch["images"], batch["keypoints"], batch["index"])
        yield dict(batch, images=np.asarray(images), keypoints=np.asarray(keypoints))


def format_table(result: dict) -> str:
    lines = [f"{'subset':<10}{'PCK':>8}{'pooled':>9}{'samples':>9}"]
    for s in pck.SUBSETS:
        lines.append(f"{s:<10}{result[f'{s}/pck']:>8.4f}{result[f'{s}/pooled']:>9.4f}"
                     f"{result[f'{s}/samples']:>9}")
    lines.append("the thesis' test protocol (all and v=2 divided by every sample; limbs: mean "
                 "over per-sample limb pairs):")
    lines.append("  " + "  ".join(f"{s} {result[f'thesis_{s}/pck']:.4f}" for s in pck.SUBSETS))
    lines.append(f"loss {result['loss']:.4g} over {result['count']} samples")
    lines.append(f"{'joint':<16}{'PCK':>8}")
    for name, v in zip(JOINT_NAMES, result["all/per_joint"]):
        lines.append(f"{name:<16}{v:>8.4f}")
    return "\n".join(lines)
