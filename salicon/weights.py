"""Initial weights: the SALICON net from ImageNet VGG-16 convolution layers."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Union

import numpy as np
import torch

from . import formats
from .engine import Net
from .errors import FormatError
from .model import prototxt_path

PathLike = Union[str, os.PathLike]

#: VGG-16's convolution layers, named as in the Caffe Model Zoo file.
VGG16_CONV_LAYERS = tuple(f"conv{b}_{i}" for b, n in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3))
                          for i in range(1, n + 1))
#: Name prefix of the coarse stream's copies of the VGG layers.
COARSE_PREFIX = "sec_"


@dataclass
class InitReport:
    """What :func:`init_from_vgg16` copied and what it left alone."""

    copied: list[str] = field(default_factory=list)      # net layers filled from VGG-16
    initialised: list[str] = field(default_factory=list)  # net layers left to their fillers
    ignored: list[str] = field(default_factory=list)      # VGG-16 layers with weights not used


def init_from_vgg16(vgg16: PathLike, prototxt: PathLike | None = None, seed: int = 0) -> tuple[Net, InitReport]:
    """Build the (train) net and copy VGG-16's conv weights into both streams.

    ``conv1_1`` .. ``conv5_3`` go to the fine stream's layers of the same name
    and to the coarse stream's ``sec_`` copies; fc6-fc8 are ignored. Layers
    absent from VGG-16 (``saliency_map``) keep the initialisation their
    prototxt fillers give, drawn with ``seed``. Accepts the legacy Model Zoo
    layout and the current one.
    """
    prototxt = prototxt if prototxt is not None else prototxt_path("finetune_salicon.prototxt")
    net = Net(prototxt, phase="train", seed=seed)
    source = formats.caffemodel_params(formats.read_caffemodel(vgg16))
    absent = [name for name in VGG16_CONV_LAYERS if name not in source]
    if absent:
        raise FormatError(f"{vgg16}: no layer(s) {', '.join(absent)}; is this a VGG-16 .caffemodel?")
    report = InitReport()
    params = net.params
    for name in VGG16_CONV_LAYERS:
        blobs = source[name]
        for target in (name, COARSE_PREFIX + name):
            if target not in params:
                raise FormatError(f"{prototxt}: has no layer '{target}' to receive VGG-16's '{name}'")
            dest = params[target]
            if len(blobs) != len(dest):
                raise FormatError(f"{vgg16}: layer '{name}' has {len(blobs)} blobs, the net's "
                                  f"'{target}' has {len(dest)}")
            for i, (blob, param) in enumerate(zip(blobs, dest)):
                if not formats.shapes_match(blob, param.shape):
                    raise FormatError(f"{vgg16}: layer '{name}' blob {i} has shape {formats.blob_shape(blob)} "
                                      f"but '{target}' in {prototxt} needs {tuple(param.shape)}")
                array = formats.blob_to_array(blob).reshape(tuple(param.shape))
                with torch.no_grad():
                    param.copy_(torch.from_numpy(np.ascontiguousarray(array)))
            report.copied.append(target)
    report.initialised = [n for n in params if n not in report.copied]
    report.ignored = [n for n in source if n not in VGG16_CONV_LAYERS]
    return net, report
