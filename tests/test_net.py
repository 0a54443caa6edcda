"""The full-size SALICON net from the shipped prototxt files."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from salicon.engine import Net, count_flops

from .conftest import PROTOTXT, randomise


def test_full_size_shapes_and_learning_rates():
    net = Net(PROTOTXT / "salicon.prototxt")
    assert net.input_shapes == {"fine_scale": (1, 3, 1200, 1600), "coarse_scale": (1, 3, 600, 800)}
    assert net.blob_shapes["pool5"] == (1, 512, 38, 50)
    assert net.blob_shapes["sec_pool5"] == (1, 512, 19, 25)
    assert net.blob_shapes["interpolated_data"] == (1, 512, 38, 50)
    assert net.blob_shapes["concat"] == (1, 1024, 38, 50)
    assert net.outputs == ["saliency_map_out"] and net.blob_shapes["saliency_map_out"] == (1, 1, 38, 50)
    assert count_flops(net) == pytest.approx(1.468e12, rel=1e-3)
    train = Net(PROTOTXT / "finetune_salicon.prototxt", phase="train")
    assert train.outputs == ["loss"] and train.loss_weights == {"loss": 1.0}
    frozen = {(p.layer, p.index) for p in train.param_info() if p.lr_mult == 0}
    assert len(frozen) == 16  # conv1_x, conv2_x of both streams, weights and biases
    assert {p.layer for p in train.param_info() if p.lr_mult == 2} == {
        p.layer for p in train.param_info() if p.index == 0 and p.layer not in {f for f, _ in frozen}}


@pytest.mark.slow
def test_full_size_forward_gives_38x50_map():
    net = randomise(Net(PROTOTXT / "salicon.prototxt"), seed=0).eval()
    rng = np.random.default_rng(0)
    with torch.inference_mode():
        out = net(fine_scale=rng.uniform(-0.5, 0.5, (1, 3, 1200, 1600)).astype(np.float32),
                  coarse_scale=rng.uniform(-0.5, 0.5, (1, 3, 600, 800)).astype(np.float32))
    sal = out["saliency_map_out"]
    assert sal.shape == (1, 1, 38, 50)
    assert torch.isfinite(sal).all() and float(sal.std()) > 0
