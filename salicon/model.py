"""``Salicon``: saliency maps for images, as OpenSALICON's ``Salicon`` class.

    from salicon import Salicon
    salicon = Salicon()                                  # the shipped pretrained model
    saliency_map = salicon.compute_saliency("image.jpg")  # float32 HxW in [0, 1]

Every net input of shape N x 3 x H x W receives the image resized to H x W, so
editing the sizes in the prototxt is all it takes to run at other scales.
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Iterable, Iterator, Sequence, Union

import numpy as np
import torch

from .engine import Net
from .errors import EngineError, SaliconError
from .image import DEFAULT_MAX_PIXELS, ImageLike, load_image
from .postprocess import CenterPrior, PostProcess, PostProcessError, parse_postprocess
from .preprocess import MEAN_BGR, PUBLISHED_INPUT_SCALE, RESIZE_METHODS, image_to_inputs

PathLike = Union[str, os.PathLike]
PROJECT_ROOT = Path(__file__).resolve().parent.parent
#: Output blob read by default (the test prototxt's Sigmoid top).
OUTPUT_BLOB = "saliency_map_out"
PRECISIONS = ("fp32", "tf32", "bf16")
ENGINES = ("auto", "pytorch", "caffe")


def _shipped_file(folder: str, name: str) -> tuple[Path, Path]:
    """(source-tree path, installed package-data path) of a file shipped in ``folder``
    (prototxt/ as package data salicon.prototxt, models/ as salicon.models)."""
    local = PROJECT_ROOT / folder / name
    if local.exists():
        return local, local
    try:
        return local, Path(str(resources.files(f"salicon.{folder}") / name))
    except ModuleNotFoundError:
        return local, local


def prototxt_path(name: str = "salicon.prototxt") -> Path:
    """Path of a prototxt shipped with the project (source tree or installed)."""
    local, found = _shipped_file("prototxt", name)
    if not found.exists():
        raise SaliconError(f"shipped prototxt '{name}' not found (looked in {local} and {found})")
    return found


#: File name of the shipped pretrained model (SALICON trained on OSIE; see models/salicon_osie.json).
DEFAULT_MODEL = "salicon_osie.safetensors"


def default_model_path() -> Path:
    """The shipped pretrained model (source tree or installed package)."""
    return _shipped_file("models", DEFAULT_MODEL)[1]


def model_record_path(path: PathLike) -> Path:
    """Where the record of the weights file ``path`` lies: ``<stem>.json`` beside it."""
    return Path(path).with_suffix(".json")


def model_record(path: PathLike) -> dict:
    """The record beside a weights file (``<stem>.json``: what the model is,
    its learned centre prior and default post-processing), or {}."""
    sidecar = model_record_path(path)
    if not sidecar.is_file():
        return {}
    try:
        record = json.loads(sidecar.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SaliconError(f"{sidecar}: the model's record is not valid JSON ({exc})") from None
    return record if isinstance(record, dict) else {}


def model_metadata(path: PathLike) -> dict[str, str]:
    """The metadata a safetensors weights file carries ({} for a .caffemodel)."""
    from .formats import is_safetensors, read_safetensors_metadata
    return read_safetensors_metadata(path) if is_safetensors(path) else {}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; a CUDA request without CUDA fails clearly."""
    if isinstance(device, torch.device):
        dev = device
    elif device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            dev = torch.device(device)
        except RuntimeError:
            raise ValueError(f"invalid device {device!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise EngineError(f"device {device!r} requested but CUDA is not available to PyTorch "
                          f"{torch.__version__}; choose device 'cpu' or 'auto'")
    return dev


def cpu_features() -> dict:
    """The CPU's model name, its SIMD flags that matter for convolutions, whether
    it computes bfloat16 natively (AVX512-BF16 or AMX) and PyTorch's view of it."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                if flags and model:
                    break
    except OSError:
        pass
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_tile",
              "amx_int8")
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except AttributeError:  # older PyTorch
        capability = "unknown"
    return {"model": model, "flags": [f for f in wanted if f in flags],
            "native_bf16": bool({"avx512_bf16", "amx_bf16"} & flags), "torch_capability": capability}


@contextlib.contextmanager
def precision_context(precision: str, device: torch.device):
    """Numerics for a forward pass: fp32 (no TF32), tf32, or bf16 autocast."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    if precision == "bf16":
        with torch.autocast(device.type, dtype=torch.bfloat16):
            yield
        return
    if device.type != "cuda":
        yield
        return
    allow = precision == "tf32"
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = allow
    cudnn = torch.backends.cudnn
    try:
        # Input shapes are fixed by the prototxt, so cuDNN's autotuner pays off.
        with cudnn.flags(enabled=cudnn.enabled, benchmark=True, deterministic=cudnn.deterministic,
                         allow_tf32=allow):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


class Salicon:
    """The SALICON model: an image in, a saliency map at the image's size out.

    Args:
        model: trained weights, a .caffemodel or a safetensors file (default:
            the shipped pretrained model, SALICON trained on OSIE).
        prototxtpath: the test net definition (default: prototxt/salicon.prototxt).
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        precision: ``"fp32"`` (exact), ``"tf32"`` or ``"bf16"`` (GPU speed).
        input_scale: factor after mean subtraction (default: the model file's
            ``input_scale`` metadata, else 1/255 as the published code and its
            weights use; VGG-16's own convention is 1).
        resize: ``"spline"`` (published cubic zoom, fast), ``"scipy"`` (the
            published scipy.ndimage.zoom call itself) or ``"bilinear"``.
        engine: ``"pytorch"``, ``"caffe"`` (real pycaffe, CPU) or ``"auto"``
            (PyTorch, the default engine).
        max_pixels: images with more pixels are refused before decoding
            (default about 179 megapixels, PIL's own limit; None: no limit).
        postprocess: ``"default"`` (the model's recorded configuration: the
            shipped model's centre prior; plain output for a model without a
            record), ``"none"`` (the published output), a specification such
            as ``"blur=0.02,prior=learned,normalize=probability"`` or a
            :class:`~salicon.postprocess.PostProcess` (see that module).
    """

    def __init__(self, model: PathLike | None = None, prototxtpath: PathLike | None = None, *,
                 device: str | torch.device = "auto", precision: str = "fp32",
                 input_scale: float | None = None, resize: str = "spline",
                 mean_bgr: Sequence[float] = MEAN_BGR, engine: str = "auto", channels_last: bool = True,
                 max_pixels: int | None = DEFAULT_MAX_PIXELS, postprocess: str | PostProcess = "default"):
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, not {engine!r}")
        if resize not in RESIZE_METHODS:
            raise ValueError(f"resize must be one of {RESIZE_METHODS}, not {resize!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
        if model is None:
            model = default_model_path()
            if not model.exists():
                raise SaliconError(f"the shipped pretrained model is missing ({model}); reinstall the package "
                                   f"or pass a trained .caffemodel / .safetensors file as the model")
        self.model_path = Path(model)
        if input_scale is None:  # the model's own convention, else the published one
            try:
                input_scale = float(model_metadata(self.model_path).get("input_scale", PUBLISHED_INPUT_SCALE))
            except ValueError:
                raise SaliconError(f"{self.model_path}: metadata 'input_scale' is not a number") from None
        self.prototxt_path = Path(prototxtpath) if prototxtpath is not None else prototxt_path()
        self.device = resolve_device("cpu" if engine == "caffe" and device == "auto" else device)
        self.precision = precision
        self.input_scale = float(input_scale)
        self.mean_bgr = tuple(float(m) for m in mean_bgr)
        self.resize = resize
        self.max_pixels = max_pixels
        record = model_record(self.model_path)
        try:
            #: The model's learned centre prior (``prior=learned``), if its record has one.
            self.center_prior = CenterPrior.from_dict(record["center_prior"]) if record.get("center_prior") else None
            #: The model's recorded post-processing (plain for a model without a record).
            self.default_post = (PostProcess.from_dict(record["postprocess"], name="default")
                                 if record.get("postprocess") else PostProcess(name="none"))
        except PostProcessError as exc:
            raise PostProcessError(f"{model_record_path(self.model_path)}: {exc}") from None
        #: What happens to the net's map on its way to the image.
        self.post = self.resolve_postprocess(postprocess)
        self.engine = "pytorch" if engine == "auto" else engine
        if self.engine == "caffe":
            from .caffe_engine import CaffeNet
            if self.device.type != "cpu":
                raise EngineError(f"engine 'caffe' runs on the CPU only (this Caffe build is CPU_ONLY), "
                                  f"not on {self.device}")
            net = CaffeNet(self.prototxt_path, self.model_path)
        else:
            net = Net(self.prototxt_path, phase="test", device=self.device)
            net.copy_from(self.model_path, strict=True)
            net.eval().requires_grad_(False)
            if channels_last:
                net.to(memory_format=torch.channels_last)
                net.memory_format = torch.channels_last
        self.net = net
        for name, shape in net.input_shapes.items():
            if len(shape) != 4 or shape[1] != 3:
                raise SaliconError(f"{self.prototxt_path}: input '{name}' has shape {shape}; image inputs "
                                   f"must be N x 3 x H x W (is this a train prototxt?)")
        if OUTPUT_BLOB in net.outputs:
            self.output_blob = OUTPUT_BLOB
        elif len(net.outputs) == 1:
            self.output_blob = net.outputs[0]
        else:
            raise SaliconError(f"{self.prototxt_path}: cannot tell the saliency output among {net.outputs}; "
                               f"name it '{OUTPUT_BLOB}'")

    def resolve_postprocess(self, spec: str | PostProcess) -> PostProcess:
        """A post-processing specification read against this model's record
        (``"default"`` and ``prior=learned`` refer to it)."""
        return parse_postprocess(spec, self.center_prior, self.default_post)

    # ------------------------------------------------------------ stages
    def preprocess(self, image: ImageLike) -> tuple[dict[str, torch.Tensor], tuple[int, int]]:
        """Load ``image`` and make one 3xHxW tensor per net input; also return its (H, W)."""
        rgb = load_image(image, as_float=False, max_pixels=self.max_pixels)
        size = (int(rgb.shape[0]), int(rgb.shape[1]))
        names = list(self.net.input_shapes)
        blobs = image_to_inputs(rgb, [self.net.input_shapes[n][2:] for n in names], self.resize,
                                self.input_scale, self.mean_bgr, self.device)
        return dict(zip(names, blobs)), size

    @torch.inference_mode()
    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Run the net on batched inputs (name -> Nx3xHxW); returns N x h x w float maps."""
        if self.engine == "caffe":
            arrays = {k: v.detach().cpu().float().numpy() for k, v in inputs.items()}
            out = torch.from_numpy(self.net(**arrays)[self.output_blob])
        else:
            with precision_context(self.precision, self.device):
                out = self.net(**inputs)[self.output_blob]
        return out.float().reshape(out.shape[0], *out.shape[-2:])

    def postprocess(self, raw: torch.Tensor, size: Sequence[int], post: PostProcess | None = None) -> np.ndarray:
        """The net's map made into the image's saliency map by ``post`` (default:
        this model's; the published output is min-max normalised and resized)."""
        return (post or self.post).apply(raw, size, self.resize)

    # ------------------------------------------------------------ public
    def compute_saliency(self, image: ImageLike) -> np.ndarray:
        """Saliency map of ``image`` (path, PIL image or array): float32 HxW in [0, 1]."""
        inputs, size = self.preprocess(image)
        raw = self.forward({k: v[None] for k, v in inputs.items()})
        return self.postprocess(raw[0], size)

    def iter_saliency(self, images: Iterable[ImageLike], batch_size: int = 1,
                      workers: int | None = None) -> Iterator[tuple[int, np.ndarray | Exception]]:
        """Yield ``(index, map)`` for each image, or ``(index, error)`` for one that
        cannot be read, so one bad file does not stop the others. Images are
        decoded and resized in ``workers`` threads (default: the cores, at most
        8) ahead of the net."""
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        workers = workers or min(8, os.cpu_count() or 1)

        def prepare(item):
            try:
                return self.preprocess(item)
            except SaliconError as exc:
                return exc

        ahead = max(1, workers) + batch_size  # bounded read-ahead keeps memory flat
        with ThreadPoolExecutor(max(1, workers)) as pool:
            queue: deque = deque()
            pending: list[tuple[int, dict, tuple]] = []
            source = enumerate(images)
            exhausted = False
            while queue or not exhausted:
                while not exhausted and len(queue) < ahead:
                    item = next(source, None)
                    if item is None:
                        exhausted = True
                    else:
                        queue.append((item[0], pool.submit(prepare, item[1])))
                if not queue:
                    break
                index, future = queue.popleft()
                prepared = future.result()
                if isinstance(prepared, Exception):
                    yield index, prepared
                    continue
                pending.append((index,) + prepared)
                if len(pending) == batch_size:
                    yield from self._run_batch(pending)
                    pending = []
            if pending:
                yield from self._run_batch(pending)

    def _run_batch(self, pending):
        names = pending[0][1].keys()
        batch = {n: torch.stack([p[1][n] for p in pending]) for n in names}
        raw = self.forward(batch)
        for (index, _, size), sal in zip(pending, raw):
            yield index, self.postprocess(sal, size)

    def compute_saliency_batch(self, images: Iterable[ImageLike], batch_size: int = 1) -> list[np.ndarray]:
        """Saliency maps of many images, in order; raises on the first bad image."""
        maps = []
        for _, result in self.iter_saliency(images, batch_size):
            if isinstance(result, Exception):
                raise result
            maps.append(result)
        return maps
