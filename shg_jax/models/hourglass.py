"""One hourglass: encoder with skip branches, bottleneck residuals, decoder."""

from __future__ import annotations

from typing import Any, Sequence

import jax
from flax import nnx

from shg_jax.models import layers
from shg_jax.models.autoencoder import BottleneckAutoencoder
from shg_jax.models.residual import Residual

#: The layer name of the autoencoder code, accepted wherever a bottleneck index is.
CODE_LAYER = "code"


class Hourglass(nnx.Module):
    """The thesis hourglass (depth 4, 3 bottleneck residuals), NHWC.

    Encoder, for each level i < depth: skip[i] = branch_cov[i](x); x = maxpool2(x);
    x = encoder_residuals[i](x).  Bottleneck: n_bottleneck residuals at the lowest resolution
    (4x4 for a 64x64 input); the optional autoencoder sits after the last of them.
    Decoder, for i < depth-1: x = upsample2(x) + skip[-1-i]; x = decoder_residuals[i](x);
    then a final upsample2(x) + skip[0] with no residual after it (asymmetric, as the thesis
    code is). With skips off the adds are dropped; the parameters stay the same.

    Shapes: (B, H, W, F) -> (B, H, W, F); latent (B, H/2**depth, W/2**depth, F).
    """

    def __init__(self, features: int, mid_features: int, *, depth: int = 4,
                 n_bottleneck: int = 3, residual_skip: str = "conv3x3",
                 autoencoder: BottleneckAutoencoder | None = None,
                 rngs: nnx.Rngs, dtype: Any = None):
        def res():
            return Residual(features, features, mid_features, skip=residual_skip,
                            rngs=rngs, dtype=dtype)

        self.depth = depth
        self.n_bottleneck = n_bottleneck
        self.encoder_residuals = nnx.List([res() for _ in range(depth)])
        self.decoder_residuals = nnx.List([res() for _ in range(depth - 1)])
        self.branch_cov = nnx.List([res() for _ in range(depth)])
        self.bottlenecks = nnx.List([res() for _ in range(n_bottleneck)])
        self.autoencoder = autoencoder

    def _check_layer(self, layer: int | str) -> None:
        if layer == CODE_LAYER:
            if self.autoencoder is None:
                raise ValueError("layer 'code' needs a model with an autoencoder")
        elif not (isinstance(layer, int) and 1 <= layer <= self.n_bottleneck):
            raise ValueError(f"layer must be 1..{self.n_bottleneck} or {CODE_LAYER!r}, "
                             f"got {layer!r}")

    def encode(self, x: jax.Array, layer: int | str = 3
               ) -> tuple[jax.Array, list[jax.Array]]:
        """Runs up to the output of bottleneck residual `layer` (1-based) or to the AE code.

        Returns (latent, skips): latent (B, h, w, F) or (B, code) for 'code'; skips are the
        `depth` skip-branch outputs, highest resolution first, which `decode` needs.
        """
        self._check_layer(layer)
        x, skips = self._contract(x)
        n = self.n_bottleneck if layer == CODE_LAYER else layer
        for residual in self.bottlenecks[:n]:
            x = residual(x)
        if layer == CODE_LAYER:
            x = self.autoencoder.encode(x)
        return x, skips

    def decode(self, latent: jax.Array, skips: Sequence[jax.Array], layer: int | str = 3,
               use_skips: bool = True) -> jax.Array:
        """Continues from `encode(x, layer)`'s output; latent may be edited in between."""
        self._check_layer(layer)
        if layer == CODE_LAYER:
            x = self.autoencoder.decode(latent)
        else:
            x = latent
            for residual in self.bottlenecks[layer:]:
                x = residual(x)
            if self.autoencoder is not None:
                x = self.autoencoder(x)
        return self._expand(x, skips, use_skips)

    def _contract(self, x: jax.Array) -> tuple[jax.Array, list[jax.Array]]:
        skips = []
        for branch, residual in zip(self.branch_cov, self.encoder_residuals):
            skips.append(branch(x))
            x = residual(layers.max_pool2(x))
        return x, skips

    def _expand(self, x: jax.Array, skips: Sequence[jax.Array], use_skips: bool) -> jax.Array:
        for i, residual in enumerate(self.decoder_residuals):
            x = layers.upsample2(x)
            if use_skips:
                x = x + skips[-1 - i]
            x = residual(x)
        x = layers.upsample2(x)
        return x + skips[0] if use_skips else x

    def __call__(self, x: jax.Array, use_skips: bool = True
                 ) -> tuple[jax.Array, list[jax.Array]]:
        """Returns (output (B, H, W, F), the n_bottleneck bottleneck outputs before the AE)."""
        x, skips = self._contract(x)
        bottlenecks = []
        for residual in self.bottlenecks:
            x = residual(x)
            bottlenecks.append(x)
        if self.autoencoder is not None:
            x = self.autoencoder(x)
        return self._expand(x, skips, use_skips), bottlenecks
