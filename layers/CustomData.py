"""Caffe Python layer ``CustomData``: an input blob fed directly from Python.

Used as in OpenSALICON::

    layer {
      name: "FineCustomData"  type: "Python"  top: "fine_scale"
      python_param { module: "CustomData" layer: "CustomData" param_str: "1,3,1200,1600" }
    }

``param_str`` is the top blob's shape N,C,H,W. The layer computes nothing:
callers write ``net.blobs["fine_scale"].data[...]`` before ``net.forward()``.
It runs in real Caffe (then it subclasses ``caffe.Layer``) and imports without
pycaffe; the PyTorch engine replaces it by a native net input.
"""
try:
    import caffe
    _Base = caffe.Layer
except ImportError:  # pycaffe absent: the class stays importable
    _Base = object


def parse_shape(param_str, layer_name="CustomData"):
    """``"1,3,1200,1600"`` -> (1, 3, 1200, 1600), with a clear error otherwise."""
    try:
        shape = tuple(int(v) for v in str(param_str).replace(" ", "").split(","))
    except ValueError:
        shape = ()
    if len(shape) != 4 or any(d <= 0 for d in shape):
        raise ValueError("%s: param_str %r must be four positive integers N,C,H,W"
                         % (layer_name, param_str))
    return shape


class CustomData(_Base):
    def setup(self, bottom, top):
        if len(bottom) != 0 or len(top) != 1:
            raise ValueError("CustomData takes no bottom blob and exactly one top blob")
        self.shape = parse_shape(self.param_str)
        top[0].reshape(*self.shape)

    def reshape(self, bottom, top):
        # The shape is set once in setup; a caller may reshape the blob itself
        # (e.g. another batch size) and that shape must survive.
        pass

    def forward(self, bottom, top):
        pass

    def backward(self, top, propagate_down, bottom):
        pass
