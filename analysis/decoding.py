"""What the network itself makes of a point in its latent space: decoded walks, how far each
joint moves along each component, and latent swaps.

The thesis showed a walk along a principal component only as the nearest real sample to each
point. Here each point is also run through the rest of the network (`model.decode`), with the
skip features of one reference crop or with the skips off, so a figure shows the pose the
model predicts from that latent. Its numbers:

- sensitivity: how far each joint's decoded position moves, in heatmap cells per
  sqrt(eigenvalue), along each walked component at the walk's start. The position is a local
  soft-argmax (the centroid of the positive heatmap within WINDOW cells of the argmax) and
  its movement the exact derivative by forward-mode autodiff (`jax.jvp`) along the
  component. Why not finite differences of the argmax: the argmax is piecewise constant, so
  its differences are 0 or whole cells and depend on the step; the centroid follows the mass
  as it shifts between cells, and one jvp per component gives its derivative at once.
- latent swap: sample A's latent decoded with sample B's skip features (and with the skips
  off), scored by PCK against A's and against B's ground truth per joint group. A model
  whose pose lives in the bottleneck follows A; one that draws it from the skips follows B.

The functions here take plain JAX callables (`decode(latents, skips, use_skips)`,
`encode(images)`), so that hand-made decoders with known answers test them; `model_decoder`
and `model_codec_pair` bind them to a run's model inside one jitted function each.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from shg_jax import pck
from shg_jax.models import latent_shape

#: Half-width of the soft-argmax window, in heatmap cells (a 7x7 window).
WINDOW = 3
#: Joint groups of the swap scores (COCO indices).
GROUPS = {"head": (0, 1, 2, 3, 4), "torso": (5, 6, 11, 12), "arms": (7, 8, 9, 10),
          "legs": (13, 14, 15, 16)}
#: The swap's decodings: (latent of, skips of); None = skips off.
SWAPS = {"A latent, A skips": ("a", "a"), "A latent, B skips": ("a", "b"),
         "A latent, no skips": ("a", None), "B latent, B skips": ("b", "b")}


def soft_argmax(heatmaps: jax.Array, window: int = WINDOW) -> jax.Array:
    """(..., H, W, J) heatmaps -> (..., J, 2) positions (x, y) in heatmap cells: the centroid
    of the positive heatmap within `window` cells of its argmax (the argmax itself where
    that is all non-positive). Differentiable in the heatmap values; the window's place is
    held fixed (it moves only where the argmax jumps)."""
    h, w = heatmaps.shape[-3], heatmaps.shape[-2]
    ys, xs = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32),
                          indexing="ij")
    flat = jnp.moveaxis(heatmaps, -1, -3).reshape(heatmaps.shape[:-3] + (-1, h * w))
    idx = jax.lax.stop_gradient(jnp.argmax(flat, axis=-1))
    py, px = (idx // w).astype(jnp.float32), (idx % w).astype(jnp.float32)
    maps = jnp.moveaxis(heatmaps, -1, -3)                          # (..., J, H, W)
    inside = ((jnp.abs(ys - py[..., None, None]) <= window)
              & (jnp.abs(xs - px[..., None, None]) <= window))
    weight = jnp.where(inside, jnp.maximum(maps, 0.0), 0.0)
    total = weight.sum((-2, -1))
    safe = jnp.where(total > 0, total, 1.0)
    cx = jnp.where(total > 0, (weight * xs).sum((-2, -1)) / safe, px)
    cy = jnp.where(total > 0, (weight * ys).sum((-2, -1)) / safe, py)
    return jnp.stack([cx, cy], axis=-1)


def joint_velocity(decode, start: jax.Array, directions: jax.Array) -> jax.Array:
    """d(soft-argmax joint positions)/dt of `decode(start + t * direction)` at t = 0, for
    each of `directions`: decode maps (1, D) latents to (1, H, W, J) heatmaps; start (D,),
    directions (C, D) -> (C, J, 2) cells per unit of t (x, y)."""
    def position(z):
        return soft_argmax(decode(z[None]))[0]

    def along(direction):
        return jax.jvp(position, (start,), (direction,))[1]

    return jax.lax.map(along, directions)


def walk_points(mean: np.ndarray, components: np.ndarray, scales: np.ndarray,
                steps) -> np.ndarray:
    """Latents along components: mean (D,), components (C, D) unit vectors, scales (C,)
    sqrt(eigenvalues), steps (S,) -> (C * S, D), component-major: mean + k * scale * v."""
    steps = np.asarray(steps, np.float32)
    offsets = (steps[None, :, None] * np.asarray(scales, np.float32)[:, None, None]
               * np.asarray(components, np.float32)[:, None, :])
    return (np.asarray(mean, np.float32)[None, None] + offsets).reshape(-1, len(mean))


def swap_hits(encode, decode, images_a, images_b, targets_a, targets_b) -> dict:
    """Per SWAPS decoding: (correct vs A, annotated A, correct vs B, annotated B), each
    (B, J) bool, for batches of pairs: encode(images) -> (latents, skips), decode(latents,
    skips, use_skips) -> (B, H, W, J) heatmaps, targets the pairs' ground-truth heatmaps."""
    coded = {"a": encode(images_a), "b": encode(images_b)}
    out = {}
    for name, (latent_of, skips_of) in SWAPS.items():
        latent = coded[latent_of][0]
        heatmaps = decode(latent, coded[skips_of or latent_of][1], skips_of is not None)
        hit_a, has_a = pck.joint_hits(heatmaps, targets_a)
        hit_b, has_b = pck.joint_hits(heatmaps, targets_b)
        out[name] = (hit_a, has_a, hit_b, has_b)
    return out


def group_pck(correct: np.ndarray, annotated: np.ndarray) -> dict[str, float | None]:
    """(N, J) hits -> per joint group (and "all") the mean per-sample PCK over the samples
    with an annotated joint of the group; None where there is none."""
    out = {}
    for name, joints in {"all": tuple(range(correct.shape[1])), **GROUPS}.items():
        c, a = correct[:, joints], annotated[:, joints]
        n = a.sum(1)
        out[name] = float((c.sum(1)[n > 0] / n[n > 0]).mean()) if (n > 0).any() else None
    return out


def swap_scores(hits: dict) -> dict:
    """Concatenated swap_hits -> {decoding: {"vs A": group_pck, "vs B": group_pck}}."""
    return {name: {"vs A": group_pck(h[0], h[1]), "vs B": group_pck(h[2], h[3])}
            for name, h in hits.items()}


class ModelDecoding:
    """One run's model (Steps) and latent layer bound to the functions above, each compiled
    once; `state` is passed to every call. Latents are flat (B, D) as the study holds them;
    skips are the list `model.encode` returns (batch first). Get one with `model_decoding`.
    """

    def __init__(self, steps, layer):
        self.steps, self.layer = steps, layer
        self.shape = latent_shape(steps.config.model, layer)
        self.encode = steps.jit(self._encode)
        self.decode = steps.jit(self._decode, static_argnums=(3,))
        self.velocity = steps.jit(self._velocity, static_argnums=(4,))
        self.targets = jax.jit(steps.codec.targets)

    def _model_encode(self, model, images):
        latent, skips = model.encode(self.steps.inputs(images), self.layer)
        return latent.reshape(latent.shape[0], -1), skips

    def _model_decode(self, model, latents, skips, use_skips):
        return model.decode(latents.reshape((latents.shape[0],) + self.shape), skips,
                            self.layer, use_skips=use_skips)

    def _encode(self, state, images):
        """uint8 (B, S, S, 3) crops -> (flat latents (B, D), skips)."""
        return self._model_encode(self.steps.eval_model(state), images)

    def _decode(self, state, latents, skips, use_skips):
        """(B, D) latents, skips of batch B -> (B, H, W, J) heatmaps."""
        return self._model_decode(self.steps.eval_model(state), latents, skips, use_skips)

    def _velocity(self, state, start, directions, skips, use_skips):
        """`joint_velocity` from (D,) `start` along (C, D) `directions`, with skips of
        batch 1 -> (C, J, 2)."""
        model = self.steps.eval_model(state)
        return joint_velocity(lambda z: self._model_decode(model, z, skips, use_skips),
                              start, directions)

    def swap(self, state, images_a, images_b, keypoints_a, keypoints_b) -> dict:
        """`swap_hits` on uint8 crop pairs and their crop keypoints, one compiled encode or
        decode at a time (one program for all six passes would hold all their activations
        at once: 24 GB at batch 64 for the thesis' model on a CPU)."""
        return swap_hits(lambda images: self.encode(state, images),
                         lambda z, skips, use: self.decode(state, z, skips, use),
                         images_a, images_b, self.targets(keypoints_a),
                         self.targets(keypoints_b))


@functools.cache
def model_decoding(steps, layer) -> ModelDecoding:
    """The ModelDecoding of (steps, layer), made once (its functions compile once)."""
    return ModelDecoding(steps, layer)


def in_batches(fn, n: int, batch: int, *arrays):
    """fn over rows of `arrays` (leading dimension n) in batches of exactly `batch` rows
    (the last one padded by repeating rows, so one program serves every batch) -> the
    outputs' leaves concatenated and cut to n rows, as NumPy."""
    outs = []
    for start in range(0, n, batch):
        rows = np.arange(start, start + batch) % n
        out = jax.device_get(fn(*(jax.tree.map(lambda a: a[rows], x) for x in arrays)))
        outs.append(jax.tree.map(lambda a: a[:min(batch, n - start)], out))
    return jax.tree.map(lambda *parts: np.concatenate(parts), *outs)
