"""shg_jax.checkpoint: one CheckpointManager per run, Orbax preservation policies keeping the
latest few, the best validation PCK and the lowest validation loss."""

import errno
import re

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from shg_jax import bookkeeping
from shg_jax.checkpoint import (CheckpointError, Checkpoints, DamagedCheckpoint, RunRecord,
                                WriteError)

from helpers import damage_checkpoint

#: (epoch, val PCK, val loss) of six epoch ends; epochs 2 and 4 tie on PCK (2 is best: the
#: earlier), epochs 3 and 4 tie on loss (3 is best).
EPOCHS = [(1, 0.1, 5.0), (2, 0.5, 2.0), (3, 0.3, 1.0), (4, 0.5, 1.0), (5, 0.2, 4.0),
          (6, 0.4, 3.0)]
STEPS_PER_EPOCH = 10


def save_epoch(ckpts, epoch, pck, loss, size=3):
    """Saves {"w": epoch, then noise (incompressible, so stored in full)}."""
    record = RunRecord(config={}, epoch=epoch, global_step=epoch * STEPS_PER_EPOCH)
    w = np.random.default_rng(epoch).random(size, np.float32)
    w[0] = epoch
    ckpts.save({"w": jnp.asarray(w)}, record, metrics={"val_pck": pck, "val_loss": loss})


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
    expected = np.random.default_rng(3).random(3, np.float32)
    expected[0] = 3
    np.testing.assert_array_equal(np.asarray(state["w"]), expected)
    assert record.epoch == 3 and record.global_step == 30
    assert ckpts.record(60).epoch == 6


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
    assert record.epoch == 1 and float(state["w"][0]) == 1.0
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


def test_opening_a_run_read_only_logs_no_warning_in_a_command(run, caplog):
    """Orbax's "Given directory is read only" and read-only option notices would follow
    every evaluate/analysis call; a command's process set-up drops them."""
    from shg_jax import cli

    cli.prepare_process()
    with caplog.at_level("INFO"):
        ckpts = Checkpoints(run, read_only=True)
        ckpts.record(ckpts.find("best"))
    assert not [r for r in caplog.records if r.levelname == "WARNING"], caplog.text


def two_epochs(workdir, size=4096):
    """Epochs 1 and 2 saved with a state large enough to be stored in chunks."""
    ckpts = Checkpoints(workdir, keep=3)
    save_epoch(ckpts, 1, 0.1, 2.0, size)
    save_epoch(ckpts, 2, 0.2, 1.0, size)
    ckpts.wait()
    return ckpts


def test_a_damaged_checkpoint_is_named_with_the_array_that_cannot_be_read(tmp_path):
    two_epochs(tmp_path / "run").close()
    damage_checkpoint(tmp_path / "run" / "checkpoints" / "20")
    ckpts = Checkpoints(tmp_path / "run", read_only=True)
    with pytest.raises(DamagedCheckpoint) as e:
        ckpts.restore(20, {"w": jnp.zeros(4096)})
    message = str(e.value)
    assert e.value.step == 20 and "\n" not in message and len(message) < 600
    assert str(tmp_path / "run" / "checkpoints" / "20") in message
    assert re.search(r"""["']w""", message)                 # the array is named
    state, record = ckpts.restore(10, {"w": jnp.zeros(4096)})     # the one before: intact
    assert float(state["w"][0]) == 1.0 and record.epoch == 1


def test_a_byte_changed_on_disk_that_orbax_restores_silently_is_caught(tmp_path):
    """Orbax stores arrays without checksums: random integers are stored uncompressed, so a
    flipped byte restores as another value unless the saved SHA-256 digests are checked."""
    ckpts = Checkpoints(tmp_path / "run", keep=3)
    w = np.random.default_rng(1).integers(0, 2**31, 4096, dtype=np.int32)
    ckpts.save({"w": jnp.asarray(w)}, RunRecord(config={}, epoch=1, global_step=10),
               metrics={"val_pck": 0.1, "val_loss": 1.0})
    ckpts.wait()
    ckpts.close()
    stored = [p for p in (tmp_path / "run" / "checkpoints" / "10").rglob("*") if p.is_file()
              and w.tobytes()[1000:1100] in p.read_bytes()]
    assert len(stored) == 1                        # the array's bytes, verbatim
    raw = bytearray(stored[0].read_bytes())
    raw[raw.find(w.tobytes()[1000:1100])] ^= 0xFF
    stored[0].write_bytes(bytes(raw))
    with pytest.raises(DamagedCheckpoint, match=r"array \['w'\] is not the one saved"):
        Checkpoints(tmp_path / "run", read_only=True).restore(10, {"w": jnp.zeros(4096,
                                                                                 jnp.int32)})


def test_resume_skips_a_damaged_latest_moves_it_aside_and_writes_that_step_again(
        tmp_path, capsys):
    workdir = tmp_path / "run"
    two_epochs(workdir).close()
    damage_checkpoint(workdir / "checkpoints" / "20")
    before = sorted(p.relative_to(workdir / "checkpoints" / "20")
                    for p in (workdir / "checkpoints" / "20").rglob("*"))
    ckpts = Checkpoints(workdir, keep=3)
    state, record = bookkeeping.resume_latest(ckpts, {"w": jnp.zeros(4096)},
                                       ml_collections.ConfigDict(), workdir, False)
    assert record.epoch == 1 and float(state["w"][0]) == 1.0
    lines = [line for line in capsys.readouterr().out.splitlines() if "warning" in line]
    assert len(lines) == 1
    assert "checkpoints/20 cannot be read" in lines[0] and "resuming from step 10" in lines[0]
    moved = workdir / "damaged_checkpoints" / "20"
    assert str(moved) in lines[0]
    # Kept whole, byte for byte, outside the run's checkpoints ...
    assert sorted(p.relative_to(moved) for p in moved.rglob("*")) == before
    assert ckpts.steps() == [10]
    # ... so that the resumed run writes step 20 again.
    save_epoch(ckpts, 2, 0.3, 0.5, 4096)
    ckpts.wait()
    assert ckpts.steps() == [10, 20] and ckpts.record(20).epoch == 2
    ckpts.close()


def test_resume_with_every_checkpoint_damaged_stops_and_moves_nothing(tmp_path):
    workdir = tmp_path / "run"
    two_epochs(workdir).close()
    for step in (10, 20):
        damage_checkpoint(workdir / "checkpoints" / str(step))
    ckpts = Checkpoints(workdir, keep=3)
    with pytest.raises(bookkeeping.TrainingError, match=r"no readable checkpoint .*checkpoints/20 "
                                                 r"cannot be read"):
        bookkeeping.resume_latest(ckpts, {"w": jnp.zeros(4096)}, ml_collections.ConfigDict(),
                           workdir, False)
    assert ckpts.steps() == [10, 20] and not (workdir / "damaged_checkpoints").exists()
    ckpts.close()


def test_another_model_is_not_mistaken_for_damage(tmp_path):
    workdir = tmp_path / "run"
    two_epochs(workdir).close()
    ckpts = Checkpoints(workdir, keep=3)
    with pytest.raises(CheckpointError, match="holds another model") as e:
        ckpts.restore(20, {"w": jnp.zeros(8)})
    assert not isinstance(e.value, DamagedCheckpoint)
    with pytest.raises(bookkeeping.TrainingError, match="cannot resume: .*another model"):
        bookkeeping.resume_latest(ckpts, {"w": jnp.zeros(8)}, ml_collections.ConfigDict(),
                           workdir, False)
    assert ckpts.steps() == [10, 20]                    # nothing moved
    ckpts.close()


def test_a_full_disk_during_a_save_is_one_line_and_keeps_the_earlier_checkpoints(
        tmp_path, monkeypatch):
    workdir = tmp_path / "run"
    ckpts = Checkpoints(workdir, keep=3)
    save_epoch(ckpts, 1, 0.1, 2.0)
    ckpts.wait()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpts.manager, "save", full)
    with pytest.raises(WriteError) as e:
        save_epoch(ckpts, 2, 0.2, 1.0)
    assert "No space left on device" in str(e.value) and "checkpoints/20" in str(e.value)
    assert "steps [10]" in str(e.value) and "\n" not in str(e.value)
    monkeypatch.undo()
    state, record = ckpts.restore(10, {"w": jnp.zeros(3)})
    assert record.epoch == 1 and float(state["w"][0]) == 1.0
    ckpts.close()


def test_a_write_failing_in_the_background_names_the_step_being_written(tmp_path,
                                                                         monkeypatch):
    """Orbax writes asynchronously: a full disk may surface only when the run waits for the
    save; the error names that save's step, not the latest committed one."""
    ckpts = Checkpoints(tmp_path / "run", keep=3)
    save_epoch(ckpts, 1, 0.1, 2.0)
    ckpts.wait()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpts.manager, "save", lambda *args, **kwargs: None)
    monkeypatch.setattr(ckpts.manager, "wait_until_finished", full)
    save_epoch(ckpts, 2, 0.2, 1.0)                       # started; fails in the background
    with pytest.raises(WriteError, match=r"checkpoints/20 \(.*No space left on device\).*"
                                         r"steps \[10\]"):
        ckpts.wait()
    monkeypatch.undo()
    ckpts.close()
