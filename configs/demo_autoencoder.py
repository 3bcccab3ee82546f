"""The autoencoder stages on the demo model (configs/demo.py), on a laptop CPU.

    python main.py --config=configs/demo.py --workdir=runs/demo            # the SHG
    python main.py --config=configs/demo_autoencoder.py --config.stage=pretrain \
        --config.init_from=runs/demo --workdir=runs/demo_ae_pretrain
    python main.py --config=configs/demo_autoencoder.py --config.stage=finetune \
        --config.init_from=runs/demo_ae_pretrain --workdir=runs/demo_ae
    python -m analysis.compare --ckpt runs/demo --ckpt runs/demo_ae --out runs/compare

The demo's model and data plus the thesis' autoencoder (channels 192, 128, 64 on the 4x4x64
latent, code 50) and stage-1 recipe; fine-tuning follows the demo's recipe for 3 epochs at
the thesis' learning rate (2.5e-4): the demo's 4e-3, chosen for training from scratch,
undoes the trained SHG in the first fine-tuning epoch (docs/results.md).
"""

import ml_collections

from configs import demo
from configs.autoencoder import add_autoencoder


def get_config() -> ml_collections.ConfigDict:
    config = add_autoencoder(demo.get_config())
    config.num_epochs = 3
    config.learning_rate = 2.5e-4
    return config
