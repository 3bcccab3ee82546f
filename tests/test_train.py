"""Training: resume after SIGKILL and SIGINT, config checks, non-finite loss, TensorBoard,
evaluation, data parallelism over 2 devices, and learning itself."""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest

from shg_jax import evaluate
from shg_jax.checkpoint import Checkpoints

from conftest import REPO, read_events, tiny_train_overrides

MAIN = [sys.executable, "main.py", "--config=configs/baseline.py"]


def main_cmd(data_dir, workdir, *extra, **overrides):
    return MAIN + tiny_train_overrides(data_dir, workdir, **overrides) + list(extra)


def run_main(data_dir, workdir, *extra, **overrides):
    return subprocess.run(main_cmd(data_dir, workdir, *extra, **overrides), cwd=REPO,
                          capture_output=True, text=True, timeout=600)


def params_of(workdir, checkpoint="latest"):
    _, _, state, record = evaluate.load_run(workdir, checkpoint)
    return [np.asarray(x) for x in jax.tree.leaves(state.params)], record


def records(workdir):
    ckpts = Checkpoints(workdir, read_only=True)
    return [ckpts.record("latest", s) for s in ckpts.managers["latest"].all_steps()]


@pytest.fixture(scope="module")
def reference(tiny_data, tmp_path_factory):
    """An uninterrupted 2-epoch run."""
    workdir = tmp_path_factory.mktemp("reference") / "run"
    out = run_main(tiny_data, workdir)
    assert out.returncode == 0, out.stderr
    return workdir


def wait_for_epoch_1_then(proc, workdir, action, delay=0.1):
    """Waits until the epoch-1 checkpoint is committed, then `action(proc)` a bit later."""
    deadline = time.time() + 300
    while True:
        assert proc.poll() is None, "the run ended before it could be interrupted"
        assert time.time() < deadline
        latest = workdir / "checkpoints" / "latest"
        if latest.is_dir() and any(p.name.isdigit() for p in latest.iterdir()):
            break
        time.sleep(0.01)
    time.sleep(delay)
    action(proc)


def test_reference_run_writes_checkpoints_config_and_history(reference):
    recs = records(reference)
    assert [r["epoch"] for r in recs] == [1, 2]
    assert all(r["step_in_epoch"] == 0 for r in recs)
    history = recs[-1]["history"]
    assert [h["epoch"] for h in history] == [1, 2]
    assert all(np.isfinite(h["train_loss"]) and 0 <= h["val_pck"] <= 1 for h in history)
    assert json.loads((reference / "config.json").read_text())["batch_size"] == 2
    assert (reference / "checkpoints" / "best").is_dir()


def test_tensorboard_has_the_tags_and_values(reference):
    scalars, images, files = read_events(reference / "tb")
    assert len(files) == 1
    tags = {t for t, _, _ in scalars}
    assert {"train/loss", "train/learning_rate", "train/images_per_second",
            "epoch/train_loss", "epoch/val_loss", "epoch/val_pck", "epoch/val_pck_visible",
            "epoch/val_pck_limbs", "epoch/learning_rate"} <= tags
    history = records(reference)[-1]["history"]
    logged = {step: v for t, step, v in scalars if t == "epoch/val_pck"}
    for h in history:
        assert logged[h["epoch"]] == pytest.approx(h["val_pck"], rel=1e-6)
    lrs = [v for t, _, v in scalars if t == "train/learning_rate"]
    assert lrs and all(v == pytest.approx(1e-3) for v in lrs)
    assert sorted(step for _, step in images) == [1, 2]


def test_evaluate_reproduces_the_logged_validation(reference, tmp_path, capsys):
    out = tmp_path / "val.json"
    assert evaluate.main(["--workdir", str(reference), "--checkpoint", "2",
                          "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    logged = records(reference)[-1]["history"][-1]
    assert result["epoch"] == 2
    assert result["all/pck"] == pytest.approx(logged["val_pck"], abs=1e-7)
    assert result["visible/pck"] == pytest.approx(logged["val_pck_visible"], abs=1e-7)
    assert result["limbs/pck"] == pytest.approx(logged["val_pck_limbs"], abs=1e-7)
    assert result["loss"] == pytest.approx(logged["val_loss"], rel=1e-6)
    assert len(result["all/per_joint"]) == 17
    assert "left_wrist" in capsys.readouterr().out


def test_evaluate_errors_name_what_is_missing(tmp_path, capsys):
    assert evaluate.main(["--workdir", str(tmp_path / "none")]) == 2
    assert "no checkpoints" in capsys.readouterr().err


def test_sigkill_in_epoch_2_then_rerun_equals_uninterrupted(tiny_data, reference, tmp_path):
    workdir = tmp_path / "killed"
    proc = subprocess.Popen(main_cmd(tiny_data, workdir), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_epoch_1_then(proc, workdir, lambda p: p.send_signal(signal.SIGKILL))
        proc.wait(timeout=60)
    finally:
        proc.kill()
    assert [r["epoch"] for r in records(workdir)] == [1]      # killed before epoch 2 ended
    out = run_main(tiny_data, workdir)
    assert out.returncode == 0, out.stderr
    assert "resuming" in out.stdout
    resumed, rec = params_of(workdir)
    expected, ref_rec = params_of(reference)
    assert rec["global_step"] == ref_rec["global_step"]
    for a, b in zip(resumed, expected):
        np.testing.assert_array_equal(a, b)


def test_sigint_saves_mid_epoch_and_resumes_exactly(tiny_data, reference, tmp_path):
    workdir = tmp_path / "interrupted"
    proc = subprocess.Popen(main_cmd(tiny_data, workdir), cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        wait_for_epoch_1_then(proc, workdir, lambda p: p.send_signal(signal.SIGINT))
        stdout, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0 and "saved a checkpoint" in stdout
    last = records(workdir)[-1]
    assert last["epoch"] == 1 and last["step_in_epoch"] > 0        # mid-epoch 2
    out = run_main(tiny_data, workdir)
    assert out.returncode == 0, out.stderr
    assert f"step {last['step_in_epoch']}" in out.stdout
    for a, b in zip(params_of(workdir)[0], params_of(reference)[0]):
        np.testing.assert_array_equal(a, b)


def test_resuming_with_another_config_is_refused_unless_allowed(tiny_data, reference,
                                                                tmp_path):
    workdir = tmp_path / "copy"
    shutil.copytree(reference, workdir)
    out = run_main(tiny_data, workdir, **{"config.model.features": 8,
                                          "config.plateau.patience": 3})
    assert out.returncode == 1
    assert "model.features: 16 in the run, 8 now" in out.stderr
    assert "plateau.patience" in out.stderr and "--allow_config_change" in out.stderr
    out = run_main(tiny_data, workdir, "--allow_config_change",
                   **{"config.plateau.patience": 3})
    assert out.returncode == 0, out.stderr                     # 2 epochs done: nothing to do


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tiny_data, reference,
                                                                  tmp_path):
    workdir = tmp_path / "diverged"
    shutil.copytree(reference, workdir)
    before = records(workdir)[-1]["global_step"]
    out = run_main(tiny_data, workdir, "--allow_config_change",
                   **{"config.num_epochs": 3, "config.learning_rate": 1e38})
    assert out.returncode == 1
    assert "at global step" in out.stderr and "training stopped" in out.stderr
    params, rec = params_of(workdir)
    assert rec["global_step"] == before
    assert all(np.isfinite(p).all() for p in params)


TWO_DEVICES = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    from jax.sharding import Mesh
    sys.path.insert(0, "tests")
    from conftest import tiny_train_config
    from shg_jax import sharding as shd
    from shg_jax.steps import Steps

    assert len(jax.devices()) == 2
    rng = np.random.default_rng(0)
    batch = dict(images=rng.integers(0, 256, (8, 64, 64, 3), dtype=np.uint8),
                 keypoints=np.concatenate([rng.uniform(0, 64, (8, 17, 2)),
                                           rng.integers(0, 3, (8, 17, 1))], -1
                                          ).astype(np.float32),
                 valid=np.ones(8, bool))
    out = {}
    for optimizer in ("rmsprop", "sgd"):
        config = tiny_train_config("unused", **{"config.optimizer": optimizer,
                                               "config.learning_rate": 0.1,
                                               "config.model.dtype": "float64"})
        for n in (1, 2):
            steps = Steps(config, [0.4, 0.4, 0.4], mesh=Mesh(np.array(jax.devices()[:n]),
                                                             ("data",)))
            init = [np.asarray(x).tolist() for x in jax.tree.leaves(steps.init_state().params)]
            state, loss = steps.train_step(steps.init_state(), shd.shard_batch(batch,
                                                                               steps.mesh))
            out[f"{optimizer}-{n}"] = dict(
                loss=float(loss), init=init,
                params=[np.asarray(x).tolist() for x in jax.tree.leaves(state.params)],
                stats=[np.asarray(x).tolist() for x in jax.tree.leaves(state.batch_stats)])
    json.dump(out, sys.stdout)
""")


def test_one_step_on_two_devices_equals_one_device():
    # Computed in float64 (parameters stay float32) so that summation order, which differs
    # between 1 and 2 devices, cannot hide a real difference behind float32 noise.
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
               JAX_PLATFORMS="cpu", JAX_ENABLE_X64="1")
    proc = subprocess.run([sys.executable, "-c", TWO_DEVICES], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    for opt in ("rmsprop", "sgd"):
        one, two = out[f"{opt}-1"], out[f"{opt}-2"]
        assert two["loss"] == pytest.approx(one["loss"], abs=1e-6)
        # BatchNorm statistics are over the global batch of 8, not per-device halves.
        for a, b in zip(one["stats"], two["stats"]):
            np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-9)
    # SGD: params move by lr * grad, and the float64 gradients agree to ~1e-12, so the
    # float32 parameters agree to their last bit or two; the update itself must be large.
    for a, b in zip(out["sgd-1"]["params"], out["sgd-2"]["params"]):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-9)
    moved = max(np.abs(np.subtract(a, i)).max()
                for a, i in zip(out["sgd-1"]["params"], out["sgd-1"]["init"]))
    assert moved > 1e-3
    # RMSProp's first step is lr * g / (sqrt(0.01 g^2) + eps) ~ 10 lr sign(g): equal as well,
    # except where a gradient is itself summation noise (conv biases that feed a BatchNorm
    # have a true gradient of exactly zero); those may take either sign, and must be rare.
    diffs = [np.abs(np.subtract(b, a)) for a, b in zip(out["rmsprop-1"]["params"],
                                                       out["rmsprop-2"]["params"])]
    total = sum(d.size for d in diffs)
    off = sum(int((d > 1e-6).sum()) for d in diffs)
    assert off / total < 1e-2


def test_training_steps_learn_the_keypoints(tiny_data):
    """PCK must rise: 300 steps on a fixed batch of 8 synthetic crops take the prediction
    from chance to a quarter of the joints on the exact heatmap pixel (at 16x16 heatmaps the
    PCK radius, 0.8 px, admits nothing else) and the loss down by more than half."""
    from shg_jax import data, pck
    from shg_jax import sharding as shd
    from shg_jax.steps import Steps
    from conftest import tiny_train_config

    config = tiny_train_config(tiny_data, **{"config.heatmap.style": "newell"})
    split = data.Split(tiny_data, "train")
    steps = Steps(config, split.mean_rgb)
    host = split.gather(np.arange(8))
    host["valid"] = np.ones(8, bool)
    batch = shd.shard_batch(host, steps.mesh)
    state = steps.init_state()

    def val_pck(state):
        return pck.summarize(jax.device_get(steps.eval_step(state, batch)))["all/pck"]

    before = val_pck(state)
    losses = []
    for _ in range(300):
        state, loss = steps.train_step(state, batch)
        losses.append(loss)
    after = val_pck(state)
    losses = np.asarray(jax.device_get(losses))
    assert np.isfinite(losses).all() and losses[-10:].mean() < 0.5 * losses[:10].mean()
    assert before < 0.1 and after > 0.25, (before, after)


def test_profile_dir_holds_a_trace_of_training_steps(tiny_run):
    """--profile_dir / profile_dir: a Perfetto trace whose events include the train step."""
    import gzip

    traces = list((tiny_run[0] / "profile").rglob("perfetto_trace.json.gz"))
    assert len(traces) == 1
    events = json.loads(gzip.open(traces[0]).read())
    events = events["traceEvents"] if isinstance(events, dict) else events
    assert any("_train_step" in e.get("name", "") for e in events)

