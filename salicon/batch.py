"""Saliency maps for whole image collections on a Ray cluster
(``salicon predict INPUTS -o OUT --ray [ADDRESS]``).

The job is a Ray Data pipeline of two stages:

1. **decode** (CPU tasks): read each file (local path or any filesystem URI
   pyarrow understands: ``s3://``, ``gs://``, ``file://``), decode it and
   resize it into the net's input blobs, exactly as :meth:`Salicon.preprocess`;
2. **net and write** (actors): one :class:`~salicon.model.Salicon` per actor,
   one actor per GPU (``num_gpus=1``) or CPU actors when there is no GPU, a
   batch of images per forward pass; each raw map is post-processed to its
   image's size and written, atomically, by the actor that computed it (PNG
   maps mirroring the input tree and/or Parquet shards), on a second thread
   while the next batch runs the net. (A separate write stage would wait
   behind the decode tasks for CPU slots, so maps would only appear at the
   end of the job.)

The driver lists the inputs, leaves out those whose outputs are already
complete (so a rerun does no work twice), follows progress and writes
``OUT/manifest.csv`` with every image's status. Ray Data restarts an actor
that dies and retries its batch; writes are atomic and shard names follow
their contents, so a retried batch overwrites its own output instead of
adding a second copy.
"""
from __future__ import annotations

import csv
import fnmatch
import glob
import hashlib
import io
import logging
import math
import os
import posixpath
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Sequence

import numpy as np

from .errors import SaliconError
from .formats import atomic_write, npy_bytes, png_bytes
from .image import IMAGE_SUFFIXES

#: Files read as lists of images (one path or URI per line / row).
LIST_SUFFIXES = {".txt", ".lst", ".csv", ".parquet"}
STORES = ("png", "parquet", "both")
MANIFEST = "manifest.csv"
SHARD_FOLDER = "shards"
RAY_EXTRA_HINT = "pip install -e \".[ray]\" (or pip install \"salicon[ray]\")"


class BatchError(SaliconError):
    """A batch job that cannot start: bad inputs, output, cluster or options."""


# ---------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Item:
    """One image of the job: where it is read and where its outputs go."""
    source: str   # a local path or a URI
    stem: str     # output path relative to OUT, without suffix (posix separators)


def is_uri(text: str) -> bool:
    return "://" in text


def _split_uri(uri: str):
    """(pyarrow filesystem, path inside it) of a URI; one filesystem per bucket/host."""
    from pyarrow import fs

    scheme, rest = uri.split("://", 1)
    if scheme == "file":
        return fs.LocalFileSystem(), "/" + rest.lstrip("/")
    try:
        filesystem, path = fs.FileSystem.from_uri(uri)
    except (ValueError, OSError) as exc:
        raise BatchError(f"{uri}: cannot open this URI ({exc})") from None
    return filesystem, path


def read_bytes(source: str) -> bytes:
    """The bytes of a local file or of a URI's object."""
    if not is_uri(source):
        with open(source, "rb") as fh:
            return fh.read()
    filesystem, path = _split_uri(source)
    with filesystem.open_input_file(path) as fh:
        return fh.read()


def _join_uri(base_uri: str, path: str) -> str:
    scheme = base_uri.split("://", 1)[0]
    return f"{scheme}://{path}" if scheme != "file" else f"file://{path}"


def _list_uri_folder(uri: str, recursive: bool, pattern: str | None = None) -> list[tuple[str, str]]:
    """(URI, path relative to the folder) of the images below a folder URI."""
    from pyarrow import fs

    filesystem, root = _split_uri(uri)
    root = root.rstrip("/")
    infos = filesystem.get_file_info(fs.FileSelector(root, recursive=recursive, allow_not_found=True))
    found = []
    for info in sorted(infos, key=lambda i: i.path):
        if info.type != fs.FileType.File:
            continue
        rel = posixpath.relpath(info.path, root)
        if PurePosixPath(rel).suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if pattern and not fnmatch.fnmatch(rel, pattern):
            continue
        found.append((_join_uri(uri, info.path), rel))
    return found


def _read_list(source: str) -> list[str]:
    """Entries of a list file: .txt/.lst (a path per line), .csv (column 'path' or
    the first), .parquet (column 'path' or the first string column)."""
    suffix = PurePosixPath(source.split("://")[-1]).suffix.lower()
    data = read_bytes(source)
    if suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pq.read_table(io.BytesIO(data))
        names = [n for n in table.column_names if n == "path"] or \
            [n for n, t in zip(table.column_names, table.schema.types) if pa.types.is_string(t)
             or pa.types.is_large_string(t)]
        if not names:
            raise BatchError(f"{source}: no 'path' column and no text column to read image paths from")
        return [str(v) for v in table.column(names[0]).to_pylist() if v]
    text = data.decode("utf-8-sig")
    if suffix == ".csv":
        rows = list(csv.reader(io.StringIO(text)))
        if not rows:
            return []
        column = rows[0].index("path") if "path" in rows[0] else 0
        body = rows[1:] if ("path" in rows[0] or not _looks_like_image(rows[0][column])) else rows
        return [r[column].strip() for r in body if len(r) > column and r[column].strip()]
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def _looks_like_image(text: str) -> bool:
    return PurePosixPath(text).suffix.lower() in IMAGE_SUFFIXES


def _entries_with_stems(entries: list[str]) -> list[tuple[str, str]]:
    """Stems below the entries' common folder, so a list mirrors its tree too."""
    if not entries:
        return []
    keys = [e.split("://", 1)[-1] if is_uri(e) else os.path.abspath(e) for e in entries]
    parents = [posixpath.dirname(k.replace(os.sep, "/")) for k in keys]
    common = posixpath.commonpath(parents) if len(set(k.startswith("/") for k in keys)) == 1 else ""
    out = []
    for entry, key in zip(entries, keys):
        rel = posixpath.relpath(key.replace(os.sep, "/"), common) if common else posixpath.basename(key)
        out.append((entry, str(PurePosixPath(rel).with_suffix(""))))
    return out


def list_inputs(inputs: Sequence[str], recursive: bool = False) -> tuple[list[Item], list[str]]:
    """The images named by ``inputs`` (files, folders, globs, list files, URIs)
    with unique output stems, and one problem message per input that names none."""
    found: list[tuple[str, str]] = []
    problems: list[str] = []
    for arg in inputs:
        before = len(found)
        try:
            found.extend(_expand(arg, recursive))
        except BatchError as exc:
            problems.append(str(exc))
            continue
        except OSError as exc:
            problems.append(f"{arg}: {exc}")
            continue
        if len(found) == before:
            problems.append(f"{arg}: no images found")
    # Absolute paths: the workers of a cluster run in other working directories.
    found = [(src if is_uri(src) else os.path.abspath(src), stem) for src, stem in found]
    from .cli import unique_stems  # the rule single-process predict follows

    stems = [p.as_posix() for p in unique_stems([(PurePosixPath(src.split("://")[-1]), PurePosixPath(stem))
                                                 for src, stem in found])]
    return [Item(src, stem) for (src, _), stem in zip(found, stems)], problems


def _expand(arg: str, recursive: bool) -> list[tuple[str, str]]:
    if is_uri(arg):
        from pyarrow import fs

        filesystem, path = _split_uri(arg)
        if any(c in path for c in "*?["):
            folder, pattern = path.rsplit("/", 1) if "/" in path else ("", path)
            return _list_uri_folder(_join_uri(arg, folder), recursive or "**" in pattern, pattern)
        info = filesystem.get_file_info(path)
        if info.type == fs.FileType.Directory:
            return [(u, str(PurePosixPath(rel).with_suffix(""))) for u, rel in _list_uri_folder(arg, recursive)]
        if info.type == fs.FileType.NotFound:
            raise BatchError(f"{arg}: no such file or folder")
        return _file_entry(arg)
    if any(c in arg for c in "*?["):
        matches = sorted(glob.glob(arg, recursive=True))
        images = [m for m in matches if os.path.isfile(m) and _looks_like_image(m)]
        return _entries_with_stems(images)
    path = Path(arg)
    if path.is_dir():
        pattern = "**/*" if recursive else "*"
        return [(str(f), f.relative_to(path).with_suffix("").as_posix()) for f in sorted(path.glob(pattern))
                if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES]
    if not path.exists():
        raise BatchError(f"{arg}: no such file or folder")
    return _file_entry(arg)


def _file_entry(arg: str) -> list[tuple[str, str]]:
    suffix = PurePosixPath(arg.split("://")[-1]).suffix.lower()
    if suffix in LIST_SUFFIXES:
        base = arg.rsplit("/", 1)[0] if is_uri(arg) else str(Path(arg).parent)
        entries = []
        for e in _read_list(arg):
            if is_uri(e) or os.path.isabs(e):
                entries.append(e)
            else:  # relative entries are read from the list file's folder
                entries.append(f"{base}/{e}" if is_uri(arg) else os.path.join(base, e))
        return _entries_with_stems(entries)
    name = PurePosixPath(arg.split("://")[-1]).with_suffix("").name
    return [(arg, name)]


# --------------------------------------------------------------- outputs


class OutputStore:
    """The job's output folder: a local path or a URI; every write is atomic
    (a temporary name and a rename locally; one object upload elsewhere)."""

    def __init__(self, root: str):
        self.root = root
        self.remote = is_uri(root) and not root.startswith("file://")
        if self.remote:
            self.fs, self.base = _split_uri(root)
            self.base = self.base.rstrip("/")
        else:
            self.base = root[len("file://"):] if root.startswith("file://") else root

    def path(self, rel: str) -> str:
        return f"{self.base}/{rel}" if self.remote else os.path.join(self.base, rel)

    def exists(self, rel: str) -> bool:
        if self.remote:
            from pyarrow import fs
            return self.fs.get_file_info(self.path(rel)).type == fs.FileType.File
        return os.path.isfile(self.path(rel))

    def write(self, rel: str, data: bytes) -> None:
        if self.remote:
            self.fs.create_dir(posixpath.dirname(self.path(rel)), recursive=True)
            with self.fs.open_output_stream(self.path(rel)) as fh:
                fh.write(data)
            return

        def write(tmp: str) -> None:
            with open(tmp, "wb") as fh:
                fh.write(data)
        atomic_write(self.path(rel), write)

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


@dataclass(frozen=True)
class OutputSpec:
    """What the write stage produces for each image."""
    store: str = "png"            # png, parquet or both
    npy: bool = False             # float32 .npy beside each PNG
    overlay: bool = False         # heatmap over the image, <stem>_overlay.png
    threshold: float | None = None
    parquet_map: str = "png"      # map column of the shards: png (8-bit PNG bytes) or float16

    @property
    def png(self) -> bool:
        return self.store in ("png", "both")

    @property
    def parquet(self) -> bool:
        return self.store in ("parquet", "both")

    def files(self, stem: str) -> list[str]:
        """The per-image files (relative to OUT) that must exist for ``stem`` to be done."""
        if not self.png:
            return []
        names = [stem + ".png"]
        if self.npy:
            names.append(stem + ".npy")
        if self.overlay:
            names.append(stem + "_overlay.png")
        return names


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
    done = set()
    for item in items:
        if all(store.exists(f) for f in spec.files(item.stem)) and (in_shards is None or item.stem in in_shards):
            done.add(item.stem)
    return done


# ---------------------------------------------------------------- stages


@dataclass(frozen=True)
class PreprocessSpec:
    """What the decode stage needs of the model (picklable; no weights)."""
    input_shapes: dict[str, tuple[int, ...]]
    resize: str
    input_scale: float
    mean_bgr: tuple[float, float, float]
    max_pixels: int | None


def decode_batch(batch: dict[str, np.ndarray], spec: PreprocessSpec) -> dict[str, np.ndarray]:
    """Stage 1: each row's file read, decoded and resized into the net's blobs;
    a file that fails keeps zero blobs and says why in ``error``."""
    from .image import load_image
    from .preprocess import image_to_inputs

    n = len(batch["source"])
    names = list(spec.input_shapes)
    blobs = {name: np.zeros((n, 3, *spec.input_shapes[name][2:]), np.float32) for name in names}
    errors, heights, widths = [""] * n, np.zeros(n, np.int64), np.zeros(n, np.int64)
    for i, source in enumerate(batch["source"]):
        source = str(source)
        try:
            rgb = load_image(read_bytes(source), as_float=False, max_pixels=spec.max_pixels, name=source)
            heights[i], widths[i] = rgb.shape[:2]
            out = image_to_inputs(rgb, [spec.input_shapes[k][2:] for k in names], spec.resize,
                                  spec.input_scale, spec.mean_bgr, "cpu")
            for name, blob in zip(names, out):
                blobs[name][i] = blob.numpy()
        except (SaliconError, OSError, ValueError, MemoryError) as exc:
            errors[i] = str(exc) if source in str(exc) else f"{source}: {exc}"
    return {"index": batch["index"], "source": batch["source"], "stem": batch["stem"],
            "height": heights, "width": widths, "error": np.array(errors, dtype=object), **blobs}


class NetActor:
    """Stage 2: one model per actor (a GPU each, or CPU threads). Two batches
    are in the actor at once: while one runs the net (one forward at a time,
    under a lock) the other's maps are post-processed and written."""

    def __init__(self, model_path: str, prototxt: str, device: str, precision: str, input_scale: float,
                 out: str, spec: "OutputSpec", post, resize: str, max_pixels: int | None,
                 threads: int | None = None):
        import threading

        import torch

        from .model import Salicon

        if threads:
            torch.set_num_threads(threads)
        self.model = Salicon(model_path, prototxt, device=device, precision=precision, input_scale=input_scale,
                             postprocess="none")
        self.names = list(self.model.net.input_shapes)
        self.raw_shape = tuple(self.model.net.blob_shapes[self.model.output_blob][-2:])
        self.write = dict(out=out, spec=spec, post=post, resize=resize, max_pixels=max_pixels)
        self._net_lock = threading.Lock()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        n = len(batch["source"])
        good = [i for i in range(n) if not batch["error"][i]]
        raw = np.zeros((n, *self.raw_shape), np.float32)  # failed rows keep zeros; the writer skips them
        if good:
            inputs = {k: torch.from_numpy(np.ascontiguousarray(batch[k][good])).to(self.model.device)
                      for k in self.names}
            with self._net_lock:
                raw[good] = self.model.forward(inputs).cpu().numpy()
        return write_maps(batch, raw, **self.write)


def write_maps(batch: dict[str, np.ndarray], raw: np.ndarray, out: str, spec: OutputSpec, post, resize: str,
               max_pixels: int | None) -> dict[str, np.ndarray]:
    """Each raw map post-processed to its image's size and written, atomically,
    from the worker that holds it; one status row per image (``ok`` or why not)."""
    import torch

    from .image import load_image
    from .visualize import overlay, threshold_map, to_uint8

    store = OutputStore(out)
    n = len(batch["source"])
    status, messages = ["ok"] * n, [""] * n
    rows: dict[str, list] = {"name": [], "source": [], "height": [], "width": [], "map": []}
    for i in range(n):
        source, stem = str(batch["source"][i]), str(batch["stem"][i])
        if batch["error"][i]:
            status[i], messages[i] = "failed", str(batch["error"][i])
            continue
        try:
            size = (int(batch["height"][i]), int(batch["width"][i]))
            sal = post.apply(torch.from_numpy(raw[i]), size, resize)
            if spec.threshold is not None:
                sal = threshold_map(sal, spec.threshold)
            if spec.png:
                if spec.npy:
                    store.write(stem + ".npy", npy_bytes(sal))
                if spec.overlay:
                    rgb = load_image(read_bytes(source), as_float=False, max_pixels=max_pixels, name=source)
                    store.write(stem + "_overlay.png", png_bytes(overlay(rgb, sal)))
                store.write(stem + ".png", png_bytes(to_uint8(sal)))  # last: its presence marks the image done
            if spec.parquet:
                rows["name"].append(stem)
                rows["source"].append(source)
                rows["height"].append(size[0])
                rows["width"].append(size[1])
                rows["map"].append(png_bytes(to_uint8(sal)) if spec.parquet_map == "png"
                                   else sal.astype(np.float16).tobytes())
        except (SaliconError, OSError, ValueError, MemoryError) as exc:
            status[i], messages[i] = "failed", str(exc) if source in str(exc) else f"{source}: {exc}"
    if rows["name"]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({"name": rows["name"], "source": rows["source"],
                          "height": pa.array(rows["height"], pa.int32()), "width": pa.array(rows["width"], pa.int32()),
                          "map": pa.array(rows["map"], pa.binary())},
                         metadata={"map_encoding": "png8" if spec.parquet_map == "png" else "float16_hw"})
        buf = io.BytesIO()
        pq.write_table(table, buf)
        # Named by its contents: a retried batch overwrites its own shard, never adds a copy.
        digest = hashlib.sha1("\n".join(rows["name"]).encode()).hexdigest()[:16]
        try:
            store.write(f"{SHARD_FOLDER}/part-{digest}.parquet", buf.getvalue())
        except OSError as exc:
            for i in range(n):
                if status[i] == "ok":
                    status[i], messages[i] = "failed", f"shard not written: {exc}"
    return {"stem": batch["stem"], "source": batch["source"],
            "status": np.array(status, dtype=object), "message": np.array(messages, dtype=object)}


# ------------------------------------------------------------------- job


@dataclass
class BatchReport:
    """What a batch job did, image by image."""
    total: int = 0
    written: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    startup_seconds: float = 0.0
    actors: int = 0
    device: str = ""

    @property
    def ok(self) -> bool:
        return not self.failed


def ray_dependencies_missing() -> str | None:
    """The message to show when Ray Data or pyarrow is absent, else None."""
    import importlib

    for module in ("ray", "ray.data", "pyarrow"):
        try:
            importlib.import_module(module)
        except ImportError:
            return f"--ray needs Ray Data ({module} is missing): install the ray extra with {RAY_EXTRA_HINT}"
    return None


def use_token_auth(address: str | None) -> None:
    """Send this machine's Ray token when joining a cluster (``ray start`` makes
    token-authenticated clusters, and a client sends its token only in token
    mode). Call it before Ray is imported; afterwards Ray's configuration is
    refreshed through its own helper where this Ray version has it."""
    if address in (None, "", "local") or "RAY_AUTH_MODE" in os.environ:
        return
    if not (os.environ.get("RAY_AUTH_TOKEN") or (Path.home() / ".ray" / "auth_token").exists()):
        return
    os.environ["RAY_AUTH_MODE"] = "token"
    if "ray" in sys.modules:  # Ray read its configuration when it was imported
        try:
            from ray._private.authentication.authentication_token_setup import _enable_token_auth
            _enable_token_auth()
        except ImportError:
            pass


def _connect(address: str | None, num_cpus: int | None):
    import ray

    if ray.is_initialized():
        return
    # Ray's own start-up notices would bury the progress bar; errors still show.
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": "ERROR",
                              "log_to_driver": False, "configure_logging": True}
    if address in (None, "", "local"):
        # A private instance has no dashboard to show metrics: do not collect them.
        os.environ.setdefault("RAY_enable_metrics_collection", "0")
        if num_cpus:
            kwargs["num_cpus"] = num_cpus
        # address="local": a private instance even where `ray start` left a cluster running
        # (a bare ray.init() would join that one).
        ray.init(address="local", **kwargs)
    else:
        kwargs.pop("include_dashboard")
        try:
            ray.init(address=address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise BatchError(f"--ray {address}: cannot join the Ray cluster ({exc}); if it uses token "
                             f"authentication, its token must be in ~/.ray/auth_token or RAY_AUTH_TOKEN") from None


def predict_on_ray(items: Sequence[Item], out: str, *, model_path: str | os.PathLike | None = None,
                   prototxt: str | os.PathLike | None = None, address: str | None = None,
                   actors: int | None = None, batch_size: int = 1, device: str = "auto",
                   precision: str = "fp32", input_scale: float | None = None, resize: str = "spline",
                   postprocess: str = "default", max_pixels: int | None = None,
                   spec: OutputSpec = OutputSpec(), progress: bool = True,
                   num_cpus: int | None = None) -> BatchReport:
    """Compute and write the saliency maps of ``items`` below ``out`` with Ray Data.

    ``address``: None or ``"local"`` starts a Ray instance on this machine;
    ``"auto"`` or ``"ray://host:10001"`` (or ``host:port``) joins a cluster.
    ``actors``: net actors (default: one per GPU of the cluster, else one CPU
    actor). Images whose outputs exist are skipped; ``OUT/manifest.csv``
    records every image's status.
    """
    from .image import DEFAULT_MAX_PIXELS
    from .model import Salicon, default_model_path, prototxt_path

    report = BatchReport(total=len(items))
    start = time.perf_counter()
    if not is_uri(out):  # the workers of a cluster run in other working directories
        out = os.path.abspath(out)
    items = [it if is_uri(it.source) else Item(os.path.abspath(it.source), it.stem) for it in items]
    max_pixels = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    model_path = str(Path(model_path or default_model_path()).resolve())
    prototxt = str(Path(prototxt or prototxt_path()).resolve())
    # The driver reads the model once: bad files are reported before any cluster work.
    model = Salicon(model_path, prototxt, device="cpu", input_scale=input_scale, resize=resize,
                    max_pixels=max_pixels, postprocess=postprocess)
    pre = PreprocessSpec({k: tuple(v) for k, v in model.net.input_shapes.items()}, model.resize,
                         model.input_scale, tuple(model.mean_bgr), max_pixels)
    post = model.post
    store = OutputStore(out)
    done = completed_stems(store, items, spec)
    todo = [it for it in items if it.stem not in done]
    report.skipped = len(items) - len(todo)
    statuses: dict[str, tuple[str, str]] = {it.stem: ("done before", "") for it in items if it.stem in done}
    if todo:
        report.actors, report.device = _run_pipeline(todo, out, pre, post, model_path, prototxt, address, actors,
                                                     batch_size, device, precision, model.input_scale, resize,
                                                     max_pixels, spec, progress, num_cpus, statuses, report)
    for it in items:
        status, message = statuses.get(it.stem, ("failed", "lost: no status came back from the cluster"))
        if status == "written":
            report.written += 1
        elif status == "failed":
            report.failed.append((it.source, message))
    write_manifest(store, items, statuses, spec)
    report.seconds = time.perf_counter() - start
    return report


def _run_pipeline(todo, out, pre, post, model_path, prototxt, address, actors, batch_size, device, precision,
                  input_scale, resize, max_pixels, spec, progress, num_cpus, statuses, report):
    use_token_auth(address)
    import ray
    import ray.data
    from ray.data import ActorPoolStrategy
    from tqdm import tqdm

    t0 = time.perf_counter()
    _connect(address, num_cpus)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # one bar of our own, per image
    context.print_on_execution_start = False
    # Per-operator statistics and object-location metrics cost CPU the net could use.
    context.enable_auto_log_stats = False
    context.enable_get_object_locations_for_metrics = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    resources = ray.cluster_resources()
    cpus, gpus = float(resources.get("CPU", 1)), int(resources.get("GPU", 0))
    use_gpu = device not in ("cpu",) and gpus > 0
    if device.startswith("cuda") and not gpus:
        raise BatchError(f"--device {device}: the Ray cluster has no GPU")
    n_actors = actors or (gpus if use_gpu else 1)
    if use_gpu:
        # Post-processing and PNG encoding cost ~30 ms an image on one core (benchmarks/bench_ray.py):
        # three batches are written while a fourth runs the net.
        actor_args = {"num_gpus": 1, "num_cpus": 2}
        task_cpus, calls, threads = 1.0, 4, None
    else:
        # CPU actors share the cores; the decode tasks keep half a core.
        task_cpus, calls = 0.5, 2
        per_actor = max(0.25, (cpus - task_cpus) / n_actors)
        actor_args = {"num_cpus": per_actor}
        threads = max(1, math.ceil(per_actor))
    actor_device = "cuda" if use_gpu else "cpu"
    report.startup_seconds = time.perf_counter() - t0

    ds = ray.data.from_items([{"index": i, "source": it.source, "stem": it.stem} for i, it in enumerate(todo)],
                             override_num_blocks=max(1, math.ceil(len(todo) / batch_size)))
    ds = ds.map_batches(decode_batch, fn_kwargs={"spec": pre}, batch_size=batch_size, batch_format="numpy",
                        num_cpus=task_cpus)
    ds = ds.map_batches(
        NetActor, fn_constructor_kwargs={
            "model_path": model_path, "prototxt": prototxt, "device": actor_device, "precision": precision,
            "input_scale": input_scale, "out": out, "spec": spec, "post": post, "resize": resize,
            "max_pixels": max_pixels, "threads": threads},
        compute=ActorPoolStrategy(size=n_actors, max_concurrent_calls_per_actor=calls,
                                enable_true_multi_threading=True),
        batch_size=batch_size, batch_format="numpy", **actor_args)
    bar = tqdm(total=len(todo), unit="img", disable=not progress, file=sys.stderr, dynamic_ncols=True,
               desc=f"{n_actors} {'GPU' if use_gpu else 'CPU'} actor(s)")
    for row in ds.iter_rows():
        status = "written" if row["status"] == "ok" else "failed"
        statuses[str(row["stem"])] = (status, str(row["message"]))
        if status == "failed":
            bar.write(f"salicon: error: {row['message']}", file=sys.stderr)
        bar.update(1)
    bar.close()
    return n_actors, actor_device


def write_manifest(store: OutputStore, items: Iterable[Item], statuses: dict[str, tuple[str, str]],
                   spec: OutputSpec) -> None:
    """OUT/manifest.csv: input, outputs, status (written / done before / failed), message."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["input", "outputs", "status", "message"])
    for it in items:
        status, message = statuses.get(it.stem, ("failed", "lost: no status came back from the cluster"))
        outputs = spec.files(it.stem) + ([f"{SHARD_FOLDER}/*.parquet:{it.stem}"] if spec.parquet else [])
        writer.writerow([it.source, " ".join(outputs) if status != "failed" else "", status, message])
    store.write(MANIFEST, buf.getvalue().encode())


__all__ = ["Item", "OutputSpec", "OutputStore", "BatchReport", "BatchError", "list_inputs", "predict_on_ray",
           "completed_stems", "decode_batch", "NetActor", "write_maps", "ray_dependencies_missing"]
