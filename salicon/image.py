"""Loading images as float RGB arrays on the 0..255 scale.

Accepts a path, a PIL image or a numpy array, and normalises the many forms an
image takes: EXIF orientation, grayscale, palette, alpha, CMYK, 16-bit and
float pixels. Anything that cannot be an image raises :class:`ImageError`.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError

ImageLike = Union[str, os.PathLike, Image.Image, np.ndarray]

#: File name suffixes treated as images when a folder is given.
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".gif", ".webp",
                  ".ppm", ".pgm", ".pnm", ".jfif"}


def _composite_on_white(img: Image.Image) -> Image.Image:
    rgba = img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _pil_to_rgb_array(img: Image.Image, name: str) -> np.ndarray:
    if img.width == 0 or img.height == 0:
        raise ImageError(f"{name}: the image is empty ({img.width}x{img.height} pixels)")
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
    return np.asarray(img, dtype=np.float32)


def _array_to_rgb(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.size == 0:
        raise ImageError(f"{name}: the image array is empty (shape {arr.shape})")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ImageError(f"{name}: expected an HxW, HxWx3 or HxWx4 array, got shape {arr.shape}")
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


def load_image(source: ImageLike) -> np.ndarray:
    """An image as an HxWx3 float32 RGB array with values on the 0..255 scale.

    Paths are decoded with PIL and turned upright by their EXIF orientation.
    Grayscale is replicated to three channels, palette images expanded,
    transparent pixels composited over white, CMYK converted, and 16-bit
    values rescaled (x 255/65535). Arrays: uint8 as is, uint16 rescaled,
    floats taken on the 0..255 scale.
    """
    if isinstance(source, np.ndarray):
        return _array_to_rgb(source, "array")
    if isinstance(source, Image.Image):
        return _pil_to_rgb_array(source, "PIL image")
    path = Path(source)
    if not path.exists():
        raise ImageError(f"{path}: no such image file")
    if path.is_dir():
        raise ImageError(f"{path}: is a directory, not an image")
    try:
        with Image.open(path) as img:
            img.load()
            return _pil_to_rgb_array(img, str(path))
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image file (PIL cannot identify its format)") from None
    except (OSError, SyntaxError, ValueError) as exc:  # truncated or corrupt data
        raise ImageError(f"{path}: cannot decode the image ({exc})") from None
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{path}: {exc}") from None

