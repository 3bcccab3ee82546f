"""Train and evaluate a Stacked Hourglass.

    python main.py --config=configs/baseline.py --workdir=runs/baseline
        [--config.field=value ...] [--allow_config_change] [--profile_dir DIR]

flags, jax.distributed, the config's validation, the synthetic data of configs that ask for
it (data_prep.cache), then `train.run_stage(config, workdir)`, which runs the stage the
config names (--config.stage=pretrain | finetune | scratch, configs/autoencoder.py).
Rerunning a command resumes its workdir from the latest checkpoint. TensorBoard:
    tensorboard --logdir runs/
Several hosts: the same command on every host, with --coordinator_address, --num_processes
and --process_id (or under SLURM, which JAX detects by itself); see the README.

Example (the demo: synthetic data, a small hourglass, 5 epochs on a CPU):
    python main.py --config=configs/demo.py --workdir=runs/demo
"""

import os

from shg_jax import cpu_flags

if __name__ == "__main__":
    # Huge pages for malloc (shg_jax/cpu_flags.py): restarts before the imports below, which
    # the new process would make again.
    cpu_flags.restart_with_hugepage_malloc()

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from data_prep.cache import ensure_synthetic
from shg_jax import cli, train
from shg_jax.errors import UserError
from shg_jax.validation import validate

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Training configuration file.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Folder for checkpoints, TensorBoard events, config.")
flags.DEFINE_bool("allow_config_change", False,
                  "Resume a workdir even though its config differs from this one.")
flags.DEFINE_string("profile_dir", None,
                    "Trace training steps 5-9 here (jax.profiler: TensorBoard or Perfetto).")
flags.DEFINE_string("coordinator_address", None,
                    "host:port of process 0, for multi-host training (jax.distributed).")
flags.DEFINE_integer("num_processes", None, "Number of processes (hosts) in the job.")
flags.DEFINE_integer("process_id", None, "This process' index, 0 .. num_processes-1.")
flags.mark_flags_as_required(["config", "workdir"])


def init_distributed() -> None:
    """jax.distributed.initialize() from the flags, or from a SLURM job's environment."""
    if FLAGS.coordinator_address or FLAGS.num_processes:
        jax.distributed.initialize(coordinator_address=FLAGS.coordinator_address,
                                   num_processes=FLAGS.num_processes,
                                   process_id=FLAGS.process_id)
    elif int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        jax.distributed.initialize()


@cli.command
def main(argv) -> int:
    if len(argv) > 1:
        raise UserError(f"unexpected arguments {argv[1:]}: every setting is a --flag "
                        f"(python main.py --help)")
    logging.set_verbosity(logging.WARNING)
    init_distributed()
    config = FLAGS.config
    validate(config, jax.device_count())
    if config.synthetic is not None:
        config.data_dir = ensure_synthetic(config)
    train.run_stage(config, FLAGS.workdir, allow_config_change=FLAGS.allow_config_change,
                    profile_dir=FLAGS.profile_dir)
    return 0


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_absl_flags)
