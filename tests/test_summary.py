"""The model summary command."""

import subprocess
import sys

import jax
from flax import nnx

from shg_jax.models import build_model, model_config
from shg_jax.models.__main__ import forward_flops, parameter_table

from conftest import REPO


def test_parameter_table_groups_every_parameter():
    cfg = model_config()
    cfg.update(dict(features=16, mid_features=8, stem_features=8, depth=2, input_size=64,
                    n_stacks=2))
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
    stem_conv = 2 * 32 * 32 * 7 * 7 * 3 * 8          # multiply-adds of pre_conv1 alone
    assert stem_conv < flops < 100 * stem_conv


def test_summary_cli_prints_the_thesis_total():
    out = subprocess.run([sys.executable, "-m", "shg_jax.models",
                          "--config=configs/baseline.py", "--noflops"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "total" in out.stdout and "14,526,053" in out.stdout
