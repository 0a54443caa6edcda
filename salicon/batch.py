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

import dataclasses
import logging
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import runtimes
from .config import SaliconConfig
from .decode import PreprocessSpec
from .errors import SaliconError
from .image import is_video_name, load_image
from .inputs import Item, is_uri, read_bytes
from .outputs import (
    MapWrite,
    OutputSpec,
    OutputStore,
    completed_stems,
    find_clashes,
    write_manifest,
    write_map,
    write_shard,
)

RAY_EXTRA_HINT = "pip install -e \".[ray]\" (or pip install \"salicon[ray]\")"


class BatchError(SaliconError):
    """A batch job that cannot start: bad output, cluster or options."""


@dataclass(frozen=True)
class RayOptions:
    """How a Ray batch job runs: the model's configuration, given whole to every
    actor, and what is the job's own (cluster, actors, batches, progress).

    ``address``: None or ``"local"`` starts a Ray instance on this machine;
    ``"auto"`` or ``"ray://host:10001"`` (or ``host:port``) joins a cluster.
    ``actors``: net actors (default: one per GPU of the cluster, else one CPU actor).
    """
    config: SaliconConfig = field(default_factory=SaliconConfig)
    address: str | None = None
    actors: int | None = None
    batch_size: int = 1
    progress: bool = True
    num_cpus: int | None = None                    # CPUs of a local instance

    def with_fields(self, **fields: Any) -> RayOptions:
        """A copy with ``fields`` set: the job's own, or the model's (``model_path``
        is ``model``) set in its config."""
        own = {f.name for f in dataclasses.fields(self)}
        mine = {k: v for k, v in fields.items() if k in own}
        theirs = {("model" if k == "model_path" else k): v for k, v in fields.items() if k not in own}
        config = self.config.replace(**{k: str(v) if k in ("model", "prototxt") and v is not None else v
                                        for k, v in theirs.items()}) if theirs else self.config
        return dataclasses.replace(self, config=mine.pop("config", config), **mine)


# ---------------------------------------------------------------- stages


def decode_batch(batch: dict[str, np.ndarray], spec: PreprocessSpec) -> dict[str, np.ndarray]:
    """Stage 1: each row's file read, decoded and resized into the net's blobs;
    a file that fails keeps zero blobs and says why in ``error``."""
    n = len(batch["source"])
    names = list(spec.input_shapes)
    blobs = {name: np.zeros((n, 3, *spec.input_shapes[name][2:]), np.float32) for name in names}
    errors, heights, widths = [""] * n, np.zeros(n, np.int64), np.zeros(n, np.int64)
    for i, source in enumerate(batch["source"]):
        source = str(source)
        try:
            rgb = load_image(read_bytes(source), as_float=False, max_pixels=spec.max_pixels, name=source)
            heights[i], widths[i] = rgb.shape[:2]
            for name, blob in spec.inputs(rgb).items():
                blobs[name][i] = blob.numpy()
        except (SaliconError, OSError, ValueError, MemoryError) as exc:
            errors[i] = str(exc) if source in str(exc) else f"{source}: {exc}"
    return {"index": batch["index"], "source": batch["source"], "stem": batch["stem"],
            "height": heights, "width": widths, "error": np.array(errors, dtype=object), **blobs}


class NetActor:
    """Stage 2: one model per actor (a GPU each, or CPU threads). Two batches
    are in the actor at once: while one runs the net (one forward at a time,
    under a lock) the other's maps are post-processed and written."""

    def __init__(self, options: RayOptions, out: str, spec: OutputSpec, post, threads: int | None = None):
        import threading

        import torch

        from .model import Salicon

        if threads:
            torch.set_num_threads(threads)
        self.model = Salicon(config=options.config.replace(postprocess=post))
        self.names = list(self.model.net.input_shapes)
        self.raw_shape = tuple(self.model.net.blob_shapes[self.model.output_blob][-2:])
        self.options, self.out, self.spec = options, out, spec
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
        return write_batch(batch, raw, self.out, self.spec, self.model.post, self.options)


def write_batch(batch: dict[str, np.ndarray], raw: np.ndarray, out: str, spec: OutputSpec, post,
                options: RayOptions) -> dict[str, np.ndarray]:
    """Each raw map post-processed to its image's size and written with
    :func:`~salicon.outputs.write_map` (and into one Parquet shard), from the
    worker that holds it; one status row per image (``ok`` or why not)."""
    import torch

    store = OutputStore(out)
    n = len(batch["source"])
    status, messages = ["ok"] * n, [""] * n
    rows: dict[str, list] = {"name": [], "source": [], "height": [], "width": [], "map": []}
    for i in range(n):
        source, stem = str(batch["source"][i]), str(batch["stem"][i])
        if batch["error"][i]:
            status[i], messages[i] = "failed", str(batch["error"][i])
            continue
        size = (int(batch["height"][i]), int(batch["width"][i]))
        try:
            sal = post.apply(torch.from_numpy(raw[i]), size, options.config.resize)
        except (SaliconError, ValueError, MemoryError) as exc:
            status[i], messages[i] = "failed", f"{source}: {exc}"
            continue
        written = write_map(store, stem, sal, spec, lambda: load_image(  # called at once, in this iteration
            read_bytes(source), as_float=False, max_pixels=options.config.max_pixels, name=source))  # noqa: B023
        if not written.ok:
            status[i], messages[i] = "failed", f"{source}: {written.message()}"
        elif spec.parquet:
            _add_row(rows, stem, source, size, sal, written, spec)
    if rows["name"]:
        try:
            write_shard(store, rows, spec)
        except OSError as exc:
            for i in range(n):
                if status[i] == "ok":
                    status[i], messages[i] = "failed", f"shard not written: {exc}"
    return {"stem": batch["stem"], "source": batch["source"],
            "status": np.array(status, dtype=object), "message": np.array(messages, dtype=object)}


def _add_row(rows: dict[str, list], stem: str, source: str, size: tuple[int, int], sal: np.ndarray,
             written: MapWrite, spec: OutputSpec) -> None:
    from .outputs import png_bytes
    from .visualize import threshold_map, to_uint8

    sal = threshold_map(sal, spec.threshold) if spec.threshold is not None else sal
    rows["name"].append(stem)
    rows["source"].append(source)
    rows["height"].append(size[0])
    rows["width"].append(size[1])
    if spec.parquet_map == "png":
        rows["map"].append(written.map_png if written.map_png is not None else png_bytes(to_uint8(sal)))
    else:
        rows["map"].append(sal.astype(np.float16).tobytes())


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


def connect_ray(address: str | None, num_cpus: int | None = None, log_to_driver: bool = False) -> None:
    """Start a private Ray instance (``address`` None or ``"local"``) or join a
    cluster (``"auto"``, ``"ray://host:10001"``, ``host:port``), quietly."""
    import ray

    if ray.is_initialized():
        return
    # Ray's own start-up notices would bury the progress bar; errors still show.
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": "ERROR",
                              "log_to_driver": log_to_driver, "configure_logging": True}
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


def predict_on_ray(items: Sequence[Item], out: str, options: RayOptions = RayOptions(), *,
                   spec: OutputSpec = OutputSpec(), on_failure: Callable[[str], None] | None = None,
                   video: Any = None, **fields: Any) -> BatchReport:
    """Compute and write the saliency maps of ``items`` below ``out`` with Ray Data.

    ``options`` (or its fields as keywords: ``device="cpu"``, ...) say how; see
    :class:`RayOptions`. Images whose outputs exist are skipped;
    ``OUT/manifest.csv`` records every image's status. ``on_failure(message)``
    is called for each image that fails, as it fails (the progress bar kept
    intact); the report lists them all at the end. Videos among the items
    (``video``: a :class:`~salicon.batch_video.VideoSettings`) are cut into
    segments shared by the actors (:mod:`salicon.batch_video`).
    """
    from .batch_video import VideoSettings
    from .model import Salicon

    options = options.with_fields(**fields)
    report = BatchReport(total=len(items))
    start = time.perf_counter()
    if not is_uri(out):  # the workers of a cluster run in other working directories
        out = os.path.abspath(out)
    items = [it if is_uri(it.source) else Item(os.path.abspath(it.source), it.stem) for it in items]
    video = video or VideoSettings()
    videos = [it for it in items if is_video_name(it.source)]
    video_stems = {it.stem for it in videos}

    def files_of(it: Item):
        return video.outputs.files(it.stem) if it.stem in video_stems else None
    clashes = find_clashes(items, out, spec, lambda it: files_of(it) or spec.files(it.stem))
    if clashes:
        raise BatchError(f"output {clashes[0][1]} would overwrite the input {clashes[0][0]} "
                         f"({len(clashes)} such output(s)); choose another -o")
    # Resolved once, here: the model's files, auto precision and runtime, and the Python layer files every
    # actor runs (shipped with the job, whatever the workers' own paths hold). The model is built once on
    # the driver's CPU (no forward pass), so bad files are reported before any cluster work.
    config = options.config.resolved()
    checked = Salicon(config=config.replace(device="cpu", variants=""))
    post, pre = checked.post, checked.preprocess_spec()
    del checked
    options = dataclasses.replace(options, config=config.replace(input_scale=pre.input_scale))
    store = OutputStore(out)
    images = [it for it in items if it.stem not in video_stems]
    done = completed_stems(store, images, spec)
    todo = [it for it in images if it.stem not in done]
    statuses: dict[str, tuple[str, str]] = {it.stem: ("done before", "") for it in images if it.stem in done}
    if todo:
        report.actors, report.device = _run_pipeline(todo, out, pre, post, options, spec, statuses, report,
                                                     on_failure)
    if videos:
        report.actors, report.device = _run_videos(videos, out, options, video, statuses, report, on_failure)
    for it in items:
        status, message = statuses.get(it.stem, ("failed", "lost: no status came back from the cluster"))
        if status == "written":
            report.written += 1
        elif status == "failed":
            report.failed.append((it.source, message))
        elif status == "done before":
            report.skipped += 1
    write_manifest(store, items, statuses, spec, files_of)
    report.seconds = time.perf_counter() - start
    return report


def _placement(options: RayOptions, cpus: float, gpus: int) -> tuple[int, dict, float, int, int | None, str]:
    """(actors, actor resources, CPUs per decode task, concurrent calls per actor,
    torch threads per actor, actor device) for a cluster with ``cpus`` and ``gpus``."""
    config = options.config
    use_gpu = runtimes.worker_device(config.runtime, config.precision, config.device, gpus) == "cuda"
    n_actors = options.actors or (gpus if use_gpu else 1)
    if use_gpu:
        # Post-processing and PNG encoding cost ~30 ms an image on one core (benchmarks/bench_ray.py):
        # three batches are written while a fourth runs the net.
        return n_actors, {"num_gpus": 1, "num_cpus": 2}, 1.0, 4, None, "cuda"
    # CPU actors share the cores; the decode tasks keep half a core.
    per_actor = max(0.25, (cpus - 0.5) / n_actors)
    return n_actors, {"num_cpus": per_actor}, 0.5, 2, max(1, math.ceil(per_actor)), "cpu"


def _quiet_ray_data() -> None:
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # one bar of our own, per image
    context.print_on_execution_start = False
    # Per-operator statistics and object-location metrics cost CPU the net could use.
    context.enable_auto_log_stats = False
    context.enable_get_object_locations_for_metrics = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)


def _run_pipeline(todo: list[Item], out: str, pre: PreprocessSpec, post, options: RayOptions, spec: OutputSpec,
                  statuses: dict[str, tuple[str, str]], report: BatchReport,
                  on_failure: Callable[[str], None] | None = None) -> tuple[int, str]:
    use_token_auth(options.address)
    import ray
    import ray.data
    from ray.data import ActorPoolStrategy
    from tqdm import tqdm

    t0 = time.perf_counter()
    connect_ray(options.address, options.num_cpus)
    _quiet_ray_data()
    resources = ray.cluster_resources()
    n_actors, actor_args, task_cpus, calls, threads, actor_device = _placement(
        options, float(resources.get("CPU", 1)), int(resources.get("GPU", 0)))
    report.startup_seconds = time.perf_counter() - t0
    batch_size = options.batch_size
    ds: Any = ray.data.from_items([{"index": i, "source": it.source, "stem": it.stem} for i, it in enumerate(todo)],
                             override_num_blocks=max(1, math.ceil(len(todo) / batch_size)))
    ds = ds.map_batches(decode_batch, fn_kwargs={"spec": pre}, batch_size=batch_size, batch_format="numpy",
                        num_cpus=task_cpus)
    actor_options = dataclasses.replace(options, config=options.config.replace(device=actor_device))
    ds = ds.map_batches(
        NetActor, fn_constructor_kwargs={"options": actor_options, "out": out, "spec": spec, "post": post,
                                         "threads": threads},
        compute=ActorPoolStrategy(size=n_actors, max_concurrent_calls_per_actor=calls,
                                enable_true_multi_threading=True),
        batch_size=batch_size, batch_format="numpy", **actor_args)
    bar = tqdm(total=len(todo), unit="img", disable=not options.progress, file=sys.stderr, dynamic_ncols=True,
               desc=f"{n_actors} {'GPU' if actor_device == 'cuda' else 'CPU'} actor(s)")
    for row in ds.iter_rows():
        status = "written" if row["status"] == "ok" else "failed"
        statuses[str(row["stem"])] = (status, str(row["message"]))
        if status == "failed" and on_failure is not None:
            with tqdm.external_write_mode(file=sys.stderr):
                on_failure(str(row["message"]))
        bar.update(1)
    bar.close()
    return n_actors, actor_device


def _run_videos(videos: list[Item], out: str, options: RayOptions, settings, statuses: dict[str, tuple[str, str]],
                report: BatchReport, on_failure: Callable[[str], None] | None) -> tuple[int, str]:
    """The videos' segments on a pool of net actors (placed as the image actors are)."""
    use_token_auth(options.address)
    import ray
    from ray.util import ActorPool
    from tqdm import tqdm

    from .batch_video import SegmentActor, videos_on_ray

    connect_ray(options.address, options.num_cpus)
    resources = ray.cluster_resources()
    n_actors, actor_args, _, _, threads, actor_device = _placement(
        options, float(resources.get("CPU", 1)), int(resources.get("GPU", 0)))
    config = options.config.replace(device=actor_device)
    remote = ray.remote(**actor_args)(SegmentActor)
    actors = [remote.remote(config, threads) for _ in range(n_actors)]
    bar = tqdm(unit="frame", disable=not options.progress, file=sys.stderr, dynamic_ncols=True,
               desc=f"videos, {n_actors} {'GPU' if actor_device == 'cuda' else 'CPU'} actor(s)")

    def failed(message: str) -> None:
        if on_failure is not None:
            with tqdm.external_write_mode(file=sys.stderr):
                on_failure(message)
    try:
        videos_on_ray(videos, out, settings, ActorPool(actors), config.max_pixels, actor_device == "cuda", statuses,
                      failed, bar.update)
    finally:
        bar.close()
        for actor in actors:
            ray.kill(actor)  # type: ignore[arg-type]
    return n_actors, actor_device


__all__ = ["RayOptions", "BatchReport", "BatchError", "predict_on_ray", "decode_batch", "NetActor", "write_batch",
           "ray_dependencies_missing", "use_token_auth", "PreprocessSpec"]
