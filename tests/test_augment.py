"""shg_jax.augment: rotation, scale and flip of crops and keypoints inside the train step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from shg_jax import augment
from shg_jax.skeleton import JOINT_NAMES

S = 64
MARK = 10 * (np.arange(17) + 1)          # joint j's marker value: distinct, 10..170


def marked_crops(batch):
    """Crops with a 5x5 marker of value MARK[j] around each joint j (a ring of radius 20 about
    the centre) and one extra unlabelled joint; keypoints as pixel indices, v = 2."""
    angles = np.linspace(0, 2 * np.pi, 17, endpoint=False)
    xy = np.round(np.stack([31.5 + 20 * np.cos(angles), 31.5 + 20 * np.sin(angles)], 1))
    images = np.zeros((batch, S, S, 3), np.uint8)
    for j, (x, y) in enumerate(xy.astype(int)):
        images[:, y - 2:y + 3, x - 2:x + 3, 0] = MARK[j]
    kps = np.concatenate([xy, np.full((17, 1), 2.0)], 1)
    kps[16, 2] = 0                                       # unlabelled: stays unlabelled
    return images, np.repeat(kps[None], batch, 0).astype(np.float32)


def test_painted_joint_markers_stay_under_their_transformed_keypoints():
    images, kps = marked_crops(4)
    draws = augment.Draws(angle=jnp.asarray([20.0, -25.0, 0.0, 30.0]),
                          scale=jnp.asarray([1.2, 0.8, 1.0, 1.1]),
                          flip=jnp.asarray([False, True, True, False]))
    out = np.asarray(augment.transform_images(images, draws))
    moved = np.asarray(augment.transform_keypoints(kps, draws, S))
    for b in range(4):
        for j in range(17):
            x, y, v = moved[b, j]
            source = augment.SWAP[j] if draws.flip[b] else j
            assert v == (0 if source == 16 else 2)
            assert out[b, int(round(y)), int(round(x)), 0] == pytest.approx(MARK[source],
                                                                         abs=1e-3), (b, j)
    # A rotation moves the corner joint out of the crop: it becomes unlabelled.
    corner = np.zeros((1, 17, 3), np.float32)
    corner[0, :, :2], corner[0, :, 2] = 31.5, 2
    corner[0, 0] = (1, 1, 2)
    out_kps = augment.transform_keypoints(
        corner, augment.Draws(jnp.asarray([30.0]), jnp.asarray([1.0]), jnp.asarray([False])), S)
    np.testing.assert_allclose(np.asarray(out_kps[0, 0, :2]),
                               [31.5 - 30.5 * np.cos(np.pi / 6) + 30.5 * np.sin(np.pi / 6),
                                31.5 - 30.5 * np.sin(np.pi / 6) - 30.5 * np.cos(np.pi / 6)],
                               atol=1e-4)
    assert out_kps[0, 0, 2] == 0 and out_kps[0, 1, 2] == 2


def test_the_flip_mirrors_pixels_and_swaps_left_and_right():
    images, kps = marked_crops(2)
    images[1] = np.random.default_rng(0).integers(0, 256, (S, S, 3))
    draws = augment.Draws(jnp.zeros(2), jnp.ones(2), jnp.asarray([True, False]))
    out = np.asarray(augment.transform_images(images, draws))
    np.testing.assert_allclose(out[0], images[0, :, ::-1], atol=1e-4)     # mirrored
    np.testing.assert_allclose(out[1], images[1], atol=1e-4)              # untouched
    moved = np.asarray(augment.transform_keypoints(kps, draws, S))
    ls, rs = JOINT_NAMES.index("left_shoulder"), JOINT_NAMES.index("right_shoulder")
    lw, rw = JOINT_NAMES.index("left_wrist"), JOINT_NAMES.index("right_wrist")
    nose = JOINT_NAMES.index("nose")
    for new, old in ((ls, rs), (rs, ls), (lw, rw), (nose, nose)):
        np.testing.assert_allclose(moved[0, new], [S - 1 - kps[0, old, 0], kps[0, old, 1],
                                                   kps[0, old, 2]], atol=1e-4)
    np.testing.assert_allclose(moved[1], kps[1], atol=1e-4)


def test_fill_outside_the_source_crop():
    images = np.full((1, S, S, 3), 100, np.uint8)
    draws = augment.Draws(jnp.asarray([45.0]), jnp.asarray([1.0]), jnp.asarray([False]))
    zero = np.asarray(augment.transform_images(images, draws, "zero"))
    edge = np.asarray(augment.transform_images(images, draws, "edge"))
    assert zero[0, 0, 0, 0] == 0 and zero[0, S // 2, S // 2, 0] == pytest.approx(100)
    np.testing.assert_allclose(edge, 100, atol=1e-3)
    with pytest.raises(ValueError, match="augment.fill"):
        augment.transform_images(images, draws, "reflect")


def test_draws_stay_in_their_ranges():
    config = augment.augment_config(enabled=True)
    d = augment.draw(jax.random.key(0), 4000, config)
    angle, scale, flip = (np.asarray(v) for v in d)
    assert -30 <= angle.min() < -29.5 and 29.5 < angle.max() <= 30
    assert 0.75 <= scale.min() < 0.76 and 1.24 < scale.max() <= 1.25
    assert 0.45 < flip.mean() < 0.55
    config.update(rotation=10.0, scale_min=1.0, scale_max=1.5, flip=0.0)
    angle, scale, flip = (np.asarray(v) for v in augment.draw(jax.random.key(0), 4000, config))
    assert np.abs(angle).max() <= 10 and 9.5 < np.abs(angle).max()
    assert scale.min() >= 1.0 and scale.max() <= 1.5 and not flip.any()


def test_same_seed_and_step_give_the_same_batch():
    images, kps = marked_crops(3)
    config = augment.augment_config(enabled=True)

    def batch(seed, step):
        out = augment.augment_batch(images, kps, augment.step_key(seed, jnp.int32(step)), config)
        return [np.asarray(a) for a in out]

    first = batch(0, 5)
    for a, b in zip(first, batch(0, 5)):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], batch(0, 6)[0])
    assert not np.array_equal(first[0], batch(1, 5)[0])


def test_augment_samples_draws_from_each_samples_index():
    """The transformed copy `evaluate --augment-val` scores: sample i is transformed by the
    draws of key (EVAL_SEED, i), whatever batch it comes in."""
    images, kps = marked_crops(2)
    images[1] = np.random.default_rng(1).integers(0, 256, (S, S, 3))
    config = augment.augment_config(enabled=True)
    together = augment.augment_samples(images, kps, jnp.asarray([7, 3]), config)
    alone = augment.augment_samples(images[1:], kps[1:], jnp.asarray([3]), config)
    np.testing.assert_allclose(np.asarray(together[0][1]), np.asarray(alone[0][0]), atol=1e-4)
    np.testing.assert_allclose(np.asarray(together[1][1]), np.asarray(alone[1][0]), atol=1e-4)
    d = augment.draw(jax.random.fold_in(jax.random.key(augment.EVAL_SEED), 7), 1, config)
    np.testing.assert_allclose(np.asarray(together[1][:1]),
                               np.asarray(augment.transform_keypoints(kps[:1], d, S)), atol=1e-4)
