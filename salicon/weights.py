"""Initial weights: the SALICON net from ImageNet VGG-16 convolution layers."""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

from . import formats
from .engine import Net
from .errors import FormatError
from .pretrained import prototxt_path
from .types import PathLike

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
    salicon_layers = [name for name in source if name.startswith(COARSE_PREFIX) or name == "saliency_map"]
    if salicon_layers:
        raise FormatError(f"{vgg16}: holds SALICON layers ({', '.join(salicon_layers[:3])}, ...), so it is a "
                          f"SALICON model, not ImageNet VGG-16; fine-tune from it directly with "
                          f"`salicon train --weights {vgg16}`")
    params = net.params
    targets = {}
    for name in VGG16_CONV_LAYERS:
        for target in (name, COARSE_PREFIX + name):
            if target not in params:
                raise FormatError(f"{prototxt}: has no layer '{target}' to receive VGG-16's '{name}'")
            targets[target] = source[name]
    # Shape checks and legacy (1x1x1xN) biases are the engine's own loading rules.
    with warnings.catch_warnings():  # layers absent from VGG-16 keep their fillers, as intended
        warnings.simplefilter("ignore", UserWarning)
        net.copy_from(targets, source=f"{vgg16} (VGG-16)")
    report = InitReport(copied=list(targets))
    report.initialised = [n for n in params if n not in targets]
    report.ignored = [n for n in source if n not in VGG16_CONV_LAYERS]
    return net, report
