"""The model summary command."""

import subprocess
import sys

import jax
from flax import nnx

from shg_jax.models import build_model, model_config
from shg_jax.models.__main__ import forward_flops, parameter_table

from helpers import REPO, jaxpr_equations


def test_parameter_table_groups_every_parameter():
    cfg = model_config()
    cfg.update(dict(features=16, mid_features=8, stem_features=8, depth=2, input_size=64,
                    n_stacks=2, stacking="newell"))
    model = nnx.eval_shape(lambda: build_model(cfg))
    rows = dict(parameter_table(model))
    assert sum(rows.values()) == sum(x.size for x in jax.tree.leaves(nnx.state(model,
                                                                              nnx.Param)))
    assert {"hourglasses.0.bottlenecks", "hourglasses.1.branch_cov", "heads.1.last_res",
            "merges.0.features", "pre_conv1"} <= set(rows)


def test_forward_flops_counts_the_stem_convolution():
    cfg = model_config()
    cfg.update(dict(features=16, mid_features=8, stem_features=8, depth=2, input_size=64))
    model = nnx.eval_shape(lambda: build_model(cfg))
    model.eval()
    flops, _ = forward_flops(model, 64)
    # Every convolution's multiply-adds, counted here from the traced program's shapes:
    # 2 x output pixels x kernel area x in x out channels (the stem alone is 2.4 MFLOP).
    graphdef, state = nnx.split(model)
    jaxpr = jax.make_jaxpr(lambda s, x: nnx.merge(graphdef, s)(x))(
        state, jax.ShapeDtypeStruct((1, 64, 64, 3), jax.numpy.float32))
    conv = 0
    for eqn in jaxpr_equations(jaxpr.jaxpr):
        if eqn.primitive.name == "conv_general_dilated":
            (_, h, w, _), (kh, kw, cin, cout) = (eqn.outvars[0].aval.shape,
                                                 eqn.invars[1].aval.shape)
            conv += 2 * h * w * kh * kw * cin * cout
    assert conv > 2 * 32 * 32 * 7 * 7 * 3 * 8
    # Convolutions are most of the work; BatchNorm, ReLU, pooling and adds the rest, while
    # XLA leaves out the multiply-adds on zero padding (a few % of a 3x3 conv at 16x16).
    assert 0.9 * conv <= flops <= 1.2 * conv, (flops, conv)



def test_summary_cli_prints_the_thesis_total():
    out = subprocess.run([sys.executable, "-m", "shg_jax.models",
                          "--config=configs/baseline.py", "--noflops"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "total" in out.stdout and "14,526,053" in out.stdout
