"""Caffe Python layer ``custom_interpolation_layer``: bilinear resize of a blob.

``param_str`` is N,C,H,W of the top blob (OpenSALICON: "1,512,38,50"); H and W
are used, N and C follow the bottom (C must agree with param_str). The forward
pass equals ``scipy.ndimage.zoom(bottom, (1, 1, H/h, W/w), order=1)``: linear
interpolation whose first and last samples coincide with the bottom's
(align_corners=True). It is written as two small interpolation matrices,
top = A_y . bottom . A_x^T, so the backward pass is the exact adjoint,
bottom_diff = A_y^T . top_diff . A_x. (The published OpenSALICON layer instead
zoomed the top diff back down, which is not the gradient of its forward.)
"""
import numpy as np

try:
    import caffe
    _Base = caffe.Layer
except ImportError:  # pycaffe absent: the class stays importable
    _Base = object


def linear_interp_matrix(n_out, n_in):
    """(n_out, n_in) matrix of linear interpolation with aligned end points."""
    mat = np.zeros((n_out, n_in), dtype=np.float64)
    if n_in == 1 or n_out == 1:
        mat[:, 0] = 1.0
        return mat
    src = np.arange(n_out, dtype=np.float64) * (n_in - 1) / (n_out - 1)
    lo = np.minimum(np.floor(src).astype(np.int64), n_in - 2)
    frac = src - lo
    rows = np.arange(n_out)
    mat[rows, lo] += 1.0 - frac
    mat[rows, lo + 1] += frac
    return mat


def parse_shape(param_str):
    try:
        shape = tuple(int(v) for v in str(param_str).replace(" ", "").split(","))
    except ValueError:
        shape = ()
    if len(shape) != 4 or any(d <= 0 for d in shape):
        raise ValueError("custom_interpolation_layer: param_str %r must be four positive "
                         "integers N,C,H,W" % (param_str,))
    return shape


class custom_interpolation_layer(_Base):  # noqa: N801 (name fixed by the prototxt)
    def setup(self, bottom, top):
        if len(bottom) != 1 or len(top) != 1:
            raise ValueError("custom_interpolation_layer takes one bottom and one top blob")
        _, self.channels, self.out_h, self.out_w = parse_shape(self.param_str)
        self._key = None

    def reshape(self, bottom, top):
        shape = tuple(bottom[0].data.shape)
        if len(shape) != 4:
            raise ValueError("custom_interpolation_layer: bottom must be 4-D, got %s" % (shape,))
        if shape[1] != self.channels:
            raise ValueError("custom_interpolation_layer: param_str %r asks for %d channels but the "
                             "bottom has shape %s" % (self.param_str, self.channels, shape))
        top[0].reshape(shape[0], shape[1], self.out_h, self.out_w)
        key = (shape[2], shape[3])
        if key != self._key:
            self._ay = linear_interp_matrix(self.out_h, shape[2]).astype(np.float32)
            self._ax = linear_interp_matrix(self.out_w, shape[3]).astype(np.float32)
            self._key = key

    def forward(self, bottom, top):
        top[0].data[...] = np.matmul(np.matmul(self._ay, bottom[0].data), self._ax.T)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = np.matmul(np.matmul(self._ay.T, top[0].diff), self._ax)
