"""``Net``: a Caffe net definition built into a PyTorch module.

The graph is built once from the prototxt (phase rules applied, shapes
inferred, parameters created) and run as a flat list of layer calls. Blobs are
named as in the prototxt; intermediate blobs are freed as soon as no later
layer reads them unless asked for, which keeps peak memory near the largest
pair of live activations.
"""
from __future__ import annotations

import math
import warnings
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
import torch
from torch import nn

from .. import formats
from ..errors import FormatError, NetError
from ..proto import caffe_pb2
from ..types import PathLike
from .layers import LAYER_TYPES, Layer, Shape
from .pylayer import PythonLayer
from .python_layers import (
    PROJECT_LAYERS_DIR,  # noqa: F401 (re-exported)
    LayerFile,
    PythonLayerInfo,
    announce,
    layer_file_for,
    native_for,
    resolve_mode,
)

ArrayLike = Union[np.ndarray, torch.Tensor]

PHASES = {"train": caffe_pb2.TRAIN, "test": caffe_pb2.TEST}
_PHASE_NAMES = {caffe_pb2.TRAIN: "train", caffe_pb2.TEST: "test"}


@dataclass(frozen=True)
class ParamInfo:
    """A learnable blob with its per-blob multipliers from the prototxt."""

    layer: str
    index: int
    param: nn.Parameter
    lr_mult: float
    decay_mult: float


#: Layer types whose output is not a function of their inputs alone in the train phase.
RANDOM_TYPES = frozenset({"Dropout"})


@dataclass(frozen=True)
class ConstantPrefix:
    """The layers of a net that give the same blobs every time they see the same
    inputs: no learnable blob (every lr_mult 0), not a loss, not random, not a
    Python layer run as written (its code may keep state), and fed only by input
    blobs or by other such layers. A trainer computes them once per image.

    Attributes:
        steps: their positions in the net's list of steps.
        boundary: the blobs the rest of the net reads: what to keep per image.
    """

    steps: frozenset[int]
    boundary: tuple[str, ...]


def _state_meets_rule(state: caffe_pb2.NetState, rule: caffe_pb2.NetStateRule) -> bool:
    """Caffe's Net::StateMeetsRule."""
    if rule.HasField("phase") and rule.phase != state.phase:
        return False
    if rule.HasField("min_level") and state.level < rule.min_level:
        return False
    if rule.HasField("max_level") and state.level > rule.max_level:
        return False
    if any(s not in state.stage for s in rule.stage):
        return False
    if any(s in state.stage for s in rule.not_stage):
        return False
    return True


def filter_layers(net: caffe_pb2.NetParameter, state: caffe_pb2.NetState) -> list[caffe_pb2.LayerParameter]:
    """The layers that ``state`` includes (Caffe's Net::FilterNet)."""
    kept = []
    for layer in net.layer:
        if layer.include and layer.exclude:
            raise NetError(layer.name, layer.type, "specify include or exclude rules, not both")
        if layer.include:
            keep = any(_state_meets_rule(state, r) for r in layer.include)
        else:
            keep = not any(_state_meets_rule(state, r) for r in layer.exclude)
        if keep:
            kept.append(layer)
    return kept


def _module_key(name: str) -> str:
    # nn.Module names cannot contain '.'; Caffe layer names may.
    return name.replace(".", "__dot__") or "__unnamed__"


class Net(nn.Module):
    """A runnable Caffe net.

    Args:
        prototxt: path of a net prototxt, or a parsed ``NetParameter``.
        weights: optional .caffemodel to copy parameters from.
        phase: ``"test"`` or ``"train"`` (selects layers by include/exclude rules
            and sets Dropout's behaviour).
        level: the rest of Caffe's NetState, with ``stages``.
        stages: the NetState's stages (include/exclude rules read them).
        device: where the parameters live.
        dtype: the parameters' precision.
        seed: seeds the weight fillers.
        search_path: folders to import Python layer modules from before
            ``sys.path`` (see :mod:`salicon.engine.python_layers`).
        python_layers: ``"auto"`` (a native layer for known layer files, the
            file as written otherwise), ``"as-written"``, ``"native"`` (native
            wherever one of that name exists); default ``$SALICON_PYTHON_LAYERS``
            or auto.
        layer_files: module name -> :class:`LayerFile` to run instead of
            looking the module up (what another process resolved).

    After :meth:`forward`, ``net.blobs`` maps blob names to tensors (the inputs,
    the outputs and any blob asked for; all of them with ``keep_blobs=True``),
    and ``net.params`` maps layer names to their parameter blobs, as in pycaffe.
    ``net.python_layers`` says which file and implementation each Python layer runs.
    """

    def __init__(self, prototxt: PathLike | caffe_pb2.NetParameter, weights: PathLike | None = None,
                 phase: str | int = "test", *, level: int = 0, stages: Sequence[str] = (),
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                 seed: int | None = None, search_path: Iterable[PathLike] = (), python_layers: str | None = None,
                 layer_files: Mapping[str, LayerFile] | None = None):
        super().__init__()
        from_file = not isinstance(prototxt, caffe_pb2.NetParameter)
        self.source = str(prototxt) if from_file else "<NetParameter>"
        net_param = (formats.read_net_prototxt(prototxt) if from_file  # type: ignore[arg-type]
                     else formats.upgrade_net(prototxt))  # type: ignore[arg-type]
        search = [Path(p) for p in search_path]
        self.python_layers_mode = resolve_mode(python_layers)
        self._layer_files = dict(layer_files or {})
        #: Layer name -> which file and implementation each Python layer runs.
        self.python_layers: OrderedDict[str, PythonLayerInfo] = OrderedDict()
        phase = _PHASE_NAMES.get(phase, str(phase)) if isinstance(phase, int) else phase  # type: ignore[call-overload]
        if phase not in PHASES:
            raise ValueError(f"phase must be 'train' or 'test' (or caffe's TRAIN/TEST), not {phase!r}")
        self.phase = phase
        self.net_param = net_param
        self.name = net_param.name
        state = caffe_pb2.NetState(phase=PHASES[phase], level=level, stage=list(stages))
        if net_param.HasField("state"):
            state.MergeFrom(net_param.state)
            state.phase = PHASES[phase]
        generator = torch.Generator()
        generator.manual_seed(seed if seed is not None else torch.seed())

        self.layers = nn.ModuleDict()
        self._steps: list[tuple[Layer, tuple[str, ...], tuple[str, ...]]] = []
        #: The layer name of each step (a step per computing layer and per Python data layer run as written).
        self.step_names: list[str] = []
        self.input_shapes: OrderedDict[str, Shape] = OrderedDict()
        self.blob_shapes: OrderedDict[str, Shape] = OrderedDict()
        self.loss_weights: dict[str, float] = {}
        self.layer_params: dict[str, caffe_pb2.LayerParameter] = {}
        available: list[str] = []
        for lp in filter_layers(net_param, state):
            layer = self._build_layer(lp, generator, search)
            if not lp.name or lp.name in self.layer_params:
                raise NetError(lp.name, lp.type, "layer names must be present and unique")
            self.layers[_module_key(lp.name)] = layer
            self.layer_params[lp.name] = lp
            for b in lp.bottom:
                if b in available:
                    available.remove(b)
            for top, shape in zip(lp.top, layer.top_shapes):
                self.blob_shapes[top] = tuple(shape)
                if top not in available:
                    available.append(top)
            if len(lp.loss_weight) not in (0, len(lp.top)):
                raise NetError(lp.name, lp.type, f"{len(lp.loss_weight)} loss_weight values for {len(lp.top)} tops")
            for i, top in enumerate(lp.top):
                weight = lp.loss_weight[i] if lp.loss_weight else (1.0 if layer.is_loss else 0.0)
                if weight:
                    self.loss_weights[top] = float(weight)
            if layer.is_input:
                for top, shape in zip(lp.top, layer.top_shapes):
                    self.input_shapes[top] = tuple(shape)
                if isinstance(layer, PythonLayer):  # its forward runs on the fed blobs, in place
                    self._steps.append((layer, tuple(lp.top), tuple(lp.top)))
                    self.step_names.append(lp.name)
            else:
                self._steps.append((layer, tuple(lp.bottom), tuple(lp.top)))
                self.step_names.append(lp.name)
        if not self._steps and not self.input_shapes:
            raise FormatError(f"{self.source}: no layers left in phase '{phase}'")
        #: Blobs not consumed by any later layer (Caffe's net outputs).
        self.outputs: list[str] = available
        self._last_use = {}
        for i, (_, bottoms, _) in enumerate(self._steps):
            for b in bottoms:
                self._last_use[b] = i
        self.blobs: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.keep_blobs = False
        self.memory_format = torch.contiguous_format
        self.to(device=device, dtype=dtype)
        if weights is not None:
            self.copy_from(weights)

    # ------------------------------------------------------------------ build
    def _build_layer(self, lp: caffe_pb2.LayerParameter, generator, search) -> Layer:
        bottom_shapes = []
        for b in lp.bottom:
            if b not in self.blob_shapes:
                raise NetError(lp.name, lp.type, f"bottom blob '{b}' is not produced by any earlier layer")
            bottom_shapes.append(self.blob_shapes[b])
        phase = PHASES[self.phase]
        if lp.type == "Python":
            return self._build_python_layer(lp, bottom_shapes, phase, generator, search)
        if lp.type not in LAYER_TYPES:
            raise NetError(lp.name, lp.type or "<none>",
                           f"unsupported layer type; supported: {', '.join(sorted(LAYER_TYPES))}, Python")
        return LAYER_TYPES[lp.type](lp, bottom_shapes, phase, generator)

    def _build_python_layer(self, lp, bottom_shapes, phase, generator, search) -> Layer:
        """The layer's file as Caffe would import it; a native layer where one
        reproduces that file, the file itself otherwise."""
        pp = lp.python_param
        if not pp.module or not pp.layer:
            raise NetError(lp.name, "Python", "python_param needs both 'module' and 'layer'")
        file = layer_file_for(lp, search, self._layer_files)
        factory, implementation = native_for(file, pp.layer, self.python_layers_mode)
        if factory is not None:
            layer: Layer = factory(lp, bottom_shapes, phase, generator)  # type: ignore[assignment]
        else:
            layer = PythonLayer(lp, bottom_shapes, phase, generator, file=file)
        info = PythonLayerInfo(pp.module, pp.layer, file.path, file.fingerprint, implementation)
        self.python_layers[lp.name] = info
        self._layer_files.setdefault(pp.module, file)
        announce(info)
        return layer

    @property
    def layer_files(self) -> dict[str, LayerFile]:
        """Module name -> the file each Python layer module was read from (to
        build the same net in another process: ``Net(..., layer_files=...)``)."""
        return dict(self._layer_files)

    # ------------------------------------------------------------ parameters
    @property
    def params(self) -> OrderedDict[str, list[nn.Parameter]]:
        """Layer name -> parameter blobs (weights, bias), as pycaffe's net.params."""
        return OrderedDict((name, layer.blobs) for name, layer in self._named_layers() if layer.blob_names)

    def _named_layers(self):
        yield from zip(self.layer_params, self.layers.values())

    def layer(self, name: str) -> Layer:
        """The layer module called ``name`` in the prototxt."""
        return self.layers[_module_key(name)]  # type: ignore[return-value]  # every module is a Layer

    def param_info(self) -> list[ParamInfo]:
        """Every learnable blob with its lr_mult and decay_mult (default 1)."""
        out = []
        for name, layer in self._named_layers():
            specs = self.layer_params[name].param
            for i, p in enumerate(layer.blobs):
                spec = specs[i] if i < len(specs) else caffe_pb2.ParamSpec()
                out.append(ParamInfo(name, i, p, float(spec.lr_mult), float(spec.decay_mult)))
        return out

    def copy_from(self, weights: PathLike | Mapping[str, Sequence[ArrayLike | caffe_pb2.BlobProto]],
                  strict: bool = False, source: str | None = None) -> list[str]:
        """Copy parameters from a weights file (.caffemodel or safetensors), or
        a mapping layer name -> blobs (arrays or BlobProtos; ``source`` names
        their origin in messages).

        Layers are matched by name, as in Caffe; layers of the file that the net
        lacks are ignored. A blob whose shape differs from the net's raises a
        FormatError naming the file, the layer and both shapes. Net layers with
        parameters that the file lacks are returned (and warned about; with
        ``strict=True`` they raise).
        """
        if isinstance(weights, Mapping):
            source = source or "<arrays>"
            file_blobs = weights
        else:
            source = str(weights)
            file_blobs, _ = formats.read_weights(weights)
        missing = []
        for name, layer in self._named_layers():
            if not layer.blob_names:
                continue
            if name not in file_blobs:
                missing.append(name)
                continue
            blobs = file_blobs[name]
            if len(blobs) != len(layer.blob_names):
                raise FormatError(f"{source}: layer '{name}' has {len(blobs)} blobs in the file but "
                                  f"{len(layer.blob_names)} in {self.source}")
            for i, (blob, param) in enumerate(zip(blobs, layer.blobs)):
                if isinstance(blob, caffe_pb2.BlobProto):
                    ok, shape = formats.shapes_match(blob, param.shape), formats.blob_shape(blob)
                else:
                    blob = _to_numpy(blob)
                    ok, shape = tuple(blob.shape) == tuple(param.shape), tuple(blob.shape)
                if not ok:
                    raise FormatError(
                        f"{source}: layer '{name}' blob {i} ({layer.blob_names[i]}) has shape "
                        f"{shape} in the file but {tuple(param.shape)} in {self.source}")
                array = formats.blob_to_array(blob) if isinstance(blob, caffe_pb2.BlobProto) else blob
                array = np.asarray(array, dtype=np.float32).reshape(tuple(param.shape))
                if not array.flags.writeable:  # a view of a file's bytes; torch wants its own memory
                    array = array.copy()
                with torch.no_grad():
                    param.copy_(torch.from_numpy(array))
        if missing:
            message = f"{source}: no weights for layer(s) {', '.join(missing)} of {self.source}"
            if strict:
                raise FormatError(message)
            warnings.warn(message + "; they keep their filler initialisation", stacklevel=2)
        return missing

    def state_arrays(self) -> OrderedDict[str, list[np.ndarray]]:
        """Layer name -> parameter blobs as float32 numpy arrays."""
        return OrderedDict((name, [p.detach().float().cpu().numpy() for p in blobs])
                           for name, blobs in self.params.items())

    def save(self, path: PathLike) -> None:
        """Write the parameters as a .caffemodel (current layout) that Caffe loads."""
        formats.write_caffemodel(path, self.net_param, self.state_arrays())

    # --------------------------------------------------------------- running
    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        for p in self.parameters():
            return p.dtype
        return torch.float32

    def _prepare_input(self, name: str, value: ArrayLike) -> torch.Tensor:
        expected = self.input_shapes[name]
        tensor = torch.as_tensor(value)
        shape = tuple(tensor.shape)
        if len(shape) != len(expected) or shape[1:] != expected[1:]:
            raise ValueError(f"input '{name}' has shape {shape} but the net ({self.source}) expects "
                             f"{expected} (the batch size may differ)")
        tensor = tensor.to(self.device, self.dtype if tensor.is_floating_point() else None, non_blocking=True)
        if tensor.dim() == 4 and self.memory_format is not torch.contiguous_format:
            tensor = tensor.contiguous(memory_format=self.memory_format)
        return tensor

    def prepare_inputs(self, inputs: Mapping[str, ArrayLike]) -> dict[str, torch.Tensor]:
        """Every input blob, checked (names, shapes but the batch size) and put on
        the net's device, in its dtype and memory order."""
        unknown = set(inputs) - set(self.input_shapes)
        if unknown:
            raise ValueError(f"unknown input blob(s) {sorted(unknown)}; the net's inputs are "
                             f"{list(self.input_shapes)}")
        missing = [n for n in self.input_shapes if n not in inputs]
        if missing:
            raise ValueError(f"missing input blob(s) {missing} for {self.source}")
        return {n: self._prepare_input(n, v) for n, v in inputs.items()}

    def constant_prefix(self) -> ConstantPrefix:
        """The layers whose blobs depend on the inputs only (see :class:`ConstantPrefix`)."""
        learnable = {p.layer for p in self.param_info() if p.lr_mult != 0}
        known = set(self.input_shapes)  # blobs whose present value is constant
        steps: set[int] = set()
        boundary: list[str] = []
        for i, ((layer, bottoms, tops), name) in enumerate(zip(self._steps, self.step_names)):
            info = self.python_layers.get(name)
            constant = (name not in learnable and not layer.is_loss and all(b in known for b in bottoms)
                        and not (self.phase == "train" and self.layer_params[name].type in RANDOM_TYPES)
                        and (info is None or info.native)
                        and not any(t in boundary for t in tops))  # one value per boundary blob
            if constant:
                steps.add(i)
                known.update(tops)
            else:
                boundary.extend(b for b in bottoms if b in known and b not in boundary)
                known.difference_update(tops)  # rewritten (in place) by a layer that learns
        return ConstantPrefix(frozenset(steps), tuple(boundary))

    @torch.no_grad()
    def forward_prefix(self, prefix: ConstantPrefix, **inputs: ArrayLike) -> dict[str, torch.Tensor]:
        """Run only ``prefix``'s layers on ``inputs``; its boundary blobs (what
        :meth:`forward` takes back with ``prefix=``)."""
        values = self.prepare_inputs(inputs)
        for i, (layer, bottoms, tops) in enumerate(self._steps):
            if i in prefix.steps:
                for t, o in zip(tops, layer(*(values[b] for b in bottoms))):
                    values[t] = o
        return {b: values[b] for b in prefix.boundary}

    def forward(self, blobs: Sequence[str] | None = None, prefix: ConstantPrefix | None = None,
                **inputs: ArrayLike) -> dict[str, torch.Tensor]:
        """Run the net on ``inputs`` (input blob name -> array or tensor).

        With ``prefix``, ``inputs`` are its boundary blobs (from
        :meth:`forward_prefix`) and its layers are skipped; the results are the
        same as from the full inputs.

        Returns the net's outputs plus the blobs named in ``blobs``.
        """
        wanted = set(self.outputs) | set(blobs or ())
        bad = [b for b in (blobs or ()) if b not in self.blob_shapes]
        if bad:
            raise ValueError(f"no blob(s) named {bad} in {self.source}")
        if prefix is None:
            values = self.prepare_inputs(inputs)
            skip: frozenset[int] = frozenset()
        else:
            if set(inputs) != set(prefix.boundary):
                raise ValueError(f"with a constant prefix the inputs are its boundary blobs "
                                 f"{list(prefix.boundary)}, not {sorted(inputs)}")
            # Copies: a later layer may work in place, and the caller keeps these.
            values = {n: torch.as_tensor(v).to(self.device).clone() for n, v in inputs.items()}
            skip = prefix.steps
        keep = dict(values)
        for i, (layer, bottoms, tops) in enumerate(self._steps):
            if i in skip:
                continue
            outs = layer(*(values[b] for b in bottoms))
            for b in bottoms:
                if self._last_use.get(b) == i and b not in tops and not self.keep_blobs and b not in wanted:
                    values.pop(b, None)
            for t, o in zip(tops, outs):
                values[t] = o
                if self.keep_blobs or t in wanted:
                    keep[t] = o
            for t in tops:
                if self._last_use.get(t, -1) <= i and t not in wanted and not self.keep_blobs:
                    values.pop(t, None)
        self.blobs = OrderedDict((n, keep[n]) for n in self.blob_shapes if n in keep)
        names = list(self.outputs) + [b for b in (blobs or ()) if b not in self.outputs]
        return {n: keep[n] for n in names if n in keep}  # a prefix's own outputs are not recomputed

    def objective(self, outputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The weighted sum of the loss tops (what a solver minimises)."""
        if not self.loss_weights:
            raise ValueError(f"{self.source} has no loss layer in phase '{self.phase}'")
        return sum(w * outputs[name].sum() for name, w in self.loss_weights.items())  # type: ignore[return-value]

    def extra_repr(self) -> str:
        ins = ", ".join(f"{k}{list(v)}" for k, v in self.input_shapes.items())
        return f"name={self.name!r}, phase={self.phase}, inputs=[{ins}], outputs={self.outputs}"


def _to_numpy(a: ArrayLike) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().float().cpu().numpy()
    return np.asarray(a, dtype=np.float32)


def count_flops(net: Net) -> float:
    """Multiply-adds x 2 of the convolution and inner-product layers at the
    declared input shapes (a yardstick for throughput figures)."""
    total = 0.0
    for _, layer in net._named_layers():
        out: tuple[int, ...] = tuple(layer.top_shapes[0]) if layer.top_shapes else ()
        if layer.type == "Convolution":  # per output value: C/group * kh * kw
            total += 2.0 * math.prod(out) * layer.weight.numel() / out[1]
        elif layer.type == "InnerProduct":
            total += 2.0 * math.prod(out) * layer.weight.numel() / out[-1]
    return total
