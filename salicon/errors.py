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


class EngineError(SaliconError):
    """A requested engine or device that is not available."""


def describe_pixels(count: int) -> str:
    """A pixel count as people read it: '5000 pixels' when small, '50.0 megapixels' when not."""
    return f"{count} pixels" if count < 100_000 else f"{count / 1e6:.1f} megapixels"


def _plain(name: str) -> str:
    return name


class OptionError(SaliconError, ValueError):
    """An option whose value, or whose combination with another, is not allowed.

    ``options`` are the Python names of the options involved (the one at fault
    first); ``template`` is the message with each of them written ``{name}``.
    A front end phrases it with :meth:`describe` (``--max-pixels`` on the
    command line, ``max_pixels`` in Python and in HTTP); ``str()`` is the
    Python phrasing.
    """

    def __init__(self, template: str, *options: str):
        self.template = template
        self.options = options
        super().__init__(self.describe())

    @property
    def option(self) -> str | None:
        """The option at fault (the first one named), if any."""
        return self.options[0] if self.options else None

    def describe(self, spell=_plain) -> str:
        """The message with every option written as ``spell(name)``."""
        return self.template.format(**{name: spell(name) for name in self.options})


class ImageTooLargeError(ImageError):
    """An image with more pixels than the configured limit (refused before decoding).

    ``name``, ``pixels`` (None when only PIL's refusal is known), ``size``
    (width, height, when read) and ``limit`` are the facts; :meth:`describe`
    phrases the way out (``raise_with``: how a user lifts the limit).
    """

    def __init__(self, name: str, limit: int, pixels: int | None = None, size: tuple[int, int] | None = None):
        self.name, self.limit, self.pixels, self.size = name, limit, pixels, size
        super().__init__(self.describe())

    def describe(self, raise_with: str = "max_pixels=", who: str = "") -> str:
        if self.size is not None:
            what = f"{self.size[0]}x{self.size[1]} pixels ({describe_pixels(self.size[0] * self.size[1])})"
        else:
            what = describe_pixels(self.pixels) if self.pixels else "its size"
        return (f"{self.name}: {what} exceeds the limit of {describe_pixels(self.limit)}; "
                f"{who + ' can raise' if who else 'raise'} it with {raise_with} if you trust the file")
