"""analysis.decoding: the soft-argmax, the sensitivity of a decoder, walks, latent swaps, and
their binding to a run's model; each against a known answer."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from analysis import decoding
from shg_jax import data
from shg_jax.heatmap import heatmap_argmax
from shg_jax.runs import open_run

H = 32


def gaussian_maps(positions: jax.Array, sigma: float = 0.8) -> jax.Array:
    """(B, J, 2) positions (x, y) in cells -> (B, H, H, J) Gaussian heatmaps."""
    ys, xs = jnp.meshgrid(jnp.arange(H), jnp.arange(H), indexing="ij")
    d2 = ((xs[None, :, :, None] - positions[:, None, None, :, 0]) ** 2
          + (ys[None, :, :, None] - positions[:, None, None, :, 1]) ** 2)
    return jnp.exp(-d2 / (2 * sigma ** 2))


def test_soft_argmax_finds_an_off_grid_peak_and_ignores_far_mass():
    positions = jnp.array([[[10.3, 12.7], [20.1, 8.4], [4.6, 25.2]]])
    maps = gaussian_maps(positions)
    # A weaker blob far away (outside the window) must not pull the centroid.
    maps = maps.at[0, 2, 28, 0].set(0.5)
    np.testing.assert_allclose(decoding.soft_argmax(maps), positions, atol=1e-3)
    # The integer argmax is 0.3-0.4 cells off: the soft-argmax is not the argmax.
    assert np.abs(np.asarray(heatmap_argmax(maps)[0]) - positions).max() > 0.25


def test_sensitivity_of_a_hand_made_decoder_is_its_known_matrix():
    """Joints move linearly with the latent (positions = p0 + M z), so the movement along
    direction e_d * s is M[:, :, d] * s exactly."""
    rng = np.random.default_rng(0)
    p0 = jnp.array([[10.3, 12.7], [20.1, 8.4], [15.5, 22.2]])
    m = jnp.asarray(rng.normal(0, 1, (3, 2, 4)), jnp.float32)            # joint, xy, latent

    def decode(z):
        return gaussian_maps(p0[None] + jnp.einsum("jcd,bd->bjc", m, z))

    scales = jnp.array([1.0, 2.0, 0.5, 3.0])
    velocity = decoding.joint_velocity(decode, jnp.zeros(4), jnp.diag(scales))
    expected = jnp.einsum("jcd,d->djc", m, scales)                        # (C, J, 2)
    np.testing.assert_allclose(velocity, expected, atol=0.01 * float(jnp.abs(expected).max()))
    # A component the decoder ignores moves nothing.
    still = decoding.joint_velocity(decode, jnp.zeros(4), jnp.zeros((1, 4)))
    np.testing.assert_allclose(still, 0.0, atol=1e-6)


def test_walk_points_step_from_the_mean_in_units_of_sqrt_lambda():
    mean = np.array([1.0, 2.0, 3.0])
    axes = np.eye(3)[:2]
    points = decoding.walk_points(mean, axes, np.array([2.0, 0.5]), (-1, 0, 3))
    np.testing.assert_allclose(points, [[-1, 2, 3], [1, 2, 3], [7, 2, 3],
                                        [1, 1.5, 3], [1, 2, 3], [1, 3.5, 3]])


def test_in_batches_pads_the_last_batch_and_keeps_every_row_once():
    calls = []

    def fn(x):
        calls.append(len(x))
        return {"double": x * 2}

    out = decoding.in_batches(fn, 5, 2, np.arange(5))
    assert calls == [2, 2, 2]                        # one shape for every call
    np.testing.assert_array_equal(out["double"], np.arange(5) * 2)


def _swap_models():
    """Two hand-made models on 'images' that are their own ground-truth heatmaps: one
    draws its output from the skips only, one from the latent only."""
    def encode(images):
        return images, [images]

    def skips_only(latent, skips, use_skips):
        return skips[0] if use_skips else jnp.zeros_like(latent)

    def latent_only(latent, skips, use_skips):
        return latent

    return encode, skips_only, latent_only


def test_a_latent_swap_follows_b_on_a_skip_model_and_a_on_a_latent_model():
    rng = np.random.default_rng(1)
    positions = jnp.asarray(rng.uniform(4, H - 4, (12, 17, 2)), jnp.float32)
    maps_a = gaussian_maps(positions[:6])
    maps_b = gaussian_maps(positions[6:])
    encode, skips_only, latent_only = _swap_models()
    follows_b = decoding.swap_scores(jax.device_get(
        decoding.swap_hits(encode, skips_only, maps_a, maps_b, maps_a, maps_b)))
    follows_a = decoding.swap_scores(jax.device_get(
        decoding.swap_hits(encode, latent_only, maps_a, maps_b, maps_a, maps_b)))
    for group in ("all", *decoding.GROUPS):
        assert follows_b["A latent, B skips"]["vs B"][group] == 1.0
        assert follows_b["A latent, B skips"]["vs A"][group] < 0.5
        assert follows_a["A latent, B skips"]["vs A"][group] == 1.0
        assert follows_a["A latent, B skips"]["vs B"][group] < 0.5
        for scores in (follows_a, follows_b):
            assert scores["A latent, A skips"]["vs A"][group] == 1.0
            assert scores["B latent, B skips"]["vs B"][group] == 1.0
    # With the skips off, the skip-only model has nothing left to draw a pose from.
    assert follows_b["A latent, no skips"]["vs A"]["all"] < 0.5
    assert follows_a["A latent, no skips"]["vs A"]["all"] == 1.0


def test_group_pck_averages_over_samples_with_an_annotated_joint_of_the_group():
    correct = np.zeros((3, 17), bool)
    annotated = np.zeros((3, 17), bool)
    annotated[0, [0, 1]] = True                                   # head: 1 of 2 right
    correct[0, 0] = True
    annotated[1, [0, 7]] = True                                   # head 1/1, arms 0/1
    correct[1, 0] = True
    scores = decoding.group_pck(correct, annotated)
    assert scores["head"] == pytest.approx((0.5 + 1.0) / 2)
    assert scores["arms"] == 0.0 and scores["legs"] is None and scores["torso"] is None
    assert scores["all"] == pytest.approx((0.5 + 0.5) / 2)       # sample 2 has none


@pytest.fixture(scope="module")
def model(tiny_run):
    workdir, _ = tiny_run
    config, steps, state, _ = open_run(workdir, "latest")
    split = data.Split(config.data_dir, "val")
    return steps, state, split.gather(np.arange(4))


@pytest.mark.parametrize("layer", [1, 3])
def test_the_models_decoding_of_its_own_latent_is_its_prediction(model, layer):
    steps, state, batch = model
    bound = decoding.model_decoding(steps, layer)
    assert decoding.model_decoding(steps, layer) is bound          # compiled once
    latents, skips = bound.encode(state, batch["images"])
    assert latents.ndim == 2
    expected = steps.infer(state, batch["images"])
    np.testing.assert_allclose(bound.decode(state, latents, skips, True), expected,
                               atol=1e-4, rtol=1e-4)
    assert np.abs(np.asarray(bound.decode(state, latents, skips, False))
                  - np.asarray(expected)).max() > 1e-3              # the skips matter


def test_the_models_sensitivity_equals_finite_differences(model):
    steps, state, batch = model
    bound = decoding.model_decoding(steps, 3)
    latents, skips = bound.encode(state, batch["images"][:1])
    start = np.asarray(latents[0])
    direction = np.random.default_rng(2).normal(0, 1, (1, start.size)).astype(np.float32)
    velocity = np.asarray(bound.velocity(state, start, direction, skips, True))[0]

    def position(t):
        z = (start + t * direction[0])[None]
        return np.asarray(decoding.soft_argmax(bound.decode(state, z, skips, True)))[0]

    eps = 1e-3
    finite = (position(eps) - position(-eps)) / (2 * eps)
    np.testing.assert_allclose(velocity, finite, atol=0.02 * np.abs(finite).max() + 1e-3)
    assert np.abs(velocity).max() > 0
