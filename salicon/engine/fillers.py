"""Caffe's weight fillers (FillerParameter), drawn with a seeded torch Generator.

The distributions follow Caffe's filler.hpp; the random streams do not (Caffe
uses its own RNG), so only the distribution, not the exact values, matches.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..proto import caffe_pb2


def _fans(shape: Sequence[int]) -> tuple[int, int]:
    count = math.prod(shape) if shape else 1
    fan_in = count // shape[0] if len(shape) >= 1 and shape[0] else count
    fan_out = count // shape[1] if len(shape) >= 2 and shape[1] else count
    return fan_in, fan_out


def _variance_n(filler: caffe_pb2.FillerParameter, shape: Sequence[int]) -> float:
    fan_in, fan_out = _fans(shape)
    norm = filler.variance_norm
    if norm == caffe_pb2.FillerParameter.FAN_OUT:
        return float(fan_out)
    if norm == caffe_pb2.FillerParameter.AVERAGE:
        return (fan_in + fan_out) / 2.0
    return float(fan_in)


def fill(shape: Sequence[int], filler: caffe_pb2.FillerParameter | None,
         generator: torch.Generator | None = None) -> torch.Tensor:
    """A float32 tensor of ``shape`` initialised as ``filler`` describes.

    Supported types: constant, uniform, gaussian (without ``sparse``), xavier,
    msra, positive_unitball. An absent filler means constant 0, as in Caffe.
    """
    shape = tuple(int(d) for d in shape)
    if filler is None:
        return torch.zeros(shape)
    kind = filler.type
    if kind == "constant":
        return torch.full(shape, float(filler.value))
    if kind == "uniform":
        return torch.empty(shape).uniform_(filler.min, filler.max, generator=generator)
    if kind == "gaussian":
        if filler.sparse >= 0:
            raise ValueError("gaussian filler with 'sparse' is not supported")
        return torch.empty(shape).normal_(filler.mean, filler.std, generator=generator)
    if kind == "xavier":
        scale = math.sqrt(3.0 / _variance_n(filler, shape))
        return torch.empty(shape).uniform_(-scale, scale, generator=generator)
    if kind == "msra":
        std = math.sqrt(2.0 / _variance_n(filler, shape))
        return torch.empty(shape).normal_(0.0, std, generator=generator)
    if kind == "positive_unitball":
        data = torch.rand(shape, generator=generator)
        rows = data.reshape(shape[0], -1)
        return (rows / rows.sum(dim=1, keepdim=True)).reshape(shape)
    raise ValueError(f"unknown filler type '{kind}'")
