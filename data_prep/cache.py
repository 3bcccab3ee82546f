"""Synthetic data on demand: what lets `python main.py --config=configs/demo.py` run on a
fresh machine with no download."""

from __future__ import annotations

import json
import os
import pathlib
import shutil

import jax
from jax.experimental import multihost_utils

from data_prep import synthesis
from data_prep.prepare import prepare
from shg_jax import data, fileio
from shg_jax.errors import UserError

SETTINGS = "synthetic.json"


class CacheError(UserError):
    pass


def ensure_synthetic(config) -> str:
    """config.synthetic, drawn and prepared into config.data_dir on first use: process 0
    makes it while every other process of a multi-host job waits. Returns the data folder
    (user folder expanded) for config.data_dir."""
    if jax.process_index() == 0:
        _make_synthetic(config)
    multihost_utils.sync_global_devices("synthetic data ready")
    return str(pathlib.Path(config.data_dir).expanduser())


def _make_synthetic(config) -> pathlib.Path:
    """Generates and prepares config.synthetic into config.data_dir unless it is there.

    DATA_DIR/coco/ holds the COCO-layout images, DATA_DIR/ the prepared shards; settings
    are recorded so that a changed config.synthetic is not silently served old data."""
    root = pathlib.Path(config.data_dir).expanduser()
    settings = dict(config.synthetic.to_dict(), format=1)
    marker = root / SETTINGS
    if marker.is_file():
        if json.loads(marker.read_text()) != settings:
            raise CacheError(f"{root} holds synthetic data made with other settings "
                             f"({marker}); choose another --config.data_dir or delete it")
        try:
            data.load_meta(root)
            return root
        except data.DataError:
            pass                              # unfinished: the preparation resumes below
    root.mkdir(parents=True, exist_ok=True)
    fileio.write_json(marker, settings)
    coco_root = root / "coco"
    if not (coco_root / "annotations" / "person_keypoints_train2017.json").is_file():
        print(f"generating synthetic data in {coco_root} (first use only)")
        shutil.rmtree(coco_root, ignore_errors=True)
        s = config.synthetic
        synthesis.generate(coco_root, train=s.train, val=s.val, seed=s.seed,
                           size=s.image_size)
    n_test = max(1, config.synthetic.val)         # a test split as large as val, at most
    prepare(coco_root, root, size=config.model.input_size, test_size=n_test,
            crop_mode=config.synthetic.crop_mode, workers=max(1, os.cpu_count() or 1))
    print(f"prepared {root}")
    return root
