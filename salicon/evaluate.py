"""Scoring saliency maps on eye-tracking data, with baselines.

For each image: the ground truth (binary fixation map and continuous fixation
map, made with the data set's own convention), the model's map, and the
metrics of :mod:`salicon.metrics`. Baselines are scored the same way:

- ``center_bias``: a Gaussian centred on the image, its standard deviations a
  fixed fraction of the height and width (stretched to the aspect ratio);
- ``inter_observer``: where the data has per-subject fixations, each
  subject's fixations are predicted from the other subjects' fixation map
  (leave one subject out), and the scores are averaged over subjects; an
  estimate of the upper bound a model can reach.

sAUC's negatives are the fixations of other images (MIT convention: 10 other
images drawn at random, their fixation coordinates rescaled to this image).
Information gain is measured against the centre-bias map.
"""
from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from . import metrics as M
from .data import Dataset, Sample, read_gray_map
from .errors import SaliconError
from .fixations import Fixations, fixated_pixels, fixation_density
from .image import IMAGE_SUFFIXES
from .inputs import image_files
from .types import PathLike

#: Metrics computed by default, in table order.
DEFAULT_METRICS = tuple(M.METRICS)  # every metric of salicon.metrics, in its order
#: Centre bias: standard deviation as a fraction of the image height / width.
CENTER_BIAS_SIGMA = 0.25
#: Other images pooled for sAUC's negatives (MIT).
SAUC_OTHER_IMAGES = 10


def center_bias(shape: Sequence[int], sigma: float = CENTER_BIAS_SIGMA) -> np.ndarray:
    """A centred Gaussian with standard deviations ``sigma`` x (height, width)."""
    h, w = int(shape[0]), int(shape[1])
    y = (np.arange(h) - (h - 1) / 2.0) / (sigma * h)
    x = (np.arange(w) - (w - 1) / 2.0) / (sigma * w)
    return np.exp(-0.5 * (y[:, None] ** 2 + x[None, :] ** 2))


def read_split(path: PathLike) -> list[str]:
    """Image names of a split: a split.json (its "test" list) or a text file
    with one name per line ('#' comments allowed)."""
    path = Path(path)
    if not path.exists():
        raise SaliconError(f"{path}: no such split file")
    if path.suffix == ".json":
        data = json.loads(path.read_text())
        if "test" not in data:
            raise SaliconError(f"{path}: a split.json needs a 'test' list")
        return [str(n) for n in data["test"]]
    names = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
    return [Path(n).stem if "." in n else n for n in names if n]


#: Metrics computed from fixation points (the binary fixation map), not the continuous map.
LOCATION_METRICS = ("AUC_Judd", "AUC_Borji", "sAUC", "NSS", "IG")


@dataclass
class GroundTruth:
    """One image's ground truth at the image's size."""

    name: str
    shape: tuple[int, int]
    binary: np.ndarray               # bool HxW: fixated pixels (all subjects)
    density: np.ndarray              # float HxW in [0, 1]
    points: np.ndarray               # (n, 2) fixated pixel (row, col), for other images' sAUC negatives
    fixations: Fixations | None = None


def load_ground_truth(dataset: Dataset, sample: Sample) -> GroundTruth:
    """The ground truth at the size of the (EXIF-upright) image."""
    from PIL import Image, ImageOps
    with Image.open(sample.image_path) as img:
        w, h = ImageOps.exif_transpose(img).size
    binary, density = dataset.ground_truth(sample, (h, w))
    rows, cols = np.nonzero(binary)
    return GroundTruth(sample.name, (h, w), binary, density, np.stack([rows, cols], axis=1), sample.fixations)


def other_fixations(truths: Sequence[GroundTruth], index: int, rng: np.random.Generator,
                    n_others: int = SAUC_OTHER_IMAGES) -> np.ndarray:
    """Binary map, at image ``index``'s size, of the fixations of ``n_others``
    other images drawn at random (coordinates rescaled)."""
    h, w = truths[index].shape
    candidates = [i for i in range(len(truths)) if i != index]
    chosen: Sequence[int] | np.ndarray = (rng.choice(candidates, size=min(n_others, len(candidates)), replace=False)
                             if candidates else [])
    out = np.zeros((h, w), dtype=bool)
    for i in chosen:
        t = truths[i]
        rows = np.clip(np.floor((t.points[:, 0] + 0.5) * h / t.shape[0]).astype(int), 0, h - 1)
        cols = np.clip(np.floor((t.points[:, 1] + 0.5) * w / t.shape[1]).astype(int), 0, w - 1)
        out[rows, cols] = True
    return out


def score(saliency_map: np.ndarray, truth: GroundTruth, other: np.ndarray, baseline: np.ndarray,
          names: Iterable[str] = DEFAULT_METRICS, seed: int = 0, binary: np.ndarray | None = None,
          density: np.ndarray | None = None) -> dict[str, float]:
    """All metrics of one map against one image's ground truth. A metric that
    cannot be computed for this image (no fixation points, constant map) is NaN."""
    binary = truth.binary if binary is None else binary
    density = truth.density if density is None else density
    out = {}
    for name in names:
        try:
            if name == "AUC_Judd":
                out[name] = M.auc_judd(saliency_map, binary, seed=seed)
            elif name == "AUC_Borji":
                out[name] = M.auc_borji(saliency_map, binary, seed=seed)
            elif name == "sAUC":
                out[name] = M.auc_shuffled(saliency_map, binary, other, seed=seed)
            elif name == "NSS":
                out[name] = M.nss(saliency_map, binary)
            elif name == "CC":
                out[name] = M.cc(saliency_map, density)
            elif name == "SIM":
                out[name] = M.sim(saliency_map, density)
            elif name == "KLDiv":
                out[name] = M.kldiv(saliency_map, density)
            elif name == "IG":
                out[name] = M.information_gain(saliency_map, binary, baseline)
            elif name == "EMD":
                out[name] = M.emd(saliency_map, density)
            else:
                raise SaliconError(f"unknown metric '{name}'; known: {', '.join(M.METRICS)}")
        except M.MetricError:
            out[name] = float("nan")
    return out


def inter_observer_scores(dataset: Dataset, truth: GroundTruth, other: np.ndarray, baseline: np.ndarray,
                          names: Sequence[str], seed: int = 0) -> dict[str, float] | None:
    """Leave-one-subject-out scores averaged over subjects, or None without
    per-subject data. EMD is left out (NaN): one optimal-transport problem per
    subject and image costs about a second each."""
    fix = truth.fixations
    if fix is None or np.unique(fix.subject).size < 2:
        return None
    skipped = [n for n in names if n == "EMD"]
    names = [n for n in names if n != "EMD"]
    per_subject = []
    for s in np.unique(fix.subject):
        mine, rest = fix.subject == s, fix.subject != s
        own = Fixations(fix.x[mine], fix.y[mine], fix.subject[mine])
        others = Fixations(fix.x[rest], fix.y[rest], fix.subject[rest])
        if not len(own):
            continue
        prediction = fixation_density(others, truth.shape, dataset.sigma, dataset.window)
        rows, cols = fixated_pixels(own, truth.shape)
        binary = np.zeros(truth.shape, dtype=bool)
        binary[rows, cols] = True
        density = fixation_density(own, truth.shape, dataset.sigma, dataset.window)
        per_subject.append(score(prediction, truth, other, baseline, names, seed, binary, density))
    out = {n: float(np.nanmean([p[n] for p in per_subject])) for n in names}
    out.update({n: float("nan") for n in skipped})
    return out


@dataclass
class Evaluation:
    """Per-image scores by model, and their summaries."""

    metrics: list[str]
    rows: list[dict] = field(default_factory=list)  # {"image", "model", metric: value}
    unavailable: dict[str, str] = field(default_factory=dict)  # metric asked for -> why it was not computed
    failed: dict[str, int] = field(default_factory=dict)       # model -> images it could not score

    def scored(self, model: str) -> int:
        """How many images ``model`` has scores for."""
        return sum(1 for r in self.rows if r["model"] == model)

    def models(self) -> list[str]:
        return list(dict.fromkeys(r["model"] for r in self.rows))

    def summary(self) -> dict[str, dict[str, dict[str, float]]]:
        out: dict[str, dict[str, dict[str, float]]] = {}
        for model in self.models():
            rows = [r for r in self.rows if r["model"] == model]
            out[model] = {}
            for m in self.metrics:
                values = np.array([r[m] for r in rows], dtype=float)
                values = values[np.isfinite(values)]
                out[model][m] = {"mean": float(values.mean()) if values.size else float("nan"),
                                 "std": float(values.std(ddof=1)) if values.size > 1 else float("nan"),
                                 "n": int(values.size)}
        return out

    def table(self) -> str:
        summary = self.summary()
        width = max(12, max(len(m) for m in summary) + 2)
        head = f"{'model':{width}s}" + "".join(f"{m:>17s}" for m in self.metrics)
        lines = [head, "-" * len(head)]
        for model, scores in summary.items():
            cells = "".join(f"{scores[m]['mean']:>9.3f} ± {scores[m]['std']:<5.3f}" if math.isfinite(scores[m]['mean'])
                            else f"{'n/a':>17s}" for m in self.metrics)
            lines.append(f"{model:{width}s}{cells}")
        return "\n".join(lines)

    def write(self, out: PathLike) -> None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "per_image.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=["image", "model", *self.metrics])
            writer.writeheader()
            for r in self.rows:
                writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
        (out / "summary.json").write_text(json.dumps(self.summary(), indent=1) + "\n")


def evaluate(dataset: Dataset, predict: Callable[[Sample], np.ndarray] | None, names: Sequence[str] | None = None,
             metrics: Sequence[str] = DEFAULT_METRICS, baselines: bool = True,
             model_name: str | Sequence[str] = "salicon",
             seed: int = 0, progress: Callable[[int], None] | None = None,
             on_error: Callable[[str], None] | None = None) -> Evaluation:
    """Score ``predict`` (a sample -> saliency map function, or None for
    baselines only) on ``dataset`` (restricted to ``names`` if given).
    ``predict`` may also return a dict model name -> map (several
    configurations of one model scored in one pass); ``model_name`` is then
    the list of those names, for counting failures."""
    model_names = ([model_name] if isinstance(model_name, str) else list(model_name)) if predict is not None else []
    model_name = model_names[0] if model_names else "model"
    samples = dataset.samples
    if names is not None:
        wanted = list(dict.fromkeys(names))
        known = {s.name: s for s in samples}
        missing = [n for n in wanted if n not in known]
        if missing:
            raise SaliconError(f"{len(missing)} image(s) of the split are not in the data set: "
                               f"{', '.join(missing[:10])}")
        samples = [known[n] for n in wanted]
    truths = [load_ground_truth(dataset, s) for s in samples]
    has_points = dataset.has_points()
    unavailable = {} if has_points else {
        m: "a location metric, it needs fixation points, which this data set lacks" for m in metrics
        if m in LOCATION_METRICS}
    metrics = [m for m in metrics if m not in unavailable]
    result = Evaluation(list(metrics), unavailable=unavailable)
    rng = np.random.default_rng(seed)
    for i, (sample, truth) in enumerate(zip(samples, truths)):
        other = other_fixations(truths, i, rng) if has_points else np.zeros(truth.shape, bool)
        baseline = center_bias(truth.shape)
        if predict is not None:
            try:
                prediction = predict(sample)
            except SaliconError as exc:
                if on_error is None:
                    raise
                for name in model_names:
                    result.failed[name] = result.failed.get(name, 0) + 1
                on_error(str(exc))
            else:
                maps = prediction if isinstance(prediction, dict) else {model_name: prediction}
                for name, saliency_map in maps.items():
                    result.rows.append({"image": sample.name, "model": name,
                                        **score(saliency_map, truth, other, baseline, metrics, seed)})
        if baselines:
            result.rows.append({"image": sample.name, "model": "center_bias",
                                **score(baseline, truth, other, baseline, metrics, seed)})
            inter = inter_observer_scores(dataset, truth, other, baseline, metrics, seed)
            if inter is not None:
                result.rows.append({"image": sample.name, "model": "inter_observer", **inter})
        if progress:
            progress(1)
    return result


def saliency_maps_from_folder(folder: PathLike) -> Callable[[Sample], np.ndarray]:
    """A predictor that reads precomputed maps ``folder/<name>.npy`` or any
    image format (grayscale), for scoring other models' outputs; the folder is
    listed as ``salicon predict`` lists inputs, sub-folders included."""
    folder = Path(folder)
    if not folder.exists():
        raise SaliconError(f"--saliency-maps {folder}: no such folder")
    if not folder.is_dir():
        raise SaliconError(f"--saliency-maps {folder}: not a folder")
    maps: dict[str, Path] = {}
    for path in image_files(folder, recursive=True, suffixes=IMAGE_SUFFIXES | {".npy"}):
        stem = path.relative_to(folder).with_suffix("").as_posix()
        if stem not in maps or path.suffix == ".npy":  # a .npy keeps the float values: it wins
            maps[stem] = path

    def predict(sample: Sample) -> np.ndarray:
        path = maps.get(sample.name) or maps.get(Path(sample.name).name)
        if path is None:
            raise SaliconError(f"{folder}: no saliency map for image '{sample.name}'")
        if path.suffix != ".npy":
            try:
                return read_gray_map(path)
            except SaliconError as exc:
                raise SaliconError(f"not a readable saliency map: {exc}") from None
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise SaliconError(f"{path}: not a readable .npy saliency map ({exc})") from None
        if array.ndim != 2 or not np.issubdtype(array.dtype, np.number):
            raise SaliconError(f"{path}: expected a 2-D numeric saliency map, got {array.dtype} {array.shape}")
        return array.astype(np.float64)
    return predict
