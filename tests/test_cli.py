"""One command-line house: every command that opens a run takes the same run flags (one
spelling, with the older ones as aliases) and turns every library error into one line and
exit status 2 (shg_jax.cli)."""

import argparse

import pytest
from PIL import Image

from analysis import compare, latent, skips
from shg_jax import cli, evaluate, predict
from shg_jax.errors import UserError


def commands(tmp_path, workdir_flag: str):
    """(name, main, argv) of every command that opens a run, on a run that does not exist."""
    photo = tmp_path / "photo.png"
    Image.new("RGB", (32, 32)).save(photo)
    run = [workdir_flag, str(tmp_path / "no_run")]
    out = ["--out", str(tmp_path / "out")]
    return [("evaluate", evaluate.main, run),
            ("predict", predict.main, run + ["--image", str(photo)] + out),
            ("analysis.latent", latent.main, run + out),
            ("analysis.skips", skips.main, run + out),
            ("analysis.compare", compare.main, run + run + out)]


@pytest.mark.parametrize("workdir_flag", ["--workdir", "--ckpt"])
def test_every_command_names_the_missing_run_in_one_line(tmp_path, capsys, workdir_flag):
    for name, main, argv in commands(tmp_path, workdir_flag):
        assert main(argv) == 2, name
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: "), (name, err)
        assert str(tmp_path / "no_run") in err and "no checkpoints" in err, (name, err)
        assert "Traceback" not in err


def test_run_flags_have_one_meaning_under_every_spelling():
    p = argparse.ArgumentParser()
    cli.add_run_arguments(p, split="train", many=True)
    args = p.parse_args(["--ckpt", "a", "--workdir", "b", "--data_dir", "d"])
    assert args.workdir == ["a", "b"] and args.data_dir == "d" and args.split == "train"
    assert p.parse_args(["--workdir", "a", "--data-dir", "e"]).data_dir == "e"
    q = argparse.ArgumentParser()
    cli.add_run_arguments(q, split=None)
    assert not hasattr(q.parse_args(["--workdir", "a"]), "split")


def test_guard_turns_user_errors_into_status_2_and_lets_bugs_through(capsys):
    @cli.guard
    def fails(argv=None):
        raise UserError(f"bad field in {argv[0]}; fix it")

    assert fails(["x.json"]) == 2
    assert capsys.readouterr().err == "error: bad field in x.json; fix it\n"

    @cli.guard
    def bug(argv=None):
        raise KeyError("a bug is not a user error")

    with pytest.raises(KeyError):
        bug([])
