"""The pure train and evaluation steps, and the state they carry.

`train_step(state, batch) -> (state, loss)` and `eval_step(state, batch) -> sums` are pure
functions of pytrees: the model's structure (an NNX graphdef, one in training mode and one in
evaluation mode) is closed over, its parameters and BatchNorm statistics travel in `state`.
Both render the heatmap targets on device from the batch's keypoints (the run's heatmap
codec, shg_jax.codec) and turn the uint8 images into float inputs (scaled to [0, 1], minus
the training set's mean RGB) on device; with config.augment the train step first rotates,
scales and flips crops and keypoints (shg_jax.augment).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from shg_jax import augment, placement
from shg_jax.codec import HeatmapCodec
from shg_jax.models import build_model
from shg_jax.pck import pck_counts


#: config.precision: the precision of every matmul and convolution. "float32" is full float32
#: on every backend (the thesis trained so, on a GTX 1070); "tensorfloat32" is NVIDIA's TF32
#: (what JAX gives float32 on recent NVIDIA GPUs when nothing is asked); "bfloat16" one
#: bfloat16 pass. CPUs compute float32 whatever is asked.
PRECISIONS = ("float32", "tensorfloat32", "bfloat16")


def with_precision(fn, precision: str):
    """`fn`, traced with jax.default_matmul_precision(`precision`) (one of PRECISIONS)."""
    @functools.wraps(fn)
    def traced(*args, **kwargs):
        with jax.default_matmul_precision(precision):
            return fn(*args, **kwargs)
    return traced


class TrainState(NamedTuple):
    step: jax.Array                  # int32 scalar: optimizer steps taken
    params: Any                      # nnx.State of nnx.Param
    batch_stats: Any                 # nnx.State of nnx.BatchStat
    opt_state: Any                   # optax state; holds the learning rate (inject_hyperparams)


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """RMSProp as PyTorch's (thesis): eps added outside the square root, no momentum."""
    if config.optimizer == "rmsprop":
        return optax.inject_hyperparams(optax.rmsprop)(
            learning_rate=config.learning_rate, decay=config.rmsprop_decay,
            eps=config.rmsprop_eps, eps_in_sqrt=config.rmsprop_eps_in_sqrt)
    if config.optimizer == "sgd":
        return optax.inject_hyperparams(optax.sgd)(learning_rate=config.learning_rate,
                                                   momentum=config.momentum)
    raise ValueError(f"config.optimizer must be 'rmsprop' or 'sgd', got {config.optimizer!r}")


def current_learning_rate(state: TrainState) -> float:
    return float(placement.to_host(state.opt_state.hyperparams["learning_rate"]))


def with_learning_rate(state, lr: float):
    """The same state (any NamedTuple with an inject_hyperparams `opt_state`: TrainState,
    pretrain.AEState) with a new learning rate, set between epochs by the schedules."""
    hp = dict(state.opt_state.hyperparams)
    old = hp["learning_rate"]
    hp["learning_rate"] = jax.device_put(jnp.asarray(lr, old.dtype), old.sharding)
    return state._replace(opt_state=state.opt_state._replace(hyperparams=hp))


class Steps:
    """Builds the model and optimizer from a config; holds the pure and the compiled steps,
    and the heatmap codec (`codec`) they render targets and run the flip test with.

    `mean_rgb` and `label_offset_x` describe the training data (data.Split, or a run's
    record): the mean subtracted from every input, and how far right of the pixels they mark
    the training labels lie on average (crop.label_offsets_x), which sets the flip test's
    shift unless config.decode.flip_shift gives one."""

    def __init__(self, config: ml_collections.ConfigDict, mean_rgb, mesh=None, *,
                 label_offset_x: float = 0.0):
        self.config = config
        self.mesh = mesh or placement.data_mesh()
        model = build_model(config.model, seed=config.seed)
        model.train()
        self.graphdef_train, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
        model.eval()
        self.graphdef_eval = nnx.split(model, nnx.Param, nnx.BatchStat)[0]
        self.tx = make_optimizer(config)
        self._init = (params, batch_stats)
        self.mean_rgb = jnp.asarray(mean_rgb, jnp.float32)
        self.codec = HeatmapCodec.from_config(config, label_offset_x)
        self.augment = config.augment if config.augment.enabled else None
        self.precision = config.precision
        repl, data = placement.replicated(self.mesh), placement.batch_sharding(self.mesh)
        self.train_step = self.jit(self._train_step, in_shardings=(repl, data),
                                   out_shardings=(repl, repl), donate_argnums=(0,))
        self.eval_step = self.jit(self._eval_step, in_shardings=(repl, data),
                                  out_shardings=repl)
        self.heatmaps_and_targets = self.jit(self._heatmaps_and_targets,
                                             in_shardings=(repl, data), out_shardings=data)
        self.infer = self.jit(lambda state, images: self._forward_eval(state, images)[-1],
                              in_shardings=(repl, data), out_shardings=data)
        self.batch_statistics = self.jit(self._batch_statistics, in_shardings=(repl, data),
                                         out_shardings=repl)

    def jit(self, fn, **kwargs):
        """jax.jit of `fn` with its matmuls and convolutions at config.precision."""
        return jax.jit(with_precision(fn, self.precision), **kwargs)

    def init_state(self) -> TrainState:
        """Fresh parameters (from config.seed), optimizer state, replicated on the mesh.
        Always new buffers: `train_step` donates its state, which must never delete the
        initial parameters kept here for the next call."""
        params, batch_stats = self._init
        state = TrainState(jnp.zeros((), jnp.int32), params, batch_stats,
                           self.tx.init(params))
        return jax.device_put(state, placement.replicated(self.mesh), may_alias=False)

    def inputs(self, images: jax.Array) -> jax.Array:
        """uint8 (B, S, S, 3) (or float32 0..255: augmented crops) -> float32 in [0, 1] minus
        the training mean RGB (thesis)."""
        return images.astype(jnp.float32) / 255.0 - self.mean_rgb

    def _train_step(self, state: TrainState, batch: dict):
        images, keypoints = batch["images"], batch["keypoints"]
        if self.augment is not None:          # config.augment: drawn from (seed, step)
            images, keypoints = augment.augment_batch(
                images, keypoints, augment.step_key(self.config.seed, state.step),
                self.augment)
        images, targets = self.inputs(images), self.codec.targets(keypoints)

        def loss_fn(params, batch_stats):
            model = nnx.merge(self.graphdef_train, params, batch_stats, copy=True)
            heatmaps = model.forward(images).heatmaps.astype(jnp.float32)   # (S,B,H,W,J)
            loss = jnp.sum(jnp.mean((heatmaps - targets[None]) ** 2, axis=(1, 2, 3, 4)))
            return loss, nnx.state(model, nnx.BatchStat)

        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, state.batch_stats)
        updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return TrainState(state.step + 1, params, batch_stats, opt_state), loss

    def _batch_statistics(self, state: TrainState, images: jax.Array):
        """The BatchNorm statistics of one global batch of uint8 crops (B, S, S, 3) under the
        state's parameters: every layer's batch mean and variance, as its running average
        would take them in one update with momentum 0 (the variance unbiased or not as
        config.model.bn_running_var says). train.refresh_batch_stats averages them."""
        model = nnx.merge(self.graphdef_train, state.params, state.batch_stats, copy=True)
        for _, module in nnx.iter_graph(model):
            if isinstance(module, nnx.BatchNorm):
                module.momentum = 0.0
        model.forward(self.inputs(images))
        return nnx.state(model, nnx.BatchStat)

    def eval_model(self, state: TrainState):
        """The model in evaluation mode (BatchNorm on running statistics) with the state's
        parameters, for use inside jitted functions."""
        return nnx.merge(self.graphdef_eval, state.params, state.batch_stats)

    def _forward_eval(self, state: TrainState, images: jax.Array) -> jax.Array:
        """(S, B, H, W, J) heatmaps in evaluation mode, through the codec's flip test when
        config.decode.flip is on."""
        model = self.eval_model(state)
        return self.codec.predict(lambda x: model.forward(self.inputs(x)).heatmaps, images)

    def _eval_step(self, state: TrainState, batch: dict) -> dict:
        """Sums over the valid rows: loss (as in training) and every PCK count."""
        heatmaps = self._forward_eval(state, batch["images"]).astype(jnp.float32)
        targets = self.codec.targets(batch["keypoints"])
        per_sample = jnp.sum(jnp.mean((heatmaps - targets[None]) ** 2, axis=(2, 3, 4)), 0)
        valid = batch["valid"]
        sums = pck_counts(heatmaps[-1], targets, batch["keypoints"][..., 2], valid)
        sums["loss_sum"] = jnp.sum(jnp.where(valid, per_sample, 0.0))
        sums["count"] = jnp.sum(valid).astype(jnp.float32)
        return sums

    def _heatmaps_and_targets(self, state: TrainState, batch: dict):
        """Last-stack heatmaps (B, H, W, J) and the rendered targets, evaluation mode."""
        return (self._forward_eval(state, batch["images"])[-1],
                self.codec.targets(batch["keypoints"]))
