"""Autoencoder pretraining on latents (stage 1, through main.py; Ctrl-C and SIGKILL as for
SHG training), insertion into the SHG it was trained on (stage 2), and the stage-1 pieces
(noise, learning-rate steps)."""

import os
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from shg_jax import pretrain
from shg_jax.models import latent_shape
from shg_jax.bookkeeping import TrainingError

from helpers import KILLED_IN_SAVE, REPO, read_events, tiny_train_config, tiny_train_overrides

AE_OVERRIDES = {"config.model.ae_code_size": 8, "config.pretrain.batch_size": 8,
                "config.pretrain.learning_rate": 0.003, "config.keep_checkpoints": 5}


def ae_config(tiny_data, **extra):
    """configs/autoencoder.py on the tiny model (the one tiny_run trained) and tiny widths."""
    config = tiny_train_config(tiny_data, base="autoencoder", **AE_OVERRIDES, **extra)
    config.model.ae_channels = (16, 8, 8)
    return config


@pytest.fixture(scope="module")
def stage1(tiny_run, tiny_data, tmp_path_factory):
    """Stage 1 run through main.py: 2 epochs on tiny_run's latents -> (workdir, output)."""
    shg_workdir, _ = tiny_run
    workdir = tmp_path_factory.mktemp("stage1") / "run"
    flags = tiny_train_overrides(tiny_data, workdir, **AE_OVERRIDES, **{
        "config.stage": "pretrain", "config.init_from": shg_workdir,
        "config.pretrain.num_epochs": 2})
    proc = subprocess.run([sys.executable, "main.py", "--config=configs/autoencoder.py",
                           "--config.model.ae_channels=(16, 8, 8)", *flags],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir, proc.stdout + proc.stderr


def test_pretrain_lowers_reconstruction_loss(stage1, tiny_run, tiny_data):
    workdir, output = stage1
    from shg_jax.latents import pretraining_latents

    config = ae_config(tiny_data, **{"config.init_from": tiny_run[0],
                                     "config.stage": "pretrain"})
    train, val, source = pretraining_latents(tiny_run[0], "best_loss", tiny_data, workdir)
    assert "reusing latents" not in output and (workdir / "latents" / "train-layer3").is_dir()
    shape = (-1,) + latent_shape(config.model)
    ae = pretrain.AutoencoderSteps(config)
    before = pretrain.validation_loss(ae, ae.init_state().params, val.latents.reshape(shape), 8)

    from shg_jax.checkpoint import Checkpoints

    first_two = Checkpoints(workdir, read_only=True)
    first_two = first_two.record(first_two.latest_step()).history
    # Resume with more epochs: the first two are kept as they were, four more are trained.
    config.pretrain.num_epochs = 6
    out = pretrain.pretrain(config, workdir, train.latents.reshape(shape),
                            val.latents.reshape(shape), source)
    history = out["history"]
    assert [h["epoch"] for h in history] == list(range(1, 7))
    assert history[:2] == first_two
    # ... and the run ends exactly where six uninterrupted epochs end: the same history,
    # parameters, optimizer state (learning rate included) and step, in every checkpoint.
    straight = pretrain.pretrain(config, workdir.parent / "straight", train.latents.reshape(
        shape), val.latents.reshape(shape), source)
    assert straight["history"] == history
    for kind in ("latest", "best_loss"):
        resumed_ckpts = Checkpoints(workdir, read_only=True)
        straight_ckpts = Checkpoints(workdir.parent / "straight", read_only=True)
        a, rec_a = resumed_ckpts.restore(resumed_ckpts.find(kind), ae.init_state())
        b, rec_b = straight_ckpts.restore(straight_ckpts.find(kind), ae.init_state())
        assert rec_a == rec_b, kind
        leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
        assert len(leaves_a) == len(leaves_b) > 3
        for x, y in zip(leaves_a, leaves_b):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    val_losses = [h["val_loss"] for h in history]
    # SGD at this learning rate, the latents in storage order, takes the validation loss down
    # by about half in six epochs (0.01 overshoots and oscillates), far beyond the noise of
    # an unchanged model.
    assert val_losses[-1] < 0.97 * before
    assert val_losses[-1] < val_losses[2] < val_losses[0]
    assert source["kind"] == "best_loss" and source["workdir"] == str(tiny_run[0].absolute())
    scalars, _, _ = read_events(workdir / "tb")
    logged = {step: v for tag, step, v in scalars if tag == "ae/val_loss"}
    assert logged == pytest.approx({h["epoch"]: h["val_loss"] for h in history}, rel=1e-6)
    assert {tag for tag, _, _ in scalars} == {"ae/train_loss", "ae/val_loss",
                                             "ae/learning_rate"}


def stage1_inputs(stage1, tiny_run, tiny_data, epochs: int):
    """The config main.py built for `stage1` (with `epochs` epochs) and its latents."""
    from shg_jax.latents import pretraining_latents

    config = ae_config(tiny_data, **{"config.init_from": tiny_run[0],
                                     "config.stage": "pretrain",
                                     "config.pretrain.num_epochs": epochs})
    train, val, source = pretraining_latents(tiny_run[0], "best_loss", tiny_data, stage1[0])
    shape = (-1,) + latent_shape(config.model)
    return config, train.latents.reshape(shape), val.latents.reshape(shape), source


def assert_same_checkpoints(workdir, reference, config):
    """Every checkpoint kind of the two stage-1 runs restores to the same state and record."""
    from shg_jax.checkpoint import Checkpoints

    template = pretrain.AutoencoderSteps(config).init_state()
    for kind in ("latest", "best_loss"):
        a_ckpts = Checkpoints(workdir, read_only=True)
        b_ckpts = Checkpoints(reference, read_only=True)
        a, rec_a = a_ckpts.restore(a_ckpts.find(kind), template)
        b, rec_b = b_ckpts.restore(b_ckpts.find(kind), template)
        assert rec_a == rec_b, kind
        leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
        assert len(leaves_a) == len(leaves_b) > 3
        for x, y in zip(leaves_a, leaves_b):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_stage1_ctrl_c_saves_mid_epoch_and_resumes_exactly(stage1, tiny_run, tiny_data,
                                                           tmp_path, monkeypatch, capsys):
    """Ctrl-C in stage 1 (SIGINT in the 3rd step of epoch 2) saves at the next step and
    returns; the rerun resumes at that batch and ends as an uninterrupted run ends."""
    config, train, val, source = stage1_inputs(stage1, tiny_run, tiny_data, epochs=2)
    straight = pretrain.pretrain(config, tmp_path / "straight", train, val, source)
    from shg_jax import data

    steps_per_epoch = data.steps_per_epoch(len(train), config.pretrain.batch_size, train=True)
    calls, original = [], pretrain.AutoencoderStage.train_step

    def interrupted_step(self, state, latents):
        calls.append(1)
        if len(calls) == steps_per_epoch + 3:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, state, latents)

    monkeypatch.setattr(pretrain.AutoencoderStage, "train_step", interrupted_step)
    out = pretrain.pretrain(config, tmp_path / "run", train, val, source)
    assert out["interrupted"] and "saved a checkpoint at autoencoder epoch 2, step 3" in \
        capsys.readouterr().out
    monkeypatch.setattr(pretrain.AutoencoderStage, "train_step", original)
    resumed = pretrain.pretrain(config, tmp_path / "run", train, val, source)
    assert "resuming" in capsys.readouterr().out
    assert resumed["history"] == straight["history"] and not resumed["interrupted"]
    assert_same_checkpoints(tmp_path / "run", tmp_path / "straight", config)


def test_stage1_sigkill_in_a_save_then_rerun_equals_uninterrupted(stage1, tiny_run, tiny_data,
                                                                  tmp_path, capsys):
    """Stage 1 through main.py killed inside epoch 2's checkpoint save: the rerun resumes
    from epoch 1's checkpoint and ends as an uninterrupted run ends."""
    workdir = tmp_path / "killed"
    flags = tiny_train_overrides(tiny_data, workdir, **AE_OVERRIDES, **{
        "config.stage": "pretrain", "config.init_from": tiny_run[0],
        "config.pretrain.num_epochs": 2})
    proc = subprocess.run([sys.executable, "-c", KILLED_IN_SAVE,
                           "--config=configs/autoencoder.py",
                           "--config.model.ae_channels=(16, 8, 8)", *flags],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert [p.name for p in (workdir / "checkpoints").glob("*tmp*")], "not killed in a save"
    config, train, val, source = stage1_inputs(stage1, tiny_run, tiny_data, epochs=2)
    capsys.readouterr()
    pretrain.pretrain(config, workdir, train, val, source)
    assert "resuming" in capsys.readouterr().out
    assert not list((workdir / "checkpoints").glob("*tmp*"))
    pretrain.pretrain(config, tmp_path / "straight", train, val, source)
    assert_same_checkpoints(workdir, tmp_path / "straight", config)


def test_latents_extracted_once_and_reused(stage1, tiny_run, tiny_data):
    from shg_jax.latents import pretraining_latents

    workdir, _ = stage1
    meta = workdir / "latents" / "train-layer3" / "meta.json"
    stamp = meta.stat().st_mtime_ns
    train, _, _ = pretraining_latents(tiny_run[0], "best_loss", tiny_data, workdir)
    assert meta.stat().st_mtime_ns == stamp
    assert train.latents.shape == (len(train.index), 4 * 4 * 16)


def test_stage1_autoencoder_gets_pytorchs_default_biases(tiny_data):
    """Stage 1 builds the autoencoder alone; its biases start as the thesis' PyTorch modules
    did, U(+-1/sqrt(fan_in)) per layer (a transposed conv's fan_in is out_channels x 9), as
    inside the hourglass; bias_init="zeros" keeps flax's zeros."""
    import math

    params = dict(nnx.to_flat_state(pretrain.AutoencoderSteps(ae_config(tiny_data)).init_state(
        ).params))
    # latent 4x4x16, channels (16, 8, 8), code 8
    fans = {("encoder", 0): 16 * 9, ("encoder", 2): 8 * 9, ("encoder_linear",): 8 * 16,
            ("decoder_linear",): 8, ("decoder", 0): 8 * 9, ("decoder", 2): 16 * 9}
    for layer, fan_in in fans.items():
        bias = np.asarray(params[layer + ("bias",)][...])
        bound = 1 / math.sqrt(fan_in)
        assert np.all(np.abs(bias) <= bound) and np.abs(bias).max() > 0.4 * bound, layer
    zeros = pretrain.AutoencoderSteps(ae_config(tiny_data, **{
        "config.model.bias_init": "zeros"})).init_state().params
    assert not any(np.any(np.asarray(v[...])) for path, v in nnx.to_flat_state(zeros)
                   if path[-1] == "bias")


def test_multiplicative_noise_and_halving_schedule(tiny_data):
    x = jnp.concatenate([jnp.zeros(1000), jnp.full(200000, 3.0)])
    noisy = pretrain.add_noise(x, jax.random.key(0), 0.1)
    assert np.all(np.asarray(noisy[:1000]) == 0.0)           # multiplicative: 0 stays 0
    rel = np.asarray((noisy[1000:] - 3.0) / 3.0)
    assert abs(rel.std() - 0.1) < 0.002 and abs(rel.mean()) < 0.002
    config = ae_config(tiny_data)
    lrs = [pretrain.halving_learning_rate(config, e) for e in (0, 24, 25, 49, 50, 99)]
    assert lrs == pytest.approx([0.003, 0.003, 0.0015, 0.0015, 0.00075, 0.003 / 8])


def _flat(state):
    return {p: np.asarray(v[...]) for p, v in nnx.to_flat_state(state)}


def test_finetune_starts_from_shg_and_stage1_weights(stage1, tiny_run, tiny_data):
    from shg_jax.checkpoint import Checkpoints
    from shg_jax.runs import open_run
    from shg_jax.steps import Steps

    workdir, _ = stage1
    config = ae_config(tiny_data, **{"config.stage": "finetune", "config.init_from": workdir})
    steps = Steps(config, (0.4, 0.4, 0.4))
    state = pretrain.finetune_state(steps, config)

    _, _, shg_state, _ = open_run(tiny_run[0], "best_loss")
    ckpts = Checkpoints(workdir, read_only=True)
    ae_state, _ = ckpts.restore(ckpts.find("best_loss"),
                                pretrain.AutoencoderSteps(config).init_state())
    shg, ae, new = _flat(shg_state.params), _flat(ae_state.params), _flat(state.params)
    n_ae = 0
    for path, value in new.items():
        if "autoencoder" in path:
            np.testing.assert_array_equal(value, ae[path[3:]], err_msg=str(path))
            n_ae += 1
        else:
            np.testing.assert_array_equal(value, shg[path], err_msg=str(path))
    assert n_ae == len(ae) and len(new) == len(shg) + len(ae)
    for a, b in zip(jax.tree.leaves(state.batch_stats), jax.tree.leaves(shg_state.batch_stats)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert int(state.step) == 0

    wrong = ae_config(tiny_data, **{"config.stage": "finetune", "config.init_from": workdir,
                                    "config.model.mid_features": 4})
    with pytest.raises(TrainingError, match="does not fit config.model"):
        pretrain.finetune_state(Steps(wrong, (0.4, 0.4, 0.4)), wrong)
    not_stage1 = ae_config(tiny_data, **{"config.stage": "finetune",
                                         "config.init_from": tiny_run[0]})
    with pytest.raises(TrainingError, match="not an autoencoder pretraining run"):
        pretrain.finetune_state(steps, not_stage1)


@pytest.fixture(scope="module")
def finetuned(stage1, tiny_data, tmp_path_factory):
    """Stage 2: one epoch of fine-tuning from stage 1 -> the workdir."""
    from shg_jax import train

    workdir = tmp_path_factory.mktemp("stage2") / "run"
    config = ae_config(tiny_data, **{"config.stage": "finetune", "config.init_from": stage1[0],
                                     "config.num_epochs": 1, "config.batch_size": 8})
    out = train.train_and_evaluate(config, workdir)
    assert len(out["history"]) == 1 and (workdir / "tb").is_dir()
    return workdir


def _components_for_95(x: np.ndarray) -> int:
    x = np.asarray(x, np.float64)
    var = np.sort(np.linalg.eigvalsh(np.cov(x, rowvar=False)))[::-1].clip(0)
    return int(np.searchsorted(np.cumsum(var) / var.sum(), 0.95 - 1e-12) + 1)


def test_compare_table_holds_the_evaluate_numbers(tiny_run, finetuned, tmp_path):
    import json

    from analysis import compare
    from shg_jax import evaluate

    out = tmp_path / "compare"
    assert compare.main(["--ckpt", str(tiny_run[0]), "--ckpt", str(finetuned), "--split", "val",
                         "--latent-split", "val", "--ks", "2-3", "--n-init", "2",
                         "--out", str(out)]) == 0
    rows = json.loads((out / "pck.json").read_text())["rows"]
    table = (out / "pck.md").read_text()
    assert [r["model"] for r in rows] == ["SHG", "SHG + autoencoder"]
    for workdir, row in zip((tiny_run[0], finetuned), rows):
        ev = tmp_path / f"{workdir.parent.name}.json"
        assert evaluate.main(["--workdir", str(workdir), "--split", "val", "--out", str(ev)]) == 0
        expected = json.loads(ev.read_text())
        for key in ("all", "visible", "limbs", "thesis_all", "thesis_visible", "thesis_limbs"):
            assert row["pck"][key] == pytest.approx(expected[f"{key}/pck"], abs=1e-6)
            assert f"{expected[f'{key}/pck']:.4f}" in table
    assert "0.433" in table and "0.467" in table          # the thesis' val numbers beside
    curves = json.loads((out / "cumulative_variance.json").read_text())
    shg, ae = curves
    assert "bottleneck residual 3" in shg["latent"] and "autoencoder code" in ae["latent"]
    assert (shg["dimension"], ae["dimension"]) == (4 * 4 * 16, 8)
    shg_latents = np.load(out / "run0" / "latents" / "val-layer3" / "latents.npy")
    ae_code = np.load(out / "run1" / "latents" / "val-layercode" / "latents.npy")
    assert shg["components_95"] == _components_for_95(shg_latents)
    assert shg["thesis_index_95"] == shg["components_95"] - 1
    assert ae["components_95"] == _components_for_95(ae_code)
    kmeans = json.loads((out / "code1-kmeans.json").read_text())
    assert kmeans["ks"] == [2, 3] and len(kmeans["silhouette"]) == 2
    index = (out / "index.html").read_text()
    import re
    links = set(re.findall(r"href='([^']+)'", index))
    assert {"pck.md", "cumulative_variance.png", "code1-silhouette.png"} <= links
    assert all((out / name).is_file() for name in links)


def test_latent_study_of_the_code_walks_the_thesis_code_components(finetuned, tmp_path):
    """analysis.latent --layer code walks the thesis' code components (1, 2, 3, 10, 20, 30,
    40, 50) that the code has: 1, 2, 3 of this 8-value code."""
    import json

    from analysis import latent

    out = tmp_path / "code"
    assert latent.main(["--ckpt", str(finetuned), "--layer", "code", "--split", "val",
                        "--subset", "all", "--ks", "2-3", "--n-init", "2",
                        "--out", str(out)]) == 0
    walks = json.loads((out / "all-pca_walks.json").read_text())
    assert set(walks) == {"1", "2", "3"}
    # The code is decoded through the autoencoder's decoder and the hourglass.
    decoded = json.loads((out / "all-decoded_walks.json").read_text())
    assert set(decoded["velocity_xy"]["reference skips"]) == {"1", "2", "3"}
    assert (out / "all-latent_swap.csv").is_file() and (out / "all-claims.csv").is_file()
