"""SALICON as a `pysaliency <https://github.com/matthias-k/pysaliency>`_ model,
so it is scored with the MIT/Tübingen Saliency Benchmark's own code next to
other models (``pip install "salicon[pysaliency]"``).

    import pysaliency
    from salicon.pysaliency import SaliconModel, SaliconSaliencyMapModel, load_osie

    stimuli, fixations = load_osie("path/to/osie", names=["1001", "1002"])
    model = SaliconModel()                          # the shipped model's log-density
    model.information_gain(stimuli, fixations, average="image")   # bits per fixation, over a uniform model
    SaliconSaliencyMapModel().NSS(stimuli, fixations, average="image")

:class:`SaliconModel` is a probabilistic model (``pysaliency.Model``): its
``log_density`` is the log of the model's probability map (its default
post-processing, the shipped model's learned centre prior included, scaled to
sum to 1). :class:`SaliconSaliencyMapModel` gives the map itself
(``pysaliency.SaliencyMapModel``). Both take stimuli as pysaliency passes them,
HxWx3 or HxW arrays of any size.
"""
from __future__ import annotations

import contextlib
import types
import warnings
from collections.abc import Iterator, Sequence

import numpy as np

try:
    with warnings.catch_warnings():  # pysaliency imports pkg_resources, which warns on import
        warnings.simplefilter("ignore")
        import pysaliency
except ImportError as exc:  # an optional extra: say how to install it
    raise ImportError(f"salicon.pysaliency needs pysaliency ({exc}); install it with "
                      f"pip install \"salicon[pysaliency]\" (or: pip install pysaliency \"setuptools<81\")") from None

from .evaluate import center_bias, read_split
from .fixations import OSIE_SIGMA
from .metrics import EPS
from .model import Salicon
from .postprocess import log_density, to_probability
from .types import PathLike


class _NumpyWithTrapz(types.ModuleType):
    """NumPy as pysaliency's ROC code expects it: ``trapz`` (removed in NumPy 2.4)
    is ``trapezoid``, the same function; everything else is NumPy's own."""

    def __init__(self):
        super().__init__("numpy")
        self.trapz = np.trapezoid

    def __getattr__(self, name: str):
        return getattr(np, name)


@contextlib.contextmanager
def _pysaliency_roc_with_trapz() -> Iterator[None]:
    """For the length of a call, pysaliency's ``general_roc`` (plain Python; it
    calls ``np.trapz``) runs as a copy that sees :class:`_NumpyWithTrapz` as its
    ``np``; NumPy itself is left untouched, so is pysaliency after the call."""
    from pysaliency import saliency_map_models as smm

    original = smm.general_roc
    if hasattr(np, "trapz") or not isinstance(original, types.FunctionType):
        yield
        return
    smm.general_roc = types.FunctionType(original.__code__, {**original.__globals__, "np": _NumpyWithTrapz()},
                                         original.__name__, original.__defaults__, original.__closure__)
    try:
        yield
    finally:
        smm.general_roc = original


def _salicon(salicon: Salicon | None, model: PathLike | None, options: dict) -> Salicon:
    if salicon is not None:
        if model is not None or options:
            raise ValueError("give a ready Salicon or the options to build one, not both")
        return salicon
    options.setdefault("precision", "fp32")  # benchmark numbers: the exact net unless asked otherwise
    return Salicon(model, **options)


class SaliconSaliencyMapModel(pysaliency.SaliencyMapModel):
    """The saliency map (``Salicon.compute_saliency``) of each stimulus.

    Args:
        model: weights file (default: the shipped model).
        postprocess: as :class:`~salicon.Salicon` (default: the model's own).
        salicon: a ready :class:`~salicon.Salicon` to use instead of building one.
        caching: keep computed maps in memory (pysaliency's cache).
        **options: further :class:`~salicon.Salicon` arguments (``prototxt``,
            ``device``, ``precision``: fp32 unless given).
    """

    def __init__(self, model: PathLike | None = None, *, salicon: Salicon | None = None, caching: bool = True,
                 **options):
        super().__init__(caching=caching)
        self.salicon = _salicon(salicon, model, options)

    def _saliency_map(self, stimulus: np.ndarray) -> np.ndarray:
        return self.salicon.compute_saliency(np.asarray(stimulus)).astype(np.float64)

    # pysaliency's ROC-based metrics, runnable on NumPy 2.4 (see _pysaliency_roc_with_trapz); AUC_Judd
    # wraps this model in another, so each entry point sets the copy up for its whole call.
    def AUC_per_image(self, *args, **kwargs):  # noqa: N802 (pysaliency's names)
        with _pysaliency_roc_with_trapz():
            return super().AUC_per_image(*args, **kwargs)

    def AUC(self, *args, **kwargs):  # noqa: N802
        with _pysaliency_roc_with_trapz():
            return super().AUC(*args, **kwargs)

    def AUC_Judd(self, *args, **kwargs):  # noqa: N802
        with _pysaliency_roc_with_trapz():
            return super().AUC_Judd(*args, **kwargs)


class SaliconModel(pysaliency.Model):
    """The model's fixation density: ``log_density(stimulus)`` is the log of its
    probability map (default post-processing, normalised to sum to 1 over the
    image; float64). Arguments as :class:`SaliconSaliencyMapModel`."""

    def __init__(self, model: PathLike | None = None, *, salicon: Salicon | None = None, caching: bool = True,
                 **options):
        super().__init__(caching=caching)
        self.salicon = _salicon(salicon, model, options)

    def _log_density(self, stimulus: np.ndarray) -> np.ndarray:
        return log_density(self.salicon.compute_saliency(np.asarray(stimulus)))


class CenterBiasModel(pysaliency.Model):
    """The centre-bias baseline of ``salicon evaluate`` (a centred Gaussian,
    standard deviations ``sigma`` x height and width, min-max scaled and
    normalised) as a density, so information gains over it agree."""

    def __init__(self, sigma: float = 0.25, caching: bool = True):
        super().__init__(caching=caching)
        self.sigma = sigma

    def _log_density(self, stimulus: np.ndarray) -> np.ndarray:
        bias = center_bias(np.asarray(stimulus).shape[:2], self.sigma)
        bias = (bias - bias.min()) / (bias.max() - bias.min())
        return np.log(EPS + to_probability(bias))


def load_osie(root: PathLike, names: Sequence[str] | None = None, split: PathLike | None = None,
              unique_pixels: bool = False) -> tuple[pysaliency.FileStimuli, pysaliency.Fixations]:
    """OSIE (``root/stimuli``, ``root/fixations.mat``) as pysaliency stimuli and
    fixations (one subject id per observer), restricted to ``names`` or to the
    images of a ``split`` file. Coordinates follow pysaliency's convention
    (pixel i spans [i, i+1), so it truncates them to index a map): OSIE's
    pixel-centre coordinates plus 0.5, which indexes the same pixels as
    ``salicon evaluate``'s rounding.

    ``unique_pixels``: one fixation per fixated pixel, the MIT benchmark's
    binary fixation map that ``salicon evaluate`` scores; by default every
    fixation counts, pysaliency's convention (two observers fixating one pixel
    count twice)."""
    from .data import OSIEDataset
    from .fixations import fixated_pixels

    dataset = OSIEDataset(root)
    wanted = list(names) if names is not None else (read_split(split) if split is not None else None)
    samples = dataset.samples
    if wanted is not None:
        by_name = {s.name: s for s in samples}
        missing = [n for n in wanted if n not in by_name]
        if missing:
            raise ValueError(f"{root}: no OSIE images named {', '.join(missing[:5])}")
        samples = [by_name[n] for n in wanted]
    stimuli = pysaliency.FileStimuli([str(s.image_path) for s in samples])
    xs, ys, ns, subjects = [], [], [], []
    for index, sample in enumerate(samples):
        fix = sample.fixations
        assert fix is not None, "an OSIE sample has its fixations"
        if unique_pixels:
            rows, cols = fixated_pixels(fix, stimuli.sizes[index])
            x, y, subject = cols + 0.5, rows + 0.5, np.zeros(rows.size)
        else:
            x, y, subject = fix.x + 0.5, fix.y + 0.5, fix.subject
        xs.append(x)
        ys.append(y)
        ns.append(np.full(len(x), index))
        subjects.append(subject)
    fixations = pysaliency.Fixations.create_without_history(np.concatenate(xs), np.concatenate(ys),
                                                            np.concatenate(ns), subjects=np.concatenate(subjects))
    return stimuli, fixations


def fixation_map_model(stimuli, fixations, sigma: float = OSIE_SIGMA) -> pysaliency.FixationMap:
    """Blurred fixation maps (Gaussian ``sigma`` px, zeros outside the image, as
    OSIE's maps): the ground truth of pysaliency's CC."""
    return pysaliency.FixationMap(stimuli, fixations, kernel_size=sigma, convolution_mode="constant")


__all__ = ["SaliconModel", "SaliconSaliencyMapModel", "CenterBiasModel", "load_osie", "fixation_map_model"]
