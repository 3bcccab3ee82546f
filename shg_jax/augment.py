"""Random rotation, scaling and horizontal flip of a training batch, on the device, inside the
jitted train step (config.augment; the thesis trained without it, so baseline.py keeps it off).

Newell et al.'s recipe: rotation uniform in +-`rotation` degrees, scale uniform in
[`scale_min`, `scale_max`], a horizontal flip with probability `flip` (the COCO left/right
joints swapped). Each crop is transformed about its centre; the keypoints move with it
before the heatmaps are rendered, so the host pipeline is untouched and as fast as before.

Coordinates are pixel indices, as the labels are: a keypoint at pixel u of an S-pixel crop
goes to  A (u - c) + c,  A = s R(angle), c = (S - 1) / 2, then, when flipped, x -> S - 1 - x
(the pixel `jnp.flip` sends it to). The image is resampled bilinearly at the inverse map of
every output pixel; pixels from outside the crop are 0 (`fill="zero"`) or the nearest edge
pixel (`fill="edge"`). A joint moved out of the crop becomes unlabelled (v = 0).

The draws come from (config.seed, step) alone, so a resumed run augments every step exactly
as the uninterrupted one does, and the global batch gets the same draws on any number of
devices.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections

from shg_jax.skeleton import FLIP_PAIRS, N_JOINTS

FILLS = ("zero", "edge")


def augment_config(enabled: bool = False) -> ml_collections.ConfigDict:
    """The `config.augment` section: Newell's ranges, off unless `enabled`."""
    return ml_collections.ConfigDict(dict(
        enabled=enabled, rotation=30.0, scale_min=0.75, scale_max=1.25, flip=0.5,
        fill="zero"))


class Draws(NamedTuple):
    angle: jax.Array            # (B,) degrees
    scale: jax.Array            # (B,)
    flip: jax.Array             # (B,) bool


def step_key(seed: int, step: jax.Array) -> jax.Array:
    """The augmentation key of one optimizer step."""
    return jax.random.fold_in(jax.random.key(seed), step)


def draw(key: jax.Array, batch: int, config: ml_collections.ConfigDict) -> Draws:
    """One rotation, scale and flip per sample, in the config's ranges."""
    k_angle, k_scale, k_flip = jax.random.split(key, 3)
    angle = jax.random.uniform(k_angle, (batch,), minval=-config.rotation,
                               maxval=config.rotation)
    scale = jax.random.uniform(k_scale, (batch,), minval=config.scale_min,
                               maxval=config.scale_max)
    return Draws(angle, scale, jax.random.uniform(k_flip, (batch,)) < config.flip)


def _linear_maps(draws: Draws) -> jax.Array:
    """(B, 2, 2) matrices s R(angle) acting on (x, y) column vectors."""
    t = jnp.deg2rad(draws.angle)
    cos, sin = jnp.cos(t) * draws.scale, jnp.sin(t) * draws.scale
    return jnp.stack([jnp.stack([cos, -sin], -1), jnp.stack([sin, cos], -1)], -2)


def _swap() -> tuple:
    order = list(range(N_JOINTS))
    for a, b in FLIP_PAIRS:
        order[a], order[b] = b, a
    return tuple(order)


#: Joint j of a flipped crop is joint SWAP[j] of the original (COCO's left/right pairs).
SWAP = _swap()


def transform_keypoints(keypoints: jax.Array, draws: Draws, size: int) -> jax.Array:
    """(B, J, 3) keypoints (x, y, v) in crop pixels -> where the transformed crop shows them;
    flipped crops swap left and right joints; joints moved outside the crop get v = 0."""
    c = (size - 1) / 2
    xy = jnp.einsum("bij,bkj->bki", _linear_maps(draws), keypoints[..., :2] - c) + c
    flip = draws.flip[:, None]
    xy = xy.at[..., 0].set(jnp.where(flip, size - 1 - xy[..., 0], xy[..., 0]))
    v = keypoints[..., 2]
    inside = jnp.all((xy >= 0) & (xy < size), axis=-1)         # heatmap_centres' rule
    out = jnp.concatenate([xy, jnp.where(inside, v, 0)[..., None]], axis=-1)
    return jnp.where(flip[..., None], out[:, jnp.asarray(SWAP)], out)


def transform_images(images: jax.Array, draws: Draws, fill: str = "zero") -> jax.Array:
    """(B, S, S, C) crops (any dtype) -> float32 crops, rotated, scaled and flipped as
    transform_keypoints moves their keypoints; bilinear, `fill` outside the source crop."""
    if fill not in FILLS:
        raise ValueError(f"augment.fill must be one of {FILLS}, got {fill!r}")
    size = images.shape[1]
    c = (size - 1) / 2
    grid = jnp.arange(size, dtype=jnp.float32)
    ys, xs = jnp.meshgrid(grid, grid, indexing="ij")                 # output pixels

    def one(image, inverse, flip):
        x = jnp.where(flip, size - 1 - xs, xs) - c                   # undo the flip
        y = ys - c
        src_x = inverse[0, 0] * x + inverse[0, 1] * y + c
        src_y = inverse[1, 0] * x + inverse[1, 1] * y + c
        sample = lambda channel: jax.scipy.ndimage.map_coordinates(
            channel, (src_y, src_x), order=1,
            mode="constant" if fill == "zero" else "nearest", cval=0.0)
        return jax.vmap(sample, in_axes=-1, out_axes=-1)(image.astype(jnp.float32))

    inverse = jnp.linalg.inv(_linear_maps(draws))
    return jax.vmap(one)(images, inverse, draws.flip)


def apply(images: jax.Array, keypoints: jax.Array, draws: Draws, fill: str
          ) -> tuple[jax.Array, jax.Array]:
    """Crops (float32 out) and their keypoints, transformed alike by `draws`."""
    return (transform_images(images, draws, fill),
            transform_keypoints(keypoints, draws, images.shape[1]))


def augment_batch(images: jax.Array, keypoints: jax.Array, key: jax.Array,
                  config: ml_collections.ConfigDict) -> tuple[jax.Array, jax.Array]:
    """A batch's crops and keypoints, transformed by draws from `key`."""
    return apply(images, keypoints, draw(key, images.shape[0], config), config.fill)


#: The seed of the transformed copy of a split that `shg_jax.evaluate --augment-val` scores.
EVAL_SEED = 2016


def augment_samples(images: jax.Array, keypoints: jax.Array, index: jax.Array,
                    config: ml_collections.ConfigDict, seed: int = EVAL_SEED
                    ) -> tuple[jax.Array, jax.Array]:
    """Each sample transformed by draws from (seed, its `index` in the split): one fixed
    transformed copy of a split, the same for every model and batch size."""
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(seed), i))(index)
    draws = Draws(*(x[:, 0] for x in jax.vmap(lambda k: draw(k, 1, config))(keys)))
    return apply(images, keypoints, draws, config.fill)
