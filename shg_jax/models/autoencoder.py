"""The bottleneck autoencoder of thesis §7 (code AE.py)."""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from shg_jax.models import layers


class BottleneckAutoencoder(nnx.Module):
    """Convolutional autoencoder on the hourglass latent.

    Encoder: conv3x3 in->c1->c2->c3 (ReLU after each), flatten (c3*h*w) -> Linear(code) -> ReLU.
    Decoder: Linear(code -> c3*h*w) -> ReLU -> reshape -> transposed conv3x3 c3->c2->c1->in,
    ReLU after each, including the last (as in the thesis code, so decoded latents are >= 0).
    The flatten uses PyTorch's (C, H, W) order so that the thesis' Linear weights carry over by
    a transpose only.

    Shapes: latent (B, h, w, in_features) -> code (B, code_size) -> latent (B, h, w, in_features).
    Thesis: in 256, channels (192, 128, 64), h = w = 4, code 50: 1,578,994 parameters.
    """

    def __init__(self, in_features: int = 256, channels: Sequence[int] = (192, 128, 64),
                 code_size: int = 50, spatial: int = 4, *, rngs: nnx.Rngs, dtype: Any = None):
        widths = (in_features, *channels)
        self.spatial = spatial
        self.channels = tuple(channels)
        self.encoder = nnx.List([layers.conv(a, b, 3, rngs=rngs, dtype=dtype)
                                 for a, b in zip(widths[:-1], widths[1:])])
        flat = channels[-1] * spatial * spatial
        self.encoder_linear = layers.linear(flat, code_size, rngs=rngs, dtype=dtype)
        self.decoder_linear = layers.linear(code_size, flat, rngs=rngs, dtype=dtype)
        rev = widths[::-1]
        self.decoder = nnx.List([layers.conv_transpose(a, b, 3, rngs=rngs, dtype=dtype)
                                 for a, b in zip(rev[:-1], rev[1:])])

    def encode(self, x: jax.Array) -> jax.Array:
        """(B, h, w, C) -> (B, code_size)."""
        for conv in self.encoder:
            x = nnx.relu(conv(x))
        x = jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)  # PyTorch (C, H, W) flatten
        return nnx.relu(self.encoder_linear(x))

    def decode(self, code: jax.Array) -> jax.Array:
        """(B, code_size) -> (B, h, w, C)."""
        x = nnx.relu(self.decoder_linear(code))
        x = x.reshape(x.shape[0], self.channels[-1], self.spatial, self.spatial)
        x = jnp.transpose(x, (0, 2, 3, 1))
        for conv in self.decoder:
            x = nnx.relu(conv(x))
        return x

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.decode(self.encode(x))
