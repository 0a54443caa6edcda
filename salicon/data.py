"""Eye-tracking data: fixation points, fixation maps, and training samples.

Two forms of training data:

- the report's two folders, images and fixation maps with the same base
  names (``FolderDataset``);
- fixation points, turned into fixation maps here: OSIE's layout, a folder
  holding ``stimuli/`` and ``fixations.mat`` (``OSIEDataset``).

How fixation points become fixation maps is in :mod:`salicon.fixations`.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from .errors import ImageError, SaliconError
from .fixations import (
    OSIE_SIGMA,
    OSIE_WINDOW,
    Fixations,
    binary_fixation_map,
    blur_binary,
    fixation_density,
    training_target,
)
from .image import IMAGE_SUFFIXES, load_image
from .inputs import image_files
from .types import PathLike


class DataError(SaliconError):
    """Training or evaluation data that cannot be used (all problems listed)."""


@dataclass
class Sample:
    """One image with where its ground truth lies: fixation points, a
    fixation-map image and/or a fixation-point file."""

    name: str
    image_path: Path
    fixations: Fixations | None = None
    map_path: Path | None = None
    points_path: Path | None = None   # a binary fixation-point image or a fixLocs .mat


# ---------------------------------------------------------------- data sets


def _list_images(folder: Path) -> dict[str, Path]:
    """Image files of a folder by base name (the first suffix in sorted order wins)."""
    files: dict[str, Path] = {}
    for path in image_files(folder):
        files.setdefault(path.stem, path)
    return files


def read_gray_map(path: Path) -> np.ndarray:
    """A map stored as an image (fixation map, or another model's saliency
    map) as HxW float64 in [0, 1]: any mode, 8 or 16 bits, colour averaged."""
    return load_image(path).mean(axis=2).astype(np.float64) / 255.0


class Dataset:
    """Base of the loaders: ``samples`` (one per image), and how fixation maps
    are made when the data set gives only points (``sigma``, ``window``)."""

    sigma: float = OSIE_SIGMA
    window: int | None = OSIE_WINDOW
    samples: list[Sample]

    def __len__(self) -> int:
        return len(self.samples)

    def names(self) -> list[str]:
        return [s.name for s in self.samples]

    def ground_truth(self, sample: Sample, shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """(binary fixation map, continuous fixation map) of ``sample`` at the
        image's ``shape``. Raises DataError if the data set has neither."""
        binary = None
        if sample.fixations is not None:
            binary = binary_fixation_map(sample.fixations, shape)
        elif sample.points_path is not None:
            binary = read_fixation_points(sample.points_path)
        if sample.map_path is not None:
            try:
                density = read_gray_map(sample.map_path)
            except ImageError as exc:
                raise DataError(f"cannot read the fixation map: {exc}") from None
        elif sample.fixations is not None:
            density = fixation_density(sample.fixations, shape, self.sigma, self.window)
        elif binary is not None:
            density = blur_binary(binary, self.sigma, self.window)
        else:
            raise DataError(f"{sample.name}: no fixation data")
        if binary is None:
            binary = np.zeros(shape, dtype=bool)  # location metrics need points: see has_points
        for what, arr, path in (("fixation points", binary, sample.points_path),
                                ("fixation map", density, sample.map_path)):
            if arr.shape != tuple(shape):
                raise DataError(f"{path or sample.name}: {what} is {arr.shape[1]}x{arr.shape[0]} but its image "
                                f"{sample.image_path.name} is {shape[1]}x{shape[0]}")
        return binary, density

    def has_points(self) -> bool:
        return all(s.fixations is not None or s.points_path is not None for s in self.samples)


def read_fixation_points(path: Path) -> np.ndarray:
    """A binary fixation map from a fixation-point image (nonzero = fixated) or
    a CAT2000 FIXATIONLOCS .mat file (key ``fixLocs``)."""
    if path.suffix.lower() == ".mat":
        import scipy.io
        data = scipy.io.loadmat(path)
        if "fixLocs" not in data:
            raise DataError(f"{path}: no 'fixLocs' matrix")
        return np.asarray(data["fixLocs"]) > 0
    with Image.open(path) as img:
        arr = np.asarray(img.convert("L"))
    return arr > 127  # JPEG-compressed point images: keep the bright pixels


class FolderDataset(Dataset):
    """Images and fixation maps in two folders, matched by base name (the
    OpenSALICON layout), optionally fixation-point images (nonzero = fixated)
    in a third. Any common image format."""


    def __init__(self, images: PathLike, maps: PathLike, points: PathLike | None = None):
        self.images_dir, self.maps_dir = Path(images), Path(maps)
        self.points_dir = Path(points) if points is not None else None
        problems = []
        for d, what in ((self.images_dir, "image"), (self.maps_dir, "fixation-map"), (self.points_dir, "points")):
            if d is not None and not d.is_dir():
                problems.append(f"{d}: no such {what} folder")
        if problems:
            raise DataError("\n".join(problems))
        found, map_files = _list_images(self.images_dir), _list_images(self.maps_dir)
        if not found:
            raise DataError(f"{self.images_dir}: no image files (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
        for name in sorted(set(found) - set(map_files)):
            problems.append(f"{found[name]}: no fixation map named {name}.* in {self.maps_dir}")
        for name in sorted(set(map_files) - set(found)):
            problems.append(f"{map_files[name]}: no image named {name}.* in {self.images_dir}")
        point_files = _list_images(self.points_dir) if self.points_dir else {}
        if self.points_dir:
            for name in sorted(set(found) - set(point_files)):
                problems.append(f"{found[name]}: no fixation-point image named {name}.* in {self.points_dir}")
        if problems:
            raise DataError(f"{len(problems)} problem(s) with the data:\n" + "\n".join(problems))
        self.samples = [Sample(name, found[name], map_path=map_files[name], points_path=point_files.get(name))
                        for name in sorted(found)]


class MIT1003Dataset(Dataset):
    """MIT1003 (Judd et al. 2009): ``ALLSTIMULI/*.jpeg`` with
    ``ALLFIXATIONMAPS/<name>_fixMap.jpg`` (continuous) and ``<name>_fixPts.jpg``
    (fixation points). Per-subject data (DATA/) is not read."""


    def __init__(self, root: PathLike):
        self.root = Path(root)
        stimuli, maps = self.root / "ALLSTIMULI", self.root / "ALLFIXATIONMAPS"
        if not stimuli.is_dir() or not maps.is_dir():
            raise DataError(f"{self.root}: not an MIT1003 folder (needs ALLSTIMULI/ and ALLFIXATIONMAPS/)")
        problems, self.samples = [], []
        for name, path in _list_images(stimuli).items():
            fmap, fpts = maps / f"{name}_fixMap.jpg", maps / f"{name}_fixPts.jpg"
            missing = [str(p) for p in (fmap, fpts) if not p.exists()]
            if missing:
                problems.append(f"{path}: missing {', '.join(missing)}")
                continue
            self.samples.append(Sample(name, path, map_path=fmap, points_path=fpts))
        if problems:
            raise DataError(f"{len(problems)} problem(s) with {self.root}:\n" + "\n".join(problems))
        if not self.samples:
            raise DataError(f"{stimuli}: no images")


class CAT2000Dataset(Dataset):
    """CAT2000 (Borji and Itti 2015): ``Stimuli/<category>/<name>.jpg``,
    ``FIXATIONMAPS/<category>/<name>.jpg`` and ``FIXATIONLOCS/<category>/<name>.mat``
    (binary ``fixLocs``). ``root`` is the folder holding those (e.g. trainSet)."""


    def __init__(self, root: PathLike):
        self.root = Path(root)
        stimuli, maps, locs = self.root / "Stimuli", self.root / "FIXATIONMAPS", self.root / "FIXATIONLOCS"
        if not stimuli.is_dir():
            raise DataError(f"{self.root}: not a CAT2000 folder (needs Stimuli/, FIXATIONMAPS/, FIXATIONLOCS/)")
        problems, self.samples = [], []
        for category in sorted(p for p in stimuli.iterdir() if p.is_dir()):
            for name, path in _list_images(category).items():
                fmap = maps / category.name / path.name
                floc = locs / category.name / f"{name}.mat"
                missing = [str(p) for p in (fmap, floc) if not p.exists()]
                if missing:
                    problems.append(f"{path}: missing {', '.join(missing)}")
                    continue
                self.samples.append(Sample(f"{category.name}/{name}", path, map_path=fmap, points_path=floc))
        if problems:
            raise DataError(f"{len(problems)} problem(s) with {self.root}:\n" + "\n".join(problems))
        if not self.samples:
            raise DataError(f"{stimuli}: no images in category folders")


class SALICONDataset(Dataset):
    """SALICON (Jiang et al. 2015, the 2017 release): ``images/<name>.jpg`` and
    ``fixations/<name>.mat`` with a ``gaze`` struct per subject whose
    ``fixations`` are N x 2 (x, y), 1-based. Fixation maps: Gaussian sigma
    19 px, as the SALICON API makes them."""

    sigma = 19.0
    window = None

    def __init__(self, root: PathLike, images: str = "images", fixations: str = "fixations"):
        import scipy.io

        self.root = Path(root)
        img_dir, fix_dir = self.root / images, self.root / fixations
        if not img_dir.is_dir() or not fix_dir.is_dir():
            raise DataError(f"{self.root}: not a SALICON folder (needs {images}/ and {fixations}/)")
        problems, self.samples = [], []
        for name, path in _list_images(img_dir).items():
            mat = fix_dir / f"{name}.mat"
            if not mat.exists():
                problems.append(f"{path}: no {mat}")
                continue
            try:
                gaze = np.atleast_1d(scipy.io.loadmat(mat, squeeze_me=True, struct_as_record=False)["gaze"])
            except (KeyError, ValueError, OSError) as exc:
                problems.append(f"{mat}: cannot read the 'gaze' data ({exc})")
                continue
            xs, ys, subj = [], [], []
            for k, g in enumerate(gaze):
                pts = np.asarray(g.fixations, dtype=np.float64).reshape(-1, 2)
                xs.append(pts[:, 0] - 1.0)
                ys.append(pts[:, 1] - 1.0)
                subj.append(np.full(len(pts), k))
            fix = Fixations(np.concatenate(xs), np.concatenate(ys), np.concatenate(subj))
            self.samples.append(Sample(name, path, fixations=fix))
        if problems:
            raise DataError(f"{len(problems)} problem(s) with {self.root}:\n" + "\n".join(problems))
        if not self.samples:
            raise DataError(f"{img_dir}: no images")


def _as_points(values) -> np.ndarray:
    return np.atleast_1d(np.asarray(values, dtype=np.float64)).ravel()


class OSIEDataset(Dataset):
    """OSIE: ``root/stimuli/*.jpg`` and ``root/fixations.mat`` (15 subjects per
    image, 1-based pixel coordinates). Fixation maps are made here with the
    data set's own convention (Gaussian ``sigma`` px, ``window`` taps)."""


    def __init__(self, root: PathLike, sigma: float = OSIE_SIGMA, window: int | None = OSIE_WINDOW):
        import scipy.io

        self.root = Path(root)
        self.sigma, self.window = float(sigma), window
        mat, stimuli = self.root / "fixations.mat", self.root / "stimuli"
        missing = [str(p) for p in (mat, stimuli) if not p.exists()]
        if missing:
            raise DataError(f"{self.root}: not an OSIE folder (missing {', '.join(missing)})")
        try:
            data = scipy.io.loadmat(mat, squeeze_me=True, struct_as_record=False)["fixations"]
        except (KeyError, ValueError, OSError) as exc:
            raise DataError(f"{mat}: cannot read OSIE fixations ({exc})") from None
        self.samples = []
        problems = []
        for entry in np.atleast_1d(data):
            name = str(entry.img)
            path = stimuli / name
            if not path.exists():
                problems.append(f"{path}: listed in {mat.name} but missing")
                continue
            xs, ys, subj, dur = [], [], [], []
            for s_index, subject in enumerate(np.atleast_1d(entry.subjects)):
                x, y = _as_points(subject.fix_x), _as_points(subject.fix_y)
                n = min(x.size, y.size)
                xs.append(x[:n] - 1.0)  # 1-based -> 0-based pixel coordinates
                ys.append(y[:n] - 1.0)
                subj.append(np.full(n, s_index))
                dur.append(_as_points(getattr(subject, "fix_duration", np.zeros(n)))[:n])
            fix = Fixations(np.concatenate(xs), np.concatenate(ys), np.concatenate(subj), np.concatenate(dur))
            self.samples.append(Sample(Path(name).stem, path, fixations=fix))
        if problems:
            raise DataError(f"{len(problems)} problem(s) with {self.root}:\n" + "\n".join(problems))
        if not self.samples:
            raise DataError(f"{mat}: lists no images")


DATASET_KINDS = {"osie": OSIEDataset, "folder": FolderDataset, "mit1003": MIT1003Dataset,
                 "cat2000": CAT2000Dataset, "salicon": SALICONDataset}


def open_dataset(spec: PathLike, maps: PathLike | None = None, sigma: float | None = None) -> Dataset:
    """A data set from ``KIND:PATH`` (osie, folder, mit1003, cat2000, salicon)
    or a bare path, recognised by its layout: an OSIE folder (stimuli/ +
    fixations.mat), MIT1003 (ALLSTIMULI/), CAT2000 (Stimuli/ + FIXATIONLOCS/),
    SALICON (images/ + fixations/*.mat), or a folder with images/ and maps/
    (optional fixations/ point images); or an image folder plus ``maps``."""
    text = str(spec)
    kind = None
    prefix = text.split(":", 1)[0] if ":" in text else ""
    if prefix.lower() in DATASET_KINDS:
        kind, text = prefix.lower(), text.split(":", 1)[1]
    elif len(prefix) > 1 and prefix.isidentifier() and not Path(text).exists():  # not a drive letter
        raise DataError(f"unknown data set kind '{prefix}' in '{text}'; known kinds: "
                        f"{', '.join(DATASET_KINDS)} (KIND:PATH), or give a bare path")
    root = Path(text)
    if maps is not None:
        return FolderDataset(root, maps)
    if not root.exists():
        raise DataError(f"{root}: no such data folder")
    if kind is None:
        if (root / "fixations.mat").exists():
            kind = "osie"
        elif (root / "ALLSTIMULI").is_dir():
            kind = "mit1003"
        elif (root / "Stimuli").is_dir() and (root / "FIXATIONLOCS").is_dir():
            kind = "cat2000"
        elif (root / "images").is_dir() and (root / "fixations").is_dir() and any((root / "fixations").glob("*.mat")):
            kind = "salicon"
        else:
            kind = "folder"
    if kind == "osie":
        return OSIEDataset(root, sigma=sigma if sigma is not None else OSIE_SIGMA)
    if kind == "folder":
        for images, fmaps in (("images", "maps"), ("images", "fixation_maps"), ("stimuli", "maps")):
            if (root / images).is_dir() and (root / fmaps).is_dir():
                points = next((root / p for p in ("fixations", "points") if (root / p).is_dir()), None)
                return FolderDataset(root / images, root / fmaps, points)
        raise DataError(f"{root}: not a data folder: expected stimuli/ + fixations.mat (OSIE), ALLSTIMULI/ "
                        f"(MIT1003), Stimuli/ + FIXATIONLOCS/ (CAT2000), images/ + fixations/*.mat (SALICON) "
                        f"or images/ + maps/ with the same base names")
    dataset = DATASET_KINDS[kind](root)
    if sigma is not None and kind == "salicon":
        dataset.sigma = sigma
    return dataset


# ------------------------------------------------------------- preparation


@dataclass
class PreparedSample:
    """A training sample held in memory: the decoded image as uint8 and its
    target at the net's output size."""

    name: str
    image: np.ndarray          # HxWx3 uint8 RGB
    target: np.ndarray         # float32, the net's output size


def _prepare_one(dataset: Dataset, sample: Sample, target_size) -> PreparedSample:
    rgb = load_image(sample.image_path)
    image = np.clip(np.round(rgb), 0, 255).astype(np.uint8)
    shape = image.shape[:2]
    _, density = dataset.ground_truth(sample, shape)
    return PreparedSample(sample.name, image, training_target(density, target_size))


def prepare(dataset: Dataset, samples: Sequence[Sample], target_size: Sequence[int], workers: int | None = None,
            progress: Callable[[int], None] | None = None) -> list[PreparedSample]:
    """Decode every image (uint8, original size) and make its target, in a
    worker pool. Every unreadable file or size mismatch is collected and
    reported together in one DataError."""
    workers = workers or min(8, os.cpu_count() or 1)
    out: list[PreparedSample | None] = [None] * len(samples)
    problems = []

    def job(i):
        try:
            out[i] = _prepare_one(dataset, samples[i], target_size)
        except (ImageError, DataError) as exc:
            problems.append(str(exc))
        if progress:
            progress(1)

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(job, range(len(samples))))
    if problems:
        raise DataError(f"{len(problems)} problem(s) with the training data:\n" + "\n".join(sorted(problems)))
    return [s for s in out if s is not None]


def split_names(names: Iterable[str], test: int | float, seed: int) -> tuple[list[str], list[str]]:
    """A seeded split: ``test`` images (a count, or a fraction if < 1) held out."""
    names = sorted(names)
    n_test = int(round(test * len(names))) if 0 < test < 1 else int(test)
    if not 0 <= n_test < len(names):
        raise DataError(f"cannot hold out {n_test} of {len(names)} images")
    order = np.random.default_rng(seed).permutation(len(names))
    test_set = {names[i] for i in order[:n_test]}
    return [n for n in names if n not in test_set], [n for n in names if n in test_set]
