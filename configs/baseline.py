"""The thesis' experiment (Andersen 2021, §5): the 1-stack Stacked Hourglass on COCO.

    python main.py --config=configs/baseline.py --workdir=runs/baseline \
        --config.data_dir=data/coco

Every value is the thesis'; deviations are overrides or other config files. The data come
from `python -m data_prep.coco --coco-root COCO_DIR --out data/coco`.
"""

import ml_collections
from ml_collections import config_dict

from shg_jax.augment import augment_config
from shg_jax.models import model_config


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0
    # Prepared shards (python -m data_prep.coco ... --out data/coco).
    config.data_dir = "data/coco"
    # When set (a ConfigDict: train, val, seed, image_size), main.py generates and prepares
    # a synthetic data set at data_dir on first use (see configs/demo.py).
    config.synthetic = ml_collections.config_dict.placeholder(ml_collections.ConfigDict)

    config.model = model_config()            # 1 stack, conv3x3 residual skips, 256 features
    # Matmul and convolution precision (shg_jax.steps.PRECISIONS): the thesis trained in true
    # float32; "tensorfloat32" is what JAX gives float32 on recent NVIDIA GPUs by default,
    # "bfloat16" one bfloat16 pass. (model.dtype sets the activations' dtype.)
    config.precision = "float32"

    config.heatmap = ml_collections.ConfigDict(dict(
        style="thesis",                      # impulse blurred by a normalised Gaussian
        sigma_visible=0.5, sigma_occluded=1.0,
        sigma_newell=1.0))                   # used by style="newell"

    # On-device augmentation in the train step (an extension; the thesis had none): random
    # rotation +-rotation degrees, scale in [scale_min, scale_max], horizontal flip with
    # probability `flip` (left/right joints swapped), fill "zero" or "edge" (shg_jax.augment).
    config.augment = augment_config(enabled=False)

    # Heatmap decoding for evaluation and prediction. Thesis: plain argmax, no flip test.
    # flip: average with the prediction on the mirrored crop (left/right joints swapped);
    # subpixel: Newell's quarter-pixel shift toward the higher neighbour (coordinates only,
    # so it changes predicted keypoints and COCO AP, not the heatmap-argmax PCK);
    # flip_shift: cells the flipped-back maps move right; None derives it from the geometry
    # and the training labels (heatmap.flip_shift: 0.75 for pixel-index labels).
    config.decode = ml_collections.ConfigDict(dict(
        flip=False, subpixel=False, flip_shift=config_dict.placeholder(float)))

    config.batch_size = 16
    # The thesis' DataLoader kept each epoch's last partial batch (124,040 crops: 7,753
    # steps, the last of 8); True drops it.
    config.drop_last = False
    config.eval_batch_size = 16
    config.num_epochs = 50                   # the thesis stopped at 50; best val PCK: 47th
    config.optimizer = "rmsprop"             # PyTorch RMSprop: eps outside the square root
    config.learning_rate = 2.5e-4
    config.rmsprop_decay = 0.99
    config.rmsprop_eps = 1e-8
    config.rmsprop_eps_in_sqrt = False
    config.momentum = 0.0                    # used by optimizer="sgd"
    # ReduceLROnPlateau(mode="max", factor=0.2, patience=5, min_lr=5e-5) on val PCK, with
    # PyTorch's defaults threshold=1e-4 (relative) and cooldown=0; milestones (an extension,
    # none in the thesis): also drop after these epochs.
    config.plateau = ml_collections.ConfigDict(dict(factor=0.2, patience=5, min_lr=5e-5,
                                                    threshold=1e-4, cooldown=0,
                                                    milestones=()))

    # Precise BatchNorm (an extension; the thesis validates on the running averages): before
    # each validation, every BatchNorm's running statistics are replaced by the mean of its
    # statistics over `batches` training batches of `batch_size` crops (the first of the
    # epoch's order, not augmented). With small train batches the running average (momentum
    # 0.1) follows the last few dozen crops only. batches=0: off.
    config.precise_bn = ml_collections.ConfigDict(dict(batches=0, batch_size=64))

    config.log_every_steps = 50
    config.keep_checkpoints = 3
    config.num_tb_images = 8
    config.prefetch = 2
    return config
