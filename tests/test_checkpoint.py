"""shg_jax.checkpoint: one CheckpointManager per run, Orbax preservation policies keeping the
latest few, the best validation PCK and the lowest validation loss."""

import jax.numpy as jnp
import numpy as np
import pytest

from shg_jax.checkpoint import CheckpointError, Checkpoints, RunRecord

#: (epoch, val PCK, val loss) of six epoch ends; epochs 2 and 4 tie on PCK (2 is best: the
#: earlier), epochs 3 and 4 tie on loss (3 is best).
EPOCHS = [(1, 0.1, 5.0), (2, 0.5, 2.0), (3, 0.3, 1.0), (4, 0.5, 1.0), (5, 0.2, 4.0),
          (6, 0.4, 3.0)]
STEPS_PER_EPOCH = 10


def save_epoch(ckpts, epoch, pck, loss):
    record = RunRecord(config={}, epoch=epoch, global_step=epoch * STEPS_PER_EPOCH)
    ckpts.save({"w": jnp.full(3, float(epoch))}, record,
               metrics={"val_pck": pck, "val_loss": loss})


def save_interrupt(ckpts, epoch, step_in_epoch):
    record = RunRecord(config={}, epoch=epoch, step_in_epoch=step_in_epoch,
                       global_step=epoch * STEPS_PER_EPOCH + step_in_epoch)
    ckpts.save({"w": jnp.full(3, -1.0)}, record)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Six epochs with keep=2, an interrupt save after epoch 3 and the manager closed and
    reopened there (as a resumed run does), so the policies must read metrics back."""
    workdir = tmp_path_factory.mktemp("ckpt") / "run"
    ckpts = Checkpoints(workdir, keep=2)
    for epoch, pck, loss in EPOCHS[:3]:
        save_epoch(ckpts, epoch, pck, loss)
    save_interrupt(ckpts, 3, 4)
    ckpts.wait()
    ckpts.close()
    ckpts = Checkpoints(workdir, keep=2)
    for epoch, pck, loss in EPOCHS[3:]:
        save_epoch(ckpts, epoch, pck, loss)
    ckpts.wait()
    ckpts.close()
    return workdir


def test_one_folder_per_kept_step_latest_best_and_best_loss(run):
    ckpts = Checkpoints(run, read_only=True)
    # latest 2 (epochs 5, 6), best PCK (epoch 2), lowest loss (epoch 3); the interrupt save
    # (step 34) and epochs 1 and 4 are gone.
    assert ckpts.steps() == [20, 30, 50, 60]
    folders = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert folders == ["20", "30", "50", "60"]
    assert ckpts.find("latest") == 60
    assert ckpts.find("best") == 20
    assert ckpts.find("best_loss") == 30
    assert ckpts.find("5") == 50


def test_restore_gives_the_state_and_record_of_that_step(run):
    ckpts = Checkpoints(run, read_only=True)
    state, record = ckpts.restore(ckpts.find("best_loss"), {"w": jnp.zeros(3)})
    np.testing.assert_array_equal(np.asarray(state["w"]), [3.0, 3.0, 3.0])
    assert record["epoch"] == 3 and record["global_step"] == 30
    assert ckpts.record(60)["epoch"] == 6


def test_interrupt_saves_are_latest_until_newer_saves_push_them_out(tmp_path):
    ckpts = Checkpoints(tmp_path / "run", keep=2)
    save_epoch(ckpts, 1, 0.1, 1.0)
    save_interrupt(ckpts, 1, 3)
    ckpts.wait()
    assert ckpts.steps() == [10, 13] and ckpts.find("latest") == 13
    assert ckpts.find("best") == 10                 # an interrupt save is never a best
    save_epoch(ckpts, 2, 0.05, 2.0)
    save_epoch(ckpts, 3, 0.05, 3.0)
    ckpts.wait()
    assert ckpts.steps() == [10, 20, 30]            # 13 gone; 10 stays as best and best_loss
    ckpts.close()


def test_a_step_is_written_once(tmp_path):
    ckpts = Checkpoints(tmp_path / "run", keep=3)
    save_epoch(ckpts, 1, 0.1, 1.0)
    ckpts.wait()
    ckpts.save({"w": jnp.full(3, 9.0)}, RunRecord(config={}, epoch=7, global_step=10))
    ckpts.wait()
    state, record = ckpts.restore(10, {"w": jnp.zeros(3)})
    assert record["epoch"] == 1 and float(state["w"][0]) == 1.0
    ckpts.close()


def test_missing_and_unknown_names_are_errors_that_say_what_exists(run, tmp_path):
    ckpts = Checkpoints(run, read_only=True)
    with pytest.raises(CheckpointError, match=r"epoch 4 .*epochs kept: \[2, 3, 5, 6\]"):
        ckpts.find("4")
    with pytest.raises(CheckpointError, match="one of"):
        ckpts.find("bestest")
    with pytest.raises(CheckpointError, match="no checkpoints in"):
        Checkpoints(tmp_path / "none", read_only=True)
    only_interrupt = Checkpoints(tmp_path / "early", keep=2)
    save_interrupt(only_interrupt, 0, 5)
    only_interrupt.wait()
    with pytest.raises(CheckpointError, match="no 'best' checkpoint"):
        only_interrupt.find("best")
    only_interrupt.close()


def test_checkpoints_of_the_earlier_three_folder_layout_are_refused_by_name(tmp_path):
    (tmp_path / "old" / "checkpoints" / "latest" / "10").mkdir(parents=True)
    with pytest.raises(CheckpointError, match="latest/, best/, best_loss/"):
        Checkpoints(tmp_path / "old", read_only=True)


def test_opening_a_run_read_only_logs_no_warning(run, caplog):
    """Orbax's "Given directory is read only" and read-only option notices used to follow
    every evaluate/analysis call."""
    with caplog.at_level("INFO"):
        ckpts = Checkpoints(run, read_only=True)
        ckpts.record(ckpts.find("best"))
    assert not [r for r in caplog.records if r.levelname == "WARNING"], caplog.text
