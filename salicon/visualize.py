"""Pictures: saliency maps as 8-bit grayscale, heatmap overlays, thresholds,
and the loss curve of a training run."""
from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import numpy as np
from PIL import Image, ImageDraw

#: Row bands of at most this many pixels keep whole-image float temporaries
#: out of the pictures of huge images.
_BAND_PIXELS = 1 << 22


def _row_bands(height: int, width: int):
    rows = max(1, _BAND_PIXELS // max(1, width))
    for start in range(0, height, rows):
        yield slice(start, min(height, start + rows))


def threshold_map(saliency_map: np.ndarray, threshold: float) -> np.ndarray:
    """Zero every value below ``threshold`` (in [0, 1]) for a crisper map, as the
    OpenSALICON report suggests; values above it are kept."""
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    out = np.array(saliency_map, dtype=np.float32)
    out[out < threshold] = 0.0
    return out


def to_uint8(saliency_map: np.ndarray) -> np.ndarray:
    """A [0, 1] map as 8-bit grayscale (0..255, rounded)."""
    out = np.empty(saliency_map.shape, dtype=np.uint8)
    for rows in _row_bands(*saliency_map.shape[:2]):
        out[rows] = np.round(np.clip(saliency_map[rows], 0.0, 1.0) * 255.0)
    return out


def jet(values: np.ndarray) -> np.ndarray:
    """The classic 'jet' colormap (blue - cyan - yellow - red) of [0, 1] values, HxWx3 uint8."""
    v = np.clip(values, 0.0, 1.0)[..., None]
    centres = np.array([0.75, 0.5, 0.25], dtype=np.float32)  # red, green, blue peaks
    rgb = np.clip(1.5 - np.abs(4.0 * v - 4.0 * centres), 0.0, 1.0)
    return np.round(rgb * 255.0).astype(np.uint8)


def overlay(image_rgb: np.ndarray, saliency_map: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend the jet heatmap of ``saliency_map`` over an RGB image (0..255).

    The heatmap's opacity grows with saliency (up to ``alpha``), so
    non-salient regions show the image almost unchanged. Computed in bands
    of rows, so a huge picture needs no float copy of its own size.
    """
    out = np.empty(saliency_map.shape + (3,), dtype=np.uint8)
    for rows, band in zip(_row_bands(*saliency_map.shape), overlay_bands(image_rgb, saliency_map, alpha)):
        out[rows] = band
    return out


def overlay_bands(image_rgb: np.ndarray, saliency_map: np.ndarray, alpha: float = 0.5) -> Iterator[np.ndarray]:
    """:func:`overlay`'s picture as bands of rows (uint8, top to bottom), one at a time."""
    if image_rgb.shape[:2] != saliency_map.shape:
        raise ValueError(f"image {image_rgb.shape[:2]} and map {saliency_map.shape} sizes differ")
    for rows in _row_bands(*saliency_map.shape):
        sal = saliency_map[rows].astype(np.float32)
        heat = jet(sal).astype(np.float32)
        weight = alpha * np.sqrt(np.clip(sal, 0.0, 1.0))[..., None]
        blend = image_rgb[rows].astype(np.float32) * (1.0 - weight) + heat * weight
        yield np.round(np.clip(blend, 0, 255)).astype(np.uint8)


def salient_points(saliency_map: np.ndarray, count: int = 5, min_distance: float = 0.1,
                   min_value: float = 0.2) -> list[tuple[int, int, float]]:
    """The ``count`` most salient points of a map as ``(x, y, value)``, highest first.

    Points are local maxima at least ``min_distance`` (a fraction of the
    longer side) apart and at least ``min_value`` times the map's maximum.
    They are searched on a copy at most 256 pixels on a side, so huge maps
    cost little, and reported in the map's own pixel coordinates.
    """
    from scipy import ndimage

    height, width = saliency_map.shape
    step = max(1, int(np.ceil(max(height, width) / 256)))
    small = np.asarray(saliency_map[::step, ::step], dtype=np.float32)
    peak = float(small.max(initial=0.0))
    if not np.isfinite(peak) or peak <= 0.0:
        return []
    radius = max(1, int(round(min_distance * max(small.shape))))
    footprint = np.hypot(*np.ogrid[-radius:radius + 1, -radius:radius + 1]) <= radius
    maxima = (small == ndimage.maximum_filter(small, footprint=footprint, mode="constant", cval=-1.0))
    maxima &= small >= min_value * peak
    ys, xs = np.nonzero(maxima)
    order = np.argsort(-small[ys, xs], kind="stable")
    points: list[tuple[int, int, float]] = []
    for i in order:
        # Plateaus give several equal maxima side by side: keep the first of them.
        if all(np.hypot(xs[i] - x / step, ys[i] - y / step) > radius for x, y, _ in points):
            # Refine on the full map, within one grid step of the coarse maximum.
            y0, x0 = max(0, (int(ys[i]) - 1) * step), max(0, (int(xs[i]) - 1) * step)
            window = np.asarray(saliency_map[y0:y0 + 3 * step, x0:x0 + 3 * step], dtype=np.float32)
            dy, dx = np.unravel_index(int(np.argmax(window)), window.shape)
            y, x = y0 + int(dy), x0 + int(dx)
            points.append((x, y, float(saliency_map[y, x])))
        if len(points) == count:
            break
    return points


def plot_loss_curve(history: Sequence[dict], path: str | os.PathLike, size=(800, 450)) -> None:
    """Draw training loss (per logged iteration) and validation loss (per
    epoch) against iterations, as a PNG (log-scaled loss axis)."""
    train = [(r["iter"], r["loss"]) for r in history if r.get("event") == "train" and np.isfinite(r["loss"])]
    val = [(r["iter"], r["val_loss"]) for r in history
           if r.get("event") in ("epoch", "end") and r.get("val_loss") is not None]
    points = [v for _, v in train + val if v > 0]
    if not points:
        raise ValueError("nothing to plot")
    w, h = size
    left, right, top, bottom = 70, 20, 30, 45
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    x_max = max(1, max(i for i, _ in train + val))
    lo, hi = np.log10(min(points)), np.log10(max(points))
    if hi - lo < 1e-6:
        lo, hi = lo - 0.5, hi + 0.5

    def xy(it, value):
        x = left + (w - left - right) * it / x_max
        y = top + (h - top - bottom) * (1 - (np.log10(max(value, 1e-300)) - lo) / (hi - lo))
        return x, y

    draw.rectangle([left, top, w - right, h - bottom], outline="black")
    for k in range(5):
        value = 10 ** (lo + (hi - lo) * k / 4)
        x, y = xy(0, value)
        draw.line([left - 4, y, left, y], fill="black")
        draw.text((5, y - 6), f"{value:.3g}", fill="black")
        it = x_max * k / 4
        x, _ = xy(it, 1.0)
        draw.line([x, h - bottom, x, h - bottom + 4], fill="black")
        draw.text((x - 10, h - bottom + 8), f"{int(it)}", fill="black")
    draw.text((w // 2 - 30, h - 18), "iteration", fill="black")
    if len(train) > 1:
        draw.line([xy(i, v) for i, v in train], fill=(31, 119, 180), width=2)
    for i, v in val:
        x, y = xy(i, v)
        draw.ellipse([x - 4, y - 4, x + 4, y + 4], fill=(214, 39, 40))
    draw.text((left + 10, 8), "training loss (blue), validation loss (red)", fill="black")
    img.save(path)


def plot_validation_curve(history: Sequence[dict], path: str | os.PathLike,
                          metrics: Sequence[str] = ("NSS", "CC", "AUC_Judd"), panel=(300, 240)) -> None:
    """Draw the validation metrics of a training log (``val_<metric>`` of its
    epoch and end records) against iterations, one panel per metric (PNG)."""
    records = [r for r in history if r.get("event") in ("epoch", "end")]
    series = {m: [(r["iter"], r[f"val_{m}"]) for r in records
                  if r.get(f"val_{m}") is not None and np.isfinite(r[f"val_{m}"])] for m in metrics}
    series = {m: v for m, v in series.items() if v}
    if not series:
        raise ValueError("no validation metrics to plot")
    pw, ph = panel
    left, right, top, bottom = 55, 15, 30, 40
    img = Image.new("RGB", (pw * len(series), ph), "white")
    draw = ImageDraw.Draw(img)
    x_max = max(1, max(i for v in series.values() for i, _ in v))
    for k, (metric, points) in enumerate(series.items()):
        x0 = pw * k
        values = [v for _, v in points]
        lo, hi = min(values), max(values)
        pad = max(hi - lo, 1e-3) * 0.1
        lo, hi = lo - pad, hi + pad

        def xy(it, value, x0=x0, lo=lo, hi=hi):
            return (x0 + left + (pw - left - right) * it / x_max,
                    top + (ph - top - bottom) * (1 - (value - lo) / (hi - lo)))

        draw.rectangle([x0 + left, top, x0 + pw - right, ph - bottom], outline="black")
        for t in range(3):
            value = lo + (hi - lo) * t / 2
            _, y = xy(0, value)
            draw.text((x0 + 5, y - 6), f"{value:.3f}", fill="black")
            it = x_max * t / 2
            x, _ = xy(it, lo)
            draw.text((x - 12, ph - bottom + 6), f"{int(it)}", fill="black")
        draw.text((x0 + pw // 2 - 25, ph - 18), "iteration", fill="black")
        draw.text((x0 + left + 5, 8), f"validation {metric}", fill="black")
        if len(points) > 1:
            draw.line([xy(i, v) for i, v in points], fill=_COLOURS[k % len(_COLOURS)], width=2)
        for i, v in points:
            x, y = xy(i, v)
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=_COLOURS[k % len(_COLOURS)])
    img.save(path)


_COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189)]


def score_histograms(evaluation, path: str | os.PathLike, bins: int = 20) -> None:
    """One histogram panel per metric, a colour per model (PNG)."""
    metrics, models = evaluation.metrics, evaluation.models()
    cols = 3
    rows = -(-len(metrics) // cols)
    pw, ph = 300, 200
    img = Image.new("RGB", (cols * pw, rows * ph + 30), "white")
    draw = ImageDraw.Draw(img)
    for k, model in enumerate(models):
        draw.rectangle([10 + 150 * k, 8, 22 + 150 * k, 20], fill=_COLOURS[k % len(_COLOURS)])
        draw.text((26 + 150 * k, 8), model, fill="black")
    for i, metric in enumerate(metrics):
        x0, y0 = (i % cols) * pw, (i // cols) * ph + 30
        values = {m: np.array([r[metric] for r in evaluation.rows if r["model"] == m], float) for m in models}
        finite = np.concatenate([v[np.isfinite(v)] for v in values.values()] or [np.zeros(0)])
        draw.text((x0 + 10, y0 + 4), metric, fill="black")
        if finite.size == 0:
            continue
        lo, hi = float(finite.min()), float(finite.max())
        hi = hi if hi > lo else lo + 1.0
        edges = np.linspace(lo, hi, bins + 1)
        counts = {m: np.histogram(v[np.isfinite(v)], edges)[0] for m, v in values.items()}
        top = max(1, max(c.max() for c in counts.values()))
        left, right, bottom, height = x0 + 10, x0 + pw - 10, y0 + ph - 25, ph - 50
        draw.line([left, bottom, right, bottom], fill="black")
        draw.text((left, bottom + 4), f"{lo:.3g}", fill="black")
        draw.text((right - 30, bottom + 4), f"{hi:.3g}", fill="black")
        bar_w = (right - left) / bins
        for k, c in enumerate(counts.values()):
            colour = _COLOURS[k % len(_COLOURS)]
            for b, n in enumerate(c):
                if n:
                    x = left + b * bar_w + k * bar_w / max(1, len(models))
                    draw.rectangle([x, bottom - height * n / top, x + bar_w / max(1, len(models)) - 1, bottom],
                                   fill=colour)
    img.save(path)


def contact_sheet(evaluation, dataset, predict, path: str | os.PathLike, metric: str = "NSS",
                  model: str = "salicon", n: int = 4, thumb: int = 200) -> None:
    """The ``n`` best and ``n`` worst images by ``metric``: each row shows the
    image, the fixation map over it and the model's map over it (PNG)."""
    from .image import load_image

    rows = [r for r in evaluation.rows if r["model"] == model and np.isfinite(r.get(metric, np.nan))]
    if not rows:
        raise ValueError(f"no finite {metric} scores for {model}")
    rows.sort(key=lambda r: r[metric], reverse=True)
    picked = rows[:n] + [r for r in rows[-n:] if r not in rows[:n]]
    samples = {s.name: s for s in dataset.samples}
    sheet = Image.new("RGB", (3 * thumb + 160, len(picked) * thumb), "white")
    draw = ImageDraw.Draw(sheet)
    for i, r in enumerate(picked):
        sample = samples[r["image"]]
        rgb = load_image(sample.image_path)
        _, density = dataset.ground_truth(sample, rgb.shape[:2])
        pred = np.asarray(predict(sample), dtype=np.float64)
        pred = (pred - pred.min()) / (np.ptp(pred) or 1.0)
        if pred.shape != rgb.shape[:2]:
            resized = Image.fromarray(pred.astype(np.float32)).resize(rgb.shape[1::-1], Image.Resampling.BILINEAR)
            pred = np.asarray(resized)
        tiles = [rgb.astype(np.uint8), overlay(rgb, density), overlay(rgb, np.clip(pred, 0, 1))]
        for j, tile in enumerate(tiles):
            im = Image.fromarray(tile)
            im.thumbnail((thumb, thumb))
            sheet.paste(im, (j * thumb, i * thumb))
        label = "best" if i < n else "worst"
        draw.text((3 * thumb + 8, i * thumb + 8), f"{label}\n{r['image']}\n{metric} {r[metric]:.3f}", fill="black")
    sheet.save(path)
