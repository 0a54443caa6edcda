"""hubconf.py: torch.hub.load(..., source="local") on the checkout."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from salicon import Salicon
from salicon.engine import Net
from salicon.pretrained import default_model_path

from .conftest import ROOT


def test_an_unknown_entry_point_is_refused():
    with pytest.raises(RuntimeError, match="salicon_typo"):
        torch.hub.load(str(ROOT), "salicon_typo", source="local")


def test_salicon_net_carries_the_shipped_weights():
    net = torch.hub.load(str(ROOT), "salicon_net", source="local", pretrained=True)
    assert isinstance(net, torch.nn.Module) and not net.training
    reference = Net(ROOT / "prototxt" / "salicon.prototxt", phase="test")
    reference.copy_from(default_model_path(), strict=True)
    got, expected = net.state_dict(), reference.state_dict()
    assert got.keys() == expected.keys() and len(got) > 0
    for name in expected:
        assert torch.equal(got[name], expected[name]), name


def test_salicon_net_untrained_on_an_edited_prototxt_runs(small_prototxt):
    net = torch.hub.load(str(ROOT), "salicon_net", source="local", pretrained=False, prototxt=str(small_prototxt))
    inputs = {name: torch.zeros(shape) for name, shape in net.input_shapes.items()}
    assert net(**inputs)["saliency_map_out"].shape[-2:] == (4, 5)


@pytest.mark.slow
def test_salicon_osie_is_the_ready_predictor():
    salicon = torch.hub.load(str(ROOT), "salicon_osie", source="local", precision="fp32")
    assert isinstance(salicon, Salicon) and salicon.model_path == default_model_path()
    image = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    np.testing.assert_array_equal(salicon.compute_saliency(image), Salicon(precision="fp32").compute_saliency(image))


def test_salicon_osie_takes_other_weights_by_the_name_weights(small_model, small_prototxt):
    salicon = torch.hub.load(str(ROOT), "salicon_osie", source="local", weights=str(small_model),
                             prototxt=str(small_prototxt), device="cpu")
    assert salicon.model_path == small_model


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_salicon_net_on_cuda_without_cuda_says_so():
    from salicon.errors import EngineError

    with pytest.raises(EngineError, match="CUDA is not available"):
        torch.hub.load(str(ROOT), "salicon_net", source="local", pretrained=False, device="cuda")


def test_every_registered_model_is_an_entry_point():
    from salicon.pretrained import model_records
    for name in model_records():  # torch.hub.list reads GitHub only; load finds each name locally
        loaded = torch.hub.load(str(ROOT), name, source="local", device="cpu", precision="fp32")
        assert callable(loaded.compute_saliency)
    fast = torch.hub.load(str(ROOT), "salicon_osie_fast", source="local", device="cpu", precision="fp32")
    assert fast.name == "salicon_osie_fast" and fast.prototxt_path.name == "salicon_osie_fast.prototxt"
