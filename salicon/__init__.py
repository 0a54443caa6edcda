"""SALICON visual saliency (Huang et al., ICCV 2015) as in OpenSALICON, on
PyTorch, from Caffe prototxt and .caffemodel files."""
from ._version import __version__
from .engine import Net
from .errors import EngineError, FormatError, ImageError, NetError, SaliconError
from .image import load_image
from .model import Salicon

__all__ = ["Salicon", "Net", "load_image", "SaliconError", "FormatError", "NetError",
           "ImageError", "EngineError", "__version__"]
