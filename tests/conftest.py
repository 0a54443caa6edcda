"""Shared fixtures: small edited copies of the shipped prototxt files, random
weights for them, and the paths of the optional data in ../shared."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from salicon.engine import Net

ROOT = Path(__file__).resolve().parent.parent
PROTOTXT = ROOT / "prototxt"
SHARED = ROOT.parent / "shared"
VGG16 = SHARED / "weights" / "vgg16_conv.caffemodel"

# 120x160 / 60x80 inputs: pool5 4x5 (fine) and 2x3 (coarse), interpolated to 4x5.
SMALL_SIZES = {"1,3,1200,1600": "1,3,120,160", "1,3,600,800": "1,3,60,80",
               "1,512,38,50": "1,512,4,5", "1,1,38,50": "1,1,4,5"}


def edit_prototxt(text: str, replacements: dict[str, str]) -> str:
    for old, new in replacements.items():
        assert old in text, old
        text = text.replace(f'"{old}"', f'"{new}"')
    return text


@pytest.fixture(scope="session")
def small_prototxt(tmp_path_factory) -> Path:
    """prototxt/salicon.prototxt with every size divided by 10."""
    path = tmp_path_factory.mktemp("proto") / "salicon_small.prototxt"
    text = (PROTOTXT / "salicon.prototxt").read_text()
    path.write_text(edit_prototxt(text, {k: v for k, v in SMALL_SIZES.items() if k != "1,1,38,50"}))
    return path


@pytest.fixture(scope="session")
def small_train_prototxt(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("proto") / "finetune_small.prototxt"
    text = (PROTOTXT / "finetune_salicon.prototxt").read_text()
    path.write_text(edit_prototxt(text, SMALL_SIZES))
    return path


@pytest.fixture(scope="session")
def tiny_train_prototxt(tmp_path_factory) -> Path:
    """The train net at 64x64 / 32x32 (pool5 2x2, coarse 1x1 interpolated to 2x2)."""
    path = tmp_path_factory.mktemp("proto") / "finetune_tiny.prototxt"
    text = (PROTOTXT / "finetune_salicon.prototxt").read_text()
    path.write_text(edit_prototxt(text, {"1,3,1200,1600": "1,3,64,64", "1,3,600,800": "1,3,32,32",
                                         "1,512,38,50": "1,512,2,2", "1,1,38,50": "1,1,2,2"}))
    return path


def randomise(net: Net, seed: int = 0) -> Net:
    """He-style random weights and small random biases, so activations stay O(1)
    through 13 conv layers at the published 1/255 input scale times 255."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for blobs in net.params.values():
            w = blobs[0]
            fan_in = w[0].numel()
            w.copy_(torch.randn(w.shape, generator=gen) * np.sqrt(2.0 / fan_in))
            if len(blobs) > 1:
                blobs[1].copy_(torch.randn(blobs[1].shape, generator=gen) * 0.1)
    return net


@pytest.fixture(scope="session")
def small_model(tmp_path_factory, small_prototxt) -> Path:
    """A .caffemodel with random weights for the small net."""
    path = tmp_path_factory.mktemp("model") / "small.caffemodel"
    randomise(Net(small_prototxt)).save(path)
    return path


@pytest.fixture(scope="session")
def photo_file(tmp_path_factory) -> Path:
    """A random 90x130 RGB PNG."""
    from PIL import Image

    path = tmp_path_factory.mktemp("photo") / "photo.png"
    Image.fromarray(np.random.default_rng(11).integers(0, 256, (90, 130, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
