"""The heatmap codec of a run: keypoints -> target heatmaps, predicted heatmaps -> keypoints.

One object says, for one config, everything between the model's output and pixels: the
targets the loss and PCK compare against (config.heatmap: the thesis' blurred impulses or
Newell's Gaussians, at input_size / STEM_STRIDE cells a side), the flip test (config.decode:
average with the mirrored crop's prediction, mapped back and moved `flip_shift` cells right)
and the decoding (argmax, optionally Newell's quarter-pixel refinement, mapped to input
pixels). The arithmetic lives in shg_jax.heatmap; this module only binds it to a config.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections

from shg_jax.heatmap import (decode_heatmaps, flip_shift, heatmap_centres, render_heatmaps,
                             unflip_heatmaps)
from shg_jax.models import STEM_STRIDE


@dataclasses.dataclass(frozen=True)
class HeatmapCodec:
    input_size: int                   # crop side S in pixels
    style: str                        # config.heatmap.style
    sigma_visible: float
    sigma_occluded: float
    sigma_newell: float
    flip: bool = False                # the flip test (config.decode.flip)
    subpixel: bool = False            # Newell's quarter-pixel shift (config.decode.subpixel)
    flip_shift: float = 0.0           # cells the flipped-back maps move right

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict,
                    label_offset_x: float = 0.0) -> "HeatmapCodec":
        """The codec of `config`; `label_offset_x` (the training labels' mean offset right of
        the pixels they mark: data.Split or a run's record) sets the flip test's shift unless
        config.decode.flip_shift gives one."""
        hm, decode = config.heatmap, config.decode
        shift = decode.flip_shift
        return cls(input_size=config.model.input_size, style=hm.style,
                   sigma_visible=hm.sigma_visible, sigma_occluded=hm.sigma_occluded,
                   sigma_newell=hm.sigma_newell, flip=bool(decode.flip),
                   subpixel=bool(decode.subpixel),
                   flip_shift=(flip_shift(STEM_STRIDE, label_offset_x) if shift is None
                               else float(shift)))

    @property
    def heatmap_size(self) -> int:
        return self.input_size // STEM_STRIDE

    def annotated(self, keypoints: jax.Array) -> jax.Array:
        """(..., J, 3) crop keypoints -> (..., J) bool: the joints whose target heatmap is
        non-zero (labelled, v > 0, and inside the crop), by the rule `targets` renders with."""
        return heatmap_centres(keypoints, self.input_size, self.heatmap_size)[1]

    def targets(self, keypoints: jax.Array) -> jax.Array:
        """(B, J, 3) crop keypoints with v -> (B, H, W, J) float32 target heatmaps."""
        return render_heatmaps(keypoints, input_size=self.input_size,
                               heatmap_size=self.heatmap_size, style=self.style,
                               sigma_visible=self.sigma_visible,
                               sigma_occluded=self.sigma_occluded,
                               sigma_newell=self.sigma_newell)

    def predict(self, forward: Callable[[jax.Array], jax.Array],
                images: jax.Array) -> jax.Array:
        """The heatmaps of `forward` (uint8 or float crops (B, S, S, 3) -> (..., B, H, W, J)),
        with the flip test when it is on: averaged with the prediction on the mirrored crops,
        mirrored back, left/right swapped and moved `flip_shift` cells right."""
        heatmaps = forward(images)
        if self.flip:
            mirrored = forward(jnp.flip(images, axis=2))
            heatmaps = (heatmaps + unflip_heatmaps(mirrored, self.flip_shift)) / 2
        return heatmaps

    def decode(self, heatmaps: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(..., H, W, J) heatmaps -> keypoints (..., J, 2) in input pixels and peak scores
        (..., J): argmax, with the quarter-pixel shift when subpixel is on."""
        return decode_heatmaps(heatmaps, input_size=self.input_size, subpixel=self.subpixel)
