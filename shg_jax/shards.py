"""The on-disk format of prepared data, shared by the writer (data_prep) and the reader.

    DATA_DIR/meta.json                   written last: splits, counts, train mean RGB, source
    DATA_DIR/SPLIT/meta.json             the split's shards, counts and drop reasons
    DATA_DIR/SPLIT/NNNNN/images.npy      uint8   (n, S, S, 3) person crops
    DATA_DIR/SPLIT/NNNNN/keypoints.npy   float32 (n, 17, 3) crop pixels (x, y, v)
    DATA_DIR/SPLIT/NNNNN/image_id.npy    int64   (n,) COCO image id
    DATA_DIR/SPLIT/NNNNN/ann_id.npy      int64   (n,) COCO annotation id
    DATA_DIR/SPLIT/NNNNN/progress.json   where the writer stood after this shard (resume)

Every shard is written into a temporary folder and renamed, and a split exists for readers
only once its meta.json does, so a crash never leaves a partial split that looks complete.
Plain .npy files memory-map, so a reader never loads a split into memory.
"""

import numpy as np

from shg_jax.skeleton import N_JOINTS

FORMAT_VERSION = 1
ARRAYS = ("images", "keypoints", "image_id", "ann_id")
SPLITS = ("train", "val", "test")
META = "meta.json"
PROGRESS = "progress.json"


def row_shape(key: str, size: int, n_joints: int = N_JOINTS) -> tuple:
    """The shape of one row of array `key` in data of `size`-pixel crops."""
    return {"images": (size, size, 3), "keypoints": (n_joints, 3), "image_id": (),
            "ann_id": ()}[key]


DTYPES = {"images": np.uint8, "keypoints": np.float32, "image_id": np.int64,
          "ann_id": np.int64}


def empty_arrays(size: int, n_joints: int = N_JOINTS) -> dict:
    """The arrays of a split with no crops (a test draw can take every train crop)."""
    return {key: np.zeros((0,) + row_shape(key, size, n_joints), DTYPES[key])
            for key in ARRAYS}


def shard_name(index: int) -> str:
    return f"{index:05d}"
