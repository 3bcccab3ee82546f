"""The models: thesis parameter counts and shapes, encode/decode, skips, BatchNorm modes, init."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from shg_jax.models import BottleneckAutoencoder, Residual, build_model, model_config
from shg_jax.models.stacked import Head


def n_params(module) -> int:
    return sum(x.size for x in jax.tree.leaves(nnx.state(module, nnx.Param)))


def tiny_config(**overrides):
    cfg = model_config()
    cfg.update(dict(features=16, mid_features=8, stem_features=8, depth=2, input_size=64,
                    ae_channels=(12, 8, 4), ae_code_size=6))
    cfg.update(overrides)
    return cfg


# --- the exact thesis model: shapes and counts only, no compilation -----------------------

def test_thesis_parameter_count():
    model = nnx.eval_shape(lambda: build_model(model_config()))
    assert n_params(model) == 14_526_053


def thesis_parameter_count(n_stacks: int) -> int:
    """The thesis' SHG(n) of SHG.py counted from its parts (PyTorch parameters: BatchNorm
    weight and bias, conv weights and biases): residual = BN(256), 1x1 256->128, BN, 3x3
    128->128, BN, 1x1 128->256, 3x3 256->256 skip; stem conv7x7 3->256 + BN + 3 residuals;
    14 residuals per hourglass; between stacks the link (residual, two 1x1 256->256, 1x1
    256->17, 1x1 17->256); the head (residual, 1x1 256->17, BN, 1x1 17->17) once."""
    i = o = 256
    m = 128
    residual = 2 * i + (i * m + m) + 2 * m + (9 * m * m + m) + 2 * m + (m * o + o) + (
        9 * i * o + o)
    stem = (3 * 49 * 256 + 256) + 2 * 256 + 3 * residual
    link = residual + 2 * (256 * 256 + 256) + (256 * 17 + 17) + (17 * 256 + 256)
    head = residual + (256 * 17 + 17) + 2 * 17 + (17 * 17 + 17)
    return stem + n_stacks * 14 * residual + (n_stacks - 1) * link + head


def test_thesis_multi_stack_parameter_count():
    """model.stacking="thesis" (the default) builds SHG.py's SHG(n): 26,735,734 parameters
    for n = 2 and 51,155,096 for n = 4 (counted by running the thesis' SHG.py)."""
    assert thesis_parameter_count(1) == 14_526_053
    assert thesis_parameter_count(2) == 26_735_734
    assert thesis_parameter_count(4) == 51_155_096
    cfg = model_config()
    cfg.n_stacks = 2
    model = build_model(cfg)                  # eager: seconds, where eval_shape takes longer
    assert n_params(model) == 26_735_734
    assert len(model.heads) == 1 and len(model.merges) == 1
    per_stack = n_params(model.hourglasses[0]) + n_params(model.merges[0])
    assert n_params(model) + 2 * per_stack == 51_155_096


def test_thesis_autoencoder_parameter_count():
    ae = nnx.eval_shape(lambda: BottleneckAutoencoder(rngs=nnx.Rngs(0)))
    assert n_params(ae) == 1_578_994
    cfg = model_config()
    cfg.autoencoder = True
    model = nnx.eval_shape(lambda: build_model(cfg))
    assert n_params(model) == 14_526_053 + 1_578_994


def test_thesis_shapes():
    model = nnx.eval_shape(lambda: build_model(model_config()))
    graphdef, state = nnx.split(model)
    images = jax.ShapeDtypeStruct((2, 256, 256, 3), jnp.float32)

    def forward(state, x):
        out = nnx.merge(graphdef, state).forward(x)
        return out.heatmaps[-1], out.bottlenecks

    heatmaps, bottlenecks = jax.eval_shape(forward, state, images)
    assert heatmaps.shape == (2, 64, 64, 17)
    assert [b.shape for b in bottlenecks] == [(2, 4, 4, 256)] * 3
    latent, skips = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s).encode(x), state,
                                   images)
    assert latent.shape == (2, 4, 4, 256) and math.prod(latent.shape[1:]) == 4096
    assert [s.shape[1] for s in skips] == [64, 32, 16, 8]


def test_identity_residual_skip_has_no_conv_when_widths_match():
    rngs = nnx.Rngs(0)
    same = Residual(16, 16, 8, skip="identity", rngs=rngs)
    wider = Residual(8, 16, 8, skip="identity", rngs=rngs)
    assert same.branch_cov is None
    assert wider.branch_cov.kernel[...].shape == (1, 1, 8, 16)
    with pytest.raises(ValueError, match="residual_skip"):
        Residual(16, 16, 8, skip="bogus", rngs=rngs)


def test_bad_input_size_is_rejected():
    with pytest.raises(ValueError, match="multiple of"):
        build_model(tiny_config(input_size=60))


# --- behaviour on a tiny model ------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny():
    """A tiny 1-stack model with an autoencoder, in eval mode, and its compiled entry points."""
    model = build_model(tiny_config(autoencoder=True), seed=1)
    # Non-trivial running statistics so that eval-mode BatchNorm is not the identity.
    images = jax.random.normal(jax.random.key(0), (4, 64, 64, 3))
    model.train()
    nnx.jit(lambda m, x: m(x))(model, images)          # one compile, not op by op
    model.eval()
    graphdef, state = nnx.split(model)

    @jax.jit(static_argnums=2)
    def forward(state, x, use_skips):
        out = nnx.merge(graphdef, state).forward(x, use_skips=use_skips)
        return out.heatmaps, out.bottlenecks

    @jax.jit
    def roundtrip(state, x):
        m = nnx.merge(graphdef, state)
        outs = []
        for layer in (1, 2, 3, "code"):
            latent, skips = m.encode(x, layer)
            outs.append(m.decode(latent, skips, layer))
        return outs

    return dict(model=model, state=state, forward=forward, roundtrip=roundtrip,
                images=images)


def test_tiny_shapes(tiny):
    heatmaps, bottlenecks = tiny["forward"](tiny["state"], tiny["images"], True)
    assert heatmaps.shape == (1, 4, 16, 16, 17)
    assert [b.shape for b in bottlenecks] == [(4, 4, 4, 16)] * 3


@pytest.mark.parametrize("style", ["thesis", "newell"])
def test_head_widths_and_the_features_it_hands_the_merge(style):
    """config.model.head: the thesis reads the heatmaps from 17 rectified maps and hands the
    merge its residual's features; Newell's head reads them from F rectified maps and hands
    the merge those. Runs recorded before the field have the thesis head."""
    head = Head(16, 8, 17, skip="identity", style=style, rngs=nnx.Rngs(0))
    width = 17 if style == "thesis" else 16
    assert head.last_conv_1.kernel[...].shape == (1, 1, 16, width)
    assert head.last_conv_2.kernel[...].shape == (1, 1, width, 17)
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 16))
    heatmaps, features = nnx.jit(lambda h, x: h(x))(head, x)

    @nnx.jit
    def by_hand(h, x):
        residual = h.last_res(x)
        rectified = nnx.relu(h.bn_last(h.last_conv_1(residual)))
        return h.last_conv_2(rectified), residual, rectified

    expected, residual, rectified = by_hand(head, x)
    np.testing.assert_allclose(heatmaps, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(features, residual if style == "thesis" else rectified,
                               rtol=1e-5, atol=1e-6)
    assert heatmaps.shape == (2, 8, 8, 17) and features.shape == (2, 8, 8, 16)
    with pytest.raises(ValueError, match="head must be one of"):
        Head(16, 8, 17, skip="identity", style="hrnet", rngs=nnx.Rngs(0))


def test_encode_then_decode_equals_forward(tiny):
    heatmaps, _ = tiny["forward"](tiny["state"], tiny["images"], True)
    for out in tiny["roundtrip"](tiny["state"], tiny["images"]):
        np.testing.assert_allclose(out, heatmaps[-1], rtol=1e-5, atol=1e-6)


def test_edited_latent_changes_decoding(tiny):
    m = tiny["model"]
    latent, skips = m.encode(tiny["images"], 3)
    base = m.decode(latent, skips, 3)
    edited = m.decode(latent + 1.0, skips, 3)
    assert float(jnp.abs(edited - base).max()) > 1e-4


def test_bottleneck_outputs_are_the_encoded_latents(tiny):
    _, bottlenecks = tiny["forward"](tiny["state"], tiny["images"], True)
    for layer in (1, 2, 3):
        latent, _ = tiny["model"].encode(tiny["images"], layer)
        np.testing.assert_allclose(latent, bottlenecks[layer - 1], rtol=1e-5, atol=1e-6)


def test_skips_off_changes_output_with_same_parameters(tiny):
    with_skips, _ = tiny["forward"](tiny["state"], tiny["images"], True)
    without, _ = tiny["forward"](tiny["state"], tiny["images"], False)
    assert float(jnp.abs(with_skips - without).max()) > 1e-3
    no_skip_model = build_model(tiny_config(autoencoder=True, use_skip_connections=False))
    assert n_params(no_skip_model) == n_params(tiny["model"])
    # The config default is what a call without `use_skips` uses.
    nnx.update(no_skip_model, tiny["state"])
    no_skip_model.eval()
    np.testing.assert_allclose(no_skip_model(tiny["images"]), without[-1], rtol=1e-5,
                               atol=1e-6)


def test_batchnorm_train_vs_eval():
    model = build_model(tiny_config(), seed=2)
    x = jax.random.normal(jax.random.key(1), (4, 64, 64, 3))
    x_other = x.at[1:].set(jax.random.normal(jax.random.key(2), (3, 64, 64, 3)))
    stats_before = nnx.state(model, nnx.BatchStat)

    model.eval()
    a, b = model(x), model(x_other)
    np.testing.assert_allclose(a[0], b[0], rtol=1e-5, atol=1e-6)   # per-sample in eval
    assert jax.tree.all(jax.tree.map(lambda u, v: bool(jnp.all(u == v)), stats_before,
                                     nnx.state(model, nnx.BatchStat)))

    model.train()
    a, b = model(x), model(x_other)
    assert float(jnp.abs(a[0] - b[0]).max()) > 1e-4                # batch statistics
    mean = model.bn_pre.mean[...]
    assert float(jnp.abs(mean).max()) > 0                            # running stats moved
    # PyTorch momentum 0.1: new = 0.9 * old + 0.1 * batch mean (old is 0 after the 1st call
    # of the previous line's pair, so two updates: 0.9 * (0.1 m1) + 0.1 m2).
    stem = model.pre_conv1(x)
    stem_other = model.pre_conv1(x_other)
    expected = 0.9 * 0.1 * stem.mean((0, 1, 2)) + 0.1 * stem_other.mean((0, 1, 2))
    np.testing.assert_allclose(mean, expected, rtol=1e-4, atol=1e-6)


def test_two_stacks_give_per_stack_outputs():
    model = build_model(tiny_config(n_stacks=2, stacking="newell"), seed=3)
    model.eval()
    out = model.forward(jnp.ones((2, 64, 64, 3)))
    assert out.heatmaps.shape == (2, 2, 16, 16, 17)
    assert float(jnp.abs(out.heatmaps[0] - out.heatmaps[1]).max()) > 0
    assert len(model.merges) == 1 and len(model.heads) == 2


def test_thesis_stacking_links_stacks_and_outputs_the_last_only():
    """The thesis' SHG.forward for n stacks: after each hourglass but the last, the link
    x' = relu(conv2(z)) + x + relu(post_pred(relu(pre_pred(z)))), z = relu(conv1(res(y)));
    one head on the last hourglass, so the loss sees the last stack only."""
    model = build_model(tiny_config(n_stacks=2), seed=3)
    model.eval()
    images = jax.random.normal(jax.random.key(1), (2, 64, 64, 3))
    out = model.forward(images)
    assert out.heatmaps.shape == (1, 2, 16, 16, 17) and len(model.heads) == 1

    @nnx.jit
    def by_hand(model, images):
        x = model.stem(images)
        y, _ = model.hourglasses[0](x, True)
        link = model.merges[0]
        z = nnx.relu(link.post_conv_1(link.post_res(y)))
        pred = nnx.relu(link.post_pred_conv(nnx.relu(link.pre_pred_conv(z))))
        x = nnx.relu(link.post_conv_2(z)) + x + pred
        y, _ = model.hourglasses[1](x, True)
        return model.heads[0](y)[0]

    np.testing.assert_allclose(out.heatmaps[0], by_hand(model, images), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="stacking"):
        build_model(tiny_config(n_stacks=2, stacking="hrnet"))


def test_autoencoder_every_stack():
    last_only = build_model(tiny_config(n_stacks=2, autoencoder=True))
    every = build_model(tiny_config(n_stacks=2, autoencoder=True, autoencoder_every_stack=True))
    assert last_only.hourglasses[0].autoencoder is None
    assert last_only.hourglasses[1].autoencoder is not None
    assert every.hourglasses[0].autoencoder is not None


def test_code_layer_needs_an_autoencoder():
    model = build_model(tiny_config())
    with pytest.raises(ValueError, match="autoencoder"):
        model.encode(jnp.ones((1, 64, 64, 3)), "code")
    with pytest.raises(ValueError, match="layer"):
        model.encode(jnp.ones((1, 64, 64, 3)), 4)


def test_kernel_init_is_untruncated_glorot_normal_and_biases_zero():
    res = Residual(256, 256, 128, skip="conv3x3", rngs=nnx.Rngs(0))
    kernel = np.asarray(res.branch_cov.kernel[...])            # (3, 3, 256, 256)
    fan = 9 * 256
    std = math.sqrt(2.0 / (fan + fan))
    assert abs(kernel.std() / std - 1) < 0.03
    assert abs(kernel.mean()) < 0.01 * std
    # A normal truncated at 2 std has no values beyond it; 590k untruncated draws have ~27k.
    assert np.mean(np.abs(kernel) > 2 * std) > 0.04
    assert np.abs(kernel).max() > 4 * std
    for conv in (res.conv1, res.conv2, res.conv3, res.branch_cov):
        assert not np.any(np.asarray(conv.bias[...]))
    ae = BottleneckAutoencoder(rngs=nnx.Rngs(0))
    lin = np.asarray(ae.encoder_linear.kernel[...])             # (1024, 50)
    assert abs(lin.std() / math.sqrt(2.0 / (1024 + 50)) - 1) < 0.05


def test_flat_glorot_draw_equals_flax_variance_scaling():
    """The fast initialiser draws exactly what flax's untruncated fan_avg normal draws."""
    from shg_jax.models.layers import glorot_normal_untruncated

    reference = nnx.initializers.variance_scaling(1.0, "fan_avg", "normal")
    for i, shape in enumerate([(3, 3, 16, 8), (7, 7, 3, 8), (64, 6), (1, 1, 8, 16)]):
        key = jax.random.key(i)
        np.testing.assert_array_equal(np.asarray(glorot_normal_untruncated(key, shape)),
                                      np.asarray(reference(key, shape)))


# --- PyTorch's defaults the thesis inherits: bias init, unbiased running variance ----------

def test_pytorch_bias_init_bounds_per_layer():
    model = build_model(tiny_config(autoencoder=True), seed=4)
    # conv7x7 3 -> 8: fan_in 3 * 49; conv1x1 16 -> 8 in a residual: fan_in 16; linear 64 -> 6;
    # transposed conv 8 -> 12 (3x3): PyTorch's fan_in is out_channels x 9 = 108.
    ae = model.hourglasses[0].autoencoder
    cases = [(model.pre_conv1, 3 * 49), (model.hourglasses[0].bottlenecks[0].conv1, 16),
             (ae.encoder_linear, 4 * 4 * 4), (ae.decoder[0], 8 * 9)]
    for layer, fan_in in cases:
        bias = np.asarray(layer.bias[...])
        bound = 1 / math.sqrt(fan_in)
        assert np.all(np.abs(bias) <= bound) and np.abs(bias).max() > 0.4 * bound, layer
    assert not np.array_equal(np.asarray(model.pre_conv1.bias[...]),
                              np.asarray(build_model(tiny_config(), seed=5).pre_conv1.bias[...]))
    zeros = build_model(tiny_config(bias_init="zeros"), seed=4)
    assert not np.any(np.asarray(zeros.pre_conv1.bias[...]))
    with pytest.raises(ValueError, match="bias_init"):
        build_model(tiny_config(bias_init="uniform"))


@pytest.mark.parametrize("mode,ddof", [("unbiased", 1), ("biased", 0)])
def test_batchnorm_running_variance(mode, ddof):
    model = build_model(tiny_config(bn_running_var=mode), seed=0)
    bn = model.bn_pre
    x = jax.random.normal(jax.random.key(2), (2, 4, 4, bn.num_features)) * 3 + 1
    model.train()
    before = np.asarray(bn.var[...])
    y = bn(x)
    expected = 0.9 * before + 0.1 * np.var(np.asarray(x), axis=(0, 1, 2), ddof=ddof)
    np.testing.assert_allclose(np.asarray(bn.var[...]), expected, rtol=1e-5)
    # The normalisation itself uses the biased batch variance in both modes (as PyTorch).
    xn = np.asarray(x)
    ref = (xn - xn.mean((0, 1, 2))) / np.sqrt(xn.var((0, 1, 2)) + 1e-5)
    np.testing.assert_allclose(np.asarray(y), ref, rtol=1e-4, atol=1e-4)
    model.eval()
    frozen = np.asarray(bn.var[...])
    bn(x)
    np.testing.assert_array_equal(np.asarray(bn.var[...]), frozen)


def test_running_statistics_under_jit_are_rebound_without_walking_the_trace(monkeypatch):
    """Under jit every BatchNorm's running mean and variance come out as in an eager step,
    and updating them never builds a tracer's error message: JAX builds it by walking the
    whole trace so far (find_progenitors), which flax's sharding check on `stat[...] = new`
    triggered twice per statistic, making a train step's trace quadratic in the model's size
    (layers.RunningStat)."""
    from jax._src.interpreters import partial_eval as pe

    walks = []
    original = pe.DynamicJaxprTracer._origin_msg
    monkeypatch.setattr(pe.DynamicJaxprTracer, "_origin_msg",
                        lambda self: walks.append(1) or original(self))
    x = jax.random.normal(jax.random.key(3), (2, 64, 64, 3)) * 2 + 1
    model, eager = build_model(tiny_config(), seed=0), build_model(tiny_config(), seed=0)
    model.train()
    eager.train()
    graphdef, state = nnx.split(model)

    @jax.jit
    def update(state, x):
        m = nnx.merge(graphdef, state)
        m(x)
        return nnx.state(m, nnx.BatchStat)

    jitted = update(state, x)
    assert walks == []
    before = nnx.state(model, nnx.BatchStat)
    eager(x)
    expected = nnx.state(eager, nnx.BatchStat)
    leaves, ref, old = (jax.tree.leaves(t) for t in (jitted, expected, before))
    n_bn = sum(isinstance(m, nnx.BatchNorm) for _, m in nnx.iter_graph(model))
    assert len(leaves) == len(ref) == len(old) == 2 * n_bn > 0
    for a, b, o in zip(leaves, ref, old):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
        assert np.abs(np.asarray(b) - np.asarray(o)).max() > 1e-4   # the statistics moved


def test_newell_config_parameter_count():
    """configs/newell.py's 8-stack model, counted from its parts: residual(in, out) = BN(in),
    1x1 in->128, BN, 3x3 128->128, BN, 1x1 128->out (+ a 1x1 in->out skip when in != out);
    stem conv7x7 3->64 + BN + residual(64, 256) + 2 residuals; per stack 14 residuals (2 per
    level, 3 at the bottleneck, 3 in the decoder) and Newell's head (residual, 1x1 256->256,
    BN, 1x1 256->17); 7 merges."""
    from configs import newell

    def residual(i, o, m=128):
        return 2 * i + (i * m + m) + 2 * m + (9 * m * m + m) + 2 * m + (m * o + o) + (
            i * o + o if i != o else 0)

    head = residual(256, 256) + (256 * 256 + 256) + 2 * 256 + (256 * 17 + 17)
    stem = (3 * 49 * 64 + 64) + 2 * 64 + residual(64, 256) + 2 * residual(256, 256)
    merge = (256 * 256 + 256) + (17 * 256 + 256)
    expected = stem + 8 * (14 * residual(256, 256) + head) + 7 * merge
    # Built for real: nnx.eval_shape takes minutes over 8 stacks, eager building seconds.
    assert n_params(build_model(newell.get_config().model)) == expected == 27_446_408
