"""benchmarks/machine.py: what the benchmarks record about the machine."""
from __future__ import annotations

import sys

from .conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))

from machine import cpu_features  # noqa: E402


def test_cpu_features_are_reported():
    features = cpu_features()
    assert set(features) == {"model", "flags", "native_bf16", "torch_capability"}
    assert isinstance(features["native_bf16"], bool)
    assert features["native_bf16"] == bool({"avx512_bf16", "amx_bf16"} & set(features["flags"]))
