"""One command-line house: every command that opens a run takes the same run flags (one
spelling, with the older ones as aliases) and turns every library error into one line and
exit status 2 (shg_jax.cli)."""

import argparse
import ast
import importlib
import shlex
import subprocess
import sys

import pytest
from PIL import Image

from analysis import compare, latent, skips
from shg_jax import cli, evaluate, predict
from shg_jax.errors import RunStopped, UserError

from helpers import REPO


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


def test_command_turns_user_errors_into_one_line_and_their_status_and_lets_bugs_through(
        capsys):
    @cli.command
    def fails(argv=None):
        raise UserError(f"bad field in {argv[0]}; fix it")

    assert fails(["x.json"]) == 2
    assert capsys.readouterr().err == "error: bad field in x.json; fix it\n"

    @cli.command
    def stops(argv=None):
        raise RunStopped("loss is nan at global step 7; the last good checkpoint is kept")

    assert stops([]) == 1
    assert capsys.readouterr().err == ("error: loss is nan at global step 7; the last good "
                                       "checkpoint is kept\n")

    @cli.command
    def bug(argv=None):
        raise KeyError("a bug is not a user error")

    with pytest.raises(KeyError):
        bug([])


ARGPARSE_COMMANDS = ["shg_jax.evaluate", "shg_jax.predict", "analysis.latent", "analysis.skips",
                     "analysis.compare", "data_prep.coco", "data_prep.synthetic",
                     "data_prep.preview", "benchmarks.analysis", "benchmarks.data",
                     "benchmarks.full_split"]


@pytest.mark.parametrize("module", ARGPARSE_COMMANDS)
def test_help_lists_every_flag_with_its_default_and_an_example_that_parses(module, capsys,
                                                                           monkeypatch):
    shown = []
    print_help = argparse.ArgumentParser.print_help
    monkeypatch.setattr(argparse.ArgumentParser, "print_help",
                        lambda self, file=None: (shown.append(self), print_help(self, file)))
    with pytest.raises(SystemExit) as e:
        importlib.import_module(module).main(["--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())          # unwrapped
    parser, = shown
    for action in parser._actions:
        if action.option_strings and action.dest != "help":
            assert action.help, (module, action.option_strings)
            if action.default not in (None, False) and not action.required:
                default = action.default
                assert f"(default: {default})" in text, (module, action.option_strings)
    example = text.split("example: ")[1]
    words = shlex.split(example)
    assert words[:3] == ["python", "-m", module]
    parser.parse_args(words[3:])                      # the example is a valid command line


@pytest.mark.parametrize("script, module", [
    ("main.py", None), (None, "shg_jax.convert"), (None, "shg_jax.models"),
    (None, "benchmarks.train_step")])
def test_absl_commands_show_defaults_and_an_example(script, module):
    """absl prints the main module's docstring and every flag with its default; the
    docstring must hold a concrete example of that command."""
    if script:
        out = subprocess.run([sys.executable, script, "--help"], cwd=REPO,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert "(default: 'false')" in out.stdout and "--allow_config_change" in out.stdout
        doc = out.stdout
        command = f"python {script} "
    else:
        path = REPO / (module.replace(".", "/") + ".py")
        if not path.exists():
            path = path.with_suffix("") / "__main__.py"
        doc = ast.get_docstring(ast.parse(path.read_text()))
        command = f"python -m {module} "
    example = doc.split("Example")[1].split(":\n", 1)[1]
    assert example.lstrip().startswith(command) and "[" not in example.split("\n\n")[0]
