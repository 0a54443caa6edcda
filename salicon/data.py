"""Eye-tracking data: fixation points, fixation maps, and training samples.

Two forms of training data:

- the report's two folders, images and fixation maps with the same base
  names (``FolderDataset``);
- fixation points, turned into fixation maps here: OSIE's layout, a folder
  holding ``stimuli/`` and ``fixations.mat`` (``OSIEDataset``).

A *fixation map* here is the blurred fixation density: a 1 at every fixated
pixel (all subjects), convolved with a Gaussian, min-max normalised to [0, 1]
(OSIE's convention: sigma 24 px, a 168x168 window, zeros outside the image).
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence, Union

import numpy as np
from PIL import Image

from .errors import ImageError, SaliconError
from .image import IMAGE_SUFFIXES, load_image

PathLike = Union[str, os.PathLike]

#: OSIE's fixation-map blur: Gaussian sigma in pixels and window size.
OSIE_SIGMA = 24.0
OSIE_WINDOW = 168


class DataError(SaliconError):
    """Training or evaluation data that cannot be used (all problems listed)."""


@dataclass
class Fixations:
    """Fixation points of one image: parallel arrays, 0-based pixel coordinates."""

    x: np.ndarray
    y: np.ndarray
    subject: np.ndarray
    duration: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.x.size)


@dataclass
class Sample:
    """One image with its fixation map (HxW in [0, 1]) and, where the data set
    has them, its fixation points."""

    name: str
    image_path: Path
    fixation_map: np.ndarray | None = None
    fixations: Fixations | None = None
    map_path: Path | None = None


def gaussian_window(sigma: float = OSIE_SIGMA, size: int = OSIE_WINDOW) -> np.ndarray:
    """MATLAB's fspecial('gaussian', size, sigma) as a 1-D factor (sums to 1).

    Taps sit at offsets -(size-1)/2 .. (size-1)/2 from the window centre.
    """
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    w = np.exp(-x * x / (2.0 * sigma * sigma))
    return w / w.sum()


def fixation_density(fixations: Fixations, shape: Sequence[int], sigma: float = OSIE_SIGMA,
                     window: int | None = OSIE_WINDOW) -> np.ndarray:
    """The blurred fixation map of ``fixations`` on an image of ``shape`` (H, W).

    A binary map holds a 1 at each fixated pixel (rounded, clipped into the
    image; repeated pixels count once) and is filtered as MATLAB's
    imfilter(map, fspecial('gaussian', window, sigma)) does: correlation, zero
    padding, the window's centre at index floor((window + 1) / 2). The result is
    min-max normalised to [0, 1]. ``window=None`` uses a window of 6 sigma + 1.
    Computed as a sum of separable stamps, one per fixated pixel.
    """
    h, w = int(shape[0]), int(shape[1])
    if window is None:
        window = 2 * int(np.ceil(3 * sigma)) + 1
    rows, cols = fixated_pixels(fixations, (h, w))
    density = np.zeros((h, w))
    if rows.size:
        taps = gaussian_window(sigma, window)
        centre = (window + 1) // 2 - 1  # MATLAB's 1-based floor((n+1)/2), 0-based here
        # output(i) = sum_k taps[k] * map(i + k - centre): stamp taps reversed at each fixation.
        ky = _stamps(rows, h, taps, centre)
        kx = _stamps(cols, w, taps, centre)
        density = ky.T @ kx
    lo, hi = density.min(), density.max()
    return ((density - lo) / (hi - lo)) if hi > lo else np.zeros((h, w))


def _stamps(positions: np.ndarray, length: int, taps: np.ndarray, centre: int) -> np.ndarray:
    """(n, length) rows: the response at every pixel i to a 1 at ``positions[j]``."""
    i = np.arange(length)[None, :]
    k = positions[:, None] - i + centre  # tap index that links pixel i to the fixation
    valid = (k >= 0) & (k < taps.size)
    return np.where(valid, taps[np.clip(k, 0, taps.size - 1)], 0.0)


def fixated_pixels(fixations: Fixations, shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Unique (row, col) pixels of the fixations, rounded half up and clipped."""
    h, w = int(shape[0]), int(shape[1])
    if not len(fixations):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    rows = np.clip(np.floor(fixations.y + 0.5).astype(np.int64), 0, h - 1)
    cols = np.clip(np.floor(fixations.x + 0.5).astype(np.int64), 0, w - 1)
    flat = np.unique(rows * w + cols)
    return flat // w, flat % w


def binary_fixation_map(fixations: Fixations, shape: Sequence[int]) -> np.ndarray:
    """Boolean HxW map with True at every fixated pixel."""
    out = np.zeros((int(shape[0]), int(shape[1])), dtype=bool)
    rows, cols = fixated_pixels(fixations, shape)
    out[rows, cols] = True
    return out


def area_resize(array: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Resize a 2-D map by area averaging (each output cell is the mean of the
    input area it covers), for downsampling fixation maps to the net's output."""
    from skimage.transform import resize_local_mean
    return resize_local_mean(np.asarray(array, dtype=np.float64), tuple(int(s) for s in size))


def training_target(fixation_map: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """The net's target: the fixation map area-averaged to ``size`` and scaled
    to a maximum of 1 (float32)."""
    small = area_resize(fixation_map, size)
    peak = small.max()
    return (small / peak if peak > 0 else small).astype(np.float32)


# ---------------------------------------------------------------- data sets


def _list_images(folder: Path) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            files.setdefault(path.stem, path)
    return files


def _read_map(path: Path) -> np.ndarray:
    """A fixation-map image as HxW float in [0, 1] (8- or 16-bit, any mode)."""
    with Image.open(path) as img:
        img.load()
        arr = np.asarray(img)
    if arr.ndim == 3:
        arr = arr[..., :3].mean(axis=2) if arr.shape[2] >= 3 else arr[..., 0]
    arr = arr.astype(np.float64)
    if arr.max(initial=0) > 255:
        arr = arr / 65535.0
    elif arr.max(initial=0) > 1:
        arr = arr / 255.0
    return arr


class FolderDataset:
    """Images and fixation maps in two folders, matched by base name (the
    OpenSALICON layout). Any common image format for both."""

    def __init__(self, images: PathLike, maps: PathLike):
        self.images_dir, self.maps_dir = Path(images), Path(maps)
        problems = []
        for d, what in ((self.images_dir, "image"), (self.maps_dir, "fixation-map")):
            if not d.is_dir():
                problems.append(f"{d}: no such {what} folder")
        if problems:
            raise DataError("\n".join(problems))
        images, maps = _list_images(self.images_dir), _list_images(self.maps_dir)
        if not images:
            raise DataError(f"{self.images_dir}: no image files (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
        for name in sorted(set(images) - set(maps)):
            problems.append(f"{images[name]}: no fixation map named {name}.* in {self.maps_dir}")
        for name in sorted(set(maps) - set(images)):
            problems.append(f"{maps[name]}: no image named {name}.* in {self.images_dir}")
        if problems:
            raise DataError(f"{len(problems)} problem(s) with the training data:\n" + "\n".join(problems))
        self.samples = [Sample(name, images[name], map_path=maps[name]) for name in sorted(images)]

    def __len__(self) -> int:
        return len(self.samples)

    def names(self) -> list[str]:
        return [s.name for s in self.samples]


def _as_points(values) -> np.ndarray:
    return np.atleast_1d(np.asarray(values, dtype=np.float64)).ravel()


class OSIEDataset:
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

    def __len__(self) -> int:
        return len(self.samples)

    def names(self) -> list[str]:
        return [s.name for s in self.samples]


def open_dataset(spec: PathLike, maps: PathLike | None = None, sigma: float = OSIE_SIGMA):
    """A data set from a path: an OSIE folder (stimuli/ + fixations.mat), or a
    folder holding ``images/`` and ``maps/`` (or ``fixation_maps/``), or an
    images folder plus ``maps``."""
    root = Path(spec)
    if maps is not None:
        return FolderDataset(root, maps)
    if (root / "fixations.mat").exists():
        return OSIEDataset(root, sigma=sigma)
    for images, fmaps in (("images", "maps"), ("images", "fixation_maps"), ("stimuli", "maps")):
        if (root / images).is_dir() and (root / fmaps).is_dir():
            return FolderDataset(root / images, root / fmaps)
    if not root.exists():
        raise DataError(f"{root}: no such data folder")
    raise DataError(f"{root}: not a data folder: expected stimuli/ + fixations.mat (OSIE) or "
                    f"images/ + maps/ with the same base names")


# ------------------------------------------------------------- preparation


@dataclass
class PreparedSample:
    """A training sample held in memory: the decoded image as uint8 and its
    target at the net's output size."""

    name: str
    image: np.ndarray          # HxWx3 uint8 RGB
    target: np.ndarray         # float32, the net's output size
    fixations: Fixations | None = None
    fixation_map_shape: tuple[int, int] = (0, 0)


@dataclass
class Prepared:
    samples: list[PreparedSample] = field(default_factory=list)
    seconds: float = 0.0


def _prepare_one(sample: Sample, target_size, sigma, window) -> PreparedSample:
    rgb = load_image(sample.image_path)
    image = np.clip(np.round(rgb), 0, 255).astype(np.uint8)
    shape = image.shape[:2]
    if sample.fixations is not None:
        fmap = fixation_density(sample.fixations, shape, sigma, window)
    else:
        try:
            fmap = _read_map(sample.map_path)
        except (OSError, ValueError, SyntaxError) as exc:
            raise ImageError(f"{sample.map_path}: cannot read the fixation map ({exc})") from None
        if fmap.shape != shape:
            raise ImageError(f"{sample.map_path}: fixation map is {fmap.shape[1]}x{fmap.shape[0]} but its "
                             f"image {sample.image_path.name} is {shape[1]}x{shape[0]}")
    return PreparedSample(sample.name, image, training_target(fmap, target_size), sample.fixations, shape)


def prepare(samples: Sequence[Sample], target_size: Sequence[int], sigma: float = OSIE_SIGMA,
            window: int | None = OSIE_WINDOW, workers: int | None = None,
            progress: Callable[[int], None] | None = None) -> list[PreparedSample]:
    """Decode every image (uint8, original size) and make its target, in a
    worker pool. Every unreadable file or size mismatch is collected and
    reported together in one DataError."""
    workers = workers or min(8, os.cpu_count() or 1)
    out: list[PreparedSample | None] = [None] * len(samples)
    problems = []

    def job(i):
        try:
            out[i] = _prepare_one(samples[i], target_size, sigma, window)
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
