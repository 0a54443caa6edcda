"""The PyTorch engine: Caffe nets from prototxt files, run by PyTorch."""
from .layers import LAYER_TYPES, Layer
from .net import ConstantPrefix, Net, ParamInfo, count_flops
from .pylayer import Blob
from .python_layers import LayerFile, PythonLayerInfo

__all__ = ["Net", "ConstantPrefix", "ParamInfo", "Layer", "LAYER_TYPES", "Blob", "count_flops", "LayerFile",
           "PythonLayerInfo"]
