"""shg_jax.validation: every config value the code cannot run is refused up front with one
line naming the field, the value and what is allowed; main.py exits 2 and writes nothing."""

import subprocess
import sys

import ml_collections
import pytest

from configs import autoencoder, baseline, demo, newell
from shg_jax import bookkeeping
from shg_jax.validation import RULES, ConfigError, validate

from helpers import REPO


def config_with(base=baseline, **fields):
    """configs/BASE.py with FIELD__SUBFIELD=value set, any type (as a run's JSON config or a
    hand-built ConfigDict can hold)."""
    config = ml_collections.ConfigDict(base.get_config().to_dict(), type_safe=False)
    for dotted, value in fields.items():
        *path, last = dotted.split("__")
        node = config
        for part in path:
            node = node[part]
        node[last] = value
    return config


@pytest.mark.parametrize("base", [baseline, demo, autoencoder, newell])
def test_the_shipped_configs_are_valid(base):
    config = base.get_config()
    if base is autoencoder:
        config.init_from = "runs/baseline"
    validate(config, n_devices=1)


@pytest.mark.parametrize("fields, message", [
    ({"batch_size": 0}, "config.batch_size=0: must be a whole number >= 1"),
    ({"batch_size": 2.5}, "config.batch_size=2.5: must be a whole number >= 1"),
    ({"learning_rate": -1.0}, "config.learning_rate=-1.0: must be a finite number > 0"),
    ({"learning_rate": float("nan")}, "config.learning_rate=nan: must be a finite number > 0"),
    ({"rmsprop_decay": 1.0}, "config.rmsprop_decay=1.0: must be a number strictly between 0 and 1"),
    ({"optimizer": "adam"}, "config.optimizer='adam': must be one of 'rmsprop', 'sgd'"),
    ({"model__n_stacks": 0}, "config.model.n_stacks=0: must be a whole number >= 1"),
    ({"model__dtype": "float16"}, "config.model.dtype='float16': must be one of 'float32', "
                                  "'bfloat16'"),
    ({"model__n_joints": 16}, "config.model.n_joints=16: must be one of 17"),
    ({"model__head": "hrnet"}, "config.model.head='hrnet': must be one of 'thesis', 'newell'"),
    ({"heatmap__style": "foo"}, "config.heatmap.style='foo': must be one of 'thesis', 'newell'"),
    ({"heatmap__sigma_visible": 0.0}, "config.heatmap.sigma_visible=0.0: must be a finite"),
    ({"plateau__milestones": (5, 0)}, "config.plateau.milestones=(5, 0): must be a tuple of "
                                      "whole numbers >= 1"),
    ({"plateau__factor": 1.5}, "config.plateau.factor=1.5: must be a number strictly between"),
    ({"decode__flip": "yes"}, "config.decode.flip='yes': must be True or False"),
    ({"decode__flip_shift": float("inf")}, "config.decode.flip_shift=inf: must be None"),
    ({"keep_checkpoints": 0}, "config.keep_checkpoints=0: must be a whole number >= 1"),
    ({"augment__enabled": 1}, "config.augment.enabled=1: must be True or False"),
    ({"augment__rotation": 200.0}, "config.augment.rotation=200.0: must be a number from 0 "
                                   "to 180"),
    ({"augment__flip": 1.5}, "config.augment.flip=1.5: must be a number from 0 to 1"),
    ({"augment__scale_min": 0.0}, "config.augment.scale_min=0.0: must be a finite number > 0"),
    ({"augment__scale_min": 1.5}, "config.augment.scale_max=1.25: must be >= "
                                  "augment.scale_min (1.5)"),
    ({"augment__fill": "wrap"}, "config.augment.fill='wrap': must be one of 'zero', 'edge'"),
    ({"precise_bn__batches": -1}, "config.precise_bn.batches=-1: must be a whole number >= 0"),
    ({"precise_bn__batch_size": 0}, "config.precise_bn.batch_size=0: must be a whole number "
                                    ">= 1"),
])
def test_each_bad_value_names_field_value_and_what_is_allowed(fields, message):
    with pytest.raises(ConfigError) as e:
        validate(config_with(**fields), n_devices=1)
    assert str(e.value).startswith(message)
    assert "\n" not in str(e.value)


def test_the_hourglass_depth_must_fit_the_input_size():
    validate(config_with(model__depth=6), n_devices=1)          # 256 / 4 = 64 = 2**6
    with pytest.raises(ConfigError, match=r"config.model.depth=7: .*a multiple of 512"):
        validate(config_with(model__depth=7), n_devices=1)
    with pytest.raises(ConfigError, match=r"config.model.depth=4: .*input_size 100"):
        validate(config_with(model__input_size=100), n_devices=1)


def test_the_batch_must_split_over_the_devices():
    validate(config_with(batch_size=16), n_devices=8)
    with pytest.raises(ConfigError, match="config.batch_size=16: must be divisible by the "
                                          "3 devices"):
        validate(config_with(batch_size=16), n_devices=3)
    # So are the evaluation's batches, and precise BatchNorm's when it is on
    # (configs/demo.py: 64 crops).
    with pytest.raises(ConfigError, match="config.eval_batch_size=16: must be divisible by "
                                          "the 3 devices"):
        validate(config_with(batch_size=6), n_devices=3)
    validate(config_with(batch_size=6, eval_batch_size=6, precise_bn__batch_size=64),
             n_devices=3)
    with pytest.raises(ConfigError, match="config.precise_bn.batch_size=64: must be divisible "
                                          "by the 3 devices"):
        validate(config_with(demo, batch_size=6, eval_batch_size=6), n_devices=3)


def test_stage_fields():
    with pytest.raises(ConfigError, match="config.stage='pre': must be one of 'pretrain'"):
        validate(config_with(autoencoder, stage="pre"), n_devices=1)
    with pytest.raises(ConfigError, match="config.init_from='': must be the workdir of the "
                                          "SHG run for stage 'pretrain'"):
        validate(config_with(autoencoder, stage="pretrain"), n_devices=1)
    with pytest.raises(ConfigError, match="config.init_checkpoint='bets'"):
        validate(config_with(autoencoder, init_from="x", init_checkpoint="bets"), n_devices=1)
    with pytest.raises(ConfigError, match="config.model.autoencoder=False: must be True"):
        validate(config_with(autoencoder, init_from="x", model__autoencoder=False),
                 n_devices=1)
    validate(config_with(autoencoder, init_from="x", init_checkpoint="12"), n_devices=1)
    validate(config_with(autoencoder, stage="scratch"), n_devices=1)


def test_synthetic_data_fields():
    with pytest.raises(ConfigError, match="config.synthetic.crop_mode='round'"):
        validate(config_with(demo, synthetic__crop_mode="round"), n_devices=1)


@pytest.mark.parametrize("flag, line", [
    ("--config.model.depth=9", "error: config.model.depth=9: must be such that"),
    ("--config.batchsize=4", "error: the config has no field 'batchsize'; did you mean "
                             "'batch_size'?"),
])
def test_main_exits_2_with_one_line_and_writes_nothing(tmp_path, flag, line):
    workdir = tmp_path / "run"
    out = subprocess.run([sys.executable, "main.py", "--config=configs/demo.py",
                          f"--workdir={workdir}", f"--config.data_dir={tmp_path / 'data'}",
                          flag], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    lines = [l for l in out.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith(line), out.stderr
    assert "Traceback" not in out.stderr
    assert not workdir.exists() and not (tmp_path / "data").exists()


@pytest.mark.parametrize("section", ["augment", "precise_bn", "model.head"])
def test_a_recorded_config_without_a_section_differs_from_todays(section):
    """Resuming compares whole configs: a section or field missing from the run's config is
    a difference (no section counts as switched off), and the resumable fields are not."""
    *parents, last = section.split(".")
    old = bookkeeping.config_json(baseline.get_config())
    tree = old
    for part in parents:
        tree = tree[part]
    now = tree.pop(last)
    assert bookkeeping.config_differences(old, bookkeeping.config_json(
        baseline.get_config())) == [f"{section}: None in the run, {now!r} now"]
    changed = baseline.get_config()
    changed.num_epochs, changed.eval_batch_size = 7, 3
    assert bookkeeping.config_differences(bookkeeping.config_json(baseline.get_config()),
                                          bookkeeping.config_json(changed)) == []


#: Every field shg_jax.validation checks: a rule taken out of RULES fails the test below for
#: its field.
VALIDATED = (
    "seed", "batch_size", "drop_last", "precision", "eval_batch_size", "num_epochs",
    "optimizer", "learning_rate", "rmsprop_decay", "rmsprop_eps", "rmsprop_eps_in_sqrt",
    "momentum", "log_every_steps", "keep_checkpoints", "num_tb_images", "prefetch",
    "plateau.factor", "plateau.patience", "plateau.min_lr", "plateau.threshold",
    "plateau.cooldown", "plateau.milestones", "precise_bn.batches", "precise_bn.batch_size",
    "heatmap.style", "heatmap.sigma_visible", "heatmap.sigma_occluded", "heatmap.sigma_newell",
    "augment.enabled", "augment.rotation", "augment.scale_min", "augment.scale_max",
    "augment.flip", "augment.fill", "decode.flip", "decode.subpixel", "model.n_stacks",
    "model.depth", "model.n_bottleneck", "model.features", "model.mid_features",
    "model.stem_features", "model.residual_skip", "model.n_joints",
    "model.use_skip_connections", "model.input_size", "model.autoencoder",
    "model.ae_channels", "model.ae_code_size", "model.autoencoder_every_stack", "model.head",
    "model.stacking", "model.dtype", "model.bias_init", "model.bn_running_var", "stage",
    "pretrain.num_epochs", "pretrain.batch_size", "pretrain.learning_rate",
    "pretrain.momentum", "pretrain.halve_every", "pretrain.lr_factor", "pretrain.noise",
    "pretrain.extract_batch_size", "pretrain.shuffle", "pretrain.drop_last",
    "synthetic.train", "synthetic.val", "synthetic.seed", "synthetic.image_size",
    "synthetic.crop_mode")


def test_every_validated_field_is_listed():
    assert set(RULES) == set(VALIDATED) and len(VALIDATED) == len(set(VALIDATED))


@pytest.mark.parametrize("field", VALIDATED)
def test_every_rule_refuses_a_bad_value_with_its_own_message(field):
    """One bad value per rule, generated from the rule table: the shipped value passes, the
    rule's refused value ends validation with the rule's one-line message."""
    rule = RULES[field]
    base = (demo if field.startswith("synthetic.") else
            autoencoder if field == "stage" or field.startswith("pretrain.") else baseline)
    good = config_with(base)
    if base is autoencoder:
        good.init_from = "runs/baseline"
    *path, last = field.split(".")
    node = good
    for part in path:
        node = node[part]
    assert rule.test(node[last]), (field, node[last])
    node[last] = rule.refused
    with pytest.raises(ConfigError) as e:
        validate(good, n_devices=1)
    assert str(e.value) == f"config.{field}={rule.refused!r}: must be {rule.allowed}"


#: configs/baseline.py, field by field: the thesis' values (DESIGN.md; the thesis' code for
#: the crops, targets, optimizer, schedule and initialisation), and the extensions off.
THESIS_BASELINE = {
    "seed": 0, "data_dir": "data/coco", "synthetic": None,
    "model": {"n_stacks": 1, "depth": 4, "n_bottleneck": 3, "features": 256,
              "mid_features": 128, "stem_features": 256, "residual_skip": "conv3x3",
              "n_joints": 17, "use_skip_connections": True, "input_size": 256,
              "autoencoder": False, "ae_channels": [192, 128, 64], "ae_code_size": 50,
              "autoencoder_every_stack": False, "head": "thesis", "stacking": "thesis",
              "dtype": "float32", "bias_init": "pytorch", "bn_running_var": "unbiased"},
    "precision": "float32",
    "heatmap": {"style": "thesis", "sigma_visible": 0.5, "sigma_occluded": 1.0,
                "sigma_newell": 1.0},
    "augment": {"enabled": False, "rotation": 30.0, "scale_min": 0.75, "scale_max": 1.25,
                "flip": 0.5, "fill": "zero"},
    "decode": {"flip": False, "subpixel": False, "flip_shift": None},
    "batch_size": 16, "drop_last": False, "eval_batch_size": 16, "num_epochs": 50,
    "optimizer": "rmsprop", "learning_rate": 2.5e-4, "rmsprop_decay": 0.99,
    "rmsprop_eps": 1e-8, "rmsprop_eps_in_sqrt": False, "momentum": 0.0,
    "plateau": {"factor": 0.2, "patience": 5, "min_lr": 5e-5, "threshold": 1e-4,
                "cooldown": 0, "milestones": []},
    "precise_bn": {"batches": 0, "batch_size": 64},
    "log_every_steps": 50, "keep_checkpoints": 3, "num_tb_images": 8, "prefetch": 2}


def test_baseline_holds_the_thesis_values():
    assert bookkeeping.config_json(baseline.get_config()) == THESIS_BASELINE


def test_the_autoencoder_stages_hold_the_thesis_values():
    """configs/autoencoder.py: AE.py's model, its stage-1 run (SGD momentum 0.9, lr 5e-4
    halved every 25 epochs, batch 16, noise 0.1, storage order, 51 epochs, the last batch
    kept) and the 20 fine-tuning epochs from the SHG's min-validation-loss checkpoint."""
    config = bookkeeping.config_json(autoencoder.get_config())
    assert config["model"] == dict(THESIS_BASELINE["model"], autoencoder=True)
    assert config["pretrain"] == {
        "num_epochs": 51, "batch_size": 16, "learning_rate": 5e-4, "momentum": 0.9,
        "halve_every": 25, "lr_factor": 0.5, "noise": 0.1, "shuffle": False,
        "drop_last": False, "extract_batch_size": 64}
    assert (config["stage"], config["init_checkpoint"], config["num_epochs"]) == (
        "finetune", "best_loss", 20)
