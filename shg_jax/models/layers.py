"""Layer factories shared by every model: one place for the thesis' initialisation and
BatchNorm settings.

Why not flax's defaults: flax's `glorot_normal` is a *truncated* normal, while the thesis
(PyTorch `nn.init.xavier_normal_`) draws from an untruncated normal with
std = sqrt(2 / (fan_in + fan_out)); `variance_scaling(1.0, "fan_avg", "normal")` is exactly
that. Biases are made zero here; the thesis (which never touched them) kept PyTorch's default
U(-1/sqrt(fan_in), 1/sqrt(fan_in)), which `pytorch_bias_init` draws after the model is built
(config.model.bias_init="pytorch", the thesis value; "zeros" is flax's habit).
BatchNorm: PyTorch's momentum 0.1 is flax's 0.9 (flax weights the running average, PyTorch
the new batch); epsilon 1e-5 as in PyTorch; PyTorch updates the running variance with the
unbiased batch variance (x n / (n - 1)), flax with the biased one: `BatchNorm` does either
(config.model.bn_running_var="unbiased", the thesis value, or "biased").
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


def glorot_normal_untruncated(key: jax.Array, shape, dtype: Any = jnp.float32) -> jax.Array:
    """Untruncated Glorot/Xavier normal, std = sqrt(2 / (fan_in + fan_out)): the same values
    as `nnx.initializers.variance_scaling(1.0, "fan_avg", "normal")` (threefry numbers the
    draws in row-major order, so a flat draw reshaped is the same draw), but XLA:CPU
    compiles a 1-D draw about 5x faster than a 4-D one, and building a model compiles one
    draw per kernel shape: the thesis model starts seconds sooner, a tiny one 5x sooner."""
    receptive = math.prod(shape[:-2])
    fan_in, fan_out = shape[-2] * receptive, shape[-1] * receptive
    variance = jnp.array(1.0 / ((fan_in + fan_out) / 2), dtype=dtype)
    return (jax.random.normal(key, (math.prod(shape),), dtype) * jnp.sqrt(variance)
            ).reshape(shape)


BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def conv(in_features: int, out_features: int, kernel: int, *, rngs: nnx.Rngs,
         stride: int = 1, dtype: Any = None) -> nnx.Conv:
    """Conv with bias and PyTorch-style symmetric padding `kernel // 2` (NHWC)."""
    pad = kernel // 2
    return nnx.Conv(in_features, out_features, (kernel, kernel), strides=stride,
                    padding=((pad, pad), (pad, pad)), use_bias=True, dtype=dtype,
                    kernel_init=glorot_normal_untruncated,
                    bias_init=nnx.initializers.zeros_init(), rngs=rngs)


def conv_transpose(in_features: int, out_features: int, kernel: int, *, rngs: nnx.Rngs,
                   dtype: Any = None) -> nnx.ConvTranspose:
    """Stride-1 transposed conv keeping the spatial size (PyTorch padding `kernel // 2`)."""
    return nnx.ConvTranspose(in_features, out_features, (kernel, kernel), strides=1,
                             padding="SAME", use_bias=True, dtype=dtype,
                             kernel_init=glorot_normal_untruncated,
                             bias_init=nnx.initializers.zeros_init(), rngs=rngs)


def linear(in_features: int, out_features: int, *, rngs: nnx.Rngs,
           dtype: Any = None) -> nnx.Linear:
    return nnx.Linear(in_features, out_features, use_bias=True, dtype=dtype,
                      kernel_init=glorot_normal_untruncated,
                      bias_init=nnx.initializers.zeros_init(), rngs=rngs)


BIAS_INITS = ("pytorch", "zeros")
BN_RUNNING_VARS = ("unbiased", "biased")


class RunningStat(nnx.BatchStat):
    """nnx.BatchStat whose whole-array update under jit, `stat[...] = new`, is a rebinding.

    Why: flax checks such an update for a change of sharding by reading `new.sharding`; on a
    tracer JAX answers with an AttributeError whose message it builds by walking the trace
    so far (`find_progenitors`). Every BatchNorm updates two statistics, so tracing a train
    step grew quadratically with the model: 211 s for configs/newell.py's 8 stacks on a
    2-core CPU, 2.7 s of a tiny model's 7 s (benchmarks/README.md). Under jit the sharding of
    the result is the step's to set, and a same-shape, same-dtype replace is what flax does
    when its check passes; anything else (eager updates, partial indices) goes to flax."""

    def __setitem__(self, key, value) -> None:
        current = self.get_raw_value()
        if (key is Ellipsis and isinstance(value, jax.core.Tracer)
                and isinstance(current, jax.Array) and value.shape == current.shape
                and value.dtype == current.dtype):
            self.set_value(value)
        else:
            super().__setitem__(key, value)


class BatchNorm(nnx.BatchNorm):
    """nnx.BatchNorm whose running variance can follow PyTorch: in training, with
    `unbiased_running_var`, the running average takes the batch variance x n / (n - 1), n the
    number of values per channel (batch x height x width). Normalisation itself uses the biased
    variance in both frameworks, so only the running statistics (and eval outputs) differ."""

    def __init__(self, *args, unbiased_running_var: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.mean, self.var = RunningStat(self.mean[...]), RunningStat(self.var[...])
        self.unbiased_running_var = unbiased_running_var

    def __call__(self, x, use_running_average: bool | None = None, *, mask=None):
        training = not (self.use_running_average if use_running_average is None
                        else use_running_average)
        old_var = self.var[...]
        y = super().__call__(x, use_running_average, mask=mask)
        if training and self.unbiased_running_var and mask is None:
            axes = tuple(range(x.ndim - 1))
            n = x.size // x.shape[-1]
            batch_var = jnp.var(x.astype(jnp.float32), axis=axes)
            self.var[...] = jax.lax.stop_gradient(
                self.momentum * old_var + (1 - self.momentum) * batch_var * (n / max(n - 1, 1)))
        return y


def batch_norm(features: int, *, rngs: nnx.Rngs, dtype: Any = None) -> BatchNorm:
    """BatchNorm over the last (channel) axis; statistics and affine parameters stay float32."""
    return BatchNorm(features, momentum=BN_MOMENTUM, epsilon=BN_EPSILON, dtype=dtype,
                     param_dtype=jnp.float32, rngs=rngs)


def set_running_var(model: nnx.Module, mode: str) -> None:
    """Every BatchNorm of `model` updates its running variance as `mode` says."""
    if mode not in BN_RUNNING_VARS:
        raise ValueError(f"bn_running_var must be one of {BN_RUNNING_VARS}, got {mode!r}")
    for _, module in nnx.iter_graph(model):
        if isinstance(module, BatchNorm):
            module.unbiased_running_var = mode == "unbiased"


def pytorch_bias_init(model: nnx.Module, seed: int) -> None:
    """Draws every conv/linear bias as PyTorch's default does: U(-b, b), b = 1/sqrt(fan_in),
    fan_in = in_channels x kernel area (Linear: in_features). For a transposed conv PyTorch
    takes fan_in from its weight's second axis, i.e. out_channels x kernel area; so do we.
    Each layer gets its own key, folded in by its position in the module graph."""
    key = jax.random.key(seed)
    layers_ = [m for _, m in nnx.iter_graph(model)
               if isinstance(m, (nnx.Conv, nnx.ConvTranspose, nnx.Linear))
               and m.bias is not None]
    for i, module in enumerate(layers_):
        kernel = module.kernel[...]
        area = int(np.prod(kernel.shape[:-2]))
        fan = kernel.shape[-1] if isinstance(module, nnx.ConvTranspose) else kernel.shape[-2]
        bound = 1.0 / np.sqrt(fan * area)
        bias = module.bias[...]
        module.bias[...] = jax.random.uniform(jax.random.fold_in(key, i), bias.shape,
                                              bias.dtype, -bound, bound)


def max_pool2(x: jax.Array) -> jax.Array:
    """2x2 max-pool, stride 2: (B, H, W, C) -> (B, H/2, W/2, C)."""
    return nnx.max_pool(x, window_shape=(2, 2), strides=(2, 2), padding="VALID")


def upsample2(x: jax.Array) -> jax.Array:
    """Nearest-neighbour 2x upsampling: (B, H, W, C) -> (B, 2H, 2W, C)."""
    b, h, w, c = x.shape
    x = jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, 2, w, 2, c))
    return x.reshape(b, 2 * h, 2 * w, c)
