"""Model summary: parameters per module, total, and XLA's FLOP count of the forward pass.

    python -m shg_jax.models --config=configs/baseline.py [--config.model.n_stacks=2]

Example:
    python -m shg_jax.models --config=configs/baseline.py --config.model.n_stacks=2
"""

from __future__ import annotations

import collections
import time

import jax
import jax.numpy as jnp
from absl import app, flags
from flax import nnx
from ml_collections import config_flags

from shg_jax import cli
from shg_jax.models import build_model

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file with a `model` section.",
                                          lock_config=True)
_FLOPS = flags.DEFINE_bool("flops", True, "Compile the forward pass and report XLA's FLOPs.")

#: Containers whose children are reported one level deeper.
_CONTAINERS = ("hourglasses", "heads", "merges")


def parameter_table(model: nnx.Module) -> list[tuple[str, int]]:
    """Parameter counts grouped by module: top-level modules, and inside each stack's
    hourglass by block (encoder_residuals, branch_cov, bottlenecks, ...), sorted by name."""
    counts: dict[str, int] = collections.OrderedDict()
    for path, leaf in jax.tree_util.tree_flatten_with_path(nnx.state(model, nnx.Param))[0]:
        keys = [str(getattr(k, "key", getattr(k, "idx", k))) for k in path]
        depth = 3 if keys[0] in _CONTAINERS else 1
        name = ".".join(keys[:depth])
        counts[name] = counts.get(name, 0) + leaf.size
    return list(counts.items())


def forward_flops(model: nnx.Module, input_size: int) -> tuple[float, float]:
    """FLOPs of one image's forward pass (eval mode) from XLA's cost analysis of the compiled
    function, and the compile time in seconds."""
    graphdef, state = nnx.split(model)

    def forward(state, images):
        return nnx.merge(graphdef, state)(images)

    images = jax.ShapeDtypeStruct((1, input_size, input_size, 3), jnp.float32)
    start = time.perf_counter()
    compiled = jax.jit(forward).lower(state, images).compile()
    seconds = time.perf_counter() - start
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost["flops"]), seconds


@cli.command
def main(argv) -> int:
    del argv
    cfg = _CONFIG.value.model
    # Built for real: a few seconds and ~4 bytes per parameter, where nnx.eval_shape took
    # minutes over configs/newell.py's 8 stacks (75 s without the bias init, 148 s with).
    model = build_model(cfg)
    model.eval()
    rows = parameter_table(model)
    width = max(len(name) for name, _ in rows) + 2
    print(f"StackedHourglass: {cfg.n_stacks} stack(s), depth {cfg.depth}, "
          f"{cfg.features} features, residual skip {cfg.residual_skip}, "
          f"autoencoder {'on' if cfg.autoencoder else 'off'}, input {cfg.input_size}px")
    print(f"{'module':<{width}}{'parameters':>14}")
    for name, n in rows:
        print(f"{name:<{width}}{n:>14,}")
    print(f"{'total':<{width}}{sum(n for _, n in rows):>14,}")
    if _FLOPS.value:
        flops, seconds = forward_flops(model, cfg.input_size)
        print(f"forward FLOPs per image (XLA cost analysis): {flops / 1e9:.2f} GFLOP "
              f"(compiled in {seconds:.1f} s on {jax.devices()[0].platform})")
    return 0


if __name__ == "__main__":
    flags.mark_flag_as_required("config")
    app.run(main, flags_parser=cli.parse_absl_flags)
