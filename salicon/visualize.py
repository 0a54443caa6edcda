"""Pictures of saliency maps: 8-bit grayscale, heatmap overlays, thresholding."""
from __future__ import annotations

import numpy as np


def threshold_map(saliency_map: np.ndarray, threshold: float) -> np.ndarray:
    """Zero every value below ``threshold`` (in [0, 1]) for a crisper map, as the
    OpenSALICON report suggests; values above it are kept."""
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    return np.where(saliency_map >= threshold, saliency_map, 0.0).astype(np.float32)


def to_uint8(saliency_map: np.ndarray) -> np.ndarray:
    """A [0, 1] map as 8-bit grayscale (0..255, rounded)."""
    return np.round(np.clip(saliency_map, 0.0, 1.0) * 255.0).astype(np.uint8)


def jet(values: np.ndarray) -> np.ndarray:
    """The classic 'jet' colormap (blue - cyan - yellow - red) of [0, 1] values, HxWx3 uint8."""
    v = np.clip(values, 0.0, 1.0)[..., None]
    centres = np.array([0.75, 0.5, 0.25])  # red, green, blue peaks
    rgb = np.clip(1.5 - np.abs(4.0 * v - 4.0 * centres), 0.0, 1.0)
    return np.round(rgb * 255.0).astype(np.uint8)


def overlay(image_rgb: np.ndarray, saliency_map: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend the jet heatmap of ``saliency_map`` over an RGB image (0..255).

    The heatmap's opacity grows with saliency (up to ``alpha``), so
    non-salient regions show the image almost unchanged.
    """
    if image_rgb.shape[:2] != saliency_map.shape:
        raise ValueError(f"image {image_rgb.shape[:2]} and map {saliency_map.shape} sizes differ")
    heat = jet(saliency_map).astype(np.float32)
    weight = alpha * np.clip(saliency_map, 0.0, 1.0)[..., None] ** 0.5
    out = image_rgb.astype(np.float32) * (1.0 - weight) + heat * weight
    return np.round(np.clip(out, 0, 255)).astype(np.uint8)
