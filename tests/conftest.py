"""Shared fixtures: tiny models compiled once per module, the path to the real COCO slice."""

import os
import shutil
import tempfile

import pytest

from helpers import COCO_SAMPLE, tiny_train_config
from shg_jax import cpu_flags

_CACHE_ENV = {"JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
              "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
#: LLVM's optimisation level for XLA:CPU's generated code. The tests check what the
#: programs compute, on tiny models, so most of their CPU time is compiling; level 0 (the
#: same HLO passes and fusions, less optimised machine code) cut the suite from 619 s to
#: 532 s on the 2-core dev machine. Training and benchmarks keep XLA's default.
_TEST_XLA_FLAG = "--xla_backend_optimization_level"


def pytest_configure(config):
    """Three settings shared by the test process and every subprocess it starts (they inherit
    the environment), made before any test module imports JAX (JAX reads them at start):

    - the XLA:CPU flag every command sets first thing (shg_jax.cpu_flags; importing the
      library does not), so that in-process tests compile what the commands run;
    - `_TEST_XLA_FLAG`=0 in XLA_FLAGS, unless the user set that flag;
    - one persistent XLA compilation cache for the session: the many `main.py` runs of the
      same tiny model compile once instead of once each. The key covers the program, the
      devices and XLA_FLAGS, so a cached executable is only reused where a compile would
      give the same one. A cache the user set is kept; ours is deleted at the end."""
    cpu_flags.apply_cpu_defaults()
    flags = os.environ.get("XLA_FLAGS", "")
    if _TEST_XLA_FLAG not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {_TEST_XLA_FLAG}=0".strip()
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return
    config._shg_cache = tempfile.mkdtemp(prefix="shg_jax_test_xla_cache_")
    os.environ.update(_CACHE_ENV, JAX_COMPILATION_CACHE_DIR=config._shg_cache)


def pytest_unconfigure(config):
    cache = getattr(config, "_shg_cache", None)
    if cache:
        shutil.rmtree(cache, ignore_errors=True)


@pytest.fixture(scope="session")
def coco_sample():
    if not (COCO_SAMPLE / "annotations").is_dir():
        pytest.skip(f"real COCO slice not found at {COCO_SAMPLE}")
    return COCO_SAMPLE


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """Synthetic figures prepared as 64x64 crops (made once per test session)."""
    from data_prep import coco as prep
    from data_prep import synthesis

    root = tmp_path_factory.mktemp("tiny_data")
    synthesis.generate(root / "coco", train=150, val=24, seed=3, size=96)
    assert prep.main(["--coco-root", str(root / "coco"), "--out", str(root / "prepared"),
                      "--size", "64", "--test-size", "16", "--workers", "1"]) == 0
    return root / "prepared"


@pytest.fixture(scope="session")
def tiny_run(tiny_data, tmp_path_factory):
    """A tiny model trained in-process for one epoch on `tiny_data`: (workdir, config); steps
    5-9 are traced into WORKDIR/profile."""
    from shg_jax import train

    workdir = tmp_path_factory.mktemp("tiny_run") / "run"
    config = tiny_train_config(tiny_data, **{"config.num_epochs": 1,
                                             "config.batch_size": 8})
    train.train_and_evaluate(config, workdir, profile_dir=workdir / "profile")
    return workdir, config
