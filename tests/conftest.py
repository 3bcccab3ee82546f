"""Shared fixtures: tiny models compiled once per module, the path to the real COCO slice."""

import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
COCO_SAMPLE = REPO.parent / "shared" / "data" / "coco_sample"


@pytest.fixture(scope="session")
def coco_sample():
    if not (COCO_SAMPLE / "annotations").is_dir():
        pytest.skip(f"real COCO slice not found at {COCO_SAMPLE}")
    return COCO_SAMPLE
