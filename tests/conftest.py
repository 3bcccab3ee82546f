"""Shared fixtures: tiny models compiled once per module, the path to the real COCO slice."""

import os
import pathlib
import shutil
import struct
import tempfile

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
COCO_SAMPLE = REPO.parent / "shared" / "data" / "coco_sample"

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


def tiny_train_overrides(data_dir, workdir=None, **extra) -> list:
    """main.py flags for a tiny, fast training run on `data_dir` (64x64 crops)."""
    flags = {"config.data_dir": data_dir, "config.model.input_size": 64,
             "config.model.features": 16, "config.model.mid_features": 8,
             "config.model.stem_features": 16, "config.model.depth": 2,
             "config.batch_size": 2, "config.eval_batch_size": 8, "config.num_epochs": 2,
             "config.log_every_steps": 5, "config.learning_rate": 1e-3}
    flags.update(extra)
    out = [f"--{k}={v}" for k, v in flags.items()]
    return out + ([f"--workdir={workdir}"] if workdir else [])


def tiny_train_config(data_dir, base: str = "baseline", **extra):
    """The config of `tiny_train_overrides`, built in-process from configs/BASE.py."""
    import importlib

    config = importlib.import_module(f"configs.{base}").get_config()
    for flag in tiny_train_overrides(data_dir, **extra):
        key, value = flag[2:].split("=", 1)
        node = config
        *path, last = key.split(".")[1:]
        for p in path:
            node = node[p]
        node[last] = type(node[last])(value) if node[last] is not None else value
    return config


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


def read_events(logdir):
    """(tag, step, value) scalars and (tag, step) images from tensorboardX event files."""
    from tensorboardX.proto import event_pb2

    scalars, images, files = [], [], sorted(logdir.glob("events.out.tfevents.*"))
    for path in files:
        raw = path.read_bytes()
        pos = 0
        while pos < len(raw):
            (length,) = struct.unpack("<Q", raw[pos:pos + 8])
            event = event_pb2.Event.FromString(raw[pos + 12:pos + 12 + length])
            pos += 12 + length + 4
            for v in event.summary.value:
                if v.HasField("image"):
                    images.append((v.tag, event.step))
                else:
                    scalars.append((v.tag, event.step, v.simple_value))
    return scalars, images, files


def jaxpr_equations(jaxpr):
    """Every equation of a jaxpr, including those inside pjit/custom_vjp/remat sub-jaxprs."""
    import jax.extend

    for eqn in jaxpr.eqns:
        yield eqn
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            yield from jaxpr_equations(sub)
