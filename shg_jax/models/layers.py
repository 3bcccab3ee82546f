"""Layer factories shared by every model: one place for the thesis' initialisation and
BatchNorm settings.

Why not flax's defaults: flax's `glorot_normal` is a *truncated* normal, while the thesis
(PyTorch `nn.init.xavier_normal_`) draws from an untruncated normal with
std = sqrt(2 / (fan_in + fan_out)); `variance_scaling(1.0, "fan_avg", "normal")` is exactly
that. Biases start at zero (PyTorch would draw them uniformly; the thesis code does not touch
them, so this is a documented deviation kept for reproducibility across frameworks).
BatchNorm: PyTorch's momentum 0.1 is flax's 0.9 (flax weights the running average, PyTorch
the new batch); epsilon 1e-5 as in PyTorch.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

#: Untruncated Glorot/Xavier normal: std = sqrt(2 / (fan_in + fan_out)).
glorot_normal_untruncated = nnx.initializers.variance_scaling(1.0, "fan_avg", "normal")

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


def batch_norm(features: int, *, rngs: nnx.Rngs, dtype: Any = None) -> nnx.BatchNorm:
    """BatchNorm over the last (channel) axis; statistics and affine parameters stay float32."""
    return nnx.BatchNorm(features, momentum=BN_MOMENTUM, epsilon=BN_EPSILON, dtype=dtype,
                         param_dtype=jnp.float32, rngs=rngs)


def max_pool2(x: jax.Array) -> jax.Array:
    """2x2 max-pool, stride 2: (B, H, W, C) -> (B, H/2, W/2, C)."""
    return nnx.max_pool(x, window_shape=(2, 2), strides=(2, 2), padding="VALID")


def upsample2(x: jax.Array) -> jax.Array:
    """Nearest-neighbour 2x upsampling: (B, H, W, C) -> (B, 2H, 2W, C)."""
    b, h, w, c = x.shape
    x = jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, 2, w, 2, c))
    return x.reshape(b, 2 * h, 2 * w, c)
