"""Exceptions raised by the package. Every message names the file, layer or
field at fault and what is wrong with it."""
from __future__ import annotations


class SaliconError(Exception):
    """Base class of all errors this package raises on purpose."""


class FormatError(SaliconError):
    """A prototxt or .caffemodel file that cannot be read or does not fit."""


class NetError(SaliconError):
    """A net definition that cannot be built (unsupported layer, bad sizes)."""

    def __init__(self, layer: str, layer_type: str, message: str):
        self.layer = layer
        self.layer_type = layer_type
        super().__init__(f"layer '{layer}' (type {layer_type}): {message}")


class ImageError(SaliconError):
    """An image that is missing, unreadable or empty."""


class ImageTooLargeError(ImageError):
    """An image with more pixels than the configured limit (refused before decoding)."""


class EngineError(SaliconError):
    """A requested engine or device that is not available."""
