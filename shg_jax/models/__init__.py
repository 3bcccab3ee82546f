"""Flax NNX models of the thesis: the Stacked Hourglass and its bottleneck autoencoder."""

from shg_jax.models.autoencoder import BottleneckAutoencoder
from shg_jax.models.hourglass import CODE_LAYER, Hourglass
from shg_jax.models.residual import Residual
from shg_jax.models.stacked import (STEM_STRIDE, Head, Merge, Output, StackedHourglass,
                                    ThesisLink,
                                    build_autoencoder, build_model, latent_layer,
                                    latent_layers, latent_shape, model_config)

__all__ = ["BottleneckAutoencoder", "CODE_LAYER", "Head", "Hourglass", "Merge", "Output",
           "Residual", "STEM_STRIDE", "StackedHourglass", "ThesisLink", "build_autoencoder",
           "build_model",
           "latent_layer", "latent_layers", "latent_shape", "model_config"]
