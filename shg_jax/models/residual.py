"""The pre-activation residual block of the thesis (and of Newell et al. 2016)."""

from __future__ import annotations

from typing import Any

import jax
from flax import nnx

from shg_jax.models import layers

RESIDUAL_SKIPS = ("conv3x3", "identity")


class Residual(nnx.Module):
    """BN-ReLU-conv1x1(mid) -> BN-ReLU-conv3x3(mid) -> BN-ReLU-conv1x1(out), plus a skip branch.

    `skip="conv3x3"` (thesis code): the skip branch is always a 3x3 conv with bias on the raw
    input, even when in == out; these convs hold most of the thesis model's 14.5 M parameters.
    `skip="identity"` (Newell): identity, or a 1x1 conv when the channel counts differ.

    Attribute names follow the thesis' PyTorch module (input_bn, conv1, bn1, conv2, bn2,
    conv3, branch_cov) so that weight conversion is a rename.

    Shapes: (B, H, W, in_features) -> (B, H, W, out_features).
    """

    def __init__(self, in_features: int, out_features: int, mid_features: int, *,
                 skip: str = "conv3x3", rngs: nnx.Rngs, dtype: Any = None):
        if skip not in RESIDUAL_SKIPS:
            raise ValueError(f"residual_skip must be one of {RESIDUAL_SKIPS}, got {skip!r}")
        self.input_bn = layers.batch_norm(in_features, rngs=rngs, dtype=dtype)
        self.conv1 = layers.conv(in_features, mid_features, 1, rngs=rngs, dtype=dtype)
        self.bn1 = layers.batch_norm(mid_features, rngs=rngs, dtype=dtype)
        self.conv2 = layers.conv(mid_features, mid_features, 3, rngs=rngs, dtype=dtype)
        self.bn2 = layers.batch_norm(mid_features, rngs=rngs, dtype=dtype)
        self.conv3 = layers.conv(mid_features, out_features, 1, rngs=rngs, dtype=dtype)
        if skip == "conv3x3":
            self.branch_cov = layers.conv(in_features, out_features, 3, rngs=rngs, dtype=dtype)
        elif in_features != out_features:
            self.branch_cov = layers.conv(in_features, out_features, 1, rngs=rngs, dtype=dtype)
        else:
            self.branch_cov = None

    def __call__(self, x: jax.Array) -> jax.Array:
        y = self.conv1(nnx.relu(self.input_bn(x)))
        y = self.conv2(nnx.relu(self.bn1(y)))
        y = self.conv3(nnx.relu(self.bn2(y)))
        skip = x if self.branch_cov is None else self.branch_cov(x)
        return y + skip
