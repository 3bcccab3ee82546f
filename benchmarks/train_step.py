"""Throughput of the compiled training and inference steps on this machine.

    python -m benchmarks.train_step --config=configs/baseline.py [--batch 16,64,256]
        [--dtype float32,bfloat16] [--augment off,on] [--steps 5] [--profile DIR]
        [--config.field=value ...]

For every dtype, batch size (ascending; a dtype stops at the first batch that does not fit
in device memory, which is how "the largest batch that fits" is found) and augmentation (`--augment off,on`:
the train step with config.augment on, beside the plain one) prints one table row:
the train step's trace time (Python tracing and lowering: what a run pays before XLA
compiles), compile time, training and inference images/s, FLOPs per image (XLA's cost analysis of the
lowered train step, i.e. forward + backward + optimizer as XLA counts them, the same on every
backend), the achieved GFLOP/s, XLA's planned memory of the train step (arguments + outputs + temporaries) and the
peak memory so far (device allocator on GPU, process RSS on CPU). Random images and
keypoints: the step's cost does not depend on the pixels. `--profile DIR` writes a trace of
two steps of the first combination that TensorBoard's profile plugin or
https://ui.perfetto.dev opens. The steps run on every local device (data-parallel), as in
training.

Example:
    python -m benchmarks.train_step --config=configs/baseline.py --batch 16,64 \
        --dtype float32,bfloat16
"""

from __future__ import annotations

import os
import resource
import time

from shg_jax import cpu_flags

if __name__ == "__main__":
    cpu_flags.restart_with_hugepage_malloc()    # as main.py: time what training runs

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from shg_jax import cli, placement
from shg_jax.thesis_weights import THESIS_MEAN_RGB
from shg_jax.errors import UserError
from shg_jax.steps import Steps

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", "configs/baseline.py", "Model/training config.")
flags.DEFINE_list("batch", ["16"], "Global batch sizes, ascending.")
flags.DEFINE_integer("steps", 5, "Timed steps (after one warm-up step).")
flags.DEFINE_list("dtype", ["float32"], "Compute dtypes, float32 and/or bfloat16 (params f32).")
flags.DEFINE_string("profile", None, "Write a jax.profiler trace of two train steps here.")
flags.DEFINE_list("augment", ["off"], "config.augment off and/or on: 'off,on' times the "
                  "augmented train step beside the plain one.")

DTYPES = ("float32", "bfloat16")
OUT_OF_MEMORY = ("RESOURCE_EXHAUSTED", "Out of memory", "out of memory")


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
        return f"{stats['peak_bytes_in_use'] / 2**30:.1f} GiB device"
    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GiB RSS"


def planned_memory(compiled) -> float:
    """GiB XLA plans for one call: arguments + outputs + temporaries (aliased buffers once)."""
    m = compiled.memory_analysis()
    if m is None:
        return float("nan")
    total = (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
             - m.alias_size_in_bytes)
    return total / 2**30


def measure(config, dtype: str, batch_size: int, augment: str, profile: str | None) -> str:
    """One table row for the thesis-style train/inference steps at this dtype, batch and
    augmentation."""
    config.batch_size = batch_size
    config.model.dtype = dtype
    config.augment.enabled = augment == "on"
    steps = Steps(config, THESIS_MEAN_RGB)
    state = steps.init_state()
    host = random_batch(batch_size, config.model.input_size)
    batch = placement.shard_batch(host, steps.mesh, keys=("images", "keypoints", "valid"))

    start = time.perf_counter()
    lowered = steps.train_step.trace(state, batch).lower()
    trace_s = time.perf_counter() - start
    # Counted before the backend's passes: XLA:GPU hands convolutions to cuDNN custom calls,
    # which the compiled step's cost analysis counts as nothing (0.6 GFLOP per image there).
    flops = (lowered.cost_analysis() or {}).get("flops", float("nan"))
    start = time.perf_counter()
    train = lowered.compile()
    compile_s = time.perf_counter() - start
    predict = steps.heatmaps_and_targets.lower(state, batch).compile()

    def train_once():
        nonlocal state
        state, loss = train(state, batch)
        loss.block_until_ready()

    train_once()                                                    # warm-up
    if profile:
        with jax.profiler.trace(profile, create_perfetto_trace=True):
            for _ in range(2):
                train_once()
        print(f"trace written to {profile}")
    train_s = timed(train_once, FLAGS.steps)
    jax.block_until_ready(predict(state, batch))
    infer_s = timed(lambda: jax.block_until_ready(predict(state, batch)), FLAGS.steps)
    return (f"| {dtype} | {batch_size} | {augment} | {trace_s:.1f} s | {compile_s:.1f} s | "
            f"{batch_size / train_s:.1f} "
            f"({train_s * 1e3:.0f} ms/step) | {batch_size / infer_s:.1f} | "
            f"{flops / batch_size / 1e9:.1f} | {flops / train_s / 1e9:.0f} | "
            f"{planned_memory(train):.1f} GiB | {peak_memory()} |")


@cli.command
def main(argv) -> int:
    del argv
    dtypes = FLAGS.dtype
    if any(d not in DTYPES for d in dtypes):
        raise UserError(f"--dtype takes {', '.join(DTYPES)}; got {','.join(dtypes)}")
    if any(a not in ("off", "on") for a in FLAGS.augment):
        raise UserError(f"--augment takes off, on; got {','.join(FLAGS.augment)}")
    try:
        batches = sorted(int(b) for b in FLAGS.batch)
    except ValueError:
        raise UserError(f"--batch takes whole numbers; got {','.join(FLAGS.batch)}")
    device = jax.local_devices()[0]
    print(f"device          {jax.local_device_count()} x {device.device_kind} "
          f"({jax.default_backend()}), jax {jax.__version__}")
    print(f"XLA_FLAGS       {os.environ.get('XLA_FLAGS', '')}")
    print(f"GLIBC_TUNABLES  {os.environ.get('GLIBC_TUNABLES', '')}")
    print(f"config          {config_flags.get_config_filename(FLAGS['config'])}, "
          f"{FLAGS.steps} timed steps, matmul/convolution precision "
          f"{FLAGS.config.precision} (--config.precision)")
    print("| dtype | batch | augment | trace | compile | train images/s | inference images/s | GFLOP/image "
          "(XLA) | GFLOP/s | XLA plan | peak memory |", flush=True)
    print("|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
    profile = FLAGS.profile
    for dtype in dtypes:
        fits = True
        for batch_size in batches:
            for augment in FLAGS.augment:
                try:
                    row = measure(FLAGS.config, dtype, batch_size, augment, profile)
                except Exception as e:  # noqa: BLE001 - out of memory ends this dtype's sweep
                    if not any(s in str(e) for s in OUT_OF_MEMORY):
                        raise
                    print(f"| {dtype} | {batch_size} | {augment} | does not fit: "
                          f"{str(e).splitlines()[0][:120]} |", flush=True)
                    fits = False
                    break
                print(row, flush=True)
                profile = None
            if not fits:
                break
    return 0


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_absl_flags)
