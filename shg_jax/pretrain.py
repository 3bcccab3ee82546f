"""The two stages of the thesis' improved model (§7): a bottleneck autoencoder pretrained
alone on the latents of a trained SHG, then inserted into that SHG for fine-tuning.

Stage 1, `pretrain(config, workdir, train_latents, val_latents, source)`: the autoencoder
(`config.model`'s ae_* fields) learns to reconstruct latents (N, h, w, F) — the output of
the 3rd bottleneck residual — from a noisy copy x + noise * x * N(0, 1). Thesis recipe in
`config.pretrain`: SGD momentum 0.9, lr 5e-4 halved every 25 epochs, batch 16, MSE (mean over
every value), 100 epochs. Validation loss (no noise) after every epoch; checkpoints as in
training, ranked by validation loss only (`latest`, `best_loss`); TensorBoard under WORKDIR/tb. The latents themselves come
by shg_jax.latents (`pretraining_latents`, through `pretrain_from_run`, which
train.train_and_evaluate runs for config.stage="pretrain"), as for the analyses.

Stage 2, `finetune_state(steps, config)`: the first state of the fine-tuning run: every SHG
parameter and BatchNorm statistic from the SHG checkpoint that stage 1 was trained on, the
autoencoder from the stage-1 checkpoint, a fresh optimizer.
"""

from __future__ import annotations

import math
import pathlib
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from shg_jax import data, fileio
from shg_jax import placement
from shg_jax.checkpoint import CheckpointError, Checkpoints, RunRecord
from shg_jax.latents import pretraining_latents
from shg_jax.models.autoencoder import BottleneckAutoencoder
from shg_jax.progress import Progress
from shg_jax.runs import TrainingError, config_json, interrupt_flag, log, resume_latest
from shg_jax.steps import Steps, TrainState, with_learning_rate
from shg_jax.summary import SummaryLogger


class AEState(NamedTuple):
    step: jax.Array          # int32 scalar
    params: Any              # nnx.State of the autoencoder's nnx.Param
    opt_state: Any


def latent_shape(model_config) -> tuple[int, int, int]:
    """(h, w, F) of the bottleneck latent: input_size / 4 / 2**depth, features."""
    side = model_config.input_size // 4 // 2 ** model_config.depth
    return side, side, model_config.features


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
        m = config.model
        h, _, features = latent_shape(m)
        model = BottleneckAutoencoder(features, tuple(m.ae_channels), m.ae_code_size, h,
                                      rngs=nnx.Rngs(config.seed))
        self.graphdef, self._params = nnx.split(model, nnx.Param)
        self.tx = optax.inject_hyperparams(optax.sgd)(
            learning_rate=config.pretrain.learning_rate, momentum=config.pretrain.momentum)
        self.noise = config.pretrain.noise
        self.key = jax.random.key(config.seed)
        self.train_step = jax.jit(self._train_step, donate_argnums=(0,))
        self.loss_sums = jax.jit(self._loss_sums)

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


def _train_epoch(ae: AutoencoderSteps, state: AEState, latents: np.ndarray,
                 config: ml_collections.ConfigDict, epoch: int) -> tuple[AEState, float]:
    """One shuffled pass over the latents (the last incomplete batch dropped); returns the
    state and the mean training loss (read back once, at the end)."""
    p = config.pretrain
    n_steps = data.steps_per_epoch(len(latents), p.batch_size, train=True)
    order = data.epoch_permutation(len(latents), config.seed, epoch)
    losses = []
    with Progress(n_steps, f"autoencoder epoch {epoch + 1}/{p.num_epochs}",
                  unit="latent") as progress:
        for i in range(n_steps):
            rows = np.sort(order[i * p.batch_size:(i + 1) * p.batch_size])
            state, loss = ae.train_step(state, np.asarray(latents[rows], np.float32))
            losses.append(loss)
            progress.update(1, count=p.batch_size)
    return state, float(np.mean(placement.to_host(losses)))


def pretrain_from_run(config: ml_collections.ConfigDict, workdir, *,
                      allow_config_change: bool = False) -> dict:
    """Stage 1 from the config alone (what `train.train_and_evaluate` runs for
    config.stage="pretrain"): the latents of the SHG in config.init_from
    (config.init_checkpoint), extracted into WORKDIR/latents and reused on rerun, then
    `pretrain` on them."""
    if not config.init_from:
        raise TrainingError("--config.stage=pretrain needs --config.init_from=SHG_WORKDIR")
    train_lat, val_lat, source = pretraining_latents(
        config.init_from, config.init_checkpoint, config.data_dir, workdir,
        batch_size=config.pretrain.extract_batch_size)
    shape = (-1,) + latent_shape(config.model)
    return pretrain(config, workdir, train_lat.latents.reshape(shape),
                    val_lat.latents.reshape(shape), source,
                    allow_config_change=allow_config_change)


def pretrain(config: ml_collections.ConfigDict, workdir, train_latents: np.ndarray,
             val_latents: np.ndarray, source: dict, *, allow_config_change: bool = False
             ) -> dict:
    """Stage 1: trains config.pretrain.num_epochs epochs on latents (N, h, w, F), resuming
    from WORKDIR's latest checkpoint. `source` (workdir, kind, step of the SHG checkpoint the
    latents came from) is stored in every checkpoint for stage 2. Returns the history."""
    if jax.process_count() > 1:
        raise TrainingError("autoencoder pretraining runs in one process; start it without "
                            "--num_processes (it is small: latents, not images)")
    p = config.pretrain
    shape = latent_shape(config.model)
    for name, lat in (("train", train_latents), ("val", val_latents)):
        if lat.shape[1:] != shape:
            raise TrainingError(f"{name} latents have shape {lat.shape[1:]}, the autoencoder "
                                f"of config.model expects {shape}")
    if len(train_latents) < p.batch_size:
        raise TrainingError(f"{len(train_latents)} training latents, fewer than one batch "
                            f"of {p.batch_size}")
    workdir = pathlib.Path(workdir)
    ae = AutoencoderSteps(config)
    ckpts = Checkpoints(workdir, keep=config.keep_checkpoints, best=("best_loss",))
    state = ae.init_state()
    history, best_loss, epoch = [], math.inf, 0
    state, record = resume_latest(ckpts, state, config, workdir, allow_config_change)
    if record is not None:
        history, epoch = record["history"], record["epoch"]
        best_loss = math.inf if record["best_loss"] is None else record["best_loss"]
        log(f"resuming {workdir} at epoch {epoch + 1}")
    workdir.mkdir(parents=True, exist_ok=True)
    fileio.write_json(workdir / "config.json", config_json(config))
    logger = SummaryLogger(workdir / "tb")
    try:
        with interrupt_flag() as interrupted:
            while epoch < p.num_epochs and not interrupted["stop"]:
                lr = halving_learning_rate(config, epoch)
                state = with_learning_rate(state, lr)
                state, train_loss = _train_epoch(ae, state, train_latents, config, epoch)
                if not math.isfinite(train_loss):
                    raise TrainingError(f"autoencoder loss is {train_loss} in epoch "
                                        f"{epoch + 1}; the last good checkpoint is kept")
                val_loss = validation_loss(ae, state.params, val_latents, p.batch_size)
                epoch += 1
                history.append(dict(epoch=epoch, train_loss=train_loss, val_loss=val_loss,
                                    learning_rate=lr, global_step=int(state.step)))
                logger.scalars({"ae/train_loss": train_loss, "ae/val_loss": val_loss,
                                "ae/learning_rate": lr}, epoch)
                logger.flush()
                best = val_loss < best_loss
                best_loss = min(best_loss, val_loss)
                record = RunRecord(config=config_json(config), epoch=epoch,
                                   global_step=int(state.step), history=history,
                                   best_loss=best_loss, source=source)
                ckpts.save(state, record, metrics={"val_loss": val_loss})
                log(f"autoencoder epoch {epoch}: train loss {train_loss:.4g}, val loss "
                    f"{val_loss:.4g}, lr {lr:.3g}" + (", best" if best else ""), flush=True)
    finally:
        ckpts.wait()
        logger.close()
    return {"history": history, "interrupted": epoch < p.num_epochs, "state": state}


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
        if record.get("source") is None:
            raise TrainingError(f"{config.init_from} is not an autoencoder pretraining run "
                                f"(stage 1); run --config.stage=pretrain first")
        ae_config = ml_collections.ConfigDict(record["config"])
        ae_state, _ = stage1.restore(step, AutoencoderSteps(ae_config).init_state())
        src = record["source"]
        shg = Checkpoints(src["workdir"], read_only=True)
        shg_record = shg.record(src["step"])
        shg_steps = Steps(ml_collections.ConfigDict(shg_record["config"]),
                          shg_record["mean_rgb"], steps.mesh)
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
