"""The on-disk format of prepared data, shared by the writer (data_prep) and the reader.

    DATA_DIR/meta.json                   written last: splits, counts, train mean RGB, source
    DATA_DIR/SPLIT/meta.json             the split's shards, counts and drop reasons
    DATA_DIR/SPLIT/NNNNN/images.npy      uint8   (n, S, S, 3) person crops
    DATA_DIR/SPLIT/NNNNN/keypoints.npy   float32 (n, 17, 3) crop pixels (x, y, v)
    DATA_DIR/SPLIT/NNNNN/image_id.npy    int64   (n,) COCO image id
    DATA_DIR/SPLIT/NNNNN/ann_id.npy      int64   (n,) COCO annotation id
    DATA_DIR/SPLIT/NNNNN/box.npy         float32 (n, 4) the person's COCO bbox (x, y, w, h)
    DATA_DIR/SPLIT/NNNNN/photo_size.npy  int32   (n, 2) the photo's width and height
    DATA_DIR/SPLIT/NNNNN/factor-NAME.npy float32 (n,) a generating factor the annotations
                                         carry (synthetic data); a class factor holds the
                                         index of its class in the split meta's `factors`
    DATA_DIR/SPLIT/NNNNN/progress.json   where the writer stood after this shard (resume)

Every shard is written into a temporary folder and renamed, and a split exists for readers
only once its meta.json does, so a crash never leaves a partial split that looks complete.
Plain .npy files memory-map, so a reader never loads a split into memory.
"""

import numpy as np

from shg_jax.skeleton import N_JOINTS

FORMAT_VERSION = 2
#: What a training or evaluation batch reads.
CROP_ARRAYS = ("images", "keypoints", "image_id", "ann_id")
#: Where each crop came from: what the analyses profile.
SOURCE_ARRAYS = ("box", "photo_size")
ARRAYS = CROP_ARRAYS + SOURCE_ARRAYS
#: The annotation field whose values become factor arrays: {"name": number or class name}.
FACTORS_FIELD = "factors"
FACTOR_PREFIX = "factor-"
SPLITS = ("train", "val", "test")
META = "meta.json"
PROGRESS = "progress.json"


def row_shape(key: str, size: int, n_joints: int = N_JOINTS) -> tuple:
    """The shape of one row of array `key` in data of `size`-pixel crops."""
    if key.startswith(FACTOR_PREFIX):
        return ()
    return {"images": (size, size, 3), "keypoints": (n_joints, 3), "image_id": (),
            "ann_id": (), "box": (4,), "photo_size": (2,)}[key]


DTYPES = {"images": np.uint8, "keypoints": np.float32, "image_id": np.int64,
          "ann_id": np.int64, "box": np.float32, "photo_size": np.int32}


def factor_key(name: str) -> str:
    """The array name of factor `name`."""
    return FACTOR_PREFIX + name


def empty_arrays(size: int, n_joints: int = N_JOINTS) -> dict:
    """The arrays of a split with no crops (a test draw can take every train crop)."""
    return {key: np.zeros((0,) + row_shape(key, size, n_joints), DTYPES[key])
            for key in ARRAYS}


def shard_name(index: int) -> str:
    return f"{index:05d}"
