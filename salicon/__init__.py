"""SALICON visual saliency (Huang et al., ICCV 2015) as in OpenSALICON, on
PyTorch, from Caffe prototxt and .caffemodel files."""
from .engine import Net
from .errors import EngineError, FormatError, ImageError, NetError, SaliconError
from .image import load_image
from .model import Salicon

__version__ = "0.1.0"

__all__ = ["Salicon", "Net", "load_image", "SaliconError", "FormatError", "NetError",
           "ImageError", "EngineError", "__version__"]
