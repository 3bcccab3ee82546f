"""Train and evaluate a Stacked Hourglass.

    python main.py --config=configs/baseline.py --workdir=runs/baseline
        [--config.field=value ...] [--allow_config_change]

Rerunning a command resumes its workdir from the latest checkpoint. TensorBoard:
    tensorboard --logdir runs/
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from data_prep.cache import CacheError, ensure_synthetic
from shg_jax import data, train

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Training configuration file.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Folder for checkpoints, TensorBoard events, config.")
flags.DEFINE_bool("allow_config_change", False,
                  "Resume a workdir even though its config differs from this one.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    config = FLAGS.config
    try:
        if config.synthetic is not None:
            config.data_dir = str(ensure_synthetic(config))
        train.train_and_evaluate(config, FLAGS.workdir,
                                 allow_config_change=FLAGS.allow_config_change)
    except (data.DataError, train.TrainingError, CacheError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    app.run(main)
