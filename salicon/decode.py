"""Decoding images ahead of the net, fast enough to keep a GPU busy.

On a GPU the net is fast and the CPU side is what limits ``salicon predict``:
decoding the files, getting their pixels to the device, encoding the maps.
:func:`prefetch` runs a decoder over the inputs in workers, a bounded number of
images ahead, in input order. The decoders (``Salicon.iter_saliency(decode=)``,
``salicon predict --decode``):

- ``threads`` (default) and ``processes``: worker threads or processes decode
  the files (PIL, as :func:`~salicon.image.load_image`: EXIF orientation, grey,
  palette, alpha, 16-bit). On a CPU they make the net's inputs too (resize
  included), so nothing heavy is left to the parent; on a GPU they hand back
  8-bit pixels, which the parent copies to the device through pinned memory,
  asynchronously, and resizes there. PIL and the resize release the GIL, so
  threads scale with the cores; processes pay for sending the pixels back
  (``benchmarks/bench_decode.py`` measures both);
- ``gpu``: worker threads read the files and JPEGs are decoded on the GPU by
  ``torchvision.io.decode_jpeg`` (other formats by PIL in the worker), then
  resized on the device. Needs torchvision and CUDA.
"""
from __future__ import annotations

import io
import multiprocessing
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

from .errors import SaliconError
from .image import ImageLike, check_pixels, load_image
from .preprocess import image_to_inputs, image_to_inputs_nhwc

DECODERS = ("threads", "processes", "gpu")


@dataclass(frozen=True)
class PreprocessSpec:
    """What making a net's inputs from an image needs of the model (picklable;
    no weights): the input blobs' shapes, the resize and the normalisation."""
    input_shapes: dict[str, tuple[int, ...]]
    resize: str
    input_scale: float
    mean_bgr: tuple[float, float, float]
    max_pixels: int | None

    def inputs(self, rgb: np.ndarray | torch.Tensor, device: torch.device | str = "cpu",
               nhwc: bool = False) -> dict[str, torch.Tensor]:
        """HxWx3 8-bit RGB -> one 3 x h x w blob per net input (in NHWC memory
        order with ``nhwc``: :func:`~salicon.preprocess.image_to_inputs_nhwc`)."""
        names = list(self.input_shapes)
        make = image_to_inputs_nhwc if nhwc else image_to_inputs
        blobs = make(rgb, [self.input_shapes[n][2:] for n in names], self.resize, self.input_scale,  # type: ignore[arg-type]
                     self.mean_bgr, device)
        return dict(zip(names, blobs))


def decode_rgb(source: ImageLike, max_pixels: int | None, name: str | None = None) -> np.ndarray | SaliconError:
    """8-bit HxWx3 RGB of ``source``, or the error that says why it cannot be read
    (returned, not raised, so that a process pool hands it back as it is)."""
    try:
        return np.ascontiguousarray(load_image(source, as_float=False, max_pixels=max_pixels, name=name))
    except SaliconError as exc:
        return exc


def decode_inputs(source: ImageLike, spec: PreprocessSpec
                  ) -> tuple[dict[str, np.ndarray], tuple[int, int]] | SaliconError:
    """The net's inputs (as arrays) and the image's (H, W), made on the CPU; or the error."""
    rgb = decode_rgb(source, spec.max_pixels)
    if isinstance(rgb, SaliconError):
        return rgb
    return {k: v.numpy() for k, v in spec.inputs(rgb).items()}, (int(rgb.shape[0]), int(rgb.shape[1]))


def read_for_gpu(source: ImageLike, max_pixels: int | None) -> tuple[str, Any] | SaliconError:
    """``("jpeg", bytes)`` for a JPEG file that the GPU can decode (RGB or grey),
    else ``("rgb", pixels)`` decoded here; or the error."""
    if isinstance(source, (str, bytes)) or hasattr(source, "__fspath__"):
        name = str(source) if not isinstance(source, bytes) else f"<{len(source)} bytes>"
        try:
            data = source if isinstance(source, bytes) else Path(source).read_bytes()
        except OSError:
            data = None  # load_image below says what is wrong, with the file's name
        if data is not None:
            try:
                with Image.open(io.BytesIO(data)) as img:
                    check_pixels(img.width, img.height, max_pixels, name)
                    if img.format == "JPEG" and img.mode in ("RGB", "L"):
                        return "jpeg", data
            except SaliconError as exc:
                return exc
            except (OSError, ValueError):
                pass  # not an image PIL knows: load_image below says so
            source = data  # decoded below from the bytes already read, not read again
    rgb = decode_rgb(source, max_pixels, name if isinstance(source, bytes) else None)
    return rgb if isinstance(rgb, SaliconError) else ("rgb", rgb)


def gpu_decode_problem(device: torch.device) -> str | None:
    """Why ``decode="gpu"`` cannot run on ``device``, or None."""
    if device.type != "cuda":
        return f"decode 'gpu' decodes JPEGs on a CUDA device; the model runs on {device}"
    try:
        import torchvision.io  # noqa: F401
    except Exception as exc:  # ImportError, or a torchvision built for another torch
        return f"decode 'gpu' needs torchvision ({type(exc).__name__}: {exc}); pip install torchvision"
    return None


def decode_jpeg_on(data: bytes, device: torch.device) -> torch.Tensor:
    """H x W x 3 uint8 RGB on ``device``, decoded there (EXIF orientation applied)."""
    from torchvision.io import ImageReadMode, decode_jpeg

    encoded = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    try:
        chw = decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device, apply_exif_orientation=True)
    except RuntimeError as exc:
        raise SaliconError(f"the GPU could not decode the JPEG ({exc})") from None
    return chw.permute(1, 2, 0)


def to_device(rgb: np.ndarray, device: torch.device) -> torch.Tensor:
    """``rgb`` on ``device``: through pinned memory and an asynchronous copy on a
    GPU (the caller's stream orders it before the kernels that read it)."""
    tensor = torch.from_numpy(rgb if rgb.flags.writeable else rgb.copy())
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def _single_threaded() -> None:
    torch.set_num_threads(1)  # one core per worker process: the pool is the parallelism


def make_executor(kind: str, workers: int) -> Executor:
    """A thread pool, or a process pool whose workers start fresh ("spawn": no
    copy of a parent that holds CUDA or OpenMP state) and use one core each."""
    if kind == "processes":
        return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_single_threaded)
    return ThreadPoolExecutor(workers)


def prefetch(fn: Callable[[Any], Any], items: Iterable[Any], executor: Executor, ahead: int
             ) -> Iterator[tuple[int, Any]]:
    """``(index, fn(item))`` in input order, computed in ``executor`` at most
    ``ahead`` items in advance (memory stays flat however many items there are).
    ``fn`` reports a bad item by returning its error; what it raises propagates."""
    queue: deque = deque()
    source = enumerate(items)
    exhausted = False
    while queue or not exhausted:
        while not exhausted and len(queue) < max(1, ahead):
            item = next(source, None)
            if item is None:
                exhausted = True
            else:
                queue.append((item[0], executor.submit(fn, item[1])))
        if not queue:
            break
        index, future = queue.popleft()
        yield index, future.result()
