"""Loading images as float RGB arrays on the 0..255 scale.

Accepts a path, a PIL image or a numpy array, and normalises the many forms an
image takes: EXIF orientation, grayscale, palette, alpha, CMYK, 16-bit and
float pixels. Anything that cannot be an image raises :class:`ImageError`.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError, ImageTooLargeError

ImageLike = Union[str, os.PathLike, Image.Image, np.ndarray, bytes]

#: Default limit on an image's pixels: PIL's own refusal threshold (2 x its
#: MAX_IMAGE_PIXELS), about 179 megapixels, e.g. 13000 x 13000.
DEFAULT_MAX_PIXELS = 2 * 89_478_485

#: File name suffixes treated as images when a folder is given.
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".gif", ".webp",
                  ".ppm", ".pgm", ".pnm", ".jfif"}
#: The image formats those suffixes stand for, as messages and the web page name them.
IMAGE_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "TIFF", "WebP", "PNM")
#: File suffixes read as videos (salicon.video), by ``salicon predict`` among images.
VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts",
                            ".m2ts", ".wmv", ".flv", ".3gp", ".ogv", ".y4m"})


def is_video_name(name: str | os.PathLike) -> bool:
    """Whether a file name (or URI) has one of the video suffixes."""
    return Path(str(name).split("://")[-1]).suffix.lower() in VIDEO_SUFFIXES


def _composite_on_white(img: Image.Image) -> Image.Image:
    rgba = img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _upright_rgb(img: Image.Image, name: str) -> Image.Image | np.ndarray:
    """``img`` upright (EXIF) as an 8-bit RGB PIL image; a high-bit-depth grey one
    as a float32 HxWx3 array on the 0..255 scale."""
    if img.width == 0 or img.height == 0:
        raise ImageError(f"{name}: the image is empty ({img.width}x{img.height} pixels)")
    if img.getexif().get(0x0112, 1) != 1:  # only a rotated image pays for a transposed copy
        img = ImageOps.exif_transpose(img)
    mode = img.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        # High bit depth grayscale: 16-bit data is rescaled to 0..255.
        arr = np.asarray(img, dtype=np.float64)
        if mode.startswith("I;16") or arr.max(initial=0) > 255:
            arr = arr * (255.0 / 65535.0)
        arr = np.clip(arr, 0, 255).astype(np.float32)
        return np.repeat(arr[:, :, None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in img.info):
        img = _composite_on_white(img)
    elif mode != "RGB":
        img = img.convert("RGB")
    return img


def _pil_to_rgb_array(img: Image.Image, name: str, as_float: bool = True) -> np.ndarray:
    upright = _upright_rgb(img, name)
    if isinstance(upright, np.ndarray):
        return upright
    img = upright
    if as_float:
        return np.asarray(img, dtype=np.float32)
    if img.width * img.height > _STRIP_PIXELS:
        return _rgb_in_strips(img)
    return np.asarray(img)


#: Images with more pixels are copied out of PIL a strip of rows at a time.
_STRIP_PIXELS = 1 << 24


class RowReader:
    """A huge image's 8-bit RGB rows, copied out of the decoded PIL image a band
    at a time when asked for (``reader[start:stop]``), so drawing on it band by
    band never needs a second copy of the whole image. ``shape`` is (H, W, 3)."""

    def __init__(self, img: Image.Image):
        self._img = img
        self.shape = (img.height, img.width, 3)

    def __getitem__(self, rows: slice) -> np.ndarray:
        if not isinstance(rows, slice):
            raise TypeError("a RowReader is read by slices of rows")
        start, stop, step = rows.indices(self.shape[0])
        band = np.asarray(self._img.crop((0, start, self.shape[1], max(start, stop))))
        return band[::step] if step != 1 else band


def load_image_rows(source: str | os.PathLike | bytes, *, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                    name: str | None = None) -> np.ndarray | RowReader:
    """:func:`load_image` with ``as_float=False``, except that an 8-bit image of
    more than 16 M pixels comes as a :class:`RowReader` over the decoded image
    (what a picture drawn band by band needs: a 13000 x 13000 photo then costs
    PIL's own buffer only, not that plus a 0.5 GB array)."""
    if not isinstance(source, (str, os.PathLike)) or not Path(source).is_file() or not Path(source).stat().st_size:
        return load_image(source, as_float=False, max_pixels=max_pixels, name=name)  # its errors
    path = Path(source)
    with _decode_errors(str(path), max_pixels):
        img = _open_checked(path, str(path), max_pixels)
        img.load()
        if img.width * img.height <= _STRIP_PIXELS:
            with img:
                return _pil_to_rgb_array(img, str(path), as_float=False)
        rgb = _upright_rgb(img, str(path))
        return rgb if isinstance(rgb, np.ndarray) else RowReader(rgb)


def _rgb_in_strips(img: Image.Image) -> np.ndarray:
    """The 8-bit RGB array of ``img`` filled a strip of rows at a time: ``np.asarray``
    of the whole image goes through a bytes copy that, with PIL's own buffer, needs
    twice the array's size on top (a 13000 x 13000 photo: 1 GB more)."""
    out = np.empty((img.height, img.width, 3), dtype=np.uint8)
    rows = max(1, _STRIP_PIXELS // 16 // img.width)
    for top in range(0, img.height, rows):
        bottom = min(img.height, top + rows)
        out[top:bottom] = np.asarray(img.crop((0, top, img.width, bottom)))
    return out


def _array_to_rgb(arr: np.ndarray, name: str, as_float: bool = True) -> np.ndarray:
    if arr.size == 0:
        raise ImageError(f"{name}: the image array is empty (shape {arr.shape})")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ImageError(f"{name}: expected an HxW, HxWx3 or HxWx4 array, got shape {arr.shape}")
    if not as_float and arr.dtype == np.uint8 and arr.shape[2] == 3:
        return arr  # already what the net's preprocessing reads; no float copy
    if arr.dtype == np.uint16:
        rgb = arr.astype(np.float32) * (255.0 / 65535.0)
    elif arr.dtype == bool:
        rgb = arr.astype(np.float32) * 255.0
    elif np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating):
        rgb = arr.astype(np.float32)
        if np.issubdtype(arr.dtype, np.floating):
            if not np.isfinite(rgb).all():
                raise ImageError(f"{name}: the image array holds NaN or infinite values")
            if rgb.max(initial=0) <= 1.0:
                warnings.warn(f"{name}: float image with values in [0, 1]; images are read on the "
                              f"0..255 scale (multiply by 255 if that is not intended)", stacklevel=3)
    else:
        raise ImageError(f"{name}: unsupported array dtype {arr.dtype}")
    if rgb.shape[2] == 4:
        alpha = rgb[:, :, 3:] / 255.0
        rgb = rgb[:, :, :3] * alpha + 255.0 * (1.0 - alpha)
    return np.ascontiguousarray(rgb[:, :, :3], dtype=np.float32)


def check_pixels(width: int, height: int, max_pixels: int | None, name: str) -> None:
    """Refuse an image larger than ``max_pixels`` (None: no limit) before it is decoded."""
    if max_pixels is not None and width * height > max_pixels:
        raise ImageTooLargeError(name, max_pixels, width * height, (width, height))


def _open_checked(source, name: str, max_pixels: int | None) -> Image.Image:
    """PIL's lazy open, with the project's own pixel limit in place of PIL's warning
    and error; PIL's process-wide ``MAX_IMAGE_PIXELS`` is read, never written."""
    pil_limit = 2 * Image.MAX_IMAGE_PIXELS if Image.MAX_IMAGE_PIXELS else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(source)
        except Image.DecompressionBombError:
            if pil_limit is not None and max_pixels is not None and max_pixels <= pil_limit:
                raise  # past our own limit too: reported as such by the caller
            img = _open_past_pil_limit(source)  # type: ignore[assignment]  # the user lifted the limit past PIL's refusal threshold
    check_pixels(img.width, img.height, max_pixels, name)
    return img


def _open_past_pil_limit(source) -> Image.Image:
    """Open ``source`` as ``Image.open`` does, through PIL's registered format
    openers, without its process-wide decompression-bomb check (the caller
    checks the size against its own limit)."""
    fp = open(source, "rb") if isinstance(source, (str, os.PathLike)) else source
    Image.init()
    fp.seek(0)
    prefix = fp.read(16)
    for fmt in Image.ID:
        factory, accept = Image.OPEN[fmt]
        if accept is not None and not accept(prefix):
            continue
        fp.seek(0)
        try:
            img = factory(fp, str(source) if fp is not source else "")
        except (SyntaxError, IndexError, TypeError, ValueError, OSError):
            continue
        img._exclusive_fp = fp is not source  # closing the image closes the file we opened, as Image.open's does
        return img
    if fp is not source:
        fp.close()
    raise UnidentifiedImageError("cannot identify image file")


def load_image(source: ImageLike, *, as_float: bool = True,
               max_pixels: int | None = DEFAULT_MAX_PIXELS, name: str | None = None) -> np.ndarray:
    """An image as an HxWx3 RGB array with values on the 0..255 scale.

    ``source`` is a path, a PIL image, a numpy array or the bytes of an
    encoded image file. Paths are decoded with PIL and turned upright by their
    EXIF orientation. Grayscale is replicated to three channels, palette
    images expanded, transparent pixels composited over white, CMYK converted,
    and 16-bit values rescaled (x 255/65535). Arrays: uint8 as is, uint16
    rescaled, floats taken on the 0..255 scale.

    The result is float32; with ``as_float=False`` an 8-bit image stays uint8
    (a quarter of the memory, for huge images). Files larger than
    ``max_pixels`` (None: no limit) are refused before they are decoded.
    ``name`` is how error messages call a source that is not a path (an
    upload's file name, say).
    """
    if isinstance(source, np.ndarray):
        return _array_to_rgb(source, name or "array", as_float)
    if isinstance(source, Image.Image):
        return _pil_to_rgb_array(source, name or "PIL image", as_float)
    if isinstance(source, (bytes, bytearray, memoryview)):
        name = name or f"<{len(source)} bytes>"
        if not len(source):
            raise ImageError(f"{name}: empty data (0 bytes), not an image")
        return _decode(io.BytesIO(bytes(source)), name, as_float, max_pixels)
    if not isinstance(source, (str, os.PathLike)):
        raise ImageError(f"cannot read an image from a {type(source).__name__}; give a path, a PIL image, "
                         f"a numpy array (HxW, HxWx3 or HxWx4) or the bytes of an image file")
    path = Path(source)
    if not path.exists():
        raise ImageError(f"{path}: no such image file")
    if path.is_dir():
        raise ImageError(f"{path}: is a directory, not an image")
    if path.is_file() and path.stat().st_size == 0:
        raise ImageError(f"{path}: the file is empty (0 bytes), not an image")
    return _decode(path, str(path), as_float, max_pixels)


def _decode(source, name: str, as_float: bool, max_pixels: int | None) -> np.ndarray:
    with _decode_errors(name, max_pixels):
        with _open_checked(source, name, max_pixels) as img:
            img.load()
            return _pil_to_rgb_array(img, name, as_float)


@contextlib.contextmanager
def _decode_errors(name: str, max_pixels: int | None):
    """PIL's errors while opening and decoding ``name`` as this package's ImageErrors."""
    try:
        yield
    except UnidentifiedImageError:
        if is_video_name(name):
            raise ImageError(f"{name}: is a video, not an image; Salicon.video_saliency(path) gives a map per "
                             f"frame, and `salicon predict` writes map videos") from None
        raise ImageError(f"{name}: not an image file (PIL cannot identify its format)") from None
    except Image.DecompressionBombError as exc:  # PIL's own threshold, met before the header is ours to see
        found = re.search(r"\((\d+) pixels\)", str(exc))
        limit = max_pixels if max_pixels is not None else 2 * (Image.MAX_IMAGE_PIXELS or 0)
        raise ImageTooLargeError(name, limit, int(found.group(1)) if found else None) from None
    except MemoryError:
        raise ImageError(f"{name}: not enough memory to decode the image") from None
    except (OSError, SyntaxError, ValueError) as exc:  # truncated or corrupt data
        raise ImageError(f"{name}: cannot decode the image ({exc})") from None
