"""Thesis PyTorch state dicts <-> our model (no torch needed)."""

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from shg_jax import thesis_weights
from shg_jax.models import layers, model_config

from helpers import REPO

KEYS = json.loads((REPO.parent / "shared" / "reference" /
                   "thesis_state_dict.json").read_text()) if (
    REPO.parent / "shared" / "reference" / "thesis_state_dict.json").is_file() else None


@pytest.fixture(scope="module")
def keys():
    if KEYS is None:
        pytest.skip("../shared/reference/thesis_state_dict.json not found")
    return KEYS


def random_state(entries, seed=0):
    rng = np.random.default_rng(seed)
    return {k: (np.array(0, np.int64) if k.endswith("num_batches_tracked")
                else rng.standard_normal(shape).astype(np.float32)) for k, shape in entries}


def config(autoencoder=False):
    class C:
        pass
    c = C()
    c.model = model_config()
    c.model.autoencoder = autoencoder
    return c


def assert_same(a: dict, b: dict):
    assert set(a) == set(b)
    for k in a:
        assert np.asarray(a[k]).dtype == np.asarray(b[k]).dtype or k.endswith("tracked"), k
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_shg_round_trip_is_exact(keys):
    assert len(keys["SHG_1stack"]) == 430
    state = random_state(keys["SHG_1stack"])
    model = thesis_weights.from_thesis_state_dict(state, config())
    assert_same(thesis_weights.to_thesis_state_dict(model), state)


def test_combined_and_two_mapping_autoencoder_round_trips(keys):
    assert len(keys["AE"]) == 16
    shg, ae = random_state(keys["SHG_1stack"], 1), random_state(keys["AE"], 2)
    combined = {**{"SHG_model." + k: v for k, v in shg.items()},
                **{"AE_model." + k: v for k, v in ae.items()}}
    model = thesis_weights.from_thesis_state_dict(combined, config(True))
    assert_same(thesis_weights.to_thesis_state_dict(model, combined=True), combined)
    model2 = thesis_weights.from_thesis_state_dict(shg, config(True), autoencoder=ae)
    back_shg, back_ae = thesis_weights.to_thesis_state_dict(model2)
    assert_same(back_shg, shg)
    assert_same(back_ae, ae)


def test_known_answer_through_stem_conv_and_batchnorm(keys):
    state = random_state(keys["SHG_1stack"], 3)
    w = np.zeros((256, 3, 7, 7), np.float32)
    w[5, 1, 3, 3] = 1.0                   # output channel 5 = input channel 1 (centre tap)
    w[7, 0, 3, 4] = 1.0                   # output channel 7 = input channel 0, one px right
    state["pre_conv1.weight"], state["pre_conv1.bias"] = w, np.zeros(256, np.float32)
    state["bn_pre.running_mean"] = np.full(256, 0.5, np.float32)
    state["bn_pre.running_var"] = np.full(256, 4.0, np.float32)
    state["bn_pre.weight"] = np.full(256, 2.0, np.float32)
    state["bn_pre.bias"] = np.full(256, 1.0, np.float32)
    model = thesis_weights.from_thesis_state_dict(state, config())
    model.eval()
    x = jax.random.uniform(jax.random.key(0), (1, 16, 16, 3))
    y = np.asarray(model.bn_pre(model.pre_conv1(x)))            # (1, 8, 8, 256)
    scale = 2.0 / np.sqrt(4.0 + 1e-5)
    np.testing.assert_allclose(y[0, :, :, 5], scale * (np.asarray(x)[0, ::2, ::2, 1] - 0.5)
                               + 1.0, rtol=1e-5, atol=1e-5)
    # Stride 2 with PyTorch's padding 3: output (i, j) reads input (2i, 2j + 1) for this tap.
    expected = np.zeros((8, 8), np.float32)
    expected[:, :7] = np.asarray(x)[0, ::2, 1::2, 0][:, :7]
    expected[:, 7] = np.asarray(x)[0, ::2, 15, 0]
    np.testing.assert_allclose(y[0, :, :, 7], scale * (expected - 0.5) + 1.0, rtol=1e-5,
                               atol=1e-5)


def torch_conv_transpose(x, w, b):
    """PyTorch's ConvTranspose2d(k=3, stride=1, padding=1) on (H, W, Cin), written out as a
    scatter-add: every input pixel adds w[cin, cout] around its own position."""
    h, wd, _ = x.shape
    out = np.zeros((h + 2, wd + 2, w.shape[1]))
    for i in range(h):
        for j in range(wd):
            out[i:i + 3, j:j + 3] += np.einsum("c,cokl->klo", x[i, j], w)
    return out[1:-1, 1:-1] + b


def test_transposed_conv_kernel_flip():
    rng = np.random.default_rng(4)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)         # (in, out, kh, kw)
    b = rng.standard_normal(3).astype(np.float32)
    x = rng.standard_normal((5, 6, 4)).astype(np.float32)
    layer = layers.conv_transpose(4, 3, 3, rngs=nnx.Rngs(0))
    layer.kernel[...] = jnp.asarray(thesis_weights._to_ours(w, "conv_transpose"))
    layer.bias[...] = jnp.asarray(b)
    np.testing.assert_allclose(np.asarray(layer(x[None]))[0], torch_conv_transpose(x, w, b),
                               rtol=1e-4, atol=1e-4)
    # Without the flip the answer differs (the kernel is not symmetric).
    layer.kernel[...] = jnp.asarray(w.transpose(2, 3, 0, 1))
    assert np.abs(np.asarray(layer(x[None]))[0] - torch_conv_transpose(x, w, b)).max() > 0.1


def torch_conv(x, w, b):
    """PyTorch's Conv2d(k=3, padding=1) on (Cin, H, W): a correlation with zero padding."""
    c, h, wd = x.shape
    pad = np.pad(x, ((0, 0), (1, 1), (1, 1)))
    out = np.zeros((w.shape[0], h, wd))
    for i in range(3):
        for j in range(3):
            out += np.einsum("oc,chw->ohw", w[:, :, i, j], pad[:, i:i + h, j:j + wd])
    return out + b[:, None, None]


def thesis_ae_forward(state: dict, x: np.ndarray) -> np.ndarray:
    """AE.forward of the thesis (AE.py, no noise) in PyTorch's layout, by hand: x (256, 4, 4)
    -> 3 x (Conv2d 3x3, ReLU) -> view(-1) in (C, H, W) order -> Linear(50), ReLU ->
    Linear(1024), ReLU -> view(64, 4, 4) -> 3 x (ConvTranspose2d 3x3, ReLU)."""
    relu = lambda v: np.maximum(v, 0.0)                              # noqa: E731
    for i in (0, 2, 4):
        x = relu(torch_conv(x, state[f"encoder.{i}.weight"], state[f"encoder.{i}.bias"]))
    code = relu(state["encoder_linear.0.weight"] @ x.reshape(-1)
                + state["encoder_linear.0.bias"])
    x = relu(state["decoder_linear.0.weight"] @ code + state["decoder_linear.0.bias"])
    x = x.reshape(64, 4, 4)
    for i in (0, 2, 4):
        x = relu(torch_conv_transpose(x.transpose(1, 2, 0), state[f"decoder.{i}.weight"],
                                      state[f"decoder.{i}.bias"]).transpose(2, 0, 1))
    return x


def test_the_converted_autoencoder_computes_the_thesis_forward(keys):
    """The thesis' autoencoder weights through the conversion give AE.forward's output,
    worked out in PyTorch's layout by hand: the flatten between the convolutions and the
    Linear is PyTorch's (C, H, W) order, so any other order gives another output."""
    ae_state = {k: v * np.float32(0.05) for k, v in random_state(keys["AE"], 6).items()}
    model = thesis_weights.from_thesis_state_dict(random_state(keys["SHG_1stack"], 7),
                                                  config(True), autoencoder=ae_state)
    ae = model.hourglasses[0].autoencoder
    x = np.random.default_rng(8).uniform(0, 2, (256, 4, 4)).astype(np.float32)
    expected = thesis_ae_forward(ae_state, x)
    assert np.abs(expected).max() > 0.01
    ours = np.asarray(ae(jnp.asarray(x.transpose(1, 2, 0))[None]))[0].transpose(2, 0, 1)
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-5)
    # The code itself: our encoder equals the thesis' up to the Linear (the layout check).
    code = np.asarray(ae.encode(jnp.asarray(x.transpose(1, 2, 0))[None]))[0]
    h = x
    for i in (0, 2, 4):
        h = np.maximum(torch_conv(h, ae_state[f"encoder.{i}.weight"],
                                  ae_state[f"encoder.{i}.bias"]), 0)
    w, b = ae_state["encoder_linear.0.weight"], ae_state["encoder_linear.0.bias"]
    np.testing.assert_allclose(code, np.maximum(w @ h.reshape(-1) + b, 0), rtol=1e-4,
                               atol=1e-5)
    hwc = np.maximum(w @ h.transpose(1, 2, 0).reshape(-1) + b, 0)   # another flatten order
    assert np.abs(code - hwc).max() > 0.01


def test_missing_extra_and_misshaped_keys_are_reported_together(keys):
    state = random_state(keys["SHG_1stack"], 5)
    del state["last_conv_2.bias"]
    del state["hourglasses.0.bottlenecks.1.conv2.weight"]
    state["not.a.key"] = np.zeros(3)
    state["bn_last.weight"] = np.zeros(18, np.float32)
    with pytest.raises(thesis_weights.ConversionError) as e:
        thesis_weights.from_thesis_state_dict(state, config())
    msg = str(e.value)
    assert "last_conv_2.bias" in msg and "hourglasses.0.bottlenecks.1.conv2.weight" in msg
    assert "unexpected keys: ['not.a.key']" in msg
    assert "bn_last.weight: got (18,), expected (17,)" in msg


def test_cli_writes_a_checkpoint_evaluate_can_open(keys, tmp_path):
    from shg_jax.runs import open_run

    state = random_state(keys["SHG_1stack"], 6)
    np.savez(tmp_path / "shg.npz", **state)
    proc = subprocess.run([sys.executable, "-m", "shg_jax.convert", "--state-dict",
                           str(tmp_path / "shg.npz"), "--config=configs/baseline.py",
                           "--workdir", str(tmp_path / "run")], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    _, steps, restored, record = open_run(tmp_path / "run", "best")
    assert record.mean_rgb == pytest.approx(list(thesis_weights.THESIS_MEAN_RGB))
    model = nnx.merge(steps.graphdef_eval, restored.params, restored.batch_stats)
    assert_same(thesis_weights.to_thesis_state_dict(model), state)
    bad = subprocess.run([sys.executable, "-m", "shg_jax.convert", "--state-dict",
                          str(tmp_path / "nope.npz"), "--workdir", str(tmp_path / "x")],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "not found" in bad.stderr


def test_pth_without_torch_says_to_use_npz(tmp_path):
    try:
        import torch  # noqa: F401
        pytest.skip("torch is installed here")
    except ImportError:
        pass
    (tmp_path / "m.pth").write_bytes(b"x")
    with pytest.raises(thesis_weights.ConversionError, match="npz"):
        thesis_weights.load_state_dict(tmp_path / "m.pth")
