"""The two stages of the thesis' improved model (§7): a bottleneck autoencoder pretrained
alone on the latents of a trained SHG, then inserted into that SHG for fine-tuning.

Stage 1, `pretrain(config, workdir, train_latents, val_latents, source)`: the autoencoder
(`config.model`'s ae_* fields) learns to reconstruct latents (N, h, w, F) — the output of
the 3rd bottleneck residual — from a noisy copy x + noise * x * N(0, 1). Thesis recipe in
`config.pretrain`: SGD momentum 0.9, lr 5e-4 halved every 25 epochs, batch 16, MSE (mean over
every value), the latents in storage order (its DataLoader did not shuffle), the last partial
batch kept, 51 epochs (its run stopped there; its caption says 100). Validation loss (no noise) after every epoch; checkpoints as in
training, ranked by validation loss only (`latest`, `best_loss`); TensorBoard under
WORKDIR/tb. It is a `shg_jax.loop` stage (`AutoencoderStage`), so it resumes, saves on
Ctrl-C and stops on a non-finite loss as SHG training does. The latents come by
shg_jax.latents (`AutoencoderStage.from_run`, which train.train_and_evaluate runs for
config.stage="pretrain"), as for the analyses.

Stage 2, `finetune_state(steps, config)`: the first state of the fine-tuning run: every SHG
parameter and BatchNorm statistic from the SHG checkpoint that stage 1 was trained on, the
autoencoder from the stage-1 checkpoint, a fresh optimizer.
"""

from __future__ import annotations

import pathlib
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from shg_jax import data, loop, placement
from shg_jax.bookkeeping import TrainingError, log, workdir_lock
from shg_jax.checkpoint import CheckpointError, Checkpoints, RunRecord
from shg_jax.latents import pretraining_latents
from shg_jax.models import build_autoencoder, latent_shape
from shg_jax.steps import Steps, TrainState, with_learning_rate, with_precision


class AEState(NamedTuple):
    step: jax.Array          # int32 scalar
    params: Any              # nnx.State of the autoencoder's nnx.Param
    opt_state: Any


def halving_learning_rate(config: ml_collections.ConfigDict, epoch: int) -> float:
    """Thesis: halved every `halve_every` epochs (StepLR(step_size=25, gamma=0.5))."""
    p = config.pretrain
    return p.learning_rate * p.lr_factor ** (epoch // p.halve_every)


def add_noise(x: jax.Array, key: jax.Array, scale: float) -> jax.Array:
    """Multiplicative Gaussian noise, as the thesis: x + scale * x * N(0, 1)."""
    return x + scale * x * jax.random.normal(key, x.shape, x.dtype)


class AutoencoderSteps:
    """The autoencoder alone, its SGD optimizer, and the jitted train / validation steps."""

    def __init__(self, config: ml_collections.ConfigDict):
        model = build_autoencoder(config.model, config.seed)
        self.graphdef, self._params = nnx.split(model, nnx.Param)
        self.tx = optax.inject_hyperparams(optax.sgd)(
            learning_rate=config.pretrain.learning_rate, momentum=config.pretrain.momentum)
        self.noise = config.pretrain.noise
        self.key = jax.random.key(config.seed)
        self.train_step = jax.jit(with_precision(self._train_step, config.precision),
                                  donate_argnums=(0,))
        self.loss_sums = jax.jit(with_precision(self._loss_sums, config.precision))

    def init_state(self) -> AEState:
        return AEState(jnp.zeros((), jnp.int32), self._params, self.tx.init(self._params))

    def reconstruct(self, params, latents: jax.Array) -> jax.Array:
        return nnx.merge(self.graphdef, params)(latents)

    def _train_step(self, state: AEState, latents: jax.Array):
        noisy = add_noise(latents, jax.random.fold_in(self.key, state.step), self.noise)

        def loss_fn(params):
            return jnp.mean((self.reconstruct(params, noisy) - latents) ** 2)

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
        return AEState(state.step + 1, optax.apply_updates(state.params, updates),
                       opt_state), loss

    def _loss_sums(self, params, latents: jax.Array, valid: jax.Array):
        """(sum over valid rows of the per-sample MSE, number of valid rows); no noise."""
        per_sample = jnp.mean((self.reconstruct(params, latents) - latents) ** 2,
                              axis=(1, 2, 3))
        return jnp.sum(jnp.where(valid, per_sample, 0.0)), jnp.sum(valid)


def validation_loss(ae: AutoencoderSteps, params, latents: np.ndarray, batch: int) -> float:
    total, count = 0.0, 0
    for start in range(0, len(latents), batch):
        rows = np.asarray(latents[start:start + batch], np.float32)
        valid = np.ones(batch, bool)
        valid[len(rows):] = False
        rows = np.concatenate([rows, np.zeros((batch - len(rows),) + rows.shape[1:],
                                              np.float32)])
        s, c = ae.loss_sums(params, rows, valid)
        total, count = total + float(s), count + int(c)
    return total / max(count, 1)


class AutoencoderStage:
    """Stage 1 for shg_jax.loop: the autoencoder alone on latents (N, h, w, F) in memory or
    memory-mapped, one pass an epoch (`batches`), the halving learning rate set at each
    epoch's start, validation loss (no noise) at its end.
    `source` (workdir, kind, step of the SHG checkpoint the latents came from) goes into
    every record for stage 2."""

    name, unit, epoch_prefix, step_summaries = "autoencoder epoch", "latent", "ae/", False
    best = ("best_loss",)

    def __init__(self, config: ml_collections.ConfigDict, train_latents: np.ndarray,
                 val_latents: np.ndarray, source: dict):
        if jax.process_count() > 1:
            raise TrainingError("autoencoder pretraining runs in one process; start it "
                                "without --num_processes (it is small: latents, not images)")
        p = config.pretrain
        shape = latent_shape(config.model)
        for name, lat in (("train", train_latents), ("val", val_latents)):
            if lat.shape[1:] != shape:
                raise TrainingError(f"{name} latents have shape {lat.shape[1:]}, the "
                                    f"autoencoder of config.model expects {shape}")
        if len(train_latents) < p.batch_size:
            raise TrainingError(f"{len(train_latents)} training latents, fewer than one "
                                f"batch of {p.batch_size}")
        self.config, self.source = config, source
        self.train_latents, self.val_latents = train_latents, val_latents
        self.ae = AutoencoderSteps(config)
        self.num_epochs, self.batch_size = p.num_epochs, p.batch_size
        self.steps_per_epoch = data.steps_per_epoch(len(train_latents), p.batch_size,
                                                    train=True, drop_last=p.drop_last)

    @classmethod
    def from_run(cls, config: ml_collections.ConfigDict, workdir) -> "AutoencoderStage":
        """The stage on the latents of the SHG in config.init_from (config.init_checkpoint),
        extracted into WORKDIR/latents once and reused on rerun."""
        train_lat, val_lat, source = pretraining_latents(
            config.init_from, config.init_checkpoint, config.data_dir, workdir,
            batch_size=config.pretrain.extract_batch_size)
        shape = (-1,) + latent_shape(config.model)
        return cls(config, train_lat.latents.reshape(shape), val_lat.latents.reshape(shape),
                   source)

    def init_state(self) -> AEState:
        return self.ae.init_state()

    def start(self, state):
        return state

    def resume(self, state, record: RunRecord):
        return state

    def begin_epoch(self, state, epoch: int):
        return with_learning_rate(state, halving_learning_rate(self.config, epoch))

    def batches(self, epoch: int, start_step: int):
        """The epoch's batches of latents: in storage order as the thesis' DataLoader gave
        them (config.pretrain.shuffle False), or shuffled by (seed, epoch); the last partial
        batch kept unless config.pretrain.drop_last."""
        p = self.config.pretrain
        for rows in data.epoch_rows(len(self.train_latents), self.batch_size,
                                    seed=self.config.seed, epoch=epoch, start_step=start_step,
                                    shuffle=p.shuffle, drop_last=p.drop_last):
            yield np.asarray(self.train_latents[np.sort(rows)], np.float32)

    def train_step(self, state, latents):
        return self.ae.train_step(state, latents)

    def end_epoch(self, state, epoch: int, logger):
        return state, {"val_loss": validation_loss(self.ae, state.params, self.val_latents,
                                                   self.batch_size)}

    def record_fields(self) -> dict:
        return {"source": self.source}

    @staticmethod
    def describe(m: dict) -> str:
        return f"val loss {m['val_loss']:.4g}"


def pretrain(config: ml_collections.ConfigDict, workdir, train_latents: np.ndarray,
             val_latents: np.ndarray, source: dict, *, allow_config_change: bool = False
             ) -> dict:
    """Stage 1 on given latents (N, h, w, F): config.pretrain.num_epochs epochs in WORKDIR,
    resuming it; returns {"history", "interrupted", "state"}."""
    stage = AutoencoderStage(config, train_latents, val_latents, source)
    workdir = pathlib.Path(workdir)
    with workdir_lock(workdir):
        return loop.run(stage, config, workdir, allow_config_change=allow_config_change)


def _flat(state) -> dict:
    return {path: var[...] for path, var in nnx.to_flat_state(state)}


def finetune_state(steps: Steps, config: ml_collections.ConfigDict) -> TrainState:
    """Stage 2's first state: SHG weights + pretrained autoencoder, fresh optimizer.

    `config.init_from` is the stage-1 workdir and `config.init_checkpoint` which of its
    checkpoints (thesis: the lowest validation loss); the SHG checkpoint is the one stage 1
    recorded as its source. Only the last hourglass gets the pretrained autoencoder; the
    others' (autoencoder_every_stack) start from their random initialisation."""
    try:
        stage1 = Checkpoints(config.init_from, read_only=True)
        step = stage1.find(config.init_checkpoint)
        record = stage1.record(step)
        if record.source is None:
            raise TrainingError(f"{config.init_from} is not an autoencoder pretraining run "
                                f"(stage 1); run --config.stage=pretrain first")
        ae_config = ml_collections.ConfigDict(record.config)
        ae_state, _ = stage1.restore(step, AutoencoderSteps(ae_config).init_state())
        src = record.source
        shg = Checkpoints(src["workdir"], read_only=True)
        shg_record = shg.record(src["step"])
        shg_steps = Steps(ml_collections.ConfigDict(shg_record.config), shg_record.mean_rgb,
                          steps.mesh)
        shg_state, _ = shg.restore(src["step"], shg_steps.init_state())
    except CheckpointError as e:
        raise TrainingError(f"config.init_from: {e}") from e
    fresh = steps.init_state()
    shg_params, ae_params = _flat(shg_state.params), _flat(ae_state.params)
    ae_prefix = ("hourglasses", config.model.n_stacks - 1, "autoencoder")
    new, problems = [], []
    for path, var in nnx.to_flat_state(fresh.params):
        leaf = var[...]
        if path[:3] == ae_prefix:
            value = ae_params.get(path[3:])
        elif "autoencoder" in path:
            value = leaf                                   # other stacks: random init
        else:
            value = shg_params.get(path)
        if value is None or value.shape != leaf.shape:
            problems.append("/".join(map(str, path)))
            continue
        new.append((path, var.replace(value)))
    if problems:
        raise TrainingError(f"the SHG in {src['workdir']} or the autoencoder in "
                            f"{config.init_from} does not fit config.model (missing or "
                            f"misshaped: {problems[:5]}{' ...' if len(problems) > 5 else ''})")
    params = nnx.from_flat_state(new)
    state = TrainState(fresh.step, params, shg_state.batch_stats, steps.tx.init(params))
    log(f"fine-tuning from the SHG {src['workdir']} ({src['kind']} step {src['step']}) with "
        f"the autoencoder of {config.init_from} ({config.init_checkpoint} step {step})")
    return placement.replicate(state, steps.mesh)
