"""Export trained weights for deployment without this package: a float32
.caffemodel with its test prototxt and Python layers (for real Caffe), or an
ONNX graph (for ONNX Runtime, TensorRT and other ONNX runtimes).

Both take the net's preprocessed inputs, exactly as ``Salicon.preprocess``
makes them: the RGB image flipped to BGR, the ImageNet mean (``MEAN_BGR``)
subtracted, multiplied by the model's input scale (1/255 for the shipped
model), resized to each input's size (1200x1600 and 600x800 by default), in
N x 3 x H x W float32. The output is the raw 38x50 sigmoid map, before the
min-max normalisation and the resize to the image.
"""
from __future__ import annotations

import functools
import shutil
import warnings
from pathlib import Path

import torch
from torch import nn

from .engine import Net
from .errors import SaliconError
from .outputs import atomic_write
from .preprocess import MEAN_BGR, PUBLISHED_INPUT_SCALE
from .pretrained import OUTPUT_BLOB, default_model_path, model_metadata, prototxt_path, record_path
from .types import PathLike


def load_test_net(model: PathLike | None = None, prototxt: PathLike | None = None) -> Net:
    """The test net of ``prototxt`` with the weights of ``model`` (default: the shipped model), float32, CPU."""
    model = Path(model) if model is not None else default_model_path()
    net = Net(prototxt if prototxt is not None else prototxt_path("salicon.prototxt"), phase="test")
    net.copy_from(model, strict=True)
    return net.eval().requires_grad_(False)


def _input_convention(model: PathLike | None) -> dict[str, str]:
    metadata = model_metadata(model if model is not None else default_model_path())
    return {"input_scale": metadata.get("input_scale", repr(PUBLISHED_INPUT_SCALE)),
            "mean_bgr": metadata.get("mean_bgr", ",".join(repr(m) for m in MEAN_BGR)),
            "channel_order": "BGR", "layout": "NCHW"}


def export_caffemodel(out_dir: PathLike, model: PathLike | None = None, prototxt: PathLike | None = None,
                      name: str | None = None) -> dict[str, Path]:
    """Write ``OUT_DIR/<name>.caffemodel`` (float32, current Caffe layout), the
    test prototxt beside it, the Python layer modules it names and the
    model's record (``<name>.json``, its default post-processing), so that
    ``caffe.Net(prototxt, caffe.TEST, weights=caffemodel)`` runs from OUT_DIR
    (with OUT_DIR on ``PYTHONPATH``). Returns the written paths by kind."""
    source = Path(model) if model is not None else default_model_path()
    prototxt = Path(prototxt) if prototxt is not None else prototxt_path("salicon.prototxt")
    net = load_test_net(source, prototxt)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise SaliconError(f"{out_dir}: exists and is not a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    name = name or source.stem
    paths = {"caffemodel": out_dir / f"{name}.caffemodel", "prototxt": out_dir / prototxt.name}
    net.save(paths["caffemodel"])
    if paths["prototxt"].resolve() != prototxt.resolve():
        atomic_write(paths["prototxt"], lambda tmp: shutil.copyfile(prototxt, tmp))
    record = record_path(source)
    if record.is_file():  # the model's record (its default post-processing) travels with it
        paths["record"] = out_dir / f"{name}.json"
        if paths["record"].resolve() != record.resolve():
            atomic_write(paths["record"], lambda tmp: shutil.copyfile(record, tmp))
    for module, file in net.layer_files.items():  # the layer files this net runs, as Caffe will import them
        dest = out_dir / f"{module}.py"
        if "." not in module and dest.resolve() != Path(file.path).resolve():
            atomic_write(dest, functools.partial(_write_text, text=file.source))
            paths[dest.name] = dest
    return paths


class OnnxWrapper(nn.Module):
    """The net as a module with positional inputs and one output, for tracing."""

    def __init__(self, net: Net, output: str):
        super().__init__()
        self.net, self.names, self.output = net, list(net.input_shapes), output

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.net(**dict(zip(self.names, inputs)))[self.output]


def export_onnx(path: PathLike, model: PathLike | None = None, prototxt: PathLike | None = None,
                opset: int = 17, dynamic_batch: bool = True) -> Path:
    """Write the test net with ``model``'s weights as an ONNX file (float32).

    Inputs are named as the prototxt's input blobs (``fine_scale``,
    ``coarse_scale``) with the prototxt's sizes; the batch axis is dynamic
    unless ``dynamic_batch=False``. The output is ``saliency_map_out``
    (N x 1 x 38 x 50). The input convention is stored in the file's
    ``metadata_props``.
    """
    if opset < 17:
        raise SaliconError(f"opset {opset} is too old; use 17 or newer")
    net = load_test_net(model, prototxt)
    host = [info for info in net.python_layers.values() if not info.native]
    if host:
        raise SaliconError(f"cannot export to ONNX: Python layer {host[0].describe()}; only native layers "
                           f"export (python_layers='native' uses the native layer of that name instead)")
    output = OUTPUT_BLOB if OUTPUT_BLOB in net.outputs else net.outputs[0]
    wrapper = OnnxWrapper(net, output).eval()
    examples = tuple(torch.zeros((1,) + tuple(s[1:])) for s in net.input_shapes.values())
    names = list(net.input_shapes)
    axes = {n: {0: "batch"} for n in names + [output]} if dynamic_batch else None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: str) -> None:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the exporter's tracing notes are not the user's concern
            torch.onnx.export(wrapper, examples, tmp, input_names=names, output_names=[output],
                              dynamic_axes=axes, opset_version=opset, do_constant_folding=True,
                              dynamo=False)
        _add_onnx_metadata(tmp, _input_convention(model))
    atomic_write(path, write)
    return path


def _add_onnx_metadata(path: str, props: dict[str, str]) -> None:
    try:
        import onnx
    except ImportError:  # the graph is complete without its description
        return
    proto = onnx.load(path)
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, path)


def _write_text(path: str, text: str) -> None:
    Path(path).write_text(text, encoding="utf-8")
