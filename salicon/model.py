"""``Salicon``: saliency maps for images, as OpenSALICON's ``Salicon`` class.

    from salicon import Salicon
    salicon = Salicon()                                  # the shipped pretrained model
    saliency_map = salicon.compute_saliency("image.jpg")  # float32 HxW in [0, 1]

Every net input of shape N x 3 x H x W receives the image resized to H x W, so
editing the sizes in the prototxt is all it takes to run at other scales.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from . import formats, pretrained, runtimes
from .config import SaliconConfig
from .decode import (
    DECODERS,
    PreprocessSpec,
    decode_inputs,
    decode_jpeg_on,
    decode_rgb,
    gpu_decode_problem,
    make_executor,
    prefetch,
    read_for_gpu,
    to_device,
)
from .device import precision_context, resolve_device
from .engine import Net
from .engine.fast import FastForward, ForwardOptions
from .engine.python_layers import LayerFile, PythonLayerInfo, plan_python_layers
from .errors import EngineError, SaliconError
from .image import DEFAULT_MAX_PIXELS, ImageLike, load_image
from .postprocess import CenterPrior, PostProcess, PostProcessError, parse_postprocess
from .preprocess import MEAN_BGR, PUBLISHED_INPUT_SCALE
from .pretrained import OUTPUT_BLOB
from .types import PathLike


def record_postprocess(model: PathLike, record: pretrained.ModelRecord | None = None
                       ) -> tuple[CenterPrior | None, PostProcess]:
    """(learned centre prior or None, default post-processing) from the record of
    the weights file ``model`` (read here unless given); plain output without one."""
    record = record if record is not None else pretrained.read_record(model)
    try:
        prior = CenterPrior.from_dict(record.center_prior) if record and record.center_prior else None
        default = (PostProcess.from_dict(record.postprocess, name="default")
                   if record and record.postprocess else PostProcess(name="none"))
    except PostProcessError as exc:
        raise PostProcessError(f"{pretrained.record_path(model)}: {exc}") from None
    return prior, default


#: Images with more pixels have their map made after the runtime gives back the
#: buffers it keeps between calls (OpenVINO: about 0.9 GB); re-allocating them costs
#: little next to such an image's own work.
HUGE_PIXELS = 1 << 26


class Salicon:
    """The SALICON model: an image in, a saliency map at the image's size out.

    Args:
        model: trained weights, a .caffemodel or a safetensors file (default:
            the shipped pretrained model, SALICON trained on OSIE).
        prototxt: the test net definition (default: prototxt/salicon.prototxt);
            ``prototxtpath``, OpenSALICON's name for it, is accepted too.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        precision: ``"fp32"`` (exact), ``"tf32"``, ``"bf16"``, ``"int8"``
            (OpenVINO on the CPU; the model's quantized file) or ``"auto"``:
            int8 on a CPU when OpenVINO is installed and the model has an int8
            file (the shipped model has), else fp32.
        runtime: ``"pytorch"`` (CPU or GPU), ``"openvino"`` (CPU: fp32, bf16,
            int8) or ``"auto"`` (OpenVINO for int8, else PyTorch).
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
        variants: forward variants of the PyTorch net (a
            :class:`~salicon.engine.fast.ForwardOptions` or names such as
            ``"channels-last,fuse-relu,cast-weights"``; ``"compile"`` and, on a
            GPU, ``"cuda-graphs"`` too); none by default. ``channels-last``
            also makes the inputs in NHWC order on the device.
        python_layers: ``"auto"`` (native layers for the known layer files,
            other files as written), ``"as-written"`` or ``"native"``; default
            ``$SALICON_PYTHON_LAYERS``, else auto. A layer run as written
            needs the PyTorch runtime (auto precision then gives fp32).
        layer_files: module name -> :class:`~salicon.engine.python_layers.LayerFile`
            to run instead of importing the module here (what a driver resolved).

    ``python_layers`` (the attribute) says which file and implementation
    each Python layer of the net runs.
    """

    def __init__(self, model: PathLike | None = None, prototxt: PathLike | None = None, *,
                 device: str | torch.device = "auto", precision: str = "auto", runtime: str = "auto",
                 input_scale: float | None = None, resize: str = "spline",
                 mean_bgr: Sequence[float] = MEAN_BGR, engine: str = "auto", channels_last: bool = True,
                 max_pixels: int | None = DEFAULT_MAX_PIXELS, postprocess: str | PostProcess = "default",
                 prototxtpath: str | None = None, variants: str | ForwardOptions = "",
                 python_layers: str | None = None, layer_files: Mapping[str, LayerFile] | None = None,
                 config: SaliconConfig | None = None):
        if config is None:
            if isinstance(variants, ForwardOptions):
                variants = ",".join(variants.names())
            config = SaliconConfig.from_options(
                model=model, prototxt=prototxt, prototxtpath=prototxtpath, device=str(device), precision=precision,
                runtime=runtime, engine=engine, input_scale=input_scale, resize=resize,
                mean_bgr=tuple(mean_bgr), channels_last=channels_last, max_pixels=max_pixels,
                postprocess=postprocess, variants=variants, python_layers=python_layers, layer_files=layer_files)
        self._setup(config.resolved())

    @classmethod
    def from_config(cls, config: SaliconConfig) -> Salicon:
        """The model a :class:`~salicon.config.SaliconConfig` describes (resolved here if it is not yet)."""
        return cls(config=config)

    def _setup(self, config: SaliconConfig) -> None:
        #: The resolved configuration this model runs (what workers are given to build the same model).
        self.config = config
        #: The registered model's name, or None for a weights file given by path.
        self.name = config.name
        assert config.model and config.prototxt, "a resolved configuration names its files"
        self.model_path = Path(config.model)
        self.prototxt_path = Path(config.prototxt)
        self.python_layers_mode = config.python_layers
        #: Module name -> the file each Python layer module runs (as resolved here, or as given).
        self.layer_files = dict(config.layer_files or {})
        plan = plan_python_layers(formats.read_net_prototxt(self.prototxt_path), config.python_layers,
                                  files=self.layer_files)
        host = [info for info in plan.values() if not info.native]
        #: Where the net runs: a registered runtime's name (salicon.runtimes.names()).
        self.runtime = config.runtime
        runtime = self._runtime = runtimes.get(config.runtime)
        self.precision = config.precision
        self.device = self._device(runtime, config.device)
        self.input_scale = self._input_scale(config.input_scale)
        self.mean_bgr = config.mean_bgr
        self.resize = config.resize
        self.max_pixels = config.max_pixels
        self._read_record()
        #: What happens to the net's map on its way to the image.
        self.post = self.resolve_postprocess(config.postprocess)
        self.engine = config.engine
        if host and not runtime.runs_host_layers:
            raise EngineError(f"runtime {runtime.name!r} (precision {self.precision}) cannot run Python layer "
                              f"{host[0].describe()}; use runtime 'pytorch' (precision fp32, tf32 or bf16), "
                              f"or python_layers='native' to use the native layer instead of that file")
        problem = runtime.missing()
        if problem:
            raise EngineError(problem)
        self.net = runtime.load(config, self.device)  # type: ignore[arg-type]  # resolved: its files are set
        self._check_inputs()
        #: Layer name -> which file and implementation each Python layer runs.
        self.python_layers: dict[str, PythonLayerInfo]
        if isinstance(self.net, Net):
            self.python_layers = dict(self.net.python_layers)
        elif self.runtime == "caffe":  # Caffe runs every file as written
            self.python_layers = {n: dataclasses.replace(i, implementation="caffe") for n, i in plan.items()}
        else:
            self.python_layers = plan
        self.output_blob = self._find_output()
        options = ForwardOptions.parse(config.variants)
        if options and not runtime.takes_tensors:
            raise ValueError(f"forward variants ({', '.join(options.names())}) are for the PyTorch runtime, "
                             f"not {self.runtime} (precision {self.precision}); choose runtime 'pytorch' with "
                             f"precision fp32, tf32 or bf16")
        if options and options.cuda_graphs and host:
            raise ValueError(f"forward variant cuda-graphs cannot capture a Python layer run on the host "
                             f"({host[0].describe()})")
        #: The net's forward with the chosen variants, or None for the plain path.
        self.fast = FastForward(self.net, self.output_blob, options, self.precision) if options else None  # type: ignore[arg-type]

    @staticmethod
    def _device(runtime, device: str) -> torch.device:
        """Where ``runtime`` runs for the requested ``device`` ("auto": a GPU when it can use one here)."""
        if runtime.takes_tensors:
            return resolve_device(device)
        kinds = runtime.devices()
        if device == "auto":
            return torch.device("cuda" if "cuda" in kinds else "cpu")
        try:
            wanted = torch.device(device)
        except RuntimeError:
            raise ValueError(f"invalid device {device!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'") from None
        if wanted.type not in kinds:
            what = "engine 'caffe' runs" if runtime.name == "caffe" else f"runtime {runtime.name!r} runs"
            raise EngineError(f"{what} on the CPU only, not on {wanted}" if kinds == ("cpu",) else
                              f"{what} on {', '.join(kinds)}, not on {wanted}")
        return wanted

    @property
    def input_device(self) -> torch.device:
        """Where the net's input tensors are made: the device for PyTorch, the host for the other runtimes."""
        return self.device if self._runtime.takes_tensors else torch.device("cpu")

    def _input_scale(self, input_scale: float | None) -> float:
        """The given scale, else the model file's own convention, else the published one."""
        if input_scale is not None:
            return float(input_scale)
        try:
            return float(pretrained.model_metadata(self.model_path).get("input_scale", PUBLISHED_INPUT_SCALE))
        except ValueError:
            raise SaliconError(f"{self.model_path}: metadata 'input_scale' is not a number") from None

    def _read_record(self) -> None:
        #: The model's record (``<stem>.json`` beside the weights), or None.
        self.record = (pretrained.model_records()[self.name] if self.name
                       else pretrained.read_record(self.model_path))
        #: The model's learned centre prior (``prior=learned``), if its record has one;
        #: its recorded post-processing (plain for a model without a record).
        self.center_prior, self.default_post = record_postprocess(self.model_path, self.record)

    def _check_inputs(self) -> None:
        for name, shape in self.net.input_shapes.items():
            if len(shape) != 4 or shape[1] != 3:
                raise SaliconError(f"{self.prototxt_path}: input '{name}' has shape {shape}; image inputs "
                                   f"must be N x 3 x H x W (is this a train prototxt?)")

    def _find_output(self) -> str:
        outputs = self.net.outputs
        if OUTPUT_BLOB in outputs:
            return OUTPUT_BLOB
        if len(outputs) == 1:
            return outputs[0]
        raise SaliconError(f"{self.prototxt_path}: cannot tell the saliency output among {outputs}; "
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
        nhwc = self.fast is not None and self.fast.options.channels_last
        return self.preprocess_spec().inputs(rgb, self.input_device, nhwc), size

    @torch.inference_mode()
    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Run the net on batched inputs (name -> Nx3xHxW); returns N x h x w float maps."""
        if not self._runtime.takes_tensors:  # the other runtimes take and give arrays
            arrays = {k: v.detach().cpu().float().numpy() for k, v in inputs.items()}
            out = torch.from_numpy(self.net(**arrays)[self.output_blob])
        else:
            with precision_context(self.precision, self.device):
                out = self.fast(**inputs) if self.fast is not None else self.net(**inputs)[self.output_blob]
        return out.float().reshape(out.shape[0], *out.shape[-2:])

    def postprocess(self, raw: torch.Tensor, size: Sequence[int], post: PostProcess | None = None) -> np.ndarray:
        """The net's map made into the image's saliency map by ``post`` (default:
        this model's; the published output is min-max normalised and resized)."""
        if int(size[0]) * int(size[1]) > HUGE_PIXELS and hasattr(self.net, "release_memory"):
            self.net.release_memory()  # a huge map and its files need the memory more than the net's buffers
        return (post or self.post).apply(raw, size, self.resize)

    # ------------------------------------------------------------ public
    def compute_saliency(self, image: ImageLike) -> np.ndarray:
        """Saliency map of ``image`` (path, PIL image or array): float32 HxW in [0, 1]."""
        inputs, size = self.preprocess(image)
        raw = self.forward({k: v[None] for k, v in inputs.items()})
        return self.postprocess(raw[0], size)

    def video_saliency(self, path: PathLike, fps: float | None = None, every: int | None = None,
                       smoothing: float | None = None, batch_size: int = 1) -> Iterator[tuple[float, np.ndarray]]:
        """Yield ``(timestamp_s, map)`` for the frames of the video at ``path`` that
        the net runs on: every frame by default, at most ``fps`` a second of the
        clip's time, or every ``every``-th frame. ``smoothing``: an exponential
        moving average of the maps with this time constant in seconds. Frames
        are decoded ahead in a thread; memory holds a few frames whatever the
        clip's length. A clip that breaks mid-way raises
        :class:`~salicon.video.VideoError` after the maps of the frames before it."""
        from .video.pipeline import video_saliency

        return video_saliency(self, path, fps=fps, every=every, smoothing=smoothing, batch_size=batch_size)

    def iter_saliency(self, images: Iterable[ImageLike], batch_size: int = 1, workers: int | None = None,
                      decode: str | None = None) -> Iterator[tuple[int, np.ndarray | Exception]]:
        """Yield ``(index, map)`` for each image, or ``(index, error)`` for one that
        cannot be read, so one bad file does not stop the others. Images are
        decoded in ``workers`` (default: the cores, at most 8) ahead of the net,
        by the ``decode`` method of :mod:`salicon.decode` ("threads", "processes"
        or "gpu"; default: the configuration's ``decode``)."""
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        decode = self.config.decode if decode is None else decode
        if decode not in DECODERS:
            raise ValueError(f"decode must be one of {DECODERS}, not {decode!r}")
        if decode == "gpu" and (problem := gpu_decode_problem(self.input_device)):
            raise EngineError(problem)
        workers = max(1, workers or min(8, os.cpu_count() or 1))
        ahead = workers + batch_size  # bounded read-ahead keeps memory flat
        pending: list[tuple[int, dict, tuple]] = []
        with make_executor(decode, workers) as pool:
            for index, decoded in prefetch(self._decoder(decode), images, pool, ahead):
                try:
                    prepared = self._on_device(decoded)
                except SaliconError as exc:
                    prepared = exc
                if isinstance(prepared, Exception):
                    yield index, prepared
                    continue
                pending.append((index,) + prepared)
                if len(pending) == batch_size:
                    yield from self._run_batch(pending)
                    pending = []
            if pending:
                yield from self._run_batch(pending)

    def _decoder(self, decode: str):
        """What a decode worker runs on one image (picklable for processes)."""
        if decode == "gpu":
            return functools.partial(read_for_gpu, max_pixels=self.max_pixels)
        if self.input_device.type == "cuda":  # workers decode; the parent uploads (pinned, async) and resizes there
            return functools.partial(decode_rgb, max_pixels=self.max_pixels)
        if decode == "processes":
            return functools.partial(decode_inputs, spec=self.preprocess_spec())

        def prepare(item):
            try:
                return self.preprocess(item)
            except SaliconError as exc:
                return exc
        return prepare

    def _on_device(self, decoded):
        """A worker's result made into (net inputs on the device, image size), or its error."""
        if isinstance(decoded, Exception):
            return decoded
        if isinstance(decoded, np.ndarray):  # 8-bit pixels from a process
            rgb = to_device(decoded, self.input_device)
        elif isinstance(decoded[0], dict):  # already the net's inputs
            return {k: torch.as_tensor(v) for k, v in decoded[0].items()}, decoded[1]
        elif decoded[0] == "jpeg":
            rgb = decode_jpeg_on(decoded[1], self.input_device)
        else:
            rgb = to_device(decoded[1], self.input_device)
        return self.preprocess_spec().inputs(rgb, self.input_device, nhwc=True), (int(rgb.shape[0]), int(rgb.shape[1]))

    def preprocess_spec(self) -> PreprocessSpec:
        """What making this model's inputs needs, without the weights (for workers)."""
        return PreprocessSpec({k: tuple(v) for k, v in self.net.input_shapes.items()}, self.resize,
                              self.input_scale, self.mean_bgr, self.max_pixels)  # type: ignore[arg-type]

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
