"""The thesis' improved model (§7): the 1-stack SHG with an autoencoder in the bottleneck.

Two stages, each its own run (workdir):

    # 1. the autoencoder alone, on latents of a trained SHG (thesis: its min-val-loss epoch)
    python main.py --config=configs/autoencoder.py --config.stage=pretrain \
        --config.init_from=runs/baseline --workdir=runs/ae_pretrain --config.data_dir=data/coco
    # 2. inserted into that SHG, the whole network fine-tuned with the SHG recipe
    python main.py --config=configs/autoencoder.py --config.stage=finetune \
        --config.init_from=runs/ae_pretrain --workdir=runs/ae --config.data_dir=data/coco

`--config.stage=scratch` trains the same network from random weights (not in the thesis).
config.model must be the SHG's model plus the autoencoder fields; config.data_dir the data
the SHG was trained on.
"""

import ml_collections

from configs import baseline


def add_autoencoder(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Adds the autoencoder and the two stages' fields (thesis values) to an SHG config."""
    config.model.autoencoder = True          # after the 3rd bottleneck residual (thesis)
    config.stage = "finetune"                # pretrain | finetune | scratch
    # pretrain: the SHG workdir whose latents the autoencoder learns;
    # finetune: the stage-1 workdir (which names its SHG checkpoint itself).
    config.init_from = ""
    config.init_checkpoint = "best_loss"     # thesis: the minimum-validation-loss epoch
    config.pretrain = ml_collections.ConfigDict(dict(
        # The thesis' run stopped after 51 epochs and kept that model; its caption says 100.
        num_epochs=51, batch_size=16, learning_rate=5e-4, momentum=0.9,
        halve_every=25, lr_factor=0.5,       # StepLR(step_size=25, gamma=0.5)
        noise=0.1,                           # x + 0.1 * x * N(0, 1)
        shuffle=False,                       # its DataLoader did not shuffle; True: per epoch
        drop_last=False,                     # its DataLoader kept the last partial batch
        extract_batch_size=64))              # latents of the last bottleneck residual
    return config


def get_config() -> ml_collections.ConfigDict:
    config = add_autoencoder(baseline.get_config())
    config.num_epochs = 20                   # the thesis ran 20, kept the best (16th)
    return config
