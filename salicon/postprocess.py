"""Post-processing of the net's map: smoothing, a centre prior, normalisation.

The published SALICON output is the net's map min-max scaled and resized to
the image (``PostProcess()``, spec ``"none"``). The options here build on it,
in this order, on the net's grid (38x50 cells, four times finer when
smoothing; the map is smooth at that scale, so working there costs little
even for huge images):

1. ``blur``: a Gaussian of standard deviation ``blur x max(h, w)`` image pixels;
2. ``prior``: a centre prior, a 2-D Gaussian density over image positions,
   combined with the map by ``combine``: ``"product"`` (log-additive:
   log out = log map + prior_weight x log prior) or ``"mixture"`` (out =
   (1 - w) map + w prior, both summing to 1, w = prior_weight in [0, 1]);
3. the resize to the image (cubic spline, as published), then ``normalize``:
   ``"minmax"`` (values in [0, 1], the most salient pixel 1) or
   ``"probability"`` (positive values summing to 1 over the image: a
   probability map whose log is a log-density, as information gain wants).

A prior is given in one of two coordinate frames. ``"image"``: x / w and
y / h, so its width follows the image's width and its height the image's
height. ``"longer"``: offsets from the image centre divided by max(h, w)
(shifted by 0.5), so it keeps its shape on images of any aspect ratio.
:func:`fit_center_prior` fits either by maximum likelihood to fixations.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import scipy.ndimage
import torch

from .errors import SaliconError
from .preprocess import resize_chw, saliency_to_image_size

COORDS = ("image", "longer")
COMBINE = ("product", "mixture")
NORMALIZE = ("minmax", "probability")
#: Smoothing works on a grid this many times finer than the net's (38x50 -> 152x200).
WORK_UPSAMPLE = 4
#: Floor added (relative to the mean) before a probability map is normalised,
#: so that its log is finite everywhere.
PROBABILITY_FLOOR = 1e-6


class PostProcessError(SaliconError, ValueError):
    """A post-processing specification that is malformed or contradicts itself."""


@dataclass(frozen=True)
class CenterPrior:
    """A 2-D Gaussian over image positions in normalised coordinates (x, y)."""

    mean: tuple[float, float] = (0.5, 0.5)
    cov: tuple[tuple[float, float], tuple[float, float]] = ((0.0625, 0.0), (0.0, 0.0625))
    coords: str = "image"

    def __post_init__(self):
        if self.coords not in COORDS:
            raise PostProcessError(f"prior coords must be one of {COORDS}, not {self.coords!r}")
        cov = np.asarray(self.cov, dtype=float)
        if cov.shape != (2, 2) or not np.allclose(cov, cov.T) or np.linalg.eigvalsh(cov).min() <= 0:
            raise PostProcessError(f"prior covariance must be a symmetric positive definite 2x2 matrix, "
                                   f"got {self.cov}")

    @classmethod
    def gaussian(cls, sigma_y: float = 0.25, sigma_x: float = 0.25, coords: str = "image") -> CenterPrior:
        """A centred Gaussian with standard deviations given as fractions of the image's height and width
        (``coords="image"``) or of its longer side (``"longer"``)."""
        if not (sigma_y > 0 and sigma_x > 0):
            raise PostProcessError(f"prior sigmas must be positive, got {sigma_y}, {sigma_x}")
        return cls((0.5, 0.5), ((sigma_x ** 2, 0.0), (0.0, sigma_y ** 2)), coords)

    def normalised(self, x: np.ndarray, y: np.ndarray, size: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Pixel coordinates (x, y) of an image of ``size`` (h, w) in this prior's frame."""
        h, w = float(size[0]), float(size[1])
        if self.coords == "image":
            return x / w, y / h
        longer = max(h, w)
        return (x - w / 2) / longer + 0.5, (y - h / 2) / longer + 0.5

    def log_density(self, x: np.ndarray, y: np.ndarray, size: Sequence[int]) -> np.ndarray:
        """Log of the Gaussian, up to a constant, at pixel coordinates of an image of ``size``."""
        u, v = np.broadcast_arrays(*self.normalised(np.asarray(x, float), np.asarray(y, float), size))
        d = np.stack([u - self.mean[0], v - self.mean[1]], axis=-1)
        inv = np.linalg.inv(np.asarray(self.cov, dtype=float))
        return -0.5 * np.einsum("...i,ij,...j->...", d, inv, d)

    def on_grid(self, grid: Sequence[int], size: Sequence[int]) -> np.ndarray:
        """The prior (peak 1) at the cells of a ``grid`` (rows, cols) spread over an
        image of ``size`` (h, w) as the published resize spreads them (corners aligned)."""
        rows, cols = int(grid[0]), int(grid[1])
        y = np.linspace(0.0, size[0] - 1.0, rows)[:, None] + 0.5  # pixel centres
        x = np.linspace(0.0, size[1] - 1.0, cols)[None, :] + 0.5
        log = self.log_density(x, y, size)
        return np.exp(log - log.max())

    def to_dict(self) -> dict:
        return {"mean": list(self.mean), "cov": [list(r) for r in self.cov], "coords": self.coords}

    @classmethod
    def from_dict(cls, data: dict) -> CenterPrior:
        try:
            (m0, m1), ((c00, c01), (c10, c11)) = data["mean"], data["cov"]
            return cls((float(m0), float(m1)), ((float(c00), float(c01)), (float(c10), float(c11))),
                       data.get("coords", "image"))
        except (KeyError, TypeError, ValueError) as exc:
            raise PostProcessError(f"malformed centre prior {data!r} ({exc})") from None


def fit_center_prior(fixations: Iterable[tuple[np.ndarray, np.ndarray, Sequence[int]]],
                     coords: str = "image") -> CenterPrior:
    """The maximum-likelihood 2-D Gaussian (mean and full covariance) of
    fixation positions, each image's (x, y, size) in ``coords``' frame.
    Every fixation counts once, so images with more fixations weigh more."""
    probe = CenterPrior(coords=coords)
    us, vs = [], []
    for x, y, size in fixations:
        u, v = probe.normalised(np.asarray(x, float) + 0.5, np.asarray(y, float) + 0.5, size)
        us.append(u)
        vs.append(v)
    if not us or sum(u.size for u in us) < 3:
        raise PostProcessError("fitting a centre prior needs at least 3 fixations")
    points = np.stack([np.concatenate(us), np.concatenate(vs)])
    mean = points.mean(axis=1)
    cov = np.cov(points, bias=True)  # the MLE divides by n
    return CenterPrior((float(mean[0]), float(mean[1])),
                       ((float(cov[0, 0]), float(cov[0, 1])), (float(cov[1, 0]), float(cov[1, 1]))), coords)


@dataclass(frozen=True)
class PostProcess:
    """What happens to the net's raw map on its way to the image (see the module docstring)."""

    blur: float = 0.0
    prior: CenterPrior | None = None
    prior_weight: float = 1.0
    combine: str = "product"
    normalize: str = "minmax"
    name: str = field(default="", compare=False)

    def __post_init__(self):
        if not (self.blur >= 0 and math.isfinite(self.blur)):
            raise PostProcessError(f"blur must be 0 or a positive fraction of the image size, got {self.blur}")
        if self.combine not in COMBINE:
            raise PostProcessError(f"combine must be one of {COMBINE}, not {self.combine!r}")
        if self.normalize not in NORMALIZE:
            raise PostProcessError(f"normalize must be one of {NORMALIZE}, not {self.normalize!r}")
        if not (self.prior_weight >= 0 and math.isfinite(self.prior_weight)):
            raise PostProcessError(f"prior weight must be 0 or more, got {self.prior_weight}")
        if self.combine == "mixture" and self.prior_weight > 1:
            raise PostProcessError(f"a mixture's prior weight is a fraction in [0, 1], got {self.prior_weight}")

    @property
    def is_plain(self) -> bool:
        """True for the published output (min-max, no blur, no prior)."""
        return self.blur == 0 and self.prior is None and self.normalize == "minmax"

    def on_grid(self, raw: np.ndarray, size: Sequence[int]) -> np.ndarray:
        """Steps 1-2 on the net's grid: a float64 map, not yet resized or normalised."""
        sal = np.asarray(raw, dtype=np.float64)
        lo, hi = sal.min(), sal.max()
        if not np.isfinite(hi - lo):
            raise FloatingPointError("the net produced NaN or infinite saliency values")
        sal = (sal - lo) / (hi - lo) if hi > lo else np.zeros_like(sal)
        if self.blur > 0:  # on a grid WORK_UPSAMPLE times finer, where a blur of a cell or two is faithful
            grid = (min(int(size[0]), WORK_UPSAMPLE * sal.shape[0]), min(int(size[1]), WORK_UPSAMPLE * sal.shape[1]))
            sal = np.clip(resize_chw(torch.from_numpy(sal), grid, "spline").numpy(), 0.0, 1.0)
        rows, cols = sal.shape
        if self.blur > 0:
            sigma = self.blur * max(size)  # image pixels, in grid cells along each axis
            sal = scipy.ndimage.gaussian_filter(sal, (sigma * (rows - 1) / max(size[0] - 1, 1),
                                                      sigma * (cols - 1) / max(size[1] - 1, 1)), mode="nearest")
        if self.prior is not None:
            prior = self.prior.on_grid(sal.shape, size)
            if self.combine == "product":
                sal = sal * prior ** self.prior_weight
            else:
                total = sal.sum()
                sal = (1 - self.prior_weight) * (sal / total if total > 0 else sal) \
                    + self.prior_weight * prior / prior.sum()
        return sal

    def apply(self, raw: torch.Tensor | np.ndarray, size: Sequence[int], method: str = "spline") -> np.ndarray:
        """The post-processed map of the net's raw output ``raw`` (h x w) for an
        image of ``size``: float32, the image's size."""
        if isinstance(raw, torch.Tensor):
            raw = raw.detach().double().cpu().numpy()
        size = (int(size[0]), int(size[1]))
        if self.blur == 0 and self.prior is None:
            out = saliency_to_image_size(torch.from_numpy(np.asarray(raw, np.float64)), size, method)
        else:
            out = saliency_to_image_size(torch.from_numpy(self.on_grid(raw, size)), size, method)
        if self.normalize == "probability":
            out += np.float32(PROBABILITY_FLOOR * max(float(out.mean(dtype=np.float64)), 1e-30))
            out /= np.float32(out.sum(dtype=np.float64))
        return out

    def describe(self) -> str:
        """The specification string that :func:`parse_postprocess` turns back into this."""
        if self.is_plain:
            return "none"
        parts = []
        if self.blur:
            parts.append(f"blur={self.blur:g}")
        if self.prior is not None:
            p = self.prior
            sx, sy = math.sqrt(p.cov[0][0]), math.sqrt(p.cov[1][1])
            centred = p.mean == (0.5, 0.5) and p.cov[0][1] == 0
            parts.append(f"prior=gaussian:{sy:g}x{sx:g}" + (f":{p.coords}" if p.coords != "image" else "")
                         if centred else "prior=learned")
            parts.append(f"weight={self.prior_weight:g}")
            if self.combine != "product":
                parts.append(f"combine={self.combine}")
        if self.normalize != "minmax":
            parts.append(f"normalize={self.normalize}")
        return ",".join(parts)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["prior"] = self.prior.to_dict() if self.prior is not None else None
        data.pop("name")
        return data

    @classmethod
    def from_dict(cls, data: dict, name: str = "") -> PostProcess:
        data = dict(data)
        unknown = set(data) - {"blur", "prior", "prior_weight", "combine", "normalize"}
        if unknown:
            raise PostProcessError(f"unknown post-processing field(s) {sorted(unknown)}")
        prior = data.pop("prior", None)
        try:
            return cls(prior=CenterPrior.from_dict(prior) if prior else None, name=name, **data)
        except TypeError as exc:
            raise PostProcessError(f"malformed post-processing {data!r} ({exc})") from None


def to_probability(saliency_map: np.ndarray) -> np.ndarray:
    """``saliency_map`` (non-negative) as a probability map: float64, positive
    everywhere (a floor of ``PROBABILITY_FLOOR`` x its mean), summing to 1."""
    p = np.asarray(saliency_map, dtype=np.float64)
    if p.ndim != 2 or not np.isfinite(p).all() or p.min() < 0:
        raise PostProcessError("a probability map needs a finite, non-negative 2-D saliency map")
    p = p + PROBABILITY_FLOOR * max(float(p.mean()), 1e-30)
    return p / p.sum()


def log_density(saliency_map: np.ndarray) -> np.ndarray:
    """The log-density of ``saliency_map`` (float64, ``exp`` sums to 1 over the
    image): the MIT/Tübingen benchmark's and pysaliency's form of a prediction."""
    return np.log(to_probability(saliency_map))


def parse_postprocess(spec: str | PostProcess | None, learned: CenterPrior | None = None,
                      default: PostProcess | None = None) -> PostProcess:
    """A :class:`PostProcess` from a specification string.

    ``"none"`` is the published output; ``"default"`` the model's recorded
    configuration (``default``; the published output if it has none);
    otherwise comma-separated ``key=value`` pairs, e.g.
    ``"blur=0.02,prior=learned,weight=1,normalize=probability"``:

    - ``blur=F``: Gaussian smoothing, sigma F x max(h, w) (0 <= F);
    - ``prior=none | learned | gaussian:S | gaussian:SYxSX[:image|:longer]``:
      ``learned`` is the model's fitted prior (``learned``); S are fractions
      of the image's height and width (or of its longer side with ``:longer``);
    - ``weight=W``: the prior's exponent (product) or share (mixture);
    - ``combine=product | mixture``;
    - ``normalize=minmax | probability``.

    ``default`` may be followed by overrides: ``"default,normalize=probability"``.
    """
    if spec is None:
        return PostProcess(name="none")
    if isinstance(spec, PostProcess):
        return spec
    text = str(spec).strip()
    items = [p.strip() for p in text.split(",") if p.strip()]
    if not items:
        raise PostProcessError("empty post-processing specification; use 'none', 'default' or key=value pairs")
    base = PostProcess()
    if items[0] in ("none", "default"):
        if items[0] == "default" and default is not None:
            base = default
        items = items[1:]
    values: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        if not sep or not value.strip():
            raise PostProcessError(f"post-processing option {item!r} is not key=value "
                                   f"(keys: blur, prior, weight, combine, normalize)")
        if key in values:
            raise PostProcessError(f"post-processing option '{key}' is given twice in {text!r}")
        values[key] = value.strip()
    unknown = set(values) - {"blur", "prior", "weight", "combine", "normalize"}
    if unknown:
        raise PostProcessError(f"unknown post-processing option(s) {', '.join(sorted(unknown))} in {text!r}; "
                               f"known: blur, prior, weight, combine, normalize")
    fields: dict = {}
    try:
        if "blur" in values:
            fields["blur"] = float(values["blur"])
        if "weight" in values:
            fields["prior_weight"] = float(values["weight"])
    except ValueError as exc:
        raise PostProcessError(f"post-processing value is not a number in {text!r} ({exc})") from None
    for key in ("combine", "normalize"):
        if key in values:
            fields[key] = values[key].lower()
    if "prior" in values:
        fields["prior"] = _parse_prior(values["prior"], learned)
    prior = fields.get("prior", base.prior)
    if prior is None and ("weight" in values or "combine" in values):
        raise PostProcessError(f"'weight' and 'combine' describe a prior, but {text!r} has none "
                               f"(add prior=learned or prior=gaussian:S)")
    return replace(base, name=text, **fields)


def _parse_prior(text: str, learned: CenterPrior | None) -> CenterPrior | None:
    text = text.lower()
    if text == "none":
        return None
    if text == "learned":
        if learned is None:
            raise PostProcessError("prior=learned needs a model with a fitted centre prior (the shipped model "
                                   "has one); give prior=gaussian:S for a fixed one")
        return learned
    kind, _, rest = text.partition(":")
    if kind not in ("gaussian", "center", "centre"):
        raise PostProcessError(f"unknown prior {text!r}; use none, learned or gaussian:S[xS][:image|:longer]")
    sizes, _, coords = rest.partition(":")
    try:
        sigmas = [float(s) for s in sizes.split("x")] if sizes else [0.25]
    except ValueError:
        raise PostProcessError(f"prior {text!r}: sigmas must be numbers, e.g. gaussian:0.25 or "
                               f"gaussian:0.2x0.3") from None
    if len(sigmas) not in (1, 2):
        raise PostProcessError(f"prior {text!r}: give one sigma or two (height x width)")
    sy, sx = (sigmas[0], sigmas[0]) if len(sigmas) == 1 else sigmas
    return CenterPrior.gaussian(sy, sx, coords or "image")
