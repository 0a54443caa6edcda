"""Everything the package writes for a user: saliency maps and their files.

- :func:`atomic_write`: every file appears whole or not at all (a temporary
  name, then a rename), so a crash, a full disk or Ctrl-C never leaves a
  half-written file nor removes an older one;
- :func:`png_bytes`, :func:`npy_bytes`: the encodings of a map;
- :class:`OutputSpec`: which files an image gets (``<stem>.png``, ``.npy``,
  ``_overlay.png``, Parquet rows; or, for a benchmark submission, one float64
  ``<stem>.npy`` probability map or log-density) and :class:`OutputStore`, the folder they go
  to (a local path or a URI);
- :func:`write_map`: one image's files, used by ``salicon predict`` and by the
  Ray actors of ``predict --ray`` alike; :class:`WriteCounts`, what a job
  wrote of each kind;
- :func:`write_shard`, :func:`completed_stems`, :func:`write_manifest`: the
  Parquet store and the manifest of a batch job.
"""
from __future__ import annotations

import csv
import hashlib
import io
import os
import posixpath
import tempfile
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import SaliconError
from .inputs import Item, is_uri, split_uri
from .postprocess import log_density, to_probability
from .types import PathLike
from .visualize import overlay, overlay_bands, threshold_map, to_uint8

MANIFEST = "manifest.csv"
SHARD_FOLDER = "shards"
STORES = ("png", "parquet", "both")
#: Output kinds, in the order an image's files are written; the map comes last,
#: so its presence marks an image whose files are all there.
KINDS = ("npy", "overlay", "map")
_SUFFIXES = {"map": ".png", "npy": ".npy", "overlay": "_overlay.png"}
#: What the map file holds: an 8-bit PNG, or (float64 .npy, as the MIT/Tübingen
#: benchmark and pysaliency read them) a probability map or its log.
MAP_FORMATS = ("png", "probability", "log-density")


class OutputError(SaliconError):
    """An output that cannot be written (a folder that cannot be created, a full disk)."""


# ------------------------------------------------------------------ files


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temporary_beside(path: Path) -> Path:
    """A new empty file in ``path``'s folder, hidden, to be renamed to ``path`` when complete."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    return Path(tmp)


def publish(tmp: PathLike, path: PathLike) -> None:
    """Give a finished temporary file the usual permissions and rename it to ``path``."""
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)


def atomic_write(path: PathLike, write: Callable[[str], object]) -> None:
    """Create ``path`` through ``write(temporary_path)`` and a rename, so a crash
    or an error never leaves a half-written file (nor removes an older one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = str(temporary_beside(path))
    try:
        write(tmp)
        publish(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: PathLike, data: bytes | Sequence) -> None:
    """Write ``data`` (bytes, or a list of bytes-like parts written one after
    another) to ``path`` atomically (see :func:`atomic_write`)."""
    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            for part in ([data] if isinstance(data, (bytes, bytearray, memoryview)) else data):
                fh.write(part)  # type: ignore[arg-type]  # bytes-like parts
    atomic_write(path, write)


def png_bytes(array: np.ndarray, compress_level: int = 6) -> bytes:
    """An 8-bit array (HxW or HxWx3) encoded as a PNG file (PIL's default compression)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


#: Pictures with more pixels are encoded band by band (:func:`png_bytes_from_bands`).
STREAM_PIXELS = 1 << 24


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")


def _paeth(band: np.ndarray, above: np.ndarray, channels: int) -> np.ndarray:
    """PNG's Paeth filter (type 4) of every row of ``band`` (rows x bytes), given the row above it."""
    x = band.astype(np.int16)
    b = np.concatenate([above[None].astype(np.int16), x[:-1]])
    a = np.zeros_like(x)
    a[:, channels:] = x[:, :-channels]
    c = np.zeros_like(x)
    c[:, channels:] = b[:, :-channels]
    pa, pb, pc = np.abs(b - c), np.abs(a - c), np.abs(a + b - 2 * c)
    predicted = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
    return ((x - predicted) & 0xFF).astype(np.uint8)


def png_bytes_from_bands(bands: Iterable[np.ndarray], height: int, width: int, channels: int,
                         compress_level: int = 6) -> bytes:
    """A PNG file (8-bit grey or RGB) from its rows given in bands (each rows x
    width [x 3], top to bottom), encoded as they come: the picture is never
    held whole, only its compressed bytes (every row Paeth-filtered)."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, not {channels}")
    header = (width.to_bytes(4, "big") + height.to_bytes(4, "big")
              + bytes([8, 2 if channels == 3 else 0, 0, 0, 0]))
    parts = [b"\x89PNG\r\n\x1a\n", _png_chunk(b"IHDR", header)]
    packer = zlib.compressobj(compress_level)
    above = np.zeros(width * channels, dtype=np.uint8)
    rows = 0
    for band in bands:
        flat = np.ascontiguousarray(band, dtype=np.uint8).reshape(len(band), width * channels)
        filtered = np.empty((len(flat), 1 + flat.shape[1]), dtype=np.uint8)
        filtered[:, 0] = 4
        filtered[:, 1:] = _paeth(flat, above, channels)
        above = flat[-1].copy()
        rows += len(flat)
        data = packer.compress(filtered.tobytes())
        if data:
            parts.append(_png_chunk(b"IDAT", data))
    if rows != height:
        raise ValueError(f"the bands held {rows} rows, not {height}")
    parts += [_png_chunk(b"IDAT", packer.flush()), _png_chunk(b"IEND", b"")]
    return b"".join(parts)


def overlay_png(image_rgb: np.ndarray, saliency_map: np.ndarray) -> bytes:
    """The overlay picture (:func:`salicon.visualize.overlay`) as PNG bytes; a huge
    one is drawn and encoded band by band, never held whole."""
    if saliency_map.size <= STREAM_PIXELS:
        return png_bytes(overlay(image_rgb, saliency_map))
    height, width = saliency_map.shape[:2]
    return png_bytes_from_bands(overlay_bands(image_rgb, saliency_map), height, width, 3)


def npy_parts(array: np.ndarray, dtype: type = np.float32) -> list:
    """A .npy file as two parts, its header and the array's own memory (no copy
    when the array is already contiguous in ``dtype``): the bytes of
    :func:`npy_bytes` without holding them (a 13000 x 13000 map: 0.7 GB less)."""
    arr: np.ndarray = np.ascontiguousarray(array, dtype=dtype)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, np.lib.format.header_data_from_array_1_0(arr))
    return [header.getvalue(), memoryview(arr.reshape(-1)).cast("B")]  # type: ignore[arg-type]  # numpy buffers


def npy_bytes(array: np.ndarray, dtype: type = np.float32) -> bytes:
    """A map encoded as a .npy file (float32 unless ``dtype`` says otherwise)."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(array, dtype=dtype))
    return buf.getvalue()


def check_output_folder(folder: PathLike, option: str = "-o") -> list[Path]:
    """Make sure ``folder`` can receive outputs before any work is done: it is
    created (with its parents) and a probe file is written and removed there.
    Returns the folders it created (for :func:`remove_empty_folders`); raises
    OutputError saying why not (a file in the way, no permission, a read-only
    or special file system such as /proc)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{option} {folder}: exists and is not a folder; give a folder for the maps")
    created: list[Path] = []
    parent = folder
    while not parent.exists() and parent != parent.parent:
        created.insert(0, parent)
        parent = parent.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".salicon-write-test.")
        try:
            os.write(fd, b"ok")
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        remove_empty_folders(created)
        raise OutputError(f"{option} {folder}: cannot write outputs there ({exc.strerror or exc})") from None
    return created


def remove_empty_folders(folders: Sequence[Path]) -> None:
    """Remove ``folders`` (deepest last in the list) where they are still empty:
    a job that wrote nothing leaves no trace."""
    for folder in reversed(folders):
        try:
            folder.rmdir()
        except OSError:
            return


# ---------------------------------------------------------- specification


@dataclass(frozen=True)
class OutputSpec:
    """What is written for each image."""
    store: str = "png"            # png (files), parquet (shards) or both
    npy: bool = False             # float32 .npy beside each PNG
    overlay: bool = False         # heatmap over the image, <stem>_overlay.png
    threshold: float | None = None
    parquet_map: str = "png"      # map column of the shards: png (8-bit PNG bytes) or float16
    format: str = "png"           # the map file: png, or probability / log-density (float64 .npy)

    def __post_init__(self):
        if self.format not in MAP_FORMATS:
            raise ValueError(f"format must be one of {MAP_FORMATS}, not {self.format!r}")
        if self.format != "png" and (self.npy or self.threshold is not None or self.store != "png"):
            raise ValueError(f"format {self.format} writes one float64 <name>.npy per image: it does not go "
                             f"with --npy, --threshold or Parquet shards")

    @property
    def png(self) -> bool:
        return self.store in ("png", "both")

    @property
    def parquet(self) -> bool:
        return self.store in ("parquet", "both")

    def kinds(self) -> list[str]:
        """The per-image file kinds, in writing order (the map last)."""
        if not self.png:
            return []
        return [k for k in KINDS if k == "map" or getattr(self, k)]

    def targets(self, stem: str) -> dict[str, str]:
        """Kind -> file (relative to OUT, posix separators) of ``stem``'s outputs."""
        suffixes = _SUFFIXES if self.format == "png" else {**_SUFFIXES, "map": ".npy"}
        return {kind: stem + suffixes[kind] for kind in self.kinds()}

    def encode_map(self, saliency_map: np.ndarray) -> bytes:
        """The map file's bytes: an 8-bit PNG, or a float64 probability map / log-density."""
        if self.format == "png":
            if saliency_map.size > STREAM_PIXELS:
                height, width = saliency_map.shape[:2]
                return png_bytes_from_bands((to_uint8(saliency_map[r:r + 1024])
                                             for r in range(0, height, 1024)), height, width, 1)
            return png_bytes(to_uint8(saliency_map))
        density = to_probability(saliency_map) if self.format == "probability" else log_density(saliency_map)
        return npy_bytes(density, np.float64)

    def files(self, stem: str) -> list[str]:
        """The per-image files that must exist for ``stem`` to be done."""
        return list(self.targets(stem).values())


def find_clashes(items: Sequence[Item], out: str, spec: OutputSpec,
                 files_of: Callable[[Item], Sequence[str]] | None = None) -> list[tuple[str, str]]:
    """(input, output file) pairs where an output would overwrite an input,
    found before any work (local outputs only). ``files_of``: an item's output
    files (default: ``spec.files`` of its stem)."""
    if is_uri(out):
        return []
    sources = {os.path.realpath(it.source): it.source for it in items if not is_uri(it.source)}
    clashes = []
    for it in items:
        for rel in (files_of(it) if files_of else spec.files(it.stem)):
            target = os.path.realpath(os.path.join(out, rel))
            if target in sources:
                clashes.append((sources[target], os.path.join(out, rel)))
    return clashes


# ------------------------------------------------------------------ store


class OutputStore:
    """A job's output folder: a local path or a URI; every write is atomic
    (a temporary name and a rename locally; one object upload elsewhere)."""

    def __init__(self, root: str):
        self.root = str(root)
        self.remote = is_uri(self.root) and not self.root.startswith("file://")
        if self.remote:
            self.fs, base = split_uri(self.root)
            self.base = base.rstrip("/")
        else:
            self.base = self.root[len("file://"):] if self.root.startswith("file://") else self.root

    def path(self, rel: str) -> str:
        return f"{self.base}/{rel}" if self.remote else os.path.join(self.base, rel)

    def exists(self, rel: str) -> bool:
        if self.remote:
            from pyarrow import fs
            return self.fs.get_file_info(self.path(rel)).type == fs.FileType.File
        return os.path.isfile(self.path(rel))

    def write(self, rel: str, data: bytes | Sequence) -> None:
        """Write the file ``rel``: bytes, or a list of bytes-like parts (see :func:`npy_parts`)."""
        if self.remote:
            self.fs.create_dir(posixpath.dirname(self.path(rel)), recursive=True)
            with self.fs.open_output_stream(self.path(rel)) as fh:
                for part in ([data] if isinstance(data, (bytes, bytearray, memoryview)) else data):
                    fh.write(part)
        else:
            atomic_write_bytes(self.path(rel), data)

    def list(self, folder: str, suffix: str) -> list[str]:
        """Relative paths of the files directly in ``folder`` ending in ``suffix``."""
        if self.remote:
            from pyarrow import fs
            infos = self.fs.get_file_info(fs.FileSelector(self.path(folder), allow_not_found=True))
            names = [posixpath.basename(i.path) for i in infos if i.type == fs.FileType.File]
        else:
            full = self.path(folder)
            names = os.listdir(full) if os.path.isdir(full) else []
        return sorted(f"{folder}/{n}" for n in names if n.endswith(suffix) and not n.startswith("."))

    def read(self, rel: str) -> bytes:
        if self.remote:
            with self.fs.open_input_file(self.path(rel)) as fh:
                return fh.read()
        with open(self.path(rel), "rb") as fh:
            return fh.read()


# ----------------------------------------------------------------- writing


@dataclass
class MapWrite:
    """What :func:`write_map` did for one image: the kinds written and, for
    each that failed, why."""
    written: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    map_png: bytes | None = None   # the encoded 8-bit map, reused for a Parquet row

    @property
    def ok(self) -> bool:
        return not self.errors

    def message(self) -> str:
        return "; ".join(self.errors.values())


def write_map(store: OutputStore, stem: str, saliency_map: np.ndarray, spec: OutputSpec,
              image: Callable[[], np.ndarray] | None = None) -> MapWrite:
    """Write one image's files (see :meth:`OutputSpec.targets`), each atomically.

    ``saliency_map`` is the final map (float, the image's size, [0, 1]); the
    threshold is applied here. ``image`` gives the HxWx3 uint8 image for the
    overlay. A kind that cannot be written is recorded with the reason and the
    others are still tried, so a full disk loses only what did not fit.
    """
    if spec.threshold is not None:
        saliency_map = threshold_map(saliency_map, spec.threshold)
    result = MapWrite()
    def overlay() -> bytes:
        if image is None:
            raise ValueError("an overlay needs the image")
        return overlay_png(image(), saliency_map)

    encoders: dict[str, Callable[[], bytes | list]] = {
        "map": lambda: spec.encode_map(saliency_map), "npy": lambda: npy_parts(saliency_map), "overlay": overlay}
    data: bytes | list | None = None
    for kind, rel in spec.targets(stem).items():
        data = None  # a huge image's previous file goes before the next one is made
        try:
            data = encoders[kind]()
            if kind == "map" and spec.format == "png" and isinstance(data, bytes):
                result.map_png = data
            store.write(rel, data)
            result.written.append(kind)
        except OSError as exc:
            result.errors[kind] = f"cannot write output {store.path(rel)} ({exc.strerror or exc})"
        except (SaliconError, ValueError, MemoryError) as exc:
            result.errors[kind] = f"{kind} not written: {exc}"
    return result


@dataclass
class WriteCounts:
    """Files written by a job, per kind, and the images that failed."""
    kinds: list[str]
    written: dict[str, int] = field(default_factory=dict)
    failed: int = 0

    def add(self, result: MapWrite | None) -> None:
        """Count one image's outcome (None: it failed before anything was written)."""
        for kind in result.written if result is not None else ():
            self.written[kind] = self.written.get(kind, 0) + 1
        if result is None or not result.ok:
            self.failed += 1

    def summary(self, where: str) -> str:
        """'wrote 2 saliency maps to OUT (2 .npy, 1 overlay); 1 failed', or why nothing was."""
        maps = self.written.get("map", 0)
        extras = [_count(self.written.get(k, 0), k) for k in self.kinds if k != "map"]
        detail = f" ({', '.join(extras)})" if extras and any(self.written.get(k) != maps for k in self.kinds) else ""
        if not any(self.written.values()):
            return f"no saliency maps written: {'all ' if self.failed > 1 else ''}{_count(self.failed, 'input')} failed"
        head = f"wrote {_count(maps, 'map')} to {where}" if maps else f"no saliency maps written to {where}"
        return head + detail + (f"; {self.failed} failed" if self.failed else "")


def _count(n: int, kind: str) -> str:
    """'1 saliency map', '2 overlays', '3 .npy', '1 input'."""
    word = {"map": "saliency map", "npy": ".npy", "overlay": "overlay", "input": "input"}[kind]
    return f"{n} {word}" if n == 1 or kind == "npy" else f"{n} {word}s"


# ------------------------------------------------------- Parquet, manifest


def write_shard(store: OutputStore, rows: dict[str, list], spec: OutputSpec) -> None:
    """One Parquet shard of maps (columns name, source, height, width, map),
    named by its contents: a retried batch overwrites its own shard, never adds a copy."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"name": rows["name"], "source": rows["source"],
                      "height": pa.array(rows["height"], pa.int32()), "width": pa.array(rows["width"], pa.int32()),
                      "map": pa.array(rows["map"], pa.binary())},
                     metadata={"map_encoding": "png8" if spec.parquet_map == "png" else "float16_hw"})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    digest = hashlib.sha1("\n".join(rows["name"]).encode()).hexdigest()[:16]
    store.write(f"{SHARD_FOLDER}/part-{digest}.parquet", buf.getvalue())


def completed_stems(store: OutputStore, items: Sequence[Item], spec: OutputSpec) -> set[str]:
    """Stems whose outputs are all present (files are written atomically, so
    present means complete; shards are read for the names they hold)."""
    in_shards: set[str] | None = None
    if spec.parquet:
        import pyarrow.parquet as pq

        in_shards = set()
        for rel in store.list(SHARD_FOLDER, ".parquet"):
            table = pq.read_table(io.BytesIO(store.read(rel)), columns=["name"])
            in_shards.update(table.column("name").to_pylist())
    return {it.stem for it in items if all(store.exists(f) for f in spec.files(it.stem))
            and (in_shards is None or it.stem in in_shards)}


def write_manifest(store: OutputStore, items: Iterable[Item], statuses: dict[str, tuple[str, str]],
                   spec: OutputSpec, files_of: Callable[[Item], Sequence[str]] | None = None) -> None:
    """OUT/manifest.csv: input, outputs, status (written / done before / failed), message.
    ``files_of``: an item's output files when not ``spec.files`` of its stem (videos)."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["input", "outputs", "status", "message"])
    for it in items:
        status, message = statuses.get(it.stem, ("failed", "lost: no status came back from the cluster"))
        own = files_of(it) if files_of else None
        outputs = list(own) if own is not None else (
            spec.files(it.stem) + ([f"{SHARD_FOLDER}/*.parquet:{it.stem}"] if spec.parquet else []))
        writer.writerow([it.source, " ".join(outputs) if status != "failed" else "", status, message])
    store.write(MANIFEST, buf.getvalue().encode())


__all__ = ["remove_empty_folders", "OutputError", "OutputSpec", "OutputStore", "MapWrite", "WriteCounts", "STORES",
           "MANIFEST", "SHARD_FOLDER", "atomic_write", "atomic_write_bytes", "png_bytes", "npy_bytes",
           "check_output_folder", "find_clashes", "write_map", "write_shard", "completed_stems", "write_manifest"]
