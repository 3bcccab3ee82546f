"""The XLA:CPU default (set before JAX starts, overridable, same results) and the
bfloat16 compute mode (bf16 activations, float32 parameters, optimizer state, BN statistics)."""

import os
import platform
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from shg_jax import cpu_flags
from shg_jax.cpu_flags import CPU_DEFAULTS, YNN_FLAG

from helpers import REPO, jaxpr_equations


def python_env(**env) -> dict:
    """This environment without the user's XLA settings, plus `env`."""
    full = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "SHG_JAX_XLA_DEFAULTS")}
    return dict(full, **env)


def run_python(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO,
                          env=python_env(**env), capture_output=True, text=True, timeout=300)


SHOW_FLAGS = ("import os; from shg_jax import cli; cli.prepare_process(); "
              "print('FLAGS=' + os.environ.get('XLA_FLAGS', ''))")


def shown_flags(proc) -> str:
    assert proc.returncode == 0, proc.stderr
    return [line for line in proc.stdout.splitlines() if line.startswith("FLAGS=")][0][6:]


def test_cpu_default_added_by_the_command_set_up_and_user_setting_kept():
    assert shown_flags(run_python(SHOW_FLAGS)).split() == [CPU_DEFAULTS]
    other = "--xla_force_host_platform_device_count=2"
    assert shown_flags(run_python(SHOW_FLAGS, XLA_FLAGS=other)).split() == [other, CPU_DEFAULTS]
    own = f"{YNN_FLAG}="
    assert shown_flags(run_python(SHOW_FLAGS, XLA_FLAGS=own)) == own
    assert shown_flags(run_python(SHOW_FLAGS, SHG_JAX_XLA_DEFAULTS="0")) == ""


def test_cpu_default_not_applied_after_jax_started():
    proc = run_python("import jax; jax.devices()\n" + SHOW_FLAGS)
    assert shown_flags(proc) == ""
    assert "JAX started before the command set up its process" in proc.stderr


def test_importing_any_module_changes_nothing_in_the_process():
    """Every module of the three packages imported: the environment (XLA_FLAGS included)
    and the logging filters are as they were; only a command's set-up changes them."""
    proc = run_python("""
        import importlib, logging, os, pkgutil
        env, filters = dict(os.environ), list(logging.getLogger("absl").filters)
        names = []
        for package in ("shg_jax", "data_prep", "analysis"):
            root = importlib.import_module(package)
            names += [m.name for m in pkgutil.walk_packages(root.__path__, package + ".")]
        for name in names:
            importlib.import_module(name)
        assert len(names) > 40, names
        assert dict(os.environ) == env, set(os.environ.items()) ^ set(env.items())
        assert logging.getLogger("absl").filters == filters
        from shg_jax import cli
        cli.prepare_process()
        assert os.environ.get("XLA_FLAGS") != env.get("XLA_FLAGS")
        assert len(logging.getLogger("absl").filters) == len(filters) + 1
        print("ok")
        """)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


GLIBC = ("glibc", "2.36")


@pytest.mark.parametrize("environ, libc, mode, expected", [
    ({}, GLIBC, "madvise", "glibc.malloc.hugetlb=1"),
    ({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, GLIBC, "madvise",
     "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"),
    ({}, ("glibc", "2.35"), "madvise", "glibc.malloc.hugetlb=1"),
    ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, GLIBC, "madvise", None),   # the user's
    ({"SHG_JAX_XLA_DEFAULTS": "0"}, GLIBC, "madvise", None),
    ({}, ("glibc", "2.34"), "madvise", None),     # no such tunable yet
    ({}, ("", ""), "madvise", None),              # musl, macOS
    ({}, GLIBC, "always", None),                  # huge pages come without asking
    ({}, GLIBC, "never", None),
    ({}, GLIBC, None, None),                      # no THP file
])
def test_hugepage_tunables_rules(environ, libc, mode, expected):
    assert cpu_flags.hugepage_tunables(environ, libc, mode) == expected


def test_thp_mode_reads_the_bracketed_mode(tmp_path):
    (tmp_path / "enabled").write_text("always [madvise] never\n")
    assert cpu_flags.thp_mode(str(tmp_path / "enabled")) == "madvise"
    assert cpu_flags.thp_mode(str(tmp_path / "missing")) is None


RESTART = """
    import os, sys
    from shg_jax import cpu_flags
    print("RUN", os.getpid(), sys.argv[1:], os.environ.get("GLIBC_TUNABLES"), flush=True)
    cpu_flags.restart_with_hugepage_malloc()
    print("KEPT", flush=True)
"""


def test_restart_with_hugepage_malloc_reruns_the_same_command_once():
    """Where this machine qualifies, the command runs twice in one process (same pid and
    arguments), the second time with the tunable, and restarts no more; elsewhere it runs on."""
    env = {k: v for k, v in python_env().items() if k != "GLIBC_TUNABLES"}
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(RESTART), "--flag", "x y"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    expected = cpu_flags.hugepage_tunables(env, platform.libc_ver(), cpu_flags.thp_mode())
    if expected is None:
        assert [line.split()[0] for line in lines] == ["RUN", "KEPT"]
        assert lines[0].endswith("['--flag', 'x y'] None")
    else:
        assert [line.split()[0] for line in lines] == ["RUN", "RUN", "KEPT"]
        first, second = (line.split(maxsplit=2) for line in lines[:2])
        assert first[1] == second[1]                                  # same process
        assert first[2] == "['--flag', 'x y'] None"
        assert second[2] == f"['--flag', 'x y'] {expected}"


GRADS = """
    import sys, numpy as np, jax, jax.numpy as jnp
    from flax import nnx
    from shg_jax.models import build_model, model_config
    assert jax.default_backend() == "cpu"
    cfg = model_config(); cfg.input_size = 64; cfg.features = 16; cfg.mid_features = 8
    cfg.stem_features = 16; cfg.depth = 1     # one level: the cheapest compile
    model = build_model(cfg, seed=0); model.train()
    graphdef, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    x = jax.random.normal(jax.random.key(1), (4, 64, 64, 3))
    def loss(p):
        return jnp.mean(nnx.merge(graphdef, p, stats, copy=True)(x) ** 2)
    value, grads = jax.jit(jax.value_and_grad(loss))(params)
    np.savez("{out}", value, *jax.tree.leaves(grads))
"""


def test_cpu_default_gives_the_same_loss_and_gradients(tmp_path):
    """The flag only swaps convolution kernels: equal results up to float32 rounding. (Both
    processes at once: XLA compiles on one core; both at the suite's LLVM level, which the
    flag does not touch: conftest.py.)"""
    fast = {"XLA_FLAGS": "--xla_backend_optimization_level=0"}
    procs = {name: subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(GRADS.replace("{out}", str(tmp_path / name)))],
        cwd=REPO, env=python_env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True) for name, env in [("default.npz", fast),
                                     ("ynn.npz", {**fast, "SHG_JAX_XLA_DEFAULTS": "0"})]}
    try:
        for proc in procs.values():
            _, stderr = proc.communicate(timeout=300)
            assert proc.returncode == 0, stderr
    finally:
        for proc in procs.values():
            proc.kill()
            proc.wait()
    a, b = (np.load(tmp_path / name) for name in procs)
    assert len(a.files) > 10
    # Biases followed by BatchNorm have a true gradient of 0 (both runs give rounding noise
    # of ~1e-9), so the absolute tolerance is relative to the largest gradient.
    scale = max(np.max(np.abs(a[key])) for key in a.files[1:])
    for key in a.files:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-3, atol=1e-5 * scale, err_msg=key)


@pytest.fixture(scope="module")
def bf16_steps(tiny_data):
    from helpers import tiny_train_config
    from shg_jax.steps import Steps

    config = tiny_train_config(tiny_data, **{"config.batch_size": 4, "config.model.depth": 1})
    config.model.dtype = "bfloat16"
    return Steps(config, (0.4, 0.4, 0.4))


def test_bfloat16_computes_in_bf16_with_float32_state(bf16_steps, tiny_data):
    from shg_jax import data, placement

    state = bf16_steps.init_state()
    rows = data.Split(tiny_data, "train").gather(np.arange(4))
    batch = placement.shard_batch(rows, bf16_steps.mesh)
    jaxpr = jax.make_jaxpr(bf16_steps._train_step)(state, batch)
    conv_dtypes = {str(e.invars[0].aval.dtype) for e in jaxpr_equations(jaxpr.jaxpr)
                   if e.primitive.name == "conv_general_dilated"}
    assert conv_dtypes == {"bfloat16"}
    state, loss = bf16_steps.train_step(state, batch)
    assert loss.dtype == jnp.float32 and np.isfinite(float(loss))
    for tree in (state.params, state.batch_stats, state.opt_state):
        dtypes = {x.dtype for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)}
        assert dtypes == {jnp.dtype(jnp.float32)}
    heatmaps, _ = bf16_steps.heatmaps_and_targets(state, batch)
    assert heatmaps.dtype == jnp.bfloat16
