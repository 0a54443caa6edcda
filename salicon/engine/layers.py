"""Caffe layer types as PyTorch modules.

Each class takes its LayerParameter and the shapes of its bottom blobs, checks
them, creates its parameter blobs and records ``top_shapes``: shape inference
happens once, when the net is built, so mistakes surface there with the layer's
name, type and the shapes involved. ``forward`` maps bottom tensors to a tuple
of top tensors with Caffe's numerics (pooling rounding and edge clipping, loss
normalisation, ...). The registry ``LAYER_TYPES`` maps the prototxt ``type``
string to a class.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import NetError
from ..proto import caffe_pb2
from .fillers import fill

Shape = tuple[int, ...]
LayerParameter = caffe_pb2.LayerParameter


class Layer(nn.Module):
    """Base class: one Caffe layer.

    Subclasses set ``top_shapes`` in ``__init__`` and may register parameter
    blobs with :meth:`add_blob` (in Caffe's blob order: weights, then bias).
    """

    #: Layers that feed data into the net (their tops are net inputs).
    is_input = False
    #: Layers whose tops count towards the objective with loss_weight 1.
    is_loss = False
    #: Numbers of bottoms/tops: exact, (least, most) with most None for no limit, or None (any).
    n_bottoms: int | tuple[int, int | None] | None = 1
    n_tops: int | None = 1

    def __init__(self, param: LayerParameter, bottom_shapes: Sequence[Shape], phase: int,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.name = param.name
        self.type = param.type  # type: ignore[method-assign,assignment]  # Caffe's layer type; Module.type() is unused
        self.phase = phase
        self.generator = generator
        self.blob_names: list[str] = []
        self.bottom_shapes = [tuple(s) for s in bottom_shapes]
        self._check_counts(param)
        self.top_shapes: list[Shape] = []

    # -- helpers ---------------------------------------------------------
    def error(self, message: str) -> NetError:
        return NetError(self.name, str(self.type), message)

    def check_bottoms_agree(self, param: LayerParameter, except_axis: int | None = None, hint: str = "") -> None:
        """Every bottom has the first one's shape (on every axis but ``except_axis``)."""
        first = self.bottom_shapes[0]
        for name, shape in zip(param.bottom[1:], self.bottom_shapes[1:]):
            if len(shape) != len(first) or any(a != b for i, (a, b) in enumerate(zip(shape, first))
                                                if i != except_axis):
                raise self.error(f"bottom '{name}' has shape {shape} but '{param.bottom[0]}' has shape {first}"
                                 + hint)

    def _check_counts(self, param: LayerParameter) -> None:
        count = len(param.bottom)
        if isinstance(self.n_bottoms, tuple):
            least, most = self.n_bottoms
            if count < least or (most is not None and count > most):
                wanted = f"at least {least}" if most is None else f"{least} to {most}"
                raise self.error(f"needs {wanted} bottom blobs, has {count}")
        elif self.n_bottoms is not None and count != self.n_bottoms:
            raise self.error(f"needs {self.n_bottoms} bottom blob(s), has {count}")
        if self.n_tops is not None and len(param.top) != self.n_tops:
            raise self.error(f"needs {self.n_tops} top blob(s), has {len(param.top)}")

    def add_blob(self, attr: str, shape: Sequence[int],
                 filler: caffe_pb2.FillerParameter | None) -> None:
        """Register a learnable parameter blob, initialised by ``filler``."""
        try:
            data = fill(shape, filler, self.generator)
        except ValueError as exc:
            raise self.error(str(exc)) from None
        setattr(self, attr, nn.Parameter(data))
        self.blob_names.append(attr)

    @property
    def blobs(self) -> list[nn.Parameter]:
        """Parameter blobs in Caffe's order (as pycaffe's ``net.params[name]``)."""
        return [getattr(self, n) for n in self.blob_names]

    def canonical_axis(self, axis: int, ndim: int, field: str = "axis") -> int:
        if not -ndim <= axis < ndim:
            raise self.error(f"{field} {axis} is out of range for a {ndim}-axis bottom")
        return axis % ndim


def _rep(values: Sequence[int], default: int, name: str, layer: Layer) -> tuple[int, int]:
    """Caffe's one-value-or-one-per-spatial-axis fields (pad, stride, ...)."""
    if len(values) == 0:
        return default, default
    if len(values) == 1:
        return int(values[0]), int(values[0])
    if len(values) == 2:
        return int(values[0]), int(values[1])
    raise layer.error(f"{name} has {len(values)} values; only 2-D is supported")


# ---------------------------------------------------------------------------
# Data


class Input(Layer):
    """``Input``: tops are net inputs, shaped by input_param."""

    is_input = True
    n_bottoms = 0
    n_tops = None

    def __init__(self, param, bottom_shapes, phase, generator=None):
        super().__init__(param, bottom_shapes, phase, generator)
        shapes = [tuple(int(d) for d in s.dim) for s in param.input_param.shape]
        if not shapes:
            raise self.error("input_param gives no shape; give one shape, or one per top")
        if len(shapes) == 1:
            shapes = shapes * len(param.top)
        if len(shapes) != len(param.top):
            raise self.error(f"{len(param.top)} tops but {len(shapes)} input_param shapes")
        self.top_shapes = shapes

    def forward(self, *bottoms):  # inputs are supplied by the net
        raise RuntimeError("Input layers are fed by Net.forward")


def parse_shape_param_str(layer: Layer, param_str: str, ndim: int = 4) -> Shape:
    """Parse a param_str such as ``"1,3,1200,1600"`` into a shape."""
    try:
        shape = tuple(int(v) for v in param_str.replace(" ", "").split(","))
    except ValueError:
        raise layer.error(f"param_str '{param_str}' is not {ndim} comma-separated integers") from None
    if len(shape) != ndim or any(d <= 0 for d in shape):
        raise layer.error(f"param_str '{param_str}' must be {ndim} positive integers (N,C,H,W)")
    return shape


class CustomData(Layer):
    """The OpenSALICON ``CustomData`` Python layer: a net input of a fixed shape."""

    is_input = True
    n_bottoms = 0

    def __init__(self, param, bottom_shapes, phase, generator=None):
        super().__init__(param, bottom_shapes, phase, generator)
        self.top_shapes = [parse_shape_param_str(self, param.python_param.param_str)]

    def forward(self, *bottoms):
        raise RuntimeError("CustomData layers are fed by Net.forward")


class BilinearInterpolation(Layer):
    """The OpenSALICON ``custom_interpolation_layer``: resize H and W of a blob.

    Linear interpolation with scipy.ndimage.zoom(order=1)'s sampling, which maps
    the first and last samples onto each other (align_corners=True). The batch
    and channel axes follow the bottom; param_str's channel count must agree.
    The backward pass is autograd's, i.e. the exact adjoint of the forward.
    """

    def __init__(self, param, bottom_shapes, phase, generator=None):
        super().__init__(param, bottom_shapes, phase, generator)
        n, c, h, w = parse_shape_param_str(self, param.python_param.param_str)
        bottom = self.bottom_shapes[0]
        if len(bottom) != 4:
            raise self.error(f"bottom must be 4-D, got shape {bottom}")
        if bottom[1] != c:
            raise self.error(f"param_str '{param.python_param.param_str}' asks for {c} channels "
                             f"but the bottom has shape {bottom}")
        self.size = (h, w)
        self.top_shapes = [(bottom[0], bottom[1], h, w)]

    def forward(self, x):
        if tuple(x.shape[-2:]) == self.size:
            return (x,)
        return (F.interpolate(x, size=self.size, mode="bilinear", align_corners=True),)


class _ZoomDiffDown(torch.autograd.Function):
    """Aligned-corner linear resize whose backward resizes the top diff back to
    the bottom's size with the same interpolation (not the adjoint)."""

    @staticmethod
    def forward(ctx, x, size):
        ctx.bottom_size = tuple(x.shape[-2:])
        return F.interpolate(x, size=size, mode="bilinear", align_corners=True)

    @staticmethod
    def backward(ctx, grad):
        return F.interpolate(grad, size=ctx.bottom_size, mode="bilinear", align_corners=True), None


class PublishedInterpolation(BilinearInterpolation):
    """OpenSALICON's published ``custom_interpolation_layer``: the forward of
    :class:`BilinearInterpolation` (its ``scipy.ndimage.zoom(order=1)``), and its
    backward, which zooms the top diff down to the bottom's size with the same
    linear interpolation: bottom_diff[i] = top_diff at i (H_top-1)/(H_bottom-1),
    per axis. That is not the gradient of the forward (the adjoint sums the top
    diff over each bottom sample's neighbourhood); Caffe trains with it when the
    published file is the one on its path, and so does this layer.

    The published file sets its top to param_str's N as well; this layer keeps
    the bottom's batch size (at param_str's N both are the same)."""

    def forward(self, x):
        if tuple(x.shape[-2:]) == self.size:
            return (x,)
        return (_ZoomDiffDown.apply(x, self.size),)


# ---------------------------------------------------------------------------
# Vision


class Convolution(Layer):
    """``Convolution``: cross-correlation, weights (O, I/group, kh, kw)."""

    def __init__(self, param, bottom_shapes, phase, generator=None):
        super().__init__(param, bottom_shapes, phase, generator)
        p = param.convolution_param
        bottom = self.bottom_shapes[0]
        if len(bottom) != 4:
            raise self.error(f"only 2-D convolution is supported; bottom has shape {bottom}")
        if p.axis != 1:
            raise self.error("only axis 1 (channels) is supported")
        if p.HasField("kernel_h") or p.HasField("kernel_w"):
            if len(p.kernel_size):
                raise self.error("give either kernel_size or kernel_h/kernel_w, not both")
            kernel = (int(p.kernel_h), int(p.kernel_w))
        else:
            if not len(p.kernel_size):
                raise self.error("kernel_size (or kernel_h and kernel_w) is required")
            kernel = _rep(p.kernel_size, 1, "kernel_size", self)
        if p.HasField("pad_h") or p.HasField("pad_w"):
            pad = (int(p.pad_h), int(p.pad_w))
        else:
            pad = _rep(p.pad, 0, "pad", self)
        if p.HasField("stride_h") or p.HasField("stride_w"):
            stride = (int(p.stride_h or 1), int(p.stride_w or 1))
        else:
            stride = _rep(p.stride, 1, "stride", self)
        dilation = _rep(p.dilation, 1, "dilation", self)
        group = int(p.group)
        channels = bottom[1]
        if not p.num_output:
            raise self.error("num_output must be positive")
        if channels % group or p.num_output % group:
            raise self.error(f"group {group} does not divide the {channels} input channels "
                             f"and {p.num_output} outputs")
        out_hw = []
        for size, k, pd, s, d in zip(bottom[2:], kernel, pad, stride, dilation):
            if min(k, s, d) < 1:
                raise self.error("kernel, stride and dilation must be positive")
            o = (size + 2 * pd - (d * (k - 1) + 1)) // s + 1
            if o < 1:
                raise self.error(f"kernel {kernel} does not fit the bottom of shape {bottom} (pad {pad})")
            out_hw.append(o)
        self.stride, self.pad, self.dilation, self.group = stride, pad, dilation, group
        self.add_blob("weight", (p.num_output, channels // group) + kernel,
                      p.weight_filler if p.HasField("weight_filler") else None)
        self.bias = None
        if p.bias_term:
            self.add_blob("bias", (p.num_output,), p.bias_filler if p.HasField("bias_filler") else None)
        self.top_shapes = [(bottom[0], int(p.num_output), out_hw[0], out_hw[1])]

    def forward(self, x):
        return (F.conv2d(x, self.weight, self.bias, self.stride, self.pad, self.dilation, self.group),)


class Pooling(Layer):
    """``Pooling`` MAX / AVE / global, with Caffe's output size and edge rules.

    Caffe rounds the output size up (ceil), then drops a last window that would
    start inside the right/bottom padding. MAX ignores cells outside the input;
    AVE divides by the window clipped to the padded input (padding counted).
    These are exactly PyTorch's ceil_mode=True and count_include_pad=True rules.
    """

    def __init__(self, param, bottom_shapes, phase, generator=None):
        super().__init__(param, bottom_shapes, phase, generator)
        p = param.pooling_param
        bottom = self.bottom_shapes[0]
        if len(bottom) != 4:
            raise self.error(f"bottom must be 4-D, got shape {bottom}")
        methods = caffe_pb2.PoolingParameter
        if p.pool not in (methods.MAX, methods.AVE):
            raise self.error(f"pool method {methods.PoolMethod.Name(p.pool)} is not supported (MAX, AVE)")
        self.method = p.pool
        if p.global_pooling:
            if p.HasField("kernel_size") or p.HasField("kernel_h"):
                raise self.error("global_pooling takes no kernel size")
            kernel, pad, stride = (bottom[2], bottom[3]), (0, 0), (1, 1)
        else:
            if p.HasField("kernel_h") or p.HasField("kernel_w"):
                kernel = (int(p.kernel_h), int(p.kernel_w))
            elif p.HasField("kernel_size"):
                kernel = (int(p.kernel_size),) * 2
            else:
                raise self.error("kernel_size (or kernel_h and kernel_w) is required")
            pad = (int(p.pad_h), int(p.pad_w)) if (p.HasField("pad_h") or p.HasField("pad_w")) else (int(p.pad),) * 2
            if p.HasField("stride_h") or p.HasField("stride_w"):
                stride = (int(p.stride_h or 1), int(p.stride_w or 1))
            else:
                stride = (int(p.stride),) * 2
        if min(kernel) < 1 or min(stride) < 1:
            raise self.error("kernel and stride must be positive")
        if pad[0] >= kernel[0] or pad[1] >= kernel[1]:
            raise self.error(f"pad {pad} must be smaller than the kernel {kernel}")
        self.ceil = p.round_mode == methods.CEIL
        out = []
        for size, k, pd, s in zip(bottom[2:], kernel, pad, stride):
            span = size + 2 * pd - k
            if span < 0:
                raise self.error(f"kernel {kernel} is larger than the padded bottom of shape {bottom}")
            o = (-(-span // s) if self.ceil else span // s) + 1
            if pd and (o - 1) * s >= size + pd:
                o -= 1
            out.append(o)
        self.kernel, self.pad, self.stride = kernel, pad, stride
        self.top_shapes = [(bottom[0], bottom[1], out[0], out[1])]
        # PyTorch limits padding to half the kernel; pad explicitly beyond that.
        self.explicit_pad = any(pd > k // 2 for pd, k in zip(pad, kernel))

    def forward(self, x):
        if self.explicit_pad:
            return (self._forward_explicit(x),)
        if self.method == caffe_pb2.PoolingParameter.MAX:
            return (F.max_pool2d(x, self.kernel, self.stride, self.pad, ceil_mode=self.ceil),)
        return (F.avg_pool2d(x, self.kernel, self.stride, self.pad, ceil_mode=self.ceil,
                             count_include_pad=True),)

    def _forward_explicit(self, x):
        (ph, pw), (kh, kw), (sh, sw) = self.pad, self.kernel, self.stride
        oh, ow = self.top_shapes[0][2:]
        h, w = x.shape[-2:]
        # Pad enough for every (possibly partial) window, then fix divisors.
        extra_h = max(0, (oh - 1) * sh + kh - (h + 2 * ph))
        extra_w = max(0, (ow - 1) * sw + kw - (w + 2 * pw))
        if self.method == caffe_pb2.PoolingParameter.MAX:
            xp = F.pad(x, (pw, pw + extra_w, ph, ph + extra_h), value=-math.inf)
            return F.max_pool2d(xp, self.kernel, self.stride)[..., :oh, :ow]
        xp = F.pad(x, (pw, pw + extra_w, ph, ph + extra_h), value=0.0)
        sums = F.avg_pool2d(xp, self.kernel, self.stride, divisor_override=1)[..., :oh, :ow]
        hs = torch.arange(oh, device=x.device) * sh - ph
        ws = torch.arange(ow, device=x.device) * sw - pw
        dh = (torch.clamp(hs + kh, max=h + ph) - hs).to(x.dtype)
        dw = (torch.clamp(ws + kw, max=w + pw) - ws).to(x.dtype)
        return sums / (dh[:, None] * dw[None, :])


class InnerProduct(Layer):
    """``InnerProduct``: flattens axes from ``axis`` on, y = x W^T + b."""

    def __init__(self, param, bottom_shapes, phase, generator=None):
        super().__init__(param, bottom_shapes, phase, generator)
        p = param.inner_product_param
        bottom = self.bottom_shapes[0]
        self.axis = self.canonical_axis(p.axis, len(bottom))
        k = math.prod(bottom[self.axis:])
        n = int(p.num_output)
        if not n:
            raise self.error("num_output must be positive")
        self.transpose = p.transpose
        self.add_blob("weight", (k, n) if p.transpose else (n, k),
                      p.weight_filler if p.HasField("weight_filler") else None)
        self.bias = None
        if p.bias_term:
            self.add_blob("bias", (n,), p.bias_filler if p.HasField("bias_filler") else None)
        self.top_shapes = [tuple(bottom[:self.axis]) + (n,)]

    def forward(self, x):
        x = x.flatten(self.axis)
        w = self.weight.t() if self.transpose else self.weight
        return (F.linear(x, w, self.bias),)


# ---------------------------------------------------------------------------
# Element-wise and shape layers


class _SameShape(Layer):
    def __init__(self, param, bottom_shapes, phase, generator=None):
        super().__init__(param, bottom_shapes, phase, generator)
        self.top_shapes = [self.bottom_shapes[0]]


class ReLU(_SameShape):
    """``ReLU`` with Caffe's leaky variant (negative_slope)."""

    def __init__(self, param, bottom_shapes, phase, generator=None):
        super().__init__(param, bottom_shapes, phase, generator)
        self.negative_slope = float(param.relu_param.negative_slope)
        self.in_place = param.bottom[0] == param.top[0]

    def forward(self, x):
        inplace = self.in_place and not torch.is_grad_enabled()
        if self.negative_slope:
            return (F.leaky_relu(x, self.negative_slope, inplace=inplace),)
        return (F.relu(x, inplace=inplace),)


class Sigmoid(_SameShape):
    """``Sigmoid``: 1 / (1 + exp(-x))."""

    def forward(self, x):
        return (torch.sigmoid(x),)


class TanH(_SameShape):
    """``TanH``."""

    def forward(self, x):
        return (torch.tanh(x),)


class Dropout(_SameShape):
    """``Dropout``: identity at test time; at train time zero with probability
    dropout_ratio and scale the rest by 1 / (1 - ratio), as Caffe does."""

    def __init__(self, param, bottom_shapes, phase, generator=None):
        super().__init__(param, bottom_shapes, phase, generator)
        self.ratio = float(param.dropout_param.dropout_ratio)
        if not 0.0 <= self.ratio < 1.0:
            raise self.error(f"dropout_ratio {self.ratio} must be in [0, 1)")

    def forward(self, x):
        if self.phase == caffe_pb2.TEST or self.ratio == 0.0:
            return (x,)
        return (F.dropout(x, self.ratio, training=True),)


class Softmax(Layer):
    """``Softmax`` along ``axis`` (default 1)."""

    def __init__(self, param, bottom_shapes, phase, generator=None):
        super().__init__(param, bottom_shapes, phase, generator)
        self.axis = self.canonical_axis(param.softmax_param.axis, len(self.bottom_shapes[0]))
        self.top_shapes = [self.bottom_shapes[0]]

    def forward(self, x):
        return (torch.softmax(x, dim=self.axis),)


class Concat(Layer):
    """``Concat`` along ``axis`` (default 1); other axes must agree."""

    n_bottoms = (1, None)

    def __init__(self, param, bottom_shapes, phase, generator=None):
        super().__init__(param, bottom_shapes, phase, generator)
        shapes = self.bottom_shapes
        p = param.concat_param
        axis = p.axis if p.HasField("axis") or not p.HasField("concat_dim") else p.concat_dim
        self.axis = self.canonical_axis(axis, len(shapes[0]))
        self.check_bottoms_agree(param, self.axis, f"; all axes but {self.axis} must agree (after editing an "
                                                   f"input size, update the interpolation layer's param_str "
                                                   f"to the new pool5 size)")
        top = list(shapes[0])
        top[self.axis] = sum(s[self.axis] for s in shapes)
        self.top_shapes = [tuple(top)]

    def forward(self, *xs):
        return (torch.cat(xs, dim=self.axis),)


class Eltwise(Layer):
    """``Eltwise`` SUM (with coeff), PROD or MAX of same-shaped bottoms."""

    n_bottoms = (2, None)

    def __init__(self, param, bottom_shapes, phase, generator=None):
        super().__init__(param, bottom_shapes, phase, generator)
        p = param.eltwise_param
        shapes = self.bottom_shapes
        self.check_bottoms_agree(param)
        self.op = p.operation
        if len(p.coeff) and len(p.coeff) != len(shapes):
            raise self.error(f"{len(p.coeff)} coeff values for {len(shapes)} bottoms")
        if len(p.coeff) and self.op != caffe_pb2.EltwiseParameter.SUM:
            raise self.error("coeff is only allowed with operation SUM")
        self.coeff = list(p.coeff) or None
        self.top_shapes = [shapes[0]]

    def forward(self, *xs):
        if self.op == caffe_pb2.EltwiseParameter.PROD:
            out = xs[0]
            for x in xs[1:]:
                out = out * x
        elif self.op == caffe_pb2.EltwiseParameter.MAX:
            out = xs[0]
            for x in xs[1:]:
                out = torch.maximum(out, x)
        else:
            coeff = self.coeff or [1.0] * len(xs)
            out = xs[0] * coeff[0] if coeff[0] != 1.0 else xs[0]
            for c, x in zip(coeff[1:], xs[1:]):
                out = out + (x * c if c != 1.0 else x)
        return (out,)


class Flatten(Layer):
    """``Flatten`` axes ``axis`` .. ``end_axis`` into one."""

    def __init__(self, param, bottom_shapes, phase, generator=None):
        super().__init__(param, bottom_shapes, phase, generator)
        bottom = self.bottom_shapes[0]
        p = param.flatten_param
        self.start = self.canonical_axis(p.axis, len(bottom))
        self.end = self.canonical_axis(p.end_axis, len(bottom), "end_axis")
        self.top_shapes = [bottom[:self.start] + (math.prod(bottom[self.start:self.end + 1]),)
                           + bottom[self.end + 1:]]

    def forward(self, x):
        return (x.flatten(self.start, self.end),)


class Reshape(Layer):
    """``Reshape``: 0 copies a bottom dimension, -1 is inferred (one at most)."""

    def __init__(self, param, bottom_shapes, phase, generator=None):
        super().__init__(param, bottom_shapes, phase, generator)
        bottom = self.bottom_shapes[0]
        p = param.reshape_param
        dims = [int(d) for d in p.shape.dim]
        start = p.axis if p.axis >= 0 else len(bottom) + p.axis + 1
        if not 0 <= start <= len(bottom):
            raise self.error(f"axis {p.axis} is out of range for bottom shape {bottom}")
        end = len(bottom) if p.num_axes == -1 else start + p.num_axes
        if p.num_axes < -1 or end > len(bottom):
            raise self.error(f"num_axes {p.num_axes} is out of range for bottom shape {bottom}")
        if dims.count(-1) > 1:
            raise self.error("at most one dimension may be -1")
        new = []
        for i, d in enumerate(dims):
            if d == 0:
                if start + i >= len(bottom):
                    raise self.error(f"dim {i} copies a bottom axis that does not exist (bottom {bottom})")
                new.append(bottom[start + i])
            elif d < -1:
                raise self.error(f"invalid dim {d}")
            else:
                new.append(d)
        if -1 in new:
            known = math.prod(d for d in new if d != -1)
            total = math.prod(bottom[start:end])
            if known == 0 or total % known:
                raise self.error(f"cannot infer the -1 dim: {total} values into {dims}")
            new[new.index(-1)] = total // known
        top = bottom[:start] + tuple(new) + bottom[end:]
        if math.prod(top) != math.prod(bottom):
            raise self.error(f"cannot reshape bottom {bottom} ({math.prod(bottom)} values) to {top}")
        self.top_shapes = [top]
        self.start, self.end, self.new = start, end, tuple(new)

    def forward(self, x):
        shape = tuple(x.shape[:self.start]) + self.new + tuple(x.shape[self.end:])
        return (x.reshape(shape),)


class Scale(Layer):
    """``Scale``: multiply by bottom[1] or a learned blob (plus an optional bias),
    broadcast along axes ``axis`` .. ``axis + num_axes``."""

    n_bottoms = (1, 2)

    def __init__(self, param, bottom_shapes, phase, generator=None):
        super().__init__(param, bottom_shapes, phase, generator)
        p = param.scale_param
        shapes = self.bottom_shapes
        bottom = shapes[0]
        if len(shapes) == 2:
            scale_shape = shapes[1]
        else:
            axis = self.canonical_axis(p.axis, len(bottom)) if bottom else 0
            n = len(bottom) - axis if p.num_axes == -1 else p.num_axes
            scale_shape = bottom[axis:axis + n]
            if p.num_axes < -1 or axis + n > len(bottom):
                raise self.error(f"num_axes {p.num_axes} is out of range for bottom shape {bottom}")
        # A scalar scale needs no axis; otherwise axis indexes bottom[0].
        self.axis = self.canonical_axis(p.axis, len(bottom)) if scale_shape else 0
        if tuple(bottom[self.axis:self.axis + len(scale_shape)]) != tuple(scale_shape):
            raise self.error(f"scale of shape {scale_shape} does not match bottom {bottom} at axis {self.axis}")
        self.trailing = len(bottom) - self.axis - len(scale_shape)
        if len(shapes) == 1:
            filler = p.filler if p.HasField("filler") else caffe_pb2.FillerParameter(type="constant", value=1.0)
            self.add_blob("weight", scale_shape, filler)
        self.bias = None
        if p.bias_term:
            self.add_blob("bias", scale_shape, p.bias_filler if p.HasField("bias_filler") else None)
        self.top_shapes = [bottom]

    def _expand(self, t):
        return t.reshape(tuple(t.shape) + (1,) * self.trailing)

    def forward(self, x, *rest):
        scale = rest[0] if rest else self.weight
        out = x * self._expand(scale)
        if self.bias is not None:
            out = out + self._expand(self.bias)
        return (out,)


# ---------------------------------------------------------------------------
# Losses


def _loss_normalizer(layer: Layer, param: LayerParameter, shape: Shape, axis: int) -> tuple[int, float]:
    lp = param.loss_param
    modes = caffe_pb2.LossParameter
    if lp.HasField("normalization"):
        mode = lp.normalization
    elif lp.HasField("normalize"):
        mode = modes.VALID if lp.normalize else modes.BATCH_SIZE
    else:
        mode = modes.BATCH_SIZE
    if lp.HasField("ignore_label"):
        raise layer.error("loss_param.ignore_label is not supported")
    count = math.prod(shape)
    outer = math.prod(shape[:axis])
    value = {modes.FULL: count, modes.VALID: count, modes.BATCH_SIZE: outer, modes.NONE: 1}[mode]
    return mode, float(max(value, 1))


class SigmoidCrossEntropyLoss(Layer):
    """``SigmoidCrossEntropyLoss`` with Caffe's stable form and soft targets.

    loss = -sum[x (t - [x>=0]) - log(1 + exp(x - 2 x [x>=0]))] / normalizer,
    normalizer = batch size unless loss_param says otherwise (Caffe's default
    for this layer, unlike SoftmaxWithLoss). Computed in float32 even under
    autocast.
    """

    is_loss = True
    n_bottoms = 2

    def __init__(self, param, bottom_shapes, phase, generator=None):
        super().__init__(param, bottom_shapes, phase, generator)
        x, t = self.bottom_shapes
        if math.prod(x) != math.prod(t):
            raise self.error(f"scores {x} and targets {t} must have the same number of values")
        self.normalizer = _loss_normalizer(self, param, x, 1)[1]
        self.top_shapes = [()]

    def forward(self, x, t):
        x = x.float()
        t = t.float().reshape(x.shape)
        loss = F.binary_cross_entropy_with_logits(x, t, reduction="sum")
        return (loss / self.normalizer,)


class EuclideanLoss(Layer):
    """``EuclideanLoss``: sum((a - b)^2) / (2 N)."""

    is_loss = True
    n_bottoms = 2

    def __init__(self, param, bottom_shapes, phase, generator=None):
        super().__init__(param, bottom_shapes, phase, generator)
        a, b = self.bottom_shapes
        if math.prod(a) != math.prod(b) or (a and b and a[0] != b[0]):
            raise self.error(f"bottoms of shapes {a} and {b} must match")
        self.top_shapes = [()]

    def forward(self, a, b):
        diff = a.float() - b.float().reshape(a.shape)
        return ((diff * diff).sum() / (2.0 * a.shape[0]),)


#: Layer type string (as in the prototxt) -> class. Python layers are resolved
#: separately (see salicon.engine.python_layers).
LAYER_TYPES: dict[str, Callable[..., Layer]] = {
    "Input": Input,
    "Convolution": Convolution,
    "Pooling": Pooling,
    "InnerProduct": InnerProduct,
    "ReLU": ReLU,
    "Sigmoid": Sigmoid,
    "TanH": TanH,
    "Dropout": Dropout,
    "Softmax": Softmax,
    "Concat": Concat,
    "Eltwise": Eltwise,
    "Flatten": Flatten,
    "Reshape": Reshape,
    "Scale": Scale,
    "SigmoidCrossEntropyLoss": SigmoidCrossEntropyLoss,
    "EuclideanLoss": EuclideanLoss,
}
