"""Training runs (shg_jax.train): resume after SIGKILL and SIGINT, damaged checkpoints, the
workdir lock, config checks, non-finite loss, TensorBoard, evaluation, record versions."""

import json
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest

from shg_jax import bookkeeping, data, evaluate, runs, train
from shg_jax.checkpoint import Checkpoints

from helpers import (KILLED_IN_SAVE, REPO, damage_checkpoint, read_events, tiny_train_config,
                     tiny_train_overrides)

MAIN = [sys.executable, "main.py", "--config=configs/baseline.py"]


#: Every run here drops the learning rate after epoch 1 (1e-3 -> 2e-4), so a resume must
#: restore the schedule and the rate inside the optimizer state, not start from the config's;
#: and augments (config.augment), so every resume below also shows that an augmented run,
#: whose draws come from (seed, step), resumes bit for bit; and refreshes its BatchNorm
#: statistics before each validation (config.precise_bn: 2 batches of 4 crops).
RUN = {"config.plateau.milestones": "(1,)", "config.augment.enabled": "True",
       "config.precise_bn.batches": "2", "config.precise_bn.batch_size": "4"}


def main_cmd(data_dir, workdir, *extra, **overrides):
    return MAIN + tiny_train_overrides(data_dir, workdir, **{**RUN, **overrides}) + list(extra)


def run_main(data_dir, workdir, *extra, **overrides):
    return subprocess.run(main_cmd(data_dir, workdir, *extra, **overrides), cwd=REPO,
                          capture_output=True, text=True, timeout=600)


def run_config(data_dir, **overrides):
    """The config of `main_cmd(data_dir, ..., **overrides)`, built in this process."""
    return tiny_train_config(data_dir, **{**RUN, **overrides})


def train_in_process(data_dir, workdir, capsys):
    """The run of `main_cmd(data_dir, workdir)`, trained in this process: a resume needs no
    new interpreter, and this worker has compiled the tiny model's programs already.
    -> what it printed."""
    capsys.readouterr()
    train.train_and_evaluate(run_config(data_dir), workdir)
    return capsys.readouterr().out


def params_of(workdir, checkpoint="latest"):
    _, _, state, record = runs.open_run(workdir, checkpoint)
    return [np.asarray(x) for x in jax.tree.leaves(state.params)], record


def assert_same_run(workdir, reference):
    """Every checkpoint kind restores to the same whole TrainState (step, parameters,
    BatchNorm statistics, optimizer state with its learning rate) and the same record
    (epoch, position, global step, schedule, epoch loss sums, history, best values, config,
    mean RGB) as the uninterrupted reference run. One model restores every checkpoint (a
    model is built per open_run: seconds each)."""
    _, steps, _, _ = runs.open_run(reference, "latest")
    ckpts, ref_ckpts = Checkpoints(workdir, read_only=True), Checkpoints(reference, read_only=True)
    for kind in ("latest", "best", "best_loss"):
        state, record = ckpts.restore(ckpts.find(kind), steps.init_state())
        ref_state, ref_record = ref_ckpts.restore(ref_ckpts.find(kind), steps.init_state())
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
    """An uninterrupted 2-epoch run, trained in this process: its record holds the config,
    so every comparison with a main.py run below also shows that run_config is the config
    main.py builds from main_cmd's flags."""
    workdir = tmp_path_factory.mktemp("reference") / "run"
    train.train_and_evaluate(run_config(tiny_data), workdir)
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
    return [r.epoch for r in records(workdir)]


def test_reference_run_writes_checkpoints_config_and_history(reference):
    recs = records(reference)
    assert [r.epoch for r in recs] == [1, 2]
    assert all(r.step_in_epoch == 0 for r in recs)
    history = recs[-1].history
    assert [h["epoch"] for h in history] == [1, 2]
    assert all(np.isfinite(h["train_loss"]) and 0 <= h["val_pck"] <= 1 for h in history)
    # The milestone after epoch 1: epoch 2 trains at 2e-4, and the schedule says so.
    assert [h["learning_rate"] for h in history] == pytest.approx([1e-3, 2e-4])
    assert recs[-1].schedule["lr"] == pytest.approx(2e-4)
    assert recs[-1].schedule["drops"] == 1 and recs[-1].schedule["epochs"] == 2
    assert recs[-1].best_pck == max(h["val_pck"] for h in history)
    assert recs[-1].best_loss == min(h["val_loss"] for h in history)
    config = json.loads((reference / "config.json").read_text())
    assert config["batch_size"] == 2 and config["augment"]["enabled"] is True
    # `best` and `best_loss` name the epochs of the best val PCK / lowest val loss (the
    # earlier one at a tie).
    ckpts = Checkpoints(reference, read_only=True)
    pcks, losses = [h["val_pck"] for h in history], [h["val_loss"] for h in history]
    assert ckpts.find("best") == recs[pcks.index(max(pcks))].global_step
    assert ckpts.find("best_loss") == recs[losses.index(min(losses))].global_step


def test_precise_bn_puts_the_mean_statistics_of_training_batches_in_the_checkpoint(
        reference):
    """config.precise_bn (RUN: 2 batches of 4): the epoch-2 checkpoint (validated on, saved)
    holds, instead of the running averages, the mean BatchNorm statistics of the first two
    batches of 4 crops of epoch 2's order, not augmented, under its parameters. Each batch's
    statistics are recovered here from an ordinary training-mode forward pass that starts
    from zero statistics: running = 0.9 x 0 + 0.1 x the batch's."""
    import jax.numpy as jnp
    from flax import nnx

    _, steps, state, record = runs.open_run(reference, "latest")
    assert record.epoch == 2
    split = data.Split(record.config["data_dir"], "train")
    order = data.epoch_permutation(len(split), record.config["seed"], 1)
    zeros = jax.tree.map(jnp.zeros_like, state.batch_stats)
    expected = []
    for rows in (order[:4], order[4:8]):
        model = nnx.merge(steps.graphdef_train, state.params, zeros, copy=True)
        model.forward(steps.inputs(split.gather(rows)["images"]))
        expected.append([np.asarray(x) / 0.1
                         for x in jax.tree.leaves(nnx.state(model, nnx.BatchStat))])
    saved = [np.asarray(x) for x in jax.tree.leaves(state.batch_stats)]
    assert len(saved) == len(expected[0]) > 0
    for got, a, b in zip(saved, *expected):
        np.testing.assert_allclose(got, (a + b) / 2, rtol=2e-4, atol=1e-6)


def test_a_train_split_smaller_than_one_batch_is_refused_before_training(tiny_data,
                                                                         tmp_path):
    n = len(data.Split(tiny_data, "train"))
    for field in ("config.batch_size", "config.precise_bn.batch_size"):
        with pytest.raises(bookkeeping.TrainingError, match=rf"has {n} samples, fewer than "
                                                            rf"one batch of {field}={n + 2}$"):
            train.train_and_evaluate(run_config(tiny_data, **{field: n + 2}), tmp_path / "run")
        assert not (tmp_path / "run" / "checkpoints").exists()
    # Off, precise BatchNorm's batch size is not checked.
    train.check_data(run_config(tiny_data, **{"config.precise_bn.batches": 0,
                                              "config.precise_bn.batch_size": n + 2}),
                     data.Split(tiny_data, "train"))


def test_tensorboard_has_the_tags_and_values(reference):
    scalars, images, files = read_events(reference / "tb")
    assert len(files) == 1
    tags = {t for t, _, _ in scalars}
    assert {"train/loss", "train/learning_rate", "train/images_per_second",
            "epoch/train_loss", "epoch/val_loss", "epoch/val_pck", "epoch/val_pck_visible",
            "epoch/val_pck_limbs", "epoch/learning_rate"} <= tags
    history = records(reference)[-1].history
    logged = {step: v for t, step, v in scalars if t == "epoch/val_pck"}
    for h in history:
        assert logged[h["epoch"]] == pytest.approx(h["val_pck"], rel=1e-6)
    per_epoch = records(reference)[0].global_step       # steps in epoch 1
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
    logged = records(reference)[-1].history[-1]
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


def test_sigkill_during_a_checkpoint_save_then_rerun_equals_uninterrupted(tiny_data,
                                                                          reference,
                                                                          tmp_path, capsys):
    workdir = tmp_path / "killed"
    cmd = [sys.executable, "-c", KILLED_IN_SAVE] + main_cmd(tiny_data, workdir)[2:]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == -signal.SIGKILL, out.stderr
    # Killed inside epoch 2's save: its temporary folder is there, epoch 1's is committed.
    assert latest_epochs(workdir) == [1]
    assert [p.name for p in (workdir / "checkpoints").glob("*tmp*")], "not killed in a save"
    out = train_in_process(tiny_data, workdir, capsys)
    assert "resuming" in out and "at epoch 2" in out
    assert not list((workdir / "checkpoints").glob("*tmp*"))
    assert_same_run(workdir, reference)


def test_sigint_saves_mid_epoch_and_resumes_exactly(tiny_data, reference, tmp_path, capsys):
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
    assert last.epoch == 1 and last.step_in_epoch > 0        # mid-epoch 2
    out = train_in_process(tiny_data, workdir, capsys)
    assert f"step {last.step_in_epoch}" in out
    # The mid-epoch save holds the part of epoch 2's loss sum already trained ...
    assert last.epoch_loss_count == last.step_in_epoch > 0
    assert last.epoch_loss_sum > 0
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
    before = records(workdir)
    train.train_and_evaluate(run_config(tiny_data, **{"config.plateau.patience": 3}), workdir,
                             allow_config_change=True)
    assert records(workdir) == before                          # 2 epochs done: nothing to do


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tiny_data, reference,
                                                                  tmp_path):
    workdir = tmp_path / "diverged"
    shutil.copytree(reference, workdir)
    before = records(workdir)[-1].global_step
    config = run_config(tiny_data, **{"config.num_epochs": 3, "config.learning_rate": 1e38})
    with pytest.raises(bookkeeping.TrainingError, match="at global step .*training stopped"):
        train.train_and_evaluate(config, workdir, allow_config_change=True)
    params, rec = params_of(workdir)
    assert rec.global_step == before
    assert all(np.isfinite(p).all() for p in params)


def test_a_damaged_latest_checkpoint_is_skipped_kept_and_the_run_ends_as_uninterrupted(
        tiny_data, reference, tmp_path, capsys):
    workdir = tmp_path / "damaged"
    shutil.copytree(reference, workdir)
    latest = records(workdir)[-1].global_step
    damage_checkpoint(workdir / "checkpoints" / str(latest))
    out = train_in_process(tiny_data, workdir, capsys)
    warnings = [line for line in out.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and f"checkpoints/{latest} cannot be read" in warnings[0]
    assert "resuming at epoch 2" in out.replace(str(workdir) + " ", "")
    assert (workdir / "damaged_checkpoints" / str(latest) / "state").is_dir()
    assert_same_run(workdir, reference)


HOLD_LOCK = textwrap.dedent("""
    import sys, time
    from shg_jax.bookkeeping import workdir_lock
    with workdir_lock(sys.argv[1]):
        print("held", flush=True)
        time.sleep(600)
""")


def test_a_second_run_on_a_busy_workdir_is_refused_until_the_first_ends(tiny_data, tmp_path):
    workdir = tmp_path / "busy"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(workdir)], cwd=REPO,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        config = tiny_train_config(tiny_data)
        with pytest.raises(bookkeeping.TrainingError, match=rf"in use by another training run "
                                                     rf"\(pid {holder.pid} on "):
            train.train_and_evaluate(config, workdir)
        assert sorted(p.name for p in workdir.iterdir()) == [".lock"]    # nothing written
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)
    with bookkeeping.workdir_lock(workdir):           # a killed holder leaves no stale lock
        pass


def test_profile_dir_holds_a_trace_of_training_steps(tiny_run):
    """--profile_dir / profile_dir: a Perfetto trace whose events include the train step."""
    import gzip

    traces = list((tiny_run[0] / "profile").rglob("perfetto_trace.json.gz"))
    assert len(traces) == 1
    events = json.loads(gzip.open(traces[0]).read())
    events = events["traceEvents"] if isinstance(events, dict) else events
    assert any("_train_step" in e.get("name", "") for e in events)



def _rewrite_with_record(source_workdir, workdir, edit):
    """A copy of the source run's best checkpoint whose JSON record (with its array
    digests) went through `edit`."""
    import orbax.checkpoint as ocp

    from shg_jax import integrity
    from shg_jax.checkpoint import Checkpoints

    _, _, state, record = runs.open_run(source_workdir, "best")
    ckpts = Checkpoints(workdir)
    meta = dict(record.to_dict(), array_digests=integrity.array_digests(state))
    ckpts.manager.save(record.global_step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(edit(meta))))
    ckpts.wait()
    return state


def test_records_of_todays_version_open_and_every_other_version_is_refused(tiny_run,
                                                                          tmp_path):
    """A record of today's version opens with the same state; one without a version or of
    an earlier one (development runs) or of a newer one is refused in one line naming the
    version and what to do."""
    from shg_jax.checkpoint import RECORD_VERSION, CheckpointError, RunRecord

    state = _rewrite_with_record(tiny_run[0], tmp_path / "today", lambda r: r)
    _, _, restored, record = runs.open_run(tmp_path / "today", "latest")
    assert record.version == RECORD_VERSION and record.source is None
    assert record == RunRecord.from_dict(record.to_dict())
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for name, edit, words in (
            ("none", lambda r: {k: v for k, v in r.items() if k != "version"},
             "version None .* earlier development version .* new --workdir"),
            ("old", lambda r: dict(r, version=RECORD_VERSION - 1),
             f"version {RECORD_VERSION - 1} .* earlier development version"),
            ("new", lambda r: dict(r, version=99), "version 99 .* newer shg-jax: update")):
        _rewrite_with_record(tiny_run[0], tmp_path / name, edit)
        with pytest.raises(CheckpointError, match=words) as e:
            runs.open_run(tmp_path / name, "latest")
        assert "\n" not in str(e.value)
