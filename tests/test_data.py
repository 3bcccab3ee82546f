"""The shard reader: complete epochs, seeded orders, exact resume, padded evaluation."""

import pathlib

import numpy as np
import pytest

from shg_jax import data, fileio, shards


def write_split(root: pathlib.Path, name: str, sizes, image_size=8):
    """A tiny prepared split whose sample i has image_id 1000 + i and pixel value i % 256."""
    split_dir = root / name
    meta_shards, start = [], 0
    for s, n in enumerate(sizes):
        d = split_dir / shards.shard_name(s)
        d.mkdir(parents=True)
        ids = np.arange(start, start + n)
        np.save(d / "images.npy", np.broadcast_to((ids % 256).astype(np.uint8)[:, None, None,
                                                                                None],
                                                  (n, image_size, image_size, 3)))
        np.save(d / "keypoints.npy", np.tile(ids[:, None, None], (1, 17, 3)).astype(np.float32))
        np.save(d / "image_id.npy", 1000 + ids)
        np.save(d / "ann_id.npy", 5000 + ids)
        np.save(d / "box.npy", np.tile(ids[:, None], (1, 4)).astype(np.float32))
        np.save(d / "photo_size.npy", np.full((n, 2), 640, np.int32))
        meta_shards.append({"name": shards.shard_name(s), "count": n})
        start += n
    fileio.write_json(split_dir / shards.META, {"count": start, "shards": meta_shards})


@pytest.fixture()
def prepared(tmp_path):
    write_split(tmp_path, "train", [7, 5, 11])
    write_split(tmp_path, "val", [6, 4])
    fileio.write_json(tmp_path / shards.META, {"image_size": 8, "mean_rgb": [0.5, 0.4, 0.3]})
    return tmp_path


def test_missing_and_unfinished_data_name_the_command(tmp_path):
    with pytest.raises(data.DataError, match="data_prep.coco"):
        data.Split(tmp_path / "nowhere", "train")
    write_split(tmp_path, "train", [3])          # no top-level meta.json: unfinished
    with pytest.raises(data.DataError, match="unfinished"):
        data.Split(tmp_path, "train")


def truncate(path):
    path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])


def scramble_header(path):
    raw = bytearray(path.read_bytes())
    raw[:16] = b"not an npy file!"
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("damage, file", [
    (truncate, "images.npy"), (scramble_header, "keypoints.npy"),
    (pathlib.Path.unlink, "ann_id.npy"),
    (lambda p: np.save(p, np.arange(3)), "image_id.npy"),          # 3 rows, meta says 5
])
def test_a_damaged_shard_names_the_file_and_the_command_that_remakes_it(prepared, damage,
                                                                          file):
    fileio.write_json(prepared / shards.META, {"image_size": 8, "mean_rgb": [0.5, 0.4, 0.3],
                                               "source": "/coco", "crop_mode": "square",
                                               "seed": 4})
    path = prepared / "train" / "00001" / file
    damage(path)
    with pytest.raises(data.DataError) as e:
        data.Split(prepared, "train")
    message = str(e.value)
    assert message.startswith(str(path)) and "\n" not in message
    assert message.endswith(f"python -m data_prep.coco --coco-root /coco --out {prepared} "
                            f"--crop-mode square --size 8 --seed 4 --overwrite")
    data.Split(prepared, "val")                          # the other split still opens


def test_gather_across_shards_in_any_order(prepared):
    split = data.Split(prepared, "train")
    assert len(split) == 23
    idx = np.array([22, 0, 7, 6, 12, 12, 11])
    batch = split.gather(idx)
    np.testing.assert_array_equal(batch["image_id"], 1000 + idx)
    np.testing.assert_array_equal(batch["images"][:, 0, 0, 0], idx)
    np.testing.assert_array_equal(batch["keypoints"][:, 3, 1], idx)
    assert batch["images"].dtype == np.uint8 and batch["keypoints"].dtype == np.float32
    np.testing.assert_allclose(split.mean_rgb, [0.5, 0.4, 0.3])


def epoch_ids(split, epoch, **kw):
    return [b["image_id"].tolist() for b in data.train_batches(split, 4, seed=3, epoch=epoch,
                                                                **kw)]


def test_each_sample_once_per_epoch_and_orders(prepared):
    split = data.Split(prepared, "train")
    e0, e1 = epoch_ids(split, 0, drop_last=True), epoch_ids(split, 1, drop_last=True)
    assert len(e0) == 23 // 4 and all(len(b) == 4 for b in e0)
    flat = sum(e0, [])
    assert len(set(flat)) == len(flat) == 20          # no repeats; 3 dropped with the tail
    assert e0 != e1                                    # a new order every epoch
    assert e0 == epoch_ids(split, 0, drop_last=True)   # and the same order on every run
    # Over many epochs every sample is visited (the dropped tail changes with the order).
    seen = set()
    for e in range(10):
        seen.update(sum(epoch_ids(split, e, drop_last=True), []))
    assert seen == set(range(1000, 1023))


def test_the_last_partial_batch_is_kept_as_the_thesis_dataloader_kept_it(prepared):
    """By default an epoch ends with the remainder batch (PyTorch's DataLoader, the thesis'):
    124,040 crops at batch 16 make 7,753 steps, the last of 8 crops; drop_last makes 7,752.
    Split over devices, the remainder is cut to a multiple of their count."""
    assert data.steps_per_epoch(124_040, 16, train=True) == 7_753
    assert data.train_batch_sizes(124_040, 16)[-2:] == [16, 8]
    assert data.steps_per_epoch(124_040, 16, train=True, drop_last=True) == 7_752
    assert data.train_batch_sizes(124_040, 16, multiple=3)[-1] == 6
    assert data.train_batch_sizes(124_040, 16, multiple=16) == [16] * 7_752
    split = data.Split(prepared, "train")
    kept = epoch_ids(split, 0)
    assert [len(b) for b in kept] == [4] * 5 + [3]
    assert sorted(sum(kept, [])) == list(range(1000, 1023))     # every sample, once
    assert kept[:5] == epoch_ids(split, 0, drop_last=True)
    two = [epoch_ids(split, 0, process_index=p, process_count=2) for p in range(2)]
    assert [a + b for a, b in zip(*two)] == kept[:5] + [kept[5][:2]]


def test_resumed_iterator_continues_exactly(prepared):
    split = data.Split(prepared, "train")
    full = epoch_ids(split, 2)
    assert epoch_ids(split, 2, start_step=3) == full[3:]


def test_process_slices_partition_each_global_batch(prepared):
    split = data.Split(prepared, "train")
    full = epoch_ids(split, 1, drop_last=True)
    parts = [epoch_ids(split, 1, process_index=p, process_count=2, drop_last=True)
             for p in range(2)]
    assert [a + b for a, b in zip(*parts)] == full
    with pytest.raises(ValueError, match="divisible"):
        next(data.train_batches(split, 5, seed=0, epoch=0, process_count=2))


def test_evaluation_covers_every_sample_once_with_padding(prepared):
    split = data.Split(prepared, "val")
    batches = list(data.eval_batches(split, 4))
    assert len(batches) == 3
    assert batches[-1]["valid"].tolist() == [True, True, False, False]
    ids = np.concatenate([b["image_id"][b["valid"]] for b in batches])
    np.testing.assert_array_equal(ids, 1000 + np.arange(10))
    two = [list(data.eval_batches(split, 4, process_index=p, process_count=2)) for p in (0, 1)]
    ids2 = np.concatenate([np.concatenate([a["image_id"][a["valid"]], b["image_id"][b["valid"]]])
                           for a, b in zip(*two)])
    np.testing.assert_array_equal(ids2, ids)


def test_prefetch_preserves_order_applies_transform_and_reraises():
    assert list(data.prefetch(iter(range(10)), size=2, transform=lambda x: x * 2)) == \
        list(range(0, 20, 2))

    def broken():
        yield 1
        raise RuntimeError("disk gone")

    it = data.prefetch(broken())
    assert next(it) == 1
    with pytest.raises(RuntimeError, match="disk gone"):
        next(it)
