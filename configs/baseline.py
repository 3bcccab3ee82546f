"""The thesis' experiment (Andersen 2021, §5): 1-stack Stacked Hourglass on COCO keypoints.

Every value here is the thesis'; deviations belong in other config files or overrides
(`--config.model.n_stacks=2`).
"""

import ml_collections

from shg_jax.models import model_config


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.model = model_config()
    return config
