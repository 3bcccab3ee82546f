"""Converts the thesis' PyTorch weights into a run that every command opens.

    python -m shg_jax.convert --state-dict SHG.npz --config=configs/baseline.py \
        --workdir runs/thesis [--autoencoder AE.npz]

The state dict is a .npz of the thesis' PyTorch state dict (or a .pth where torch happens
to be installed); the mapping is shg_jax.thesis_weights'.

Example:
    python -m shg_jax.convert --state-dict thesis_shg.npz --config=configs/baseline.py \
        --workdir runs/thesis
"""

from __future__ import annotations

import sys

from shg_jax import cli
from shg_jax.thesis_weights import (AE_PREFIX, THESIS_MEAN_RGB, from_thesis_state_dict,
                                    load_state_dict, write_checkpoint)


@cli.command
def main(argv) -> int:
    from absl import flags
    del argv
    f = flags.FLAGS
    shg = load_state_dict(f.state_dict)
    ae = load_state_dict(f.autoencoder) if f.autoencoder else None
    config = f.config
    if (ae is not None or any(k.startswith(AE_PREFIX) for k in shg)):
        config.model.autoencoder = True
    model = from_thesis_state_dict(shg, config, ae)
    mean = [float(v) for v in f.mean_rgb.split(",")]
    write_checkpoint(model, config, f.workdir, mean)
    print(f"wrote {f.workdir}/checkpoints: {config.model.n_stacks}-stack model"
          f"{' with autoencoder' if config.model.autoencoder else ''}, mean RGB {mean}")
    return 0


if __name__ == "__main__":
    from absl import app, flags
    from ml_collections import config_flags

    config_flags.DEFINE_config_file("config", "configs/baseline.py",
                                    "Config whose model section matches the weights.")
    flags.DEFINE_string("state_dict", None, "The SHG (or combined) state dict: .npz or .pth.")
    flags.DEFINE_string("autoencoder", None, "The autoencoder's state dict, if separate.")
    flags.DEFINE_string("workdir", None, "Where to write the checkpoint.")
    flags.DEFINE_string("mean_rgb", ",".join(map(str, THESIS_MEAN_RGB)),
                        "Mean RGB the weights were trained with, in [0, 1].")
    flags.mark_flags_as_required(["state_dict", "workdir"])
    # The documented spelling is --state-dict; absl flags use underscores.
    sys.argv = [a.replace("--state-dict", "--state_dict", 1) for a in sys.argv]
    app.run(main, flags_parser=cli.parse_absl_flags)
