"""Train and evaluate a Stacked Hourglass.

    python main.py --config=configs/baseline.py --workdir=runs/baseline
        [--config.field=value ...] [--allow_config_change] [--profile_dir DIR]

Rerunning a command resumes its workdir from the latest checkpoint. TensorBoard:
    tensorboard --logdir runs/
Several hosts: the same command on every host, with --coordinator_address, --num_processes
and --process_id (or under SLURM, which JAX detects by itself); see the README.
"""

import os
import pathlib
import sys

import jax
from absl import app, flags, logging
from jax.experimental import multihost_utils
from ml_collections import config_flags

from shg_jax.latents import pretraining_latents
from data_prep.cache import ensure_synthetic
from shg_jax import pretrain, train
from shg_jax.errors import UserError
from shg_jax.pretrain import latent_shape

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


def pretrain_autoencoder(config) -> None:
    """Stage 1 of configs/autoencoder.py: latents of the SHG in config.init_from (extracted
    by shg_jax.latents into WORKDIR/latents, reused on rerun), then the autoencoder."""
    if not config.init_from:
        raise train.TrainingError("--config.stage=pretrain needs --config.init_from=SHG_WORKDIR")
    train_lat, val_lat, source = pretraining_latents(
        config.init_from, config.init_checkpoint, config.data_dir, FLAGS.workdir,
        batch_size=config.pretrain.extract_batch_size)
    shape = (-1,) + latent_shape(config.model)
    pretrain.pretrain(config, FLAGS.workdir, train_lat.latents.reshape(shape),
                      val_lat.latents.reshape(shape), source,
                      allow_config_change=FLAGS.allow_config_change)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    init_distributed()
    config = FLAGS.config
    try:
        if config.synthetic is not None:
            if jax.process_index() == 0:              # one process makes the data
                ensure_synthetic(config)
            multihost_utils.sync_global_devices("synthetic data ready")
            config.data_dir = str(pathlib.Path(config.data_dir).expanduser())
        if config.get("stage") == "pretrain":
            pretrain_autoencoder(config)
        else:
            train.train_and_evaluate(config, FLAGS.workdir,
                                     allow_config_change=FLAGS.allow_config_change,
                                     profile_dir=FLAGS.profile_dir)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    app.run(main)
