"""Model file formats: Caffe's text prototxt and binary .caffemodel, and
safetensors weight files.

Reading upgrades legacy definitions (``layers`` with V1 enum types, ``input`` /
``input_dim`` fields, 4-D legacy blob dimensions) to the current form, as Caffe
does when it loads a file. Writing always produces the current form
(``layer`` field 100, blobs with ``shape``), which every Caffe since 2015 reads.
"""
from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
from google.protobuf import message as _message
from google.protobuf import text_format

from .errors import FormatError
from .outputs import atomic_write, atomic_write_bytes
from .proto import caffe_pb2
from .types import PathLike

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
    if re.search(r"^\s*(base_lr|lr_policy|solver_type|max_iter)\s*:", text, re.M):
        raise FormatError(f"{path}: this is a solver prototxt (it sets base_lr, lr_policy, ...), "
                          f"not a net definition")
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
    atomic_write_bytes(path, out.SerializeToString())


def write_binary(path: PathLike, msg: _message.Message) -> None:
    """Write any message (e.g. a SolverState) as binary protobuf, atomically."""
    atomic_write_bytes(path, msg.SerializeToString())


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
    atomic_write_bytes(path, text_format.MessageToString(msg).encode("utf-8"))



# --------------------------------------------------------------------------
# safetensors weights
#
# The layout (https://huggingface.co/docs/safetensors): an unsigned 64-bit
# little-endian header length N, N bytes of JSON mapping each tensor name to
# {"dtype", "shape", "data_offsets": [begin, end]} (offsets into the byte
# buffer that follows the header) plus an optional "__metadata__" of string
# pairs, then the raw little-endian, row-major tensor bytes. Weights of a net
# are stored one tensor per parameter blob, named "<layer>/<blob index>".

SAFETENSORS_DTYPES = {"F16": "<f2", "BF16": None, "F32": "<f4", "F64": "<f8", "I8": "i1", "U8": "u1",
                      "I16": "<i2", "I32": "<i4", "I64": "<i8", "BOOL": "?"}
_NUMPY_TO_SAFETENSORS = {np.dtype("<f2"): "F16", np.dtype("<f4"): "F32", np.dtype("<f8"): "F64",
                         np.dtype("i1"): "I8", np.dtype("u1"): "U8", np.dtype("<i2"): "I16",
                         np.dtype("<i4"): "I32", np.dtype("<i8"): "I64", np.dtype("?"): "BOOL"}
_SAFETENSORS_MAX_HEADER = 100 * 1024 * 1024


def is_safetensors(path: PathLike) -> bool:
    """Whether ``path`` starts like a safetensors file (length, then a JSON object)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(9)
    except OSError:
        return False
    if len(head) < 9:
        return False
    (length,) = struct.unpack("<Q", head[:8])
    return 2 <= length <= _SAFETENSORS_MAX_HEADER and head[8:9] == b"{"


def write_safetensors(path: PathLike, tensors: Mapping[str, np.ndarray],
                      metadata: Mapping[str, str] | None = None) -> None:
    """Write named arrays (and string metadata) as a safetensors file, atomically."""
    header: dict = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    arrays, offset = [], 0
    for name, value in tensors.items():
        array = np.asarray(value)
        array = np.asarray(array, dtype=array.dtype.newbyteorder("<"), order="C")  # keeps 0-d arrays 0-d
        dtype = _NUMPY_TO_SAFETENSORS.get(array.dtype)
        if dtype is None:
            raise FormatError(f"{path}: tensor '{name}' has dtype {array.dtype}, which safetensors lacks")
        header[name] = {"dtype": dtype, "shape": list(array.shape), "data_offsets": [offset, offset + array.nbytes]}
        arrays.append(array)
        offset += array.nbytes
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # 8-byte alignment of the data, as the format recommends

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(struct.pack("<Q", len(text)))
            fh.write(text)
            for array in arrays:
                fh.write(array.tobytes())
    atomic_write(path, write)


def read_safetensors_metadata(path: PathLike) -> dict[str, str]:
    """Only the ``__metadata__`` of a safetensors file (reads just the header)."""
    try:
        with open(path, "rb") as fh:
            (length,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(min(length, _SAFETENSORS_MAX_HEADER)).decode("utf-8"))
    except (OSError, struct.error, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"{path}: cannot read the safetensors header ({exc})") from None
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    return {str(k): str(v) for k, v in (metadata or {}).items()}


def read_safetensors(path: PathLike) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read a safetensors file: name -> array (its stored dtype; bfloat16 is
    widened to float32) and the metadata. Every inconsistency in the header
    raises a FormatError naming the file and the tensor."""
    data = _read_bytes(path, "safetensors")
    if len(data) < 8:
        raise FormatError(f"{path}: {len(data)} bytes; too short for a safetensors file")
    (length,) = struct.unpack("<Q", data[:8])
    if length > min(len(data) - 8, _SAFETENSORS_MAX_HEADER):
        raise FormatError(f"{path}: the safetensors header claims {length} bytes but the file has "
                          f"{len(data) - 8} after the length field (truncated or not a safetensors file)")
    try:
        header = json.loads(data[8:8 + length].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"{path}: the safetensors header is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise FormatError(f"{path}: the safetensors header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    buffer = memoryview(data)[8 + length:]
    tensors, spans = {}, []
    for name, info in header.items():
        try:
            dtype, shape, (begin, end) = info["dtype"], [int(d) for d in info["shape"]], info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise FormatError(f"{path}: tensor '{name}' has a malformed header entry {info!r}") from None
        if dtype not in SAFETENSORS_DTYPES:
            raise FormatError(f"{path}: tensor '{name}' has unsupported dtype {dtype!r}")
        itemsize = 2 if dtype == "BF16" else np.dtype(SAFETENSORS_DTYPES[dtype]).itemsize
        count = int(np.prod(shape)) if shape else 1
        if not (0 <= begin <= end <= len(buffer)) or end - begin != count * itemsize:
            raise FormatError(f"{path}: tensor '{name}' ({dtype}, shape {tuple(shape)}) has data offsets "
                              f"[{begin}, {end}] that do not fit its size or the file "
                              f"({len(buffer)} data bytes; truncated?)")
        raw = buffer[begin:end]
        if dtype == "BF16":  # widen: bfloat16 is the top half of a float32
            array = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            array = np.frombuffer(raw, SAFETENSORS_DTYPES[dtype])
        tensors[name] = array.reshape(shape)
        spans.append((begin, end))
    spans.sort()
    position = 0
    for begin, end in spans:
        if begin != position:
            raise FormatError(f"{path}: safetensors data has a gap or overlap at byte {position}")
        position = end
    if position != len(buffer):
        raise FormatError(f"{path}: {len(buffer) - position} bytes after the last tensor")
    return tensors, {str(k): str(v) for k, v in metadata.items()}


def params_to_tensors(params: Mapping[str, Sequence[np.ndarray]], dtype=np.float16) -> dict[str, np.ndarray]:
    """Layer name -> blobs, as safetensors entries ``"<layer>/<blob index>"`` of ``dtype``."""
    return {f"{layer}/{i}": np.asarray(blob).astype(dtype) for layer, blobs in params.items()
            for i, blob in enumerate(blobs)}


def tensors_to_params(tensors: Mapping[str, np.ndarray], source: PathLike = "<tensors>") -> dict[str, list[np.ndarray]]:
    """Inverse of :func:`params_to_tensors`: float32 blobs per layer, in blob order."""
    grouped: dict[str, dict[int, np.ndarray]] = {}
    for key, array in tensors.items():
        layer, sep, index = key.rpartition("/")
        if not sep or not index.isdigit():
            raise FormatError(f"{source}: tensor '{key}' is not named '<layer>/<blob index>'")
        grouped.setdefault(layer, {})[int(index)] = array
    out = {}
    for layer, blobs in grouped.items():
        if sorted(blobs) != list(range(len(blobs))):
            raise FormatError(f"{source}: layer '{layer}' has blobs {sorted(blobs)}; expected 0..{len(blobs) - 1}")
        out[layer] = [np.asarray(blobs[i], dtype=np.float32) for i in range(len(blobs))]
    return out


def read_weights(path: PathLike) -> tuple[dict[str, list], dict[str, str]]:
    """Parameter blobs of a weights file, whatever its format: a .caffemodel
    (layer -> BlobProtos, legacy shapes kept for Caffe's shape rules) or a
    safetensors file (layer -> float32 arrays); also the file's metadata."""
    if not Path(path).exists():
        raise FormatError(f"{path}: no such weights file (.caffemodel or .safetensors)")
    if is_safetensors(path):
        tensors, metadata = read_safetensors(path)
        return tensors_to_params(tensors, path), metadata
    if Path(path).suffix.lower() == ".safetensors":  # name the format the user meant
        kind = "a text file" if _looks_like_text(Path(path).read_bytes()[:4096]) else "of another type"
        raise FormatError(f"{path}: not a safetensors file ({kind}: a safetensors file starts with an 8-byte "
                          f"header length and a JSON header); the file is truncated, corrupt or misnamed")
    return caffemodel_params(read_caffemodel(path)), {}
