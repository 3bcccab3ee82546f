"""The compiled steps (shg_jax.steps): data parallelism over 2 devices, the input's mean
RGB in training and evaluation, and learning itself."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from shg_jax import data, pck, placement
from shg_jax.steps import Steps

from helpers import REPO, tiny_train_config, xla_flags_with


TWO_DEVICES = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    from jax.sharding import Mesh
    sys.path.insert(0, "tests")
    from helpers import tiny_train_config
    from shg_jax import placement
    from shg_jax.steps import Steps

    assert len(jax.devices()) == 2
    rng = np.random.default_rng(0)
    batch = dict(images=rng.integers(0, 256, (8, 64, 64, 3), dtype=np.uint8),
                 keypoints=np.concatenate([rng.uniform(0, 64, (8, 17, 2)),
                                           rng.integers(0, 3, (8, 17, 1))], -1
                                          ).astype(np.float32),
                 valid=np.ones(8, bool))
    out = {}
    for optimizer in ("sgd",):
        config = tiny_train_config("unused", **{"config.optimizer": optimizer,
                                               "config.learning_rate": 0.1,
                                               "config.model.dtype": "float64",
                                               "config.model.depth": 1})
        for n in (1, 2):
            steps = Steps(config, [0.4, 0.4, 0.4], mesh=Mesh(np.array(jax.devices()[:n]),
                                                             ("data",)))
            init = [np.asarray(x).tolist() for x in jax.tree.leaves(steps.init_state().params)]
            state, loss = steps.train_step(steps.init_state(), placement.shard_batch(batch,
                                                                               steps.mesh))
            out[f"{optimizer}-{n}"] = dict(
                loss=float(loss), init=init,
                params=[np.asarray(x).tolist() for x in jax.tree.leaves(state.params)],
                stats=[np.asarray(x).tolist() for x in jax.tree.leaves(state.batch_stats)])
    json.dump(out, sys.stdout)
""")


def test_one_step_on_two_devices_equals_one_device():
    # Computed in float64 (parameters stay float32) so that summation order, which differs
    # between 1 and 2 devices, cannot hide a real difference behind float32 noise. SGD moves
    # each parameter by lr x its gradient, so equal parameters mean equal all-reduced
    # gradients (the optimizer itself runs replicated, the same on any device count).
    env = dict(os.environ, XLA_FLAGS=xla_flags_with("--xla_force_host_platform_device_count=2"),
               JAX_PLATFORMS="cpu", JAX_ENABLE_X64="1")
    proc = subprocess.run([sys.executable, "-c", TWO_DEVICES], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    one, two = out["sgd-1"], out["sgd-2"]
    assert two["loss"] == pytest.approx(one["loss"], abs=1e-6)
    # BatchNorm statistics are over the global batch of 8, not per-device halves.
    for a, b in zip(one["stats"], two["stats"]):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-9)
    # The float64 gradients agree to ~1e-12, so the float32 parameters agree to their last
    # bit or two; the update itself must be large.
    for a, b in zip(one["params"], two["params"]):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-9)
    moved = max(np.abs(np.subtract(a, i)).max() for a, i in zip(one["params"], one["init"]))
    assert moved > 1e-3


def test_training_steps_learn_the_keypoints(tiny_data):
    """PCK must rise: 300 steps on a fixed batch of 8 synthetic crops take the prediction
    from chance to a quarter of the joints on the exact heatmap pixel (at 16x16 heatmaps the
    PCK radius, 0.8 px, admits nothing else) and the loss down by more than half."""
    config = tiny_train_config(tiny_data, **{"config.heatmap.style": "newell"})
    split = data.Split(tiny_data, "train")
    steps = Steps(config, split.mean_rgb)
    host = split.gather(np.arange(8))
    host["valid"] = np.ones(8, bool)
    batch = placement.shard_batch(host, steps.mesh)
    state = steps.init_state()

    def val_pck(state):
        return pck.summarize(jax.device_get(steps.eval_step(state, batch)))["all/pck"]

    before = val_pck(state)
    losses = []
    for _ in range(300):
        state, loss = steps.train_step(state, batch)
        losses.append(loss)
    after = val_pck(state)
    losses = np.asarray(jax.device_get(losses))
    assert np.isfinite(losses).all() and losses[-10:].mean() < 0.5 * losses[:10].mean()
    assert before < 0.1 and after > 0.25, (before, after)


def test_training_mean_rgb_is_subtracted_from_the_model_input():
    """The model sees uint8 / 255 minus the training mean RGB, in the train step and in
    evaluation: with mean (10, 20, 30) / 255, images A give what A - (10, 20, 30) gives with
    a zero mean (up to float rounding), and clearly not what A itself gives."""
    config = tiny_train_config("unused", **{"config.batch_size": 2, "config.model.depth": 1})
    shift = np.array([10, 20, 30], np.uint8)
    with_mean = Steps(config, shift / 255.0)
    no_mean = Steps(config, (0.0, 0.0, 0.0))
    rng = np.random.default_rng(0)
    a = rng.integers(30, 256, (2, 64, 64, 3), dtype=np.uint8)
    np.testing.assert_allclose(np.asarray(with_mean.inputs(a)), a / 255.0 - shift / 255.0,
                               atol=1e-6)

    def run(steps, images):
        batch = placement.shard_batch({"images": images, "keypoints": np.tile(
            np.array([[20.0, 30.0, 2.0]], np.float32), (2, 17, 1)),
            "valid": np.ones(2, bool)}, steps.mesh)
        heatmaps = np.asarray(steps.infer(steps.init_state(), batch["images"]))
        _, loss = steps.train_step(steps.init_state(), batch)
        return heatmaps, float(loss)

    (h, loss), (h_ref, loss_ref), (h_raw, loss_raw) = (
        run(with_mean, a), run(no_mean, a - shift), run(no_mean, a))
    np.testing.assert_allclose(h, h_ref, atol=1e-5)
    assert loss == pytest.approx(loss_ref, rel=1e-5)
    assert np.abs(h - h_raw).max() > 1e-3 and loss != pytest.approx(loss_raw, rel=1e-5)


def test_the_augmented_step_trains_on_the_batch_augmented_from_seed_and_step():
    """With config.augment on, step k of the train step equals the plain step on the batch
    that augment.augment_batch makes with the key of (config.seed, k): crops and keypoints
    transformed before the targets are rendered; another step draws another batch."""
    import jax.numpy as jnp
    from shg_jax import augment

    plain = tiny_train_config("unused", **{"config.model.depth": 1})
    aug = tiny_train_config("unused", **{"config.model.depth": 1})
    aug.augment.enabled = True
    rng = np.random.default_rng(0)
    batch = dict(images=rng.integers(0, 256, (4, 64, 64, 3), dtype=np.uint8),
                 keypoints=np.concatenate([rng.uniform(8, 56, (4, 17, 2)),
                                           np.full((4, 17, 1), 2.0)], -1).astype(np.float32),
                 valid=np.ones(4, bool))
    plain_steps, aug_steps = Steps(plain, [0.4, 0.4, 0.4]), Steps(aug, [0.4, 0.4, 0.4])

    def loss(steps, batch, step):
        state = steps.init_state()._replace(step=jnp.int32(step))
        return float(steps.train_step(state, placement.shard_batch(batch, steps.mesh))[1])

    images, keypoints = augment.augment_batch(batch["images"], batch["keypoints"],
                                              augment.step_key(aug.seed, jnp.int32(3)),
                                              aug.augment)
    assert not np.array_equal(np.asarray(images), batch["images"])
    expected = loss(plain_steps, dict(batch, images=np.asarray(images),
                                      keypoints=np.asarray(keypoints)), 3)
    assert loss(aug_steps, batch, 3) == pytest.approx(expected, rel=1e-5)
    assert loss(aug_steps, batch, 4) != pytest.approx(expected, rel=1e-3)


@pytest.mark.parametrize("n_stacks", [2, 4])
def test_newell_recipe_trains_and_evaluates_with_2_and_4_stacks(n_stacks):
    """configs/newell.py at tiny widths: augmented train steps with Newell heatmaps over every
    stack's output lower the loss; the flip-test, sub-pixel evaluation step runs."""
    from configs import newell

    config = newell.get_config()
    config.model.update(n_stacks=n_stacks, features=8, mid_features=4, stem_features=8,
                        depth=1, input_size=32)
    config.learning_rate = 1e-3
    rng = np.random.default_rng(0)
    batch = dict(images=rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8),
                 keypoints=np.concatenate([rng.uniform(8, 24, (6, 17, 2)),
                                           np.full((6, 17, 1), 2.0)], -1).astype(np.float32),
                 valid=np.ones(6, bool))
    steps = Steps(config, [0.4, 0.4, 0.4])
    assert steps.augment is not None and steps.codec.flip and steps.codec.subpixel
    state = steps.init_state()
    sharded = placement.shard_batch(batch, steps.mesh)
    losses = []
    for _ in range(8):
        state, loss = steps.train_step(state, sharded)
        losses.append(float(loss))
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    sums = placement.to_host(steps.eval_step(state, sharded))
    assert sums["count"] == 6 and np.isfinite(sums["loss_sum"])


@pytest.mark.parametrize("precision, hlo", [("float32", "HIGHEST"), ("tensorfloat32", "HIGH"),
                                            ("bfloat16", "DEFAULT")])
def test_every_matmul_and_convolution_runs_at_config_precision(precision, hlo):
    """config.precision reaches every dot and convolution of the compiled steps (the SHG's
    train and inference steps, the autoencoder's stage-1 step): full float32 by default, as
    the thesis trained, where JAX would give TF32 on recent NVIDIA GPUs."""
    import re

    from shg_jax import pretrain

    config = tiny_train_config("unused", **{"config.precision": precision,
                                            "config.model.depth": 1})
    steps = Steps(config, [0.4, 0.4, 0.4])
    state = steps.init_state()
    batch = placement.shard_batch(dict(images=np.zeros((4, 64, 64, 3), np.uint8),
                                       keypoints=np.zeros((4, 17, 3), np.float32),
                                       valid=np.ones(4, bool)), steps.mesh)
    texts = [steps.train_step.lower(state, batch).as_text(),
             steps.infer.lower(state, batch["images"]).as_text()]
    config.model.autoencoder = True
    config.pretrain = dict(learning_rate=0.1, momentum=0.9, noise=0.1)
    ae = pretrain.AutoencoderSteps(config)
    texts.append(ae.train_step.lower(ae.init_state(), np.zeros((2, 8, 8, 16), np.float32))
                 .as_text())
    for text in texts:
        ops = re.findall(r"stablehlo\.(?:convolution|dot_general)[^\n]*", text)
        assert len(ops) > 3
        for op in ops:
            assert re.search(rf"precision(?:_config)? = \[(#stablehlo<precision )?{hlo}\b",
                             op), op


def thesis_profile(centre: int, size: int, sigma: float) -> np.ndarray:
    """The thesis' blur of a unit impulse along one axis, by hand: scipy.ndimage's normalised
    Gaussian, exp(-x^2 / (2 sigma^2)) over radius int(4 sigma + 0.5), summed to 1; the
    impulse far enough from the edges that mode="nearest" does not matter."""
    radius = int(4 * sigma + 0.5)
    taps = np.exp(-np.arange(-radius, radius + 1) ** 2 / (2 * sigma ** 2))
    out = np.zeros(size)
    out[centre - radius:centre + radius + 1] = taps / taps.sum()
    return out


def test_the_steps_render_the_thesis_targets_from_the_config():
    """The targets the compiled steps compare against (the train step renders them through
    the same codec) equal the thesis' maps worked out by hand: a 64-px crop, 16 cells; the
    impulse at round(x * 16 / 64) (half to even: 5.5 -> 6, 7.5 -> 8, 6.5 -> 6), sigma 0.5 for
    a visible joint (v=2: peak 0.6187), 1.0 for an occluded one (v=1: peak 0.1592), nothing
    for an unlabelled joint or one outside the crop."""
    config = tiny_train_config("unused")
    steps = Steps(config, [0.4, 0.4, 0.4])
    keypoints = np.zeros((4, 17, 3), np.float32)
    keypoints[:, 0] = (22, 30, 2)              # cells (6, 8), visible
    keypoints[:, 1] = (40, 26, 1)              # cells (10, 6), occluded
    keypoints[:, 2] = (70, 20, 2)              # outside the crop
    keypoints[:, 3] = (30, 30, 0)              # unlabelled
    expected = np.zeros((16, 16, 17))
    expected[..., 0] = np.outer(thesis_profile(8, 16, 0.5), thesis_profile(6, 16, 0.5))
    expected[..., 1] = np.outer(thesis_profile(6, 16, 1.0), thesis_profile(10, 16, 1.0))
    assert expected[8, 6, 0] == pytest.approx(0.6187, abs=1e-4)
    assert expected[6, 10, 1] == pytest.approx(0.1592, abs=1e-4)
    state = steps.init_state()
    batch = placement.shard_batch(dict(images=np.zeros((4, 64, 64, 3), np.uint8),
                                       keypoints=keypoints, valid=np.ones(4, bool)),
                                  steps.mesh)
    rendered = {"codec": steps.codec.targets(keypoints),
                "evaluation step": steps.heatmaps_and_targets(state, batch)[1]}
    for path, maps in rendered.items():
        for row in np.asarray(maps):
            np.testing.assert_allclose(row, expected, atol=1e-7, err_msg=path)
