"""The Stacked Hourglass network: stem, n hourglasses with heads, Newell's merges."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from shg_jax.models import layers
from shg_jax.models.autoencoder import BottleneckAutoencoder
from shg_jax.models.hourglass import CODE_LAYER, Hourglass
from shg_jax.models.residual import Residual


HEADS = ("thesis", "newell")
#: How stacks follow one another (model.stacking): the thesis' SHG.py link, supervised at the
#: last stack only, or Newell's merge with a head and a loss at every stack.
STACKINGS = ("thesis", "newell")


class Head(nnx.Module):
    """Residual -> conv1x1 F->W -> BN -> ReLU -> conv1x1 W->J.

    `style="thesis"` (the thesis' head): W = J, so every heatmap is a mix of 17 rectified
    maps, and the merge takes the residual's features. `style="newell"` (an extension: Newell's
    `lin` layer): W = F, the heatmaps are read from F rectified maps, and the merge takes them
    (pose-hg-train's hg.lua). Same attribute names; only the widths differ.

    Returns (heatmaps (B, H, W, J), features (B, H, W, F) for the merge).
    """

    def __init__(self, features: int, mid_features: int, n_joints: int, *,
                 skip: str, style: str = "thesis", rngs: nnx.Rngs, dtype: Any = None):
        if style not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {style!r}")
        width = n_joints if style == "thesis" else features
        self.newell = style == "newell"
        self.last_res = Residual(features, features, mid_features, skip=skip,
                                 rngs=rngs, dtype=dtype)
        self.last_conv_1 = layers.conv(features, width, 1, rngs=rngs, dtype=dtype)
        self.bn_last = layers.batch_norm(width, rngs=rngs, dtype=dtype)
        self.last_conv_2 = layers.conv(width, n_joints, 1, rngs=rngs, dtype=dtype)

    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        features = self.last_res(x)
        y = nnx.relu(self.bn_last(self.last_conv_1(features)))
        return self.last_conv_2(y), y if self.newell else features


class Merge(nnx.Module):
    """Newell's link between stacks: next input = x + conv1x1(features) + conv1x1(heatmaps)."""

    def __init__(self, features: int, n_joints: int, *, rngs: nnx.Rngs, dtype: Any = None):
        self.features = layers.conv(features, features, 1, rngs=rngs, dtype=dtype)
        self.heatmaps = layers.conv(n_joints, features, 1, rngs=rngs, dtype=dtype)

    def __call__(self, x, features, heatmaps):
        return x + self.features(features) + self.heatmaps(heatmaps)


class ThesisLink(nnx.Module):
    """The thesis' link between stacks (SHG.py): the hourglass' output y through a residual
    and a 1x1 conv + ReLU, a prediction branch (1x1 F->J, ReLU, 1x1 J->F, ReLU) and a second
    1x1 conv + ReLU; the next input is that + the prediction branch + this stack's input.
    No head, no heatmaps: the thesis supervises the last stack only.

    Its code never ran with more than one stack: SHG.forward assigns the hourglass' (output,
    bottlenecks) tuple to x and hands the tuple on; this is the computation it spells out."""

    def __init__(self, features: int, mid_features: int, n_joints: int, *, skip: str,
                 rngs: nnx.Rngs, dtype: Any = None):
        self.post_res = Residual(features, features, mid_features, skip=skip, rngs=rngs,
                                 dtype=dtype)
        self.post_conv_1 = layers.conv(features, features, 1, rngs=rngs, dtype=dtype)
        self.post_conv_2 = layers.conv(features, features, 1, rngs=rngs, dtype=dtype)
        self.pre_pred_conv = layers.conv(features, n_joints, 1, rngs=rngs, dtype=dtype)
        self.post_pred_conv = layers.conv(n_joints, features, 1, rngs=rngs, dtype=dtype)

    def __call__(self, x: jax.Array, y: jax.Array) -> jax.Array:
        """(stack input x, hourglass output y), both (B, H, W, F) -> the next stack's input."""
        z = nnx.relu(self.post_conv_1(self.post_res(y)))
        prediction = nnx.relu(self.post_pred_conv(nnx.relu(self.pre_pred_conv(z))))
        return nnx.relu(self.post_conv_2(z)) + x + prediction


class Output(NamedTuple):
    heatmaps: jax.Array          # (supervised stacks, B, H/4, W/4, n_joints), last stack last
    bottlenecks: tuple           # n_bottleneck arrays (B, h, w, F) of the last hourglass


class StackedHourglass(nnx.Module):
    """Stem -> [hourglass -> head (-> merge)] x n_stacks, NHWC.

    With stacking="thesis" only the last hourglass has a head: the stacks before it are
    linked by the thesis' ThesisLink and give no heatmaps; with "newell" every stack has a
    head and Newell's Merge feeds its heatmaps and features to the next.

    Stem (thesis): conv7x7/2 3->stem_features, BN, ReLU, Residual -> maxpool2 -> Residual ->
    Residual, i.e. (B, 256, 256, 3) -> (B, 64, 64, features). The first stem residual maps
    stem_features -> features (with stem_features=64 this is a simplification of Newell's
    64->128->128->256 stem).

    The autoencoder, when enabled, sits after the last bottleneck residual of the last
    hourglass (thesis §7), or of every hourglass with `autoencoder_every_stack`.
    """

    def __init__(self, *, n_stacks: int = 1, depth: int = 4, n_bottleneck: int = 3,
                 features: int = 256, mid_features: int = 128, stem_features: int = 256,
                 residual_skip: str = "conv3x3", n_joints: int = 17,
                 use_skip_connections: bool = True, input_size: int = 256,
                 autoencoder: bool = False, ae_channels=(192, 128, 64), ae_code_size: int = 50,
                 autoencoder_every_stack: bool = False, head: str = "thesis",
                 stacking: str = "thesis", dtype: Any = None, rngs: nnx.Rngs):
        if stacking not in STACKINGS:
            raise ValueError(f"stacking must be one of {STACKINGS}, got {stacking!r}")
        latent_size = input_size // STEM_STRIDE // 2 ** depth
        if latent_size < 1 or input_size % (STEM_STRIDE * 2 ** depth):
            raise ValueError(f"input_size {input_size} must be a multiple of "
                             f"{STEM_STRIDE} * 2**depth = {STEM_STRIDE * 2 ** depth}")
        self.n_stacks = n_stacks
        self.newell_stacking = stacking == "newell"
        self.use_skip_connections = use_skip_connections
        self.pre_conv1 = layers.conv(3, stem_features, 7, stride=2, rngs=rngs, dtype=dtype)
        self.bn_pre = layers.batch_norm(stem_features, rngs=rngs, dtype=dtype)
        res = dict(skip=residual_skip, rngs=rngs, dtype=dtype)
        self.pre_residual1 = Residual(stem_features, features, mid_features, **res)
        self.pre_residual2 = Residual(features, features, mid_features, **res)
        self.pre_residual3 = Residual(features, features, mid_features, **res)

        def make_ae(stack):
            if not autoencoder or (stack < n_stacks - 1 and not autoencoder_every_stack):
                return None
            return BottleneckAutoencoder(features, tuple(ae_channels), ae_code_size,
                                         latent_size, rngs=rngs, dtype=dtype)

        self.hourglasses = nnx.List([
            Hourglass(features, mid_features, depth=depth, n_bottleneck=n_bottleneck,
                      residual_skip=residual_skip, autoencoder=make_ae(s), rngs=rngs,
                      dtype=dtype)
            for s in range(n_stacks)])
        n_heads = n_stacks if self.newell_stacking else 1
        self.heads = nnx.List([Head(features, mid_features, n_joints, style=head, **res)
                               for _ in range(n_heads)])
        self.merges = nnx.List([
            Merge(features, n_joints, rngs=rngs, dtype=dtype) if self.newell_stacking
            else ThesisLink(features, mid_features, n_joints, **res)
            for _ in range(n_stacks - 1)])

    def stem(self, images: jax.Array) -> jax.Array:
        """(B, S, S, 3) normalised images -> (B, S/4, S/4, features)."""
        x = nnx.relu(self.bn_pre(self.pre_conv1(images)))
        x = layers.max_pool2(self.pre_residual1(x))
        return self.pre_residual3(self.pre_residual2(x))

    def _skips(self, use_skips: bool | None) -> bool:
        return self.use_skip_connections if use_skips is None else use_skips

    def _to_last_stack(self, images, use_skips):
        """Runs every stack but the last; returns the last hourglass' input and the heatmaps
        of the stacks before it (none with the thesis' stacking)."""
        x = self.stem(images)
        heatmaps = []
        for i, (hourglass, merge) in enumerate(zip(self.hourglasses[:-1], self.merges)):
            y, _ = hourglass(x, use_skips)
            if self.newell_stacking:
                hm, features = self.heads[i](y)
                heatmaps.append(hm)
                x = merge(x, features, hm)
            else:
                x = merge(x, y)
        return x, heatmaps

    def forward(self, images: jax.Array, *, use_skips: bool | None = None) -> Output:
        """The supervised stacks' heatmaps (every stack with Newell's stacking, the last
        with the thesis') and the last hourglass' bottleneck outputs.

        `use_skips` overrides the config's `use_skip_connections` for this call only (the
        thesis' skip ablation: same weights, skip adds dropped).
        """
        use_skips = self._skips(use_skips)
        x, heatmaps = self._to_last_stack(images, use_skips)
        y, bottlenecks = self.hourglasses[-1](x, use_skips)
        heatmaps.append(self.heads[-1](y)[0])
        return Output(jnp.stack(heatmaps), tuple(bottlenecks))

    def __call__(self, images: jax.Array, *, use_skips: bool | None = None) -> jax.Array:
        """(B, S, S, 3) -> heatmaps of the last stack (B, S/4, S/4, n_joints)."""
        return self.forward(images, use_skips=use_skips).heatmaps[-1]

    def encode(self, images: jax.Array, layer: int | str = 3, *,
               use_skips: bool | None = None) -> tuple[jax.Array, list[jax.Array]]:
        """images -> (latent of the last hourglass after bottleneck residual `layer` (1-based)
        or its autoencoder code for layer='code', skip features that `decode` needs)."""
        x, _ = self._to_last_stack(images, self._skips(use_skips))
        return self.hourglasses[-1].encode(x, layer)

    def decode(self, latent: jax.Array, skips, layer: int | str = 3, *,
               use_skips: bool | None = None) -> jax.Array:
        """(latent, skips) from `encode` (latent possibly edited) -> last-stack heatmaps."""
        y = self.hourglasses[-1].decode(latent, skips, layer, self._skips(use_skips))
        return self.heads[-1](y)[0]


#: The stem halves the input twice (7x7 conv stride 2, max-pool) before the first hourglass:
#: heatmaps have input_size / STEM_STRIDE cells a side.
STEM_STRIDE = 4

MODEL_FIELDS = ("n_stacks", "depth", "n_bottleneck", "features", "mid_features",
                "stem_features", "residual_skip", "n_joints", "use_skip_connections",
                "input_size", "autoencoder", "ae_channels", "ae_code_size",
                "autoencoder_every_stack", "head", "stacking", "dtype")



def model_config() -> ml_collections.ConfigDict:
    """The thesis model (1 stack, conv3x3 residual skips, 256 features, no autoencoder)."""
    return ml_collections.ConfigDict(dict(
        n_stacks=1, depth=4, n_bottleneck=3, features=256, mid_features=128,
        stem_features=256, residual_skip="conv3x3", n_joints=17, use_skip_connections=True,
        input_size=256, autoencoder=False, ae_channels=(192, 128, 64), ae_code_size=50,
        autoencoder_every_stack=False, head="thesis", stacking="thesis", dtype="float32",
        bias_init="pytorch",                 # PyTorch's U(+-1/sqrt(fan_in)); or "zeros"
        bn_running_var="unbiased"))          # PyTorch's n/(n-1) update; or "biased" (flax)


def build_model(config: ml_collections.ConfigDict, seed: int = 0) -> StackedHourglass:
    """Builds a StackedHourglass from a `model_config()`-shaped ConfigDict."""
    kwargs = {k: config[k] for k in MODEL_FIELDS}
    kwargs["ae_channels"] = tuple(kwargs["ae_channels"])
    kwargs["dtype"] = None if kwargs["dtype"] == "float32" else jnp.dtype(kwargs["dtype"])
    model = StackedHourglass(**kwargs, rngs=nnx.Rngs(seed))
    _init_biases(model, config, seed)
    layers.set_running_var(model, config.bn_running_var)
    return model


def build_autoencoder(config: ml_collections.ConfigDict, seed: int = 0
                      ) -> BottleneckAutoencoder:
    """The bottleneck autoencoder alone (the autoencoder's stage 1) for a model of `config`,
    initialised as every module the thesis built: Glorot-normal kernels and, with
    bias_init "pytorch", PyTorch's default biases (the thesis' AE.py left them in place)."""
    side, _, features = latent_shape(config)
    autoencoder = BottleneckAutoencoder(features, tuple(config.ae_channels),
                                        config.ae_code_size, side, rngs=nnx.Rngs(seed))
    _init_biases(autoencoder, config, seed)
    return autoencoder


def _init_biases(module: nnx.Module, config: ml_collections.ConfigDict, seed: int) -> None:
    if config.bias_init not in layers.BIAS_INITS:
        raise ValueError(f"bias_init must be one of {layers.BIAS_INITS}, got "
                         f"{config.bias_init!r}")
    if config.bias_init == "pytorch":
        layers.pytorch_bias_init(module, seed)


def latent_layer(value: str | int) -> int | str:
    """Parses a command-line layer name: '1'..'n' -> int, 'code' -> 'code'."""
    return CODE_LAYER if str(value) == CODE_LAYER else int(value)


def latent_layers(config: ml_collections.ConfigDict) -> list[int | str]:
    """The layers a model of `config` has latents at: its bottleneck residuals 1..n, and
    'code' when it has the autoencoder."""
    return (list(range(1, config.n_bottleneck + 1))
            + ([CODE_LAYER] if config.autoencoder else []))


def latent_shape(config: ml_collections.ConfigDict, layer: int | str = 1) -> tuple[int, ...]:
    """The shape of one sample's latent at `layer` for a model of `config`: (h, w, F) after a
    bottleneck residual (input_size / STEM_STRIDE / 2**depth cells a side), (code,) at the
    autoencoder's code."""
    if layer == CODE_LAYER:
        return (config.ae_code_size,)
    side = config.input_size // STEM_STRIDE // 2 ** config.depth
    return side, side, config.features
