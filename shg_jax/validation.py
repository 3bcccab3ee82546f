"""One check of a whole config before anything starts: types, ranges, choices, the batch's
divisibility by the devices, the input size against the hourglass depth, the stage fields.

`validate(config, n_devices)` raises ConfigError whose one-line message names the field, the
value and what is allowed. main.py calls it once before anything is written (exit status 2),
`train.train_and_evaluate` once for library callers, and `runs.open_run` for every command
that opens a run, so all get the same message. Each rule lives here once; the modules keep
their own checks for callers that bypass configs.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import ml_collections

from shg_jax.augment import FILLS
from shg_jax.crop import CROP_MODES
from shg_jax.errors import UserError
from shg_jax.heatmap import HEATMAP_STYLES
from shg_jax.models.layers import BIAS_INITS, BN_RUNNING_VARS
from shg_jax.models.residual import RESIDUAL_SKIPS
from shg_jax.models.stacked import HEADS, STACKINGS, STEM_STRIDE
from shg_jax.skeleton import N_JOINTS
from shg_jax.steps import PRECISIONS

OPTIMIZERS = ("rmsprop", "sgd")
DTYPES = ("float32", "bfloat16")
STAGES = ("pretrain", "finetune", "scratch")
CHECKPOINT_NAMES = ("latest", "best", "best_loss")


class ConfigError(UserError):
    """A config value outside what the code can run; the message names field and value."""


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(v))


class Rule(NamedTuple):
    """One field's rule: the test a value must pass, what is allowed (for the message), and
    a value the rule refuses (the tests generate a bad config per rule from it)."""
    test: Callable[[Any], bool]
    allowed: str
    refused: Any


def int_at_least(low: int) -> Rule:
    return Rule(lambda v: _is_int(v) and v >= low, f"a whole number >= {low}", low - 1)


def positive() -> Rule:
    return Rule(lambda v: _is_number(v) and v > 0, "a finite number > 0", 0.0)


def at_least(low: float) -> Rule:
    return Rule(lambda v: _is_number(v) and v >= low, f"a finite number >= {low:g}",
                low - 1.0)


def between(low: float, high: float) -> Rule:
    return Rule(lambda v: _is_number(v) and low < v < high,
                f"a number strictly between {low:g} and {high:g}", float(high))


def between_inclusive(low: float, high: float) -> Rule:
    return Rule(lambda v: _is_number(v) and low <= v <= high,
                f"a number from {low:g} to {high:g}", high + 1.0)


def one_of(choices) -> Rule:
    return Rule(lambda v: v in choices, "one of " + ", ".join(repr(c) for c in choices),
                "unknown")


def boolean() -> Rule:
    return Rule(lambda v: isinstance(v, bool), "True or False", "yes")


def ints_at_least(low: int) -> Rule:
    return Rule(lambda v: isinstance(v, (tuple, list)) and all(_is_int(x) and x >= low
                                                               for x in v),
                f"a tuple of whole numbers >= {low}", (low, low - 1))


#: field -> Rule; a field absent from the config is not checked (configs differ: only
#: autoencoder configs have `stage`, only the demo has `synthetic`).
RULES = {
    "seed": int_at_least(0),
    "batch_size": int_at_least(1),
    "drop_last": boolean(),
    "precision": one_of(PRECISIONS),
    "eval_batch_size": int_at_least(1),
    "num_epochs": int_at_least(1),
    "optimizer": one_of(OPTIMIZERS),
    "learning_rate": positive(),
    "rmsprop_decay": between(0, 1),
    "rmsprop_eps": positive(),
    "rmsprop_eps_in_sqrt": boolean(),
    "momentum": at_least(0),
    "log_every_steps": int_at_least(1),
    "keep_checkpoints": int_at_least(1),
    "num_tb_images": int_at_least(0),
    "prefetch": int_at_least(1),
    "plateau.factor": between(0, 1),
    "plateau.patience": int_at_least(0),
    "plateau.min_lr": at_least(0),
    "plateau.threshold": at_least(0),
    "plateau.cooldown": int_at_least(0),
    "plateau.milestones": ints_at_least(1),
    "precise_bn.batches": int_at_least(0),
    "precise_bn.batch_size": int_at_least(1),
    "heatmap.style": one_of(HEATMAP_STYLES),
    "heatmap.sigma_visible": positive(),
    "heatmap.sigma_occluded": positive(),
    "heatmap.sigma_newell": positive(),
    "augment.enabled": boolean(),
    "augment.rotation": between_inclusive(0, 180),
    "augment.scale_min": positive(),
    "augment.scale_max": positive(),
    "augment.flip": between_inclusive(0, 1),
    "augment.fill": one_of(FILLS),
    "decode.flip": boolean(),
    "decode.subpixel": boolean(),
    "model.n_stacks": int_at_least(1),
    "model.depth": int_at_least(1),
    "model.n_bottleneck": int_at_least(1),
    "model.features": int_at_least(1),
    "model.mid_features": int_at_least(1),
    "model.stem_features": int_at_least(1),
    "model.residual_skip": one_of(RESIDUAL_SKIPS),
    "model.n_joints": one_of((N_JOINTS,)),
    "model.use_skip_connections": boolean(),
    "model.input_size": int_at_least(STEM_STRIDE * 2),
    "model.autoencoder": boolean(),
    "model.ae_channels": ints_at_least(1),
    "model.ae_code_size": int_at_least(1),
    "model.autoencoder_every_stack": boolean(),
    "model.head": one_of(HEADS),
    "model.stacking": one_of(STACKINGS),
    "model.dtype": one_of(DTYPES),
    "model.bias_init": one_of(BIAS_INITS),
    "model.bn_running_var": one_of(BN_RUNNING_VARS),
    "stage": one_of(STAGES),
    "pretrain.num_epochs": int_at_least(1),
    "pretrain.batch_size": int_at_least(1),
    "pretrain.learning_rate": positive(),
    "pretrain.momentum": at_least(0),
    "pretrain.halve_every": int_at_least(1),
    "pretrain.lr_factor": between(0, 1),
    "pretrain.noise": at_least(0),
    "pretrain.extract_batch_size": int_at_least(1),
    "pretrain.shuffle": boolean(),
    "pretrain.drop_last": boolean(),
    "synthetic.train": int_at_least(1),
    "synthetic.val": int_at_least(1),
    "synthetic.seed": int_at_least(0),
    "synthetic.image_size": int_at_least(32),
    "synthetic.crop_mode": one_of(CROP_MODES),
}


def _get(config, dotted: str):
    node = config
    for part in dotted.split("."):
        if node is None or not hasattr(node, "keys") or part not in node.keys():
            return _ABSENT
        node = node[part]
    return node


_ABSENT = object()


def _fail(field: str, value, allowed: str) -> None:
    raise ConfigError(f"config.{field}={value!r}: must be {allowed}")


def validate(config: ml_collections.ConfigDict, n_devices: int | None = None) -> None:
    """Raises ConfigError (one line: field, value, what is allowed) at the first value the
    code cannot run; `n_devices`: the devices the batch is split over (None: not checked)."""
    for field, rule in RULES.items():
        value = _get(config, field)
        if value is not _ABSENT and not rule.test(value):
            _fail(field, value, rule.allowed)
    lo, hi = _get(config, "augment.scale_min"), _get(config, "augment.scale_max")
    if _ABSENT not in (lo, hi) and lo > hi:
        _fail("augment.scale_max", hi, f">= augment.scale_min ({lo!r})")
    flip_shift = _get(config, "decode.flip_shift")
    if flip_shift not in (None, _ABSENT) and not _is_number(flip_shift):
        _fail("decode.flip_shift", flip_shift, "None (derived) or a finite number of cells")
    divided = ["batch_size", "eval_batch_size"]
    if _get(config, "precise_bn.batches") not in (0, _ABSENT):
        divided.append("precise_bn.batch_size")
    for field in divided:
        value = _get(config, field)
        if n_devices and value is not _ABSENT and value % n_devices:
            _fail(field, value, f"divisible by the {n_devices} devices it is split over")
    cells = config.model.input_size // STEM_STRIDE
    if config.model.input_size % STEM_STRIDE or cells % 2 ** config.model.depth:
        _fail("model.depth", config.model.depth,
              f"such that input_size / {STEM_STRIDE} = {config.model.input_size / STEM_STRIDE:g} "
              f"halves {config.model.depth} times to a whole number (input_size "
              f"{config.model.input_size}: a multiple of {STEM_STRIDE * 2 ** config.model.depth})")
    stage = _get(config, "stage")
    if stage in ("pretrain", "finetune"):
        if not config.init_from:
            _fail("init_from", config.init_from,
                  f"the workdir of the {'SHG' if stage == 'pretrain' else 'stage-1'} run "
                  f"for stage {stage!r}")
        which = config.init_checkpoint
        if which not in CHECKPOINT_NAMES and not str(which).isdigit():
            _fail("init_checkpoint", which,
                  "one of " + ", ".join(CHECKPOINT_NAMES) + " or an epoch number")
        if not config.model.autoencoder:
            _fail("model.autoencoder", False, f"True for stage {stage!r}")
