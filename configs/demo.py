"""The embedded demo: a small hourglass trained on synthetic figures, on a laptop CPU.

    python main.py --config=configs/demo.py --workdir=runs/demo

On first use main.py draws the synthetic COCO-format data set and prepares it into the cache
folder (SHG_JAX_CACHE, default ~/.cache/shg_jax); later runs reuse it. The recipe is the
thesis' apart from the fields set here, all for speed on a CPU: 128x128 crops (32x32
heatmaps), 64 features, a 32-channel stem, depth 3 (latent 4x4x64), Newell's identity
residual skips (the thesis' 3x3 skip convs double the cost), Newell-style heatmaps (peak 1,
which MSE learns faster than the thesis' 0.62/0.16 peaks), Newell's head (it learns the
wrists on every seed, where the thesis' 17-channel head missed them on some), batch 4 (on a
CPU, more and smaller steps learn faster per second) with the larger learning rate that
head takes, 5 epochs with the rate cut by 5 after epoch 4 (plateau milestones, an
extension), the flip test in validation and evaluation (config.decode.flip) and precise
BatchNorm statistics before each validation (with batches of 4 the running averages follow
the last ~40 crops).

Crop mode: the thesis' own rule. It drops the synthetic figures it cannot centre (about
half: they fill most of the photo height), so an epoch holds fewer crops than "square"
would give and trains more per minute; the val split shrinks with it, so compare PCK within
one crop mode. What the recipe reaches, and how long it takes: docs/results.md.
"""

import os

import ml_collections

from configs import baseline

CACHE = os.environ.get("SHG_JAX_CACHE", os.path.join(os.path.expanduser("~"), ".cache",
                                                     "shg_jax"))


def get_config() -> ml_collections.ConfigDict:
    config = baseline.get_config()
    config.synthetic = ml_collections.ConfigDict(dict(train=3400, val=200, seed=0,
                                                      image_size=128, crop_mode="thesis"))
    # The folder's version names the data's recipe (figures, their lighting, their number,
    # what meta.json records): a new recipe gets a new folder, never an old cache.
    config.data_dir = os.path.join(CACHE, "synthetic-demo-v7")
    config.model.update(dict(input_size=128, features=64, mid_features=32, stem_features=32,
                             depth=3, residual_skip="identity", head="newell"))
    config.heatmap.style = "newell"
    config.learning_rate = 4e-3              # the best of 2e-3 .. 5e-3 (docs/results.md)
    config.plateau.min_lr = 1e-5
    config.plateau.patience = 2
    config.batch_size = 4                    # more, smaller steps learn faster per second
    config.drop_last = True                  # no second compile of the step for 2 crops
    config.eval_batch_size = 64
    config.num_epochs = 5
    config.plateau.milestones = (4,)
    config.log_every_steps = 100
    # The flip test (shg_jax.codec, shift derived from the labels): the synthetic figures are
    # as likely mirrored as not, so it gains here as on photos.
    config.decode.flip = True
    # Precise BatchNorm before each validation (an extension): 2 x 64 training crops.
    config.precise_bn.batches = 2
    return config
