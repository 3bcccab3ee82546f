"""What every command line shares: the flags that name a run and its data, the decoding
flags, the process set-up, and one exit policy (`command`).

Flags are spelled with dashes (`--data-dir`, `--batch-size`); the underscore spellings of
earlier versions (`--data_dir`, `--batch_size`) still work. A run is named by `--workdir`
(the training run's folder, or one checkpoint folder of it; `--ckpt`, the spelling of the
analysis commands, is the same flag). Any UserError a command meets ends in one line and the
exit status of shg_jax.errors, never a traceback.
"""

from __future__ import annotations

import argparse
import functools
import logging
import re
import sys

from shg_jax import cpu_flags
from shg_jax.errors import UserError

SPLIT_NAMES = ("train", "val", "test")


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Every flag's help ends with its default (flags without one, or with None, say
    nothing); the description and epilog keep their line breaks."""

    def _get_help_string(self, action):
        text = action.help or ""
        if (action.default not in (None, False, argparse.SUPPRESS) and not action.required
                and "%(default)" not in text and action.option_strings):
            text += " (default: %(default)s)"
        return text


class _Parser(argparse.ArgumentParser):
    """argparse with the one exit policy: a bad flag is one line, `error: ...`, naming it,
    and exit status 2 (argparse's own prints the whole usage first)."""

    def error(self, message: str):
        self.exit(2, f"error: {message}; see {self.prog} --help\n")


def parser(prog: str, doc: str, example: str, notes: str = "") -> argparse.ArgumentParser:
    """A command's parser: the first paragraph of its module docstring `doc` as the
    description, every flag with its default, then `notes` and one runnable example."""
    epilog = (notes.strip() + "\n\n" if notes.strip() else "") + f"example:\n  {example}"
    return _Parser(prog=prog, description=doc.strip().split("\n\n")[0],
                   formatter_class=_HelpFormatter, epilog=epilog)


class ArgumentError(UserError):
    """A flag's value that the run or its data cannot take; the message names the flag."""


def whole_number(low: int):
    """An argparse type: a whole number >= `low`."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low:
            raise argparse.ArgumentTypeError(f"must be a whole number >= {low}, got {text!r}")
        return value
    parse.__name__ = f"whole number >= {low}"
    return parse


def add_run_arguments(p: argparse.ArgumentParser, *, split: str | None = "val",
                      many: bool = False) -> None:
    """--workdir/--ckpt, --checkpoint, --data-dir and (unless split is None) --split with
    that default. `many`: --workdir may be given several times (a list)."""
    p.add_argument("--workdir", "--ckpt", dest="workdir", required=True, metavar="RUN",
                   action="append" if many else "store",
                   help="a training run's workdir, or one checkpoint folder of it "
                        "(WORKDIR/checkpoints/STEP)" + ("; repeat it for several runs"
                                                       if many else ""))
    p.add_argument("--checkpoint",
                   help="best | latest | best_loss | an epoch number (default: best; a "
                        "checkpoint folder names its own)")
    if split is not None:
        p.add_argument("--split", default=split, choices=SPLIT_NAMES,
                       help="the prepared split to use")
    p.add_argument("--data-dir", "--data_dir", dest="data_dir",
                   help="prepared data (default: the run's config.data_dir)")


def add_decode_arguments(p: argparse.ArgumentParser) -> None:
    """--flip / --subpixel (and --no-...) / --flip-shift: override the run's config.decode."""
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="flip test: average with the mirrored crop's prediction (default: "
                        "the run's config.decode.flip; thesis: off)")
    p.add_argument("--subpixel", action=argparse.BooleanOptionalAction, default=None,
                   help="quarter-pixel shift toward the higher neighbour (default: the "
                        "run's config.decode.subpixel; thesis: off)")
    p.add_argument("--flip-shift", type=float, metavar="CELLS",
                   help="with --flip: heatmap cells the flipped-back maps move right "
                        "(default: the run's config.decode.flip_shift, or derived from the "
                        "training labels: shg_jax.heatmap.flip_shift)")


def decode_overrides(args: argparse.Namespace) -> dict:
    """The runs.open_run keywords of the flags add_decode_arguments declares."""
    return dict(flip=args.flip, subpixel=args.subpixel, flip_shift=args.flip_shift)


class _OrbaxNotices(logging.Filter):
    """Drops two Orbax warnings that say nothing to a user: that a read-only manager is
    read-only (every command that opens a run does so on purpose, and the line would follow
    each of them), and that a state folder has no metadata file of its own (ours never
    have one; the shape check of a failed restore reads it)."""

    NOTICES = ("Given directory is read only", "Metadata file does not exist")

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.NOTICES)


def prepare_process() -> None:
    """What a command does to its process before any work, and importing a library module
    never does: the XLA:CPU flag of shg_jax.cpu_flags (before JAX starts a backend) and
    Orbax's empty notices silenced. Idempotent."""
    cpu_flags.apply_cpu_defaults()
    absl_logger = logging.getLogger("absl")
    if not any(isinstance(f, _OrbaxNotices) for f in absl_logger.filters):
        absl_logger.addFilter(_OrbaxNotices())


def command(main):
    """The one exit policy, wrapping every command's main(argv) -> status: the process is
    prepared (prepare_process), then a UserError ends in one line `error: MESSAGE` on
    stderr and its exit status (2 bad input, 1 a run that cannot go on: shg_jax.errors), and
    a Ctrl-C that nothing caught in one line and status 130; never a traceback."""
    @functools.wraps(main)
    def run(argv=None) -> int:
        prepare_process()
        try:
            return main(argv)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            return e.exit_status
        except KeyboardInterrupt:
            print("error: interrupted (Ctrl-C); rerun the same command to start again",
                  file=sys.stderr)
            return 130
    return run


HELP_FLAGS = ("--help", "-h", "-?", "--helpshort", "--helpfull", "--helpxml")


def parse_absl_flags(argv: list[str]) -> list[str]:
    """The flags parser of the absl commands (main.py, shg_jax.convert, shg_jax.models,
    benchmarks.train_step): absl's parsing, with a misspelt or malformed --config.FIELD as
    one line (ml_collections suggests the right name) and exit status 2 instead of a
    traceback, and --help exiting 0 (absl exits 1)."""
    from absl import flags

    try:
        return flags.FLAGS(argv)
    except SystemExit as e:
        if any(a in HELP_FLAGS for a in argv[1:]):
            sys.exit(0)
        raise e
    except flags.Error as e:
        print(f"error: {e}\npass --help for the flags", file=sys.stderr)
    except (AttributeError, KeyError) as e:           # a --config.FIELD the config lacks
        name = re.search(r"\w+", str(e))
        hint = re.search(r"Did you mean \"(\w+)\"", str(e))
        print(f"error: the config has no field {name.group() if name else str(e)!r}"
              + (f"; did you mean {hint.group(1)!r}?" if hint else ""), file=sys.stderr)
    except (TypeError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
