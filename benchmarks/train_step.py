"""Throughput of the compiled training and inference steps on this machine.

    python -m benchmarks.train_step --config=configs/baseline.py [--batch 16] [--steps 5]
        [--dtype float32|bfloat16] [--profile DIR] [--config.field=value ...]

Prints compile time, training and inference images/s, FLOPs per image (XLA's cost analysis
of the compiled train step, i.e. forward + backward + optimizer as XLA counts them), the
achieved GFLOP/s, and peak memory (device allocator on GPU, process RSS on CPU). Random
images and keypoints: the step's cost does not depend on the pixels. `--profile DIR` writes
a trace of two steps that TensorBoard's profile plugin or https://ui.perfetto.dev opens.
The steps run on every local device (data-parallel), as in training.
"""

from __future__ import annotations

import os
import resource
import time

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from shg_jax import placement
from shg_jax.convert import THESIS_MEAN_RGB
from shg_jax.steps import Steps

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", "configs/baseline.py", "Model/training config.")
flags.DEFINE_integer("batch", 16, "Global batch size.")
flags.DEFINE_integer("steps", 5, "Timed steps (after one warm-up step).")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype (params f32).")
flags.DEFINE_string("profile", None, "Write a jax.profiler trace of two train steps here.")


def random_batch(batch: int, size: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, size, (batch, 17, 2))
    return {"images": rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8),
            "keypoints": np.concatenate([xy, np.full((batch, 17, 1), 2.0)], -1)
                           .astype(np.float32),
            "valid": np.ones(batch, bool)}


def timed(fn, n: int) -> float:
    """Seconds per call of fn() (fn blocks until its result is ready)."""
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n


def peak_memory() -> str:
    stats = jax.local_devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return f"{stats['peak_bytes_in_use'] / 2**30:.2f} GiB (device peak)"
    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB (process RSS)"


def main(argv) -> None:
    del argv
    config = FLAGS.config
    config.batch_size = FLAGS.batch
    config.model.dtype = FLAGS.dtype
    steps = Steps(config, THESIS_MEAN_RGB)
    state = steps.init_state()
    host = random_batch(FLAGS.batch, config.model.input_size)
    batch = placement.shard_batch(host, steps.mesh, keys=("images", "keypoints", "valid"))

    start = time.perf_counter()
    train = steps.train_step.lower(state, batch).compile()
    compile_s = time.perf_counter() - start
    flops = (train.cost_analysis() or {}).get("flops", float("nan"))
    predict = steps.heatmaps_and_targets.lower(state, batch).compile()

    def train_once():
        nonlocal state
        state, loss = train(state, batch)
        loss.block_until_ready()

    train_once()                                                    # warm-up
    if FLAGS.profile:
        with jax.profiler.trace(FLAGS.profile, create_perfetto_trace=True):
            for _ in range(2):
                train_once()
        print(f"trace written to {FLAGS.profile}")
    train_s = timed(train_once, FLAGS.steps)
    jax.block_until_ready(predict(state, batch))
    infer_s = timed(lambda: jax.block_until_ready(predict(state, batch)), FLAGS.steps)

    device = jax.local_devices()[0]
    print(f"device          {jax.local_device_count()} x {device.device_kind} "
          f"({jax.default_backend()}), jax {jax.__version__}")
    print(f"XLA_FLAGS       {os.environ.get('XLA_FLAGS', '')}")
    print(f"config          {config_flags.get_config_filename(FLAGS['config'])}, "
          f"batch {FLAGS.batch}, {FLAGS.dtype}")
    print(f"compile         {compile_s:.1f} s (train step)")
    print(f"train           {FLAGS.batch / train_s:.2f} images/s ({train_s * 1e3:.0f} ms/step)")
    print(f"inference       {FLAGS.batch / infer_s:.2f} images/s")
    print(f"FLOPs/image     {flops / FLAGS.batch / 1e9:.1f} GFLOP per train step (XLA)")
    print(f"achieved        {flops / train_s / 1e9:.0f} GFLOP/s (train step)")
    print(f"peak memory     {peak_memory()}")


if __name__ == "__main__":
    app.run(main)
