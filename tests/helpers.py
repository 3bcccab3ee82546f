"""Helpers the tests import (conftest.py holds only fixtures and hooks): paths, the tiny
training config, TensorBoard event reading, jaxpr walking."""

import pathlib
import struct
import textwrap

REPO = pathlib.Path(__file__).resolve().parents[1]
COCO_SAMPLE = REPO.parent / "shared" / "data" / "coco_sample"


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


def xla_flags_with(*flags: str) -> str:
    """This process' XLA_FLAGS (conftest's test settings included) plus `flags`, for a
    subprocess that must compile as the tests here do."""
    import os

    return " ".join([os.environ.get("XLA_FLAGS", ""), *flags]).strip()


def tiny_train_config(data_dir, base: str = "baseline", **extra):
    """The config of `tiny_train_overrides`, built in-process from configs/BASE.py: each
    flag's text read as main.py's config flags read it (a Python literal, "(1,)" a tuple,
    "False" false; the text itself for a string or unset field)."""
    import ast
    import importlib

    config = importlib.import_module(f"configs.{base}").get_config()
    for flag in tiny_train_overrides(data_dir, **extra):
        key, value = flag[2:].split("=", 1)
        node = config
        *path, last = key.split(".")[1:]
        for p in path:
            node = node[p]
        text_field = node[last] is None or isinstance(node[last], str)
        node[last] = value if text_field else ast.literal_eval(value)
    return config


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


def damage_checkpoint(step_dir) -> list[pathlib.Path]:
    """Inverts 64 bytes in the middle of every array data file of a checkpoint (what a
    failing disk leaves); returns those files. Every one, because an OCDBT data file can also
    hold bytes that no restore reads, and where they lie varies from save to save: damaging
    only the largest file once left a restorable checkpoint (a flaky test)."""
    files = [p for p in (pathlib.Path(step_dir) / "state").rglob("*") if p.is_file()
             and p.parent.name == "d" and p.parent.parent.name.startswith("ocdbt.process_")]
    assert files, f"no array data files under {step_dir}"
    for target in files:
        raw = bytearray(target.read_bytes())
        middle = len(raw) // 2
        raw[middle:middle + 64] = bytes(b ^ 0xFF for b in raw[middle:middle + 64])
        target.write_bytes(bytes(raw))
    return files


#: main.py with its second checkpoint save SIGKILLed while Orbax writes it.
KILLED_IN_SAVE = textwrap.dedent("""
    import os, runpy, signal, sys
    from shg_jax import checkpoint

    original, saves = checkpoint.Checkpoints.save, []

    def save(self, *args, **kwargs):
        original(self, *args, **kwargs)       # returns while the async write goes on
        saves.append(1)
        if len(saves) == 2:
            os.kill(os.getpid(), signal.SIGKILL)

    checkpoint.Checkpoints.save = save
    sys.argv[0] = "main.py"
    runpy.run_path("main.py", run_name="__main__")
""")
