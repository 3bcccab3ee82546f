"""Shared fixtures: tiny models compiled once per module, the path to the real COCO slice."""

import os
import shutil
import tempfile

import pytest

from helpers import COCO_SAMPLE, tiny_train_config

_CACHE_ENV = {"JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
              "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}


def pytest_configure(config):
    """One persistent XLA compilation cache for the session, shared by the test process and
    every subprocess it starts (they inherit the environment): the many `main.py` runs of the
    same tiny model compile once instead of once each. Set before any test module imports JAX
    (JAX reads these variables at import). The key covers the program, the devices and
    XLA_FLAGS, so a cached executable is only reused where a compile would give the same one.
    A cache the user set is kept; ours is deleted at the end."""
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
    from data_prep import synthetic

    root = tmp_path_factory.mktemp("tiny_data")
    synthetic.generate(root / "coco", train=150, val=24, seed=3, size=96)
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
