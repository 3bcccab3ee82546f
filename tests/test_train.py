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

from shg_jax import evaluate, runs
from shg_jax.checkpoint import Checkpoints

from helpers import REPO, damage_checkpoint, read_events, tiny_train_overrides

MAIN = [sys.executable, "main.py", "--config=configs/baseline.py"]


#: Every run here drops the learning rate after epoch 1 (1e-3 -> 2e-4), so a resume must
#: restore the schedule and the rate inside the optimizer state, not start from the config's.
RUN = {"config.plateau.milestones": "(1,)"}


def main_cmd(data_dir, workdir, *extra, **overrides):
    return MAIN + tiny_train_overrides(data_dir, workdir, **{**RUN, **overrides}) + list(extra)


def run_main(data_dir, workdir, *extra, **overrides):
    return subprocess.run(main_cmd(data_dir, workdir, *extra, **overrides), cwd=REPO,
                          capture_output=True, text=True, timeout=600)


def params_of(workdir, checkpoint="latest"):
    _, _, state, record = runs.open_run(workdir, checkpoint)
    return [np.asarray(x) for x in jax.tree.leaves(state.params)], record


def assert_same_run(workdir, reference):
    """Every checkpoint kind restores to the same whole TrainState (step, parameters,
    BatchNorm statistics, optimizer state with its learning rate) and the same record
    (epoch, position, global step, schedule, epoch loss sums, history, best values, config,
    mean RGB) as the uninterrupted reference run."""
    for kind in ("latest", "best", "best_loss"):
        _, _, state, record = runs.open_run(workdir, kind)
        _, _, ref_state, ref_record = runs.open_run(reference, kind)
        assert record == ref_record, kind
        for part in ("step", "params", "batch_stats", "opt_state"):
            leaves = jax.tree.leaves(getattr(state, part))
            ref_leaves = jax.tree.leaves(getattr(ref_state, part))
            assert len(leaves) == len(ref_leaves) > 0, (kind, part)
            for a, b in zip(leaves, ref_leaves):
                np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=part)


def records(workdir):
    ckpts = Checkpoints(workdir, read_only=True)
    return [ckpts.record(s) for s in ckpts.steps()]


@pytest.fixture(scope="module")
def reference(tiny_data, tmp_path_factory):
    """An uninterrupted 2-epoch run."""
    workdir = tmp_path_factory.mktemp("reference") / "run"
    out = run_main(tiny_data, workdir)
    assert out.returncode == 0, out.stderr
    return workdir


def wait_for_epoch_1_then(proc, workdir, action, delay=0.1):
    """Waits until epoch 1's checkpoint save has begun (its temporary folder or the committed
    step appears), then `action(proc)` a bit later: inside that save or early in epoch 2
    (epoch 2 starts only once the save has begun)."""
    deadline = time.time() + 300
    while True:
        assert proc.poll() is None, "the run ended before it could be interrupted"
        assert time.time() < deadline
        root = workdir / "checkpoints"
        if root.is_dir() and any(p.name[:1].isdigit() for p in root.iterdir()):
            break
        time.sleep(0.01)
    time.sleep(delay)
    action(proc)


def latest_epochs(workdir) -> list:
    if not any((workdir / "checkpoints").glob("[0-9]*")):
        return []
    return [r["epoch"] for r in records(workdir)]


def test_reference_run_writes_checkpoints_config_and_history(reference):
    recs = records(reference)
    assert [r["epoch"] for r in recs] == [1, 2]
    assert all(r["step_in_epoch"] == 0 for r in recs)
    history = recs[-1]["history"]
    assert [h["epoch"] for h in history] == [1, 2]
    assert all(np.isfinite(h["train_loss"]) and 0 <= h["val_pck"] <= 1 for h in history)
    # The milestone after epoch 1: epoch 2 trains at 2e-4, and the schedule says so.
    assert [h["learning_rate"] for h in history] == pytest.approx([1e-3, 2e-4])
    assert recs[-1]["schedule"]["lr"] == pytest.approx(2e-4)
    assert recs[-1]["schedule"]["drops"] == 1 and recs[-1]["schedule"]["epochs"] == 2
    assert recs[-1]["best_pck"] == max(h["val_pck"] for h in history)
    assert recs[-1]["best_loss"] == min(h["val_loss"] for h in history)
    assert json.loads((reference / "config.json").read_text())["batch_size"] == 2
    # `best` and `best_loss` name the epochs of the best val PCK / lowest val loss (the
    # earlier one at a tie).
    ckpts = Checkpoints(reference, read_only=True)
    pcks, losses = [h["val_pck"] for h in history], [h["val_loss"] for h in history]
    assert ckpts.find("best") == recs[pcks.index(max(pcks))]["global_step"]
    assert ckpts.find("best_loss") == recs[losses.index(min(losses))]["global_step"]


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
    per_epoch = records(reference)[0]["global_step"]       # steps in epoch 1
    lrs = {step: v for t, step, v in scalars if t == "train/learning_rate"}
    assert lrs and all(v == pytest.approx(1e-3 if step <= per_epoch else 2e-4)
                       for step, v in lrs.items())
    assert max(lrs) > per_epoch                          # epoch 2 was logged too
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


#: main.py with its second checkpoint save (epoch 2's) SIGKILLed while Orbax writes it.
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


def test_sigkill_during_a_checkpoint_save_then_rerun_equals_uninterrupted(tiny_data,
                                                                          reference,
                                                                          tmp_path):
    workdir = tmp_path / "killed"
    cmd = [sys.executable, "-c", KILLED_IN_SAVE] + main_cmd(tiny_data, workdir)[2:]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == -signal.SIGKILL, out.stderr
    # Killed inside epoch 2's save: its temporary folder is there, epoch 1's is committed.
    assert latest_epochs(workdir) == [1]
    assert [p.name for p in (workdir / "checkpoints").glob("*tmp*")], "not killed in a save"
    out = run_main(tiny_data, workdir)
    assert out.returncode == 0, out.stderr
    assert "resuming" in out.stdout and "at epoch 2" in out.stdout
    assert not list((workdir / "checkpoints").glob("*tmp*"))
    assert_same_run(workdir, reference)


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
    # The mid-epoch save holds the part of epoch 2's loss sum already trained ...
    assert last["epoch_loss_count"] == last["step_in_epoch"] > 0
    assert last["epoch_loss_sum"] > 0
    # ... which the resumed run adds to: epoch 2's train loss and all else as uninterrupted.
    assert_same_run(workdir, reference)


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


def test_a_damaged_latest_checkpoint_is_skipped_kept_and_the_run_ends_as_uninterrupted(
        tiny_data, reference, tmp_path):
    workdir = tmp_path / "damaged"
    shutil.copytree(reference, workdir)
    latest = records(workdir)[-1]["global_step"]
    damage_checkpoint(workdir / "checkpoints" / str(latest))
    out = run_main(tiny_data, workdir)
    assert out.returncode == 0, out.stderr
    warnings = [line for line in out.stdout.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and f"checkpoints/{latest} cannot be read" in warnings[0]
    assert "resuming at epoch 2" in out.stdout.replace(str(workdir) + " ", "")
    assert (workdir / "damaged_checkpoints" / str(latest) / "state").is_dir()
    assert_same_run(workdir, reference)


HOLD_LOCK = textwrap.dedent("""
    import sys, time
    from shg_jax.runs import workdir_lock
    with workdir_lock(sys.argv[1]):
        print("held", flush=True)
        time.sleep(600)
""")


def test_a_second_run_on_a_busy_workdir_is_refused_until_the_first_ends(tiny_data, tmp_path):
    from shg_jax import train
    from helpers import tiny_train_config

    workdir = tmp_path / "busy"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(workdir)], cwd=REPO,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        config = tiny_train_config(tiny_data)
        with pytest.raises(runs.TrainingError, match=rf"in use by another training run "
                                                     rf"\(pid {holder.pid} on "):
            train.train_and_evaluate(config, workdir)
        assert sorted(p.name for p in workdir.iterdir()) == [".lock"]    # nothing written
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)
    with runs.workdir_lock(workdir):           # a killed holder leaves no stale lock
        pass


TWO_DEVICES = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    from jax.sharding import Mesh
    sys.path.insert(0, "tests")
    from helpers import tiny_train_config
    from shg_jax import placement
    from shg_jax.steps import Steps

    assert len(jax.devices()) == 2
    rng = np.random.default_rng(0)
    batch = dict(images=rng.integers(0, 256, (8, 64, 64, 3), dtype=np.uint8),
                 keypoints=np.concatenate([rng.uniform(0, 64, (8, 17, 2)),
                                           rng.integers(0, 3, (8, 17, 1))], -1
                                          ).astype(np.float32),
                 valid=np.ones(8, bool))
    out = {}
    for optimizer in ("sgd",):
        config = tiny_train_config("unused", **{"config.optimizer": optimizer,
                                               "config.learning_rate": 0.1,
                                               "config.model.dtype": "float64"})
        for n in (1, 2):
            steps = Steps(config, [0.4, 0.4, 0.4], mesh=Mesh(np.array(jax.devices()[:n]),
                                                             ("data",)))
            init = [np.asarray(x).tolist() for x in jax.tree.leaves(steps.init_state().params)]
            state, loss = steps.train_step(steps.init_state(), placement.shard_batch(batch,
                                                                               steps.mesh))
            out[f"{optimizer}-{n}"] = dict(
                loss=float(loss), init=init,
                params=[np.asarray(x).tolist() for x in jax.tree.leaves(state.params)],
                stats=[np.asarray(x).tolist() for x in jax.tree.leaves(state.batch_stats)])
    json.dump(out, sys.stdout)
""")


def test_one_step_on_two_devices_equals_one_device():
    # Computed in float64 (parameters stay float32) so that summation order, which differs
    # between 1 and 2 devices, cannot hide a real difference behind float32 noise. SGD moves
    # each parameter by lr x its gradient, so equal parameters mean equal all-reduced
    # gradients (the optimizer itself runs replicated, the same on any device count).
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
               JAX_PLATFORMS="cpu", JAX_ENABLE_X64="1")
    proc = subprocess.run([sys.executable, "-c", TWO_DEVICES], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    one, two = out["sgd-1"], out["sgd-2"]
    assert two["loss"] == pytest.approx(one["loss"], abs=1e-6)
    # BatchNorm statistics are over the global batch of 8, not per-device halves.
    for a, b in zip(one["stats"], two["stats"]):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-9)
    # The float64 gradients agree to ~1e-12, so the float32 parameters agree to their last
    # bit or two; the update itself must be large.
    for a, b in zip(one["params"], two["params"]):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-9)
    moved = max(np.abs(np.subtract(a, i)).max() for a, i in zip(one["params"], one["init"]))
    assert moved > 1e-3


def test_training_steps_learn_the_keypoints(tiny_data):
    """PCK must rise: 300 steps on a fixed batch of 8 synthetic crops take the prediction
    from chance to a quarter of the joints on the exact heatmap pixel (at 16x16 heatmaps the
    PCK radius, 0.8 px, admits nothing else) and the loss down by more than half."""
    from shg_jax import data, pck
    from shg_jax import placement
    from shg_jax.steps import Steps
    from helpers import tiny_train_config

    config = tiny_train_config(tiny_data, **{"config.heatmap.style": "newell"})
    split = data.Split(tiny_data, "train")
    steps = Steps(config, split.mean_rgb)
    host = split.gather(np.arange(8))
    host["valid"] = np.ones(8, bool)
    batch = placement.shard_batch(host, steps.mesh)
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



def test_training_mean_rgb_is_subtracted_from_the_model_input():
    """The model sees uint8 / 255 minus the training mean RGB, in the train step and in
    evaluation: with mean (10, 20, 30) / 255, images A give what A - (10, 20, 30) gives with
    a zero mean (up to float rounding), and clearly not what A itself gives."""
    from shg_jax import placement
    from shg_jax.steps import Steps
    from helpers import tiny_train_config

    config = tiny_train_config("unused", **{"config.batch_size": 2})
    shift = np.array([10, 20, 30], np.uint8)
    with_mean = Steps(config, shift / 255.0)
    no_mean = Steps(config, (0.0, 0.0, 0.0))
    rng = np.random.default_rng(0)
    a = rng.integers(30, 256, (2, 64, 64, 3), dtype=np.uint8)
    np.testing.assert_allclose(np.asarray(with_mean.inputs(a)), a / 255.0 - shift / 255.0,
                               atol=1e-6)

    def run(steps, images):
        batch = placement.shard_batch({"images": images, "keypoints": np.tile(
            np.array([[20.0, 30.0, 2.0]], np.float32), (2, 17, 1)),
            "valid": np.ones(2, bool)}, steps.mesh)
        heatmaps = np.asarray(steps.infer(steps.init_state(), batch["images"]))
        _, loss = steps.train_step(steps.init_state(), batch)
        return heatmaps, float(loss)

    (h, loss), (h_ref, loss_ref), (h_raw, loss_raw) = (
        run(with_mean, a), run(no_mean, a - shift), run(no_mean, a))
    np.testing.assert_allclose(h, h_ref, atol=1e-5)
    assert loss == pytest.approx(loss_ref, rel=1e-5)
    assert np.abs(h - h_raw).max() > 1e-3 and loss != pytest.approx(loss_raw, rel=1e-5)


def _rewrite_with_record(source_workdir, workdir, edit):
    """A copy of the source run's best checkpoint whose JSON record went through `edit`,
    saved the way runs made before the versioned RunRecord saved it (a plain dict)."""
    import orbax.checkpoint as ocp

    from shg_jax.checkpoint import Checkpoints

    _, _, state, record = runs.open_run(source_workdir, "best")
    ckpts = Checkpoints(workdir)
    ckpts.manager.save(record["global_step"], args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(edit(dict(record)))))
    ckpts.wait()
    return state


def test_records_of_todays_format_open_and_newer_versions_are_refused(tiny_run, tmp_path):
    """A record as train wrote it before records were versioned (no `version`, no `source`
    or `converted_from`) opens as version 1 with the same state; a record of a newer
    version is refused with a message naming the version."""
    from shg_jax.checkpoint import CheckpointError, RunRecord

    old_keys = ("config", "epoch", "step_in_epoch", "global_step", "schedule",
                "epoch_loss_sum", "epoch_loss_count", "history", "best_pck", "best_loss",
                "mean_rgb", "label_offset_x")
    state = _rewrite_with_record(tiny_run[0], tmp_path / "old",
                                 lambda r: {k: r[k] for k in old_keys})
    _, _, restored, record = runs.open_run(tmp_path / "old", "latest")
    assert record["version"] == 1 and record["source"] is None
    assert record == RunRecord.from_dict(record).to_dict()
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    _rewrite_with_record(tiny_run[0], tmp_path / "new", lambda r: dict(r, version=99))
    with pytest.raises(CheckpointError, match="version 99, written by a newer shg-jax"):
        runs.open_run(tmp_path / "new", "latest")
