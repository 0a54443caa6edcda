"""Caffe file formats: text prototxt and binary .caffemodel.

Reading upgrades legacy definitions (``layers`` with V1 enum types, ``input`` /
``input_dim`` fields, 4-D legacy blob dimensions) to the current form, as Caffe
does when it loads a file. Writing always produces the current form
(``layer`` field 100, blobs with ``shape``), which every Caffe since 2015 reads.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence, Union

import numpy as np
from google.protobuf import message as _message
from google.protobuf import text_format

from .errors import FormatError
from .proto import caffe_pb2

PathLike = Union[str, os.PathLike]

#: V1LayerParameter.LayerType enum name -> current layer type string.
V1_LAYER_TYPES = {
    "NONE": "", "ABSVAL": "AbsVal", "ACCURACY": "Accuracy", "ARGMAX": "ArgMax",
    "BNLL": "BNLL", "CONCAT": "Concat", "CONTRASTIVE_LOSS": "ContrastiveLoss",
    "CONVOLUTION": "Convolution", "DATA": "Data", "DECONVOLUTION": "Deconvolution",
    "DROPOUT": "Dropout", "DUMMY_DATA": "DummyData", "EUCLIDEAN_LOSS": "EuclideanLoss",
    "ELTWISE": "Eltwise", "EXP": "Exp", "FLATTEN": "Flatten", "HDF5_DATA": "HDF5Data",
    "HDF5_OUTPUT": "HDF5Output", "HINGE_LOSS": "HingeLoss", "IM2COL": "Im2col",
    "IMAGE_DATA": "ImageData", "INFOGAIN_LOSS": "InfogainLoss",
    "INNER_PRODUCT": "InnerProduct", "LRN": "LRN", "MEMORY_DATA": "MemoryData",
    "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss", "MVN": "MVN",
    "POOLING": "Pooling", "POWER": "Power", "RELU": "ReLU", "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss", "SILENCE": "Silence",
    "SOFTMAX": "Softmax", "SOFTMAX_LOSS": "SoftmaxWithLoss", "SPLIT": "Split",
    "SLICE": "Slice", "TANH": "TanH", "WINDOW_DATA": "WindowData",
    "THRESHOLD": "Threshold",
}


# --------------------------------------------------------------------------
# Blobs


def blob_shape(blob: caffe_pb2.BlobProto) -> tuple[int, ...]:
    """The shape a BlobProto declares: ``shape.dim`` or the legacy 4-D fields."""
    if blob.HasField("shape"):
        return tuple(int(d) for d in blob.shape.dim)
    return (blob.num, blob.channels, blob.height, blob.width)


def blob_is_legacy(blob: caffe_pb2.BlobProto) -> bool:
    return not blob.HasField("shape")


def blob_to_array(blob: caffe_pb2.BlobProto) -> np.ndarray:
    """A BlobProto's data as a float32 array in its declared shape."""
    shape = blob_shape(blob)
    if len(blob.double_data):
        data = np.asarray(blob.double_data, dtype=np.float64).astype(np.float32)
    else:
        data = np.asarray(blob.data, dtype=np.float32)
    count = int(np.prod(shape)) if shape else 1
    if data.size != count:
        raise FormatError(f"blob declares shape {shape} ({count} values) but holds {data.size} values")
    return data.reshape(shape)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def array_to_blob(array: np.ndarray) -> caffe_pb2.BlobProto:
    """A BlobProto (current form, ``shape`` + float data) holding ``array``."""
    array = np.ascontiguousarray(array, dtype="<f4")
    blob = caffe_pb2.BlobProto()
    blob.shape.dim.extend(int(d) for d in array.shape)
    # Appending millions of floats through the protobuf API is slow; parsing the
    # packed field (field 5, wire type 2) from raw bytes is not.
    payload = array.tobytes()
    blob.MergeFromString(_varint((5 << 3) | 2) + _varint(len(payload)) + payload)
    return blob


def shapes_match(blob: caffe_pb2.BlobProto, expected: Sequence[int]) -> bool:
    """Caffe's Blob::ShapeEquals: legacy blobs compare as 4-D, padded with 1s."""
    expected = tuple(int(d) for d in expected)
    if not blob_is_legacy(blob):
        return blob_shape(blob) == expected
    if len(expected) > 4:
        return False
    return blob_shape(blob) == (1,) * (4 - len(expected)) + expected


# --------------------------------------------------------------------------
# Upgrades of legacy definitions


def _upgrade_v1_layer(v1: caffe_pb2.V1LayerParameter) -> caffe_pb2.LayerParameter:
    layer = caffe_pb2.LayerParameter()
    layer.name = v1.name
    type_name = caffe_pb2.V1LayerParameter.LayerType.Name(v1.type)
    layer.type = V1_LAYER_TYPES.get(type_name, type_name)
    layer.bottom.extend(v1.bottom)
    layer.top.extend(v1.top)
    layer.include.extend(v1.include)
    layer.exclude.extend(v1.exclude)
    layer.loss_weight.extend(v1.loss_weight)
    layer.blobs.extend(v1.blobs)
    n_specs = max(len(v1.blobs_lr), len(v1.weight_decay), len(v1.param))
    for i in range(n_specs):
        spec = layer.param.add()
        if i < len(v1.param):
            spec.name = v1.param[i]
        if i < len(v1.blobs_lr):
            spec.lr_mult = v1.blobs_lr[i]
        if i < len(v1.weight_decay):
            spec.decay_mult = v1.weight_decay[i]
    for field, value in v1.ListFields():
        if field.name.endswith("_param") and field.message_type is not None:
            getattr(layer, field.name).CopyFrom(value)
    return layer


def upgrade_net(net: caffe_pb2.NetParameter, source: str = "<net>") -> caffe_pb2.NetParameter:
    """Return ``net`` in the current form (``layer`` only, Input layers for inputs)."""
    if not (net.layers or net.input):
        return net
    if net.layer and net.layers:
        raise FormatError(f"{source}: mixes current 'layer' and legacy 'layers' definitions")
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net)
    del out.layers[:]
    del out.layer[:]
    del out.input[:]
    del out.input_dim[:]
    del out.input_shape[:]
    if net.input:
        inp = out.layer.add(name="input", type="Input")
        inp.top.extend(net.input)
        if net.input_shape:
            if len(net.input_shape) not in (1, len(net.input)):
                raise FormatError(f"{source}: {len(net.input)} inputs but {len(net.input_shape)} input_shape entries")
            inp.input_param.shape.extend(net.input_shape)
        elif net.input_dim:
            if len(net.input_dim) != 4 * len(net.input):
                raise FormatError(f"{source}: {len(net.input)} inputs need {4 * len(net.input)} input_dim values, "
                                  f"found {len(net.input_dim)}")
            for i in range(len(net.input)):
                inp.input_param.shape.add().dim.extend(net.input_dim[4 * i:4 * i + 4])
    out.layer.extend(net.layer)
    for v1 in net.layers:
        out.layer.append(_upgrade_v1_layer(v1))
    return out


# --------------------------------------------------------------------------
# Reading


def _read_bytes(path: PathLike, what: str) -> bytes:
    path = Path(path)
    if not path.exists():
        raise FormatError(f"{path}: no such {what} file")
    if path.is_dir():
        raise FormatError(f"{path}: is a directory, expected a {what} file")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise FormatError(f"{path}: cannot read {what} file ({exc.strerror})") from exc


def _parse_text(text: str, msg: _message.Message, path: PathLike, what: str) -> None:
    try:
        text_format.Parse(text, msg)
    except text_format.ParseError as exc:
        raise FormatError(f"{path}: not a valid {what}: {exc}") from exc


def read_net_prototxt(path: PathLike) -> caffe_pb2.NetParameter:
    """Read a text NetParameter (a net definition) and upgrade legacy forms."""
    data = _read_bytes(path, "prototxt")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(f"{path}: not a text prototxt (binary data; is it a .caffemodel?)") from exc
    net = caffe_pb2.NetParameter()
    _parse_text(text, net, path, "net prototxt")
    if not (net.layer or net.layers):
        raise FormatError(f"{path}: the net prototxt defines no layers")
    return upgrade_net(net, str(path))


def parse_net_prototxt(text: str) -> caffe_pb2.NetParameter:
    """Parse a net definition given as text (handy for tests and notebooks)."""
    net = caffe_pb2.NetParameter()
    _parse_text(text, net, "<string>", "net prototxt")
    return upgrade_net(net)


def read_solver_prototxt(path: PathLike) -> caffe_pb2.SolverParameter:
    """Read a text SolverParameter (solver.prototxt)."""
    data = _read_bytes(path, "solver prototxt")
    solver = caffe_pb2.SolverParameter()
    _parse_text(data.decode("utf-8", errors="replace"), solver, path, "solver prototxt")
    return solver


def _looks_like_text(data: bytes) -> bool:
    head = data[:4096]
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(b >= 9 for b in head)


def read_caffemodel(path: PathLike) -> caffe_pb2.NetParameter:
    """Read a binary .caffemodel (current or legacy layout) and upgrade it."""
    data = _read_bytes(path, ".caffemodel")
    if not data:
        raise FormatError(f"{path}: the file is empty (0 bytes), not a .caffemodel")
    net = caffe_pb2.NetParameter()
    try:
        net.ParseFromString(data)
    except _message.DecodeError as exc:
        if _looks_like_text(data):
            raise FormatError(f"{path}: this is a text file (a prototxt?), not a binary .caffemodel") from exc
        raise FormatError(f"{path}: not a valid .caffemodel ({len(data)} bytes): the protobuf NetParameter "
                          f"does not parse; the file is truncated or of another type") from exc
    if not (net.layer or net.layers):
        raise FormatError(f"{path}: parses but holds no layers; not a .caffemodel (wrong file type?)")
    net = upgrade_net(net, str(path))
    if not any(layer.blobs for layer in net.layer):
        raise FormatError(f"{path}: holds layer definitions but no weights (is it a prototxt saved in binary?)")
    return net


def caffemodel_params(net: caffe_pb2.NetParameter) -> dict[str, list[caffe_pb2.BlobProto]]:
    """Layer name -> its parameter blobs, for every layer that has any."""
    return {layer.name: list(layer.blobs) for layer in net.layer if layer.blobs}


def load_caffemodel_arrays(path: PathLike) -> dict[str, list[np.ndarray]]:
    """Layer name -> list of float32 arrays, read from a .caffemodel."""
    net = read_caffemodel(path)
    out = {}
    for name, blobs in caffemodel_params(net).items():
        try:
            out[name] = [blob_to_array(b) for b in blobs]
        except FormatError as exc:
            raise FormatError(f"{path}: layer '{name}': {exc}") from None
    return out


# --------------------------------------------------------------------------
# Writing


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: PathLike, write: Callable[[str], None]) -> None:
    """Create ``path`` through ``write(temporary_path)`` and a rename, so a crash
    or an error never leaves a half-written file (nor removes an older one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _atomic_write(path: PathLike, data: bytes) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def write_caffemodel(path: PathLike, net: caffe_pb2.NetParameter,
                     params: Mapping[str, Iterable[np.ndarray]]) -> None:
    """Write ``net``'s layers with ``params`` (layer name -> arrays) as a .caffemodel.

    The layer definitions are kept, as Caffe's ``Net::ToProto`` does, so the
    file is self-describing; layers without parameters carry no blobs.
    """
    out = caffe_pb2.NetParameter()
    out.CopyFrom(upgrade_net(net))
    known = {layer.name for layer in out.layer}
    missing = [name for name in params if name not in known]
    if missing:
        raise FormatError(f"{path}: parameters given for layers not in the net: {', '.join(missing)}")
    for layer in out.layer:
        del layer.blobs[:]
        for array in params.get(layer.name, ()):
            layer.blobs.append(array_to_blob(np.asarray(array)))
    _atomic_write(path, out.SerializeToString())


def write_binary(path: PathLike, msg: _message.Message) -> None:
    """Write any message (e.g. a SolverState) as binary protobuf, atomically."""
    _atomic_write(path, msg.SerializeToString())


def read_solver_state(path: PathLike) -> caffe_pb2.SolverState:
    """Read a binary .solverstate (Caffe's SolverState)."""
    data = _read_bytes(path, ".solverstate")
    state = caffe_pb2.SolverState()
    try:
        state.ParseFromString(data)
    except _message.DecodeError as exc:
        raise FormatError(f"{path}: not a valid .solverstate (truncated or another file type)") from exc
    if not data:
        raise FormatError(f"{path}: the file is empty (0 bytes), not a .solverstate")
    return state


def write_prototxt(path: PathLike, msg: _message.Message) -> None:
    """Write a NetParameter or SolverParameter as text."""
    _atomic_write(path, text_format.MessageToString(msg).encode("utf-8"))

