"""Two processes on one machine (jax.distributed over loopback, gloo CPU collectives) train
and evaluate exactly like one process with the same two devices."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from shg_jax import data, fileio, shards

from helpers import REPO, xla_flags_with

WORKER = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    pid, port, data_dir, workdir = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    if pid >= 0:
        jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}",
                                   coordinator_bind_address=f"127.0.0.1:{port}",
                                   num_processes=2, process_id=pid)
    sys.path.insert(0, "tests")
    from helpers import tiny_train_config
    from shg_jax import placement, train
    assert len(jax.devices()) == 2
    config = tiny_train_config(data_dir, **{"config.num_epochs": 1, "config.batch_size": 4,
                                            "config.eval_batch_size": 4,
                                            "config.model.depth": 1})
    out = train.train_and_evaluate(config, workdir)
    params = [np.asarray(p) for p in jax.tree.leaves(placement.to_host(out["state"].params))]
    np.savez(f"{workdir}/params-{max(pid, 0)}.npz", *params)
    print("HISTORY" + json.dumps(out["history"]))
""")


@pytest.fixture(scope="module")
def mini_data(tiny_data, tmp_path_factory):
    """8 training crops (two steps of 4) and 6 validation crops."""
    out = tmp_path_factory.mktemp("mini")
    for name, n in (("train", 8), ("val", 6)):
        batch = data.Split(tiny_data, name).gather(np.arange(n), shards.ARRAYS)
        folder = out / name / shards.shard_name(0)
        folder.mkdir(parents=True)
        for key in shards.ARRAYS:
            np.save(folder / f"{key}.npy", batch[key])
        fileio.write_json(out / name / shards.META,
                          {"count": n, "shards": [{"name": shards.shard_name(0), "count": n}]})
    meta = data.load_meta(tiny_data)
    fileio.write_json(out / shards.META, {"image_size": meta["image_size"],
                                          "mean_rgb": meta["mean_rgb"]})
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(runs, data_dir):
    """Starts every (pid, port, workdir, env) worker at once (XLA compiles on one core, so
    the single-process run overlaps the pair) and returns each one's history."""
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(pid), str(port),
                               str(data_dir), str(workdir)], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for pid, port, workdir, env in runs]
    outs = []
    try:
        for p in procs:
            stdout, stderr = p.communicate(timeout=300)
            outs.append((p.returncode, stdout, stderr))
    finally:
        for p in procs:                      # a hung process is killed by its handle
            if p.poll() is None:
                p.kill()
                p.wait(timeout=30)
    for rc, _, stderr in outs:
        assert rc == 0, stderr[-3000:]
    return [json.loads(o.split("HISTORY", 1)[1]) for _, o, _ in outs]


def test_two_processes_match_one(mini_data, tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))
    two, one, port = tmp_path / "two", tmp_path / "one", free_port()
    single_env = dict(env, XLA_FLAGS=xla_flags_with("--xla_force_host_platform_device_count=2"))
    *histories, reference = launch([(0, port, two, env), (1, port, two, env),
                                    (-1, 0, one, single_env)], mini_data)

    # Both processes end with identical parameters, equal to the single-process run's
    # (same devices, same global batches, same reductions: float32 agreement to 1e-6).
    p0, p1, ref = (np.load(d / f"params-{i}.npz") for d, i in ((two, 0), (two, 1), (one, 0)))
    assert len(p0.files) == len(ref.files) > 0
    for k in p0.files:
        np.testing.assert_array_equal(p0[k], p1[k])
        np.testing.assert_allclose(p0[k], ref[k], rtol=1e-6, atol=1e-7)
    assert histories[0] == histories[1]
    h, r = histories[0][0], reference[0]
    assert h["global_step"] == r["global_step"] == 2
    for key in ("train_loss", "val_loss"):
        assert h[key] == pytest.approx(r[key], rel=1e-6)
    for key in ("val_pck", "val_pck_visible", "val_pck_limbs"):
        assert h[key] == r[key]
    # Only process 0 wrote TensorBoard events; the checkpoint restores in one process.
    assert len(list((two / "tb").glob("events.out.tfevents.*"))) == 1
    from shg_jax.runs import open_run
    import jax
    _, _, state, record = open_run(two, "latest")
    assert record.global_step == 2
    for a, k in zip(jax.tree.leaves(state.params), p0.files):
        np.testing.assert_array_equal(np.asarray(a), p0[k])
