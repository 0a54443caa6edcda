"""Fine-tuning as in OpenSALICON's finetune_salicon.py, made dependable.

One solver step per image (batch size 1, gradients per image as the SALICON
authors did), a new random order of the training images every epoch, a seeded
held-out split written next to the snapshots, a time limit (2.5 h by default,
as in the report), snapshots at the solver's interval and at the end
(.caffemodel + .solverstate, resumable exactly), a validation loss every epoch,
a JSON-lines log and a loss-curve picture. Images are held in memory as
decoded uint8 at their own size and resized to the net's input sizes on the
compute device at every step, with the same spline resize as inference.
"""
from __future__ import annotations

import dataclasses
import json
import math
import signal
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .data import PreparedSample, open_dataset, prepare, split_names
from .device import check_precision, free_memory, precision_context, resolve_device
from .engine import Net
from .errors import SaliconError
from .fixations import OSIE_SIGMA
from .outputs import atomic_write
from .preprocess import PUBLISHED_INPUT_SCALE, image_to_blob, resize_chw
from .pretrained import file_sha256, prototxt_path, resolve_model
from .solver import MultiTensorSolver, Solver, learning_rate, read_solver, solver_net_path

TARGET_BLOB = "ground_truth"
#: How the PyTorch solver applies its update (see salicon.solver.MultiTensorSolver).
UPDATES = ("per-blob", "multi-tensor")


class TrainingError(SaliconError):
    """Training stopped (NaN loss, bad configuration)."""


@dataclass
class TrainConfig:
    """Everything a run needs; written to ``out/config.json``."""

    data: str
    out: str
    solver: str = str(prototxt_path("solver.prototxt"))
    prototxt: str | None = None          # default: the solver's `net`
    weights: str | None = None           # .caffemodel to start from
    resume: str | None = None            # .solverstate to continue
    time_limit: float = 2.5 * 3600       # seconds
    max_iter: int | None = None          # default: the solver's max_iter, if set
    device: str = "auto"
    precision: str = "fp32"
    seed: int = 0
    test: float = 0.1                    # held-out images: a count, or a fraction if < 1
    input_scale: float = PUBLISHED_INPUT_SCALE
    sigma: float = OSIE_SIGMA
    workers: int | None = None
    snapshot: int | None = None          # default: the solver's snapshot interval
    split: str | None = None             # a split.json to reuse instead of drawing one
    maps: str | None = None              # fixation-map folder, when `data` is an image folder
    engine: str = "auto"                 # "pytorch" (auto) or "caffe" (pycaffe's own solver, CPU)
    update: str = "per-blob"             # "multi-tensor": list operations, losses read every `display` steps
    python_layers: str | None = None     # auto, as-written or native (default: $SALICON_PYTHON_LAYERS, else auto)
    cache_frozen: bool = False           # compute the layers that do not learn once per image (PyTorch engine)


@dataclass
class TrainResult:
    iterations: int
    seconds: float
    stop_reason: str
    final_model: Path
    final_state: Path
    train_loss: float
    val_loss: float | None
    log: Path
    history: list = field(default_factory=list)
    val_metrics: dict = field(default_factory=dict)


class _Interrupt:
    """The first Ctrl-C sets a flag checked between steps (the loop then ends
    with a snapshot and no validation); a second one stops at once
    (KeyboardInterrupt), leaving the last snapshot, written atomically, as it was."""

    def __init__(self, say: Callable[[str], None] = print):
        self.hit = False
        self._old = None
        self._say = say

    def __enter__(self):
        def handler(signum, frame):
            if self.hit:
                raise KeyboardInterrupt
            self.hit = True
            self._say("interrupted: stopping after this step with a snapshot (Ctrl-C again to stop at once)")
        try:
            self._old = signal.signal(signal.SIGINT, handler)
        except ValueError:  # not the main thread
            self._old = None
        return self

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


class Trainer:
    """Runs one fine-tuning job described by a :class:`TrainConfig`."""

    def __init__(self, config: TrainConfig, log: Callable[[str], None] = print):
        self.config = config
        self.say = log
        self.out = Path(config.out)
        self.solver_param = read_solver(config.solver)
        if config.snapshot is not None:
            self.solver_param.snapshot = config.snapshot
        net_path = Path(config.prototxt) if config.prototxt else solver_net_path(self.solver_param, config.solver)
        if net_path is None:
            net_path = prototxt_path("finetune_salicon.prototxt")
        self.net_path = net_path
        check_precision(config.precision)  # once, here: not on every step
        if config.update not in UPDATES:
            raise TrainingError(f"update must be one of {', '.join(UPDATES)}, not {config.update!r}")
        if config.engine not in ("auto", "pytorch", "caffe"):
            raise TrainingError(f"engine must be auto, pytorch or caffe, not {config.engine!r}")
        self.engine = "pytorch" if config.engine == "auto" else config.engine
        self.device = resolve_device("cpu" if self.engine == "caffe" else config.device)
        self.net = Net(net_path, phase="train", device=self.device, seed=config.seed,
                       python_layers=config.python_layers)
        #: Layer name -> which file and implementation each Python layer runs (logged, and recorded
        #: beside every snapshot).
        self.python_layers = dict(self.net.python_layers)
        self.inputs = {n: s for n, s in self.net.input_shapes.items() if n != TARGET_BLOB}
        if TARGET_BLOB not in self.net.input_shapes:
            raise TrainingError(f"{net_path}: the train net needs an input blob '{TARGET_BLOB}'")
        self.target_size = tuple(self.net.input_shapes[TARGET_BLOB][-2:])
        #: The weights file training starts from (a registered model's name is its weights file).
        self.weights = str(resolve_model(config.weights).weights) if config.weights else None
        if self.weights and not config.resume:
            self.net.copy_from(self.weights, strict=False)
        if self.out.exists() and not self.out.is_dir():
            raise TrainingError(f"--out {self.out}: exists and is not a folder")
        self.train_set, self.test_set = self.load_data()
        # Created only once the configuration and the data are known to be good.
        self.out.mkdir(parents=True, exist_ok=True)
        if self._split_record is not None:
            text = json.dumps(self._split_record, indent=1)
            atomic_write(self.split_file, lambda tmp: Path(tmp).write_text(text))
        self.prefix = self.out / (Path(self.solver_param.snapshot_prefix or "salicon").name)
        self.loss_tops = dict(self.net.loss_weights)
        loss_layers = [lp for lp in self.net.layer_params.values() if set(lp.top) & set(self.loss_tops)]
        self.map_blob = loss_layers[0].bottom[0] if loss_layers else None
        self.backend: Any  # how a step runs: real Caffe's solver, or this package's on PyTorch
        if self.engine == "caffe":
            from .runtimes.caffe import CaffeSolverBackend, check_layer_files
            check_layer_files(net_path, self.net.layer_files)
            self.python_layers = {name: dataclasses.replace(info, implementation="caffe")
                                  for name, info in self.python_layers.items()}
            self.backend = CaffeSolverBackend(self.solver_param, net_path, self.prefix, self.out, self.loss_tops,
                                              None if config.resume else self.weights)
            del self.net
        else:
            if self.device.type == "cuda":
                self.net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # Module.to takes it
                self.net.memory_format = torch.channels_last
            self.backend = _TorchBackend(self)
        #: The layers computed once per image with cache_frozen (None: every layer at every step).
        self.constant = self._constant_prefix() if config.cache_frozen else None
        self._cache: dict[str, dict[str, torch.Tensor]] = {}
        if config.resume:
            self.backend.restore(config.resume)

    def _constant_prefix(self):
        """The net's constant prefix, announced with what keeping it costs; None when empty."""
        if self.engine != "pytorch":
            raise TrainingError("cache_frozen (--cache-frozen) runs on the PyTorch engine, not on Caffe's solver")
        prefix = self.net.constant_prefix()
        if all(self.net.layer(self.net.step_names[i]).is_input for i in prefix.steps):
            self.say("cache_frozen: every layer learns or follows one that does; nothing to compute once")
            return None
        size = 4 * sum(math.prod(self.net.blob_shapes[b]) for b in prefix.boundary)  # bytes per image
        free, count = free_memory(self.device), len(self.train_set) + len(self.test_set)
        last, kept = self.net.step_names[max(prefix.steps)], ", ".join(prefix.boundary)
        if free is not None and size * count > 0.8 * free:
            raise TrainingError(f"cache_frozen: the blobs to keep ({kept}) take {size * count / 2**30:.1f} GiB for "
                                f"{count} images, more than the {free / 2**30:.1f} GiB free on {self.device}; "
                                f"freeze more layers (lr_mult 0) or train without --cache-frozen")
        self.say(f"cache_frozen: {len(prefix.steps)} layers up to {last} run once per image; keeping {kept}: "
                 f"{size / 2**20:.1f} MiB per image, {size * count / 2**30:.2f} GiB for {count} images")
        return prefix

    # ------------------------------------------------------------- data
    def load_data(self) -> tuple[list[PreparedSample], list[PreparedSample]]:
        cfg = self.config
        dataset = open_dataset(cfg.data, cfg.maps, sigma=cfg.sigma)
        split_file = Path(cfg.split) if cfg.split else self.out / "split.json"
        self.split_file, self._split_record = split_file, None
        if cfg.split and not split_file.exists():
            raise TrainingError(f"{split_file}: no such split file")
        if split_file.exists():
            split = json.loads(split_file.read_text())
            train_names, test_names = split["train"], split["test"]
            unknown = sorted(set(train_names + test_names) - set(dataset.names()))
            if unknown:
                raise TrainingError(f"{split_file}: names not in {cfg.data}: {', '.join(unknown[:10])}")
        else:
            train_names, test_names = split_names(dataset.names(), cfg.test, cfg.seed)
            self._split_record = {"seed": cfg.seed, "train": train_names, "test": test_names}  # written later
        wanted = set(train_names) | set(test_names)
        samples = [s for s in dataset.samples if s.name in wanted]
        start = time.perf_counter()
        prepared = {p.name: p for p in prepare(dataset, samples, self.target_size, workers=cfg.workers)}
        by_name = {s.name: s for s in samples}
        self.val_truth = {n: dataset.ground_truth(by_name[n], prepared[n].image.shape[:2]) for n in test_names}
        self.say(f"prepared {len(prepared)} images in {time.perf_counter() - start:.1f} s "
                 f"({len(train_names)} train, {len(test_names)} held out; split in {split_file})")
        return [prepared[n] for n in train_names], [prepared[n] for n in test_names]

    def feeds(self, sample: PreparedSample) -> dict[str, torch.Tensor]:
        """Net inputs for one sample: the image at each input size, and the target;
        with cache_frozen the constant prefix's blobs instead, computed on first use."""
        if self.constant is None:
            return self._inputs(sample)
        cached = self._cache.get(sample.name)
        if cached is None:
            with precision_context(self.config.precision, self.device):
                cached = self._cache[sample.name] = self.net.forward_prefix(self.constant, **self._inputs(sample))
        return cached

    def _inputs(self, sample: PreparedSample) -> dict[str, torch.Tensor]:
        rgb = torch.from_numpy(sample.image).to(self.device, non_blocking=True)
        blob = image_to_blob(rgb, self.config.input_scale)
        feeds = {name: resize_chw(blob, shape[-2:], "spline")[None] for name, shape in self.inputs.items()}
        target = torch.from_numpy(sample.target).to(self.device)
        feeds[TARGET_BLOB] = target.reshape(1, 1, *target.shape)
        return feeds

    @torch.no_grad()
    def validate(self, samples: Sequence[PreparedSample]) -> dict:
        """Validation loss and the metrics NSS, CC and AUC-Judd (MIT conventions)
        on the held-out images: the net's map (sigmoid of the loss's score
        blob) resized to each image as Salicon does, against the image's
        fixations and fixation map."""
        from . import metrics as M
        from .preprocess import saliency_to_image_size
        if not samples:
            return {"val_loss": None}
        losses: list[float] = []
        scores: dict[str, list[float]] = {"NSS": [], "CC": [], "AUC_Judd": []}
        for sample in samples:
            loss, logits = self.backend.evaluate(self.feeds(sample), self.map_blob)
            losses.append(loss)
            binary, density = self.val_truth[sample.name]
            sal = saliency_to_image_size(torch.sigmoid(torch.from_numpy(logits)), binary.shape)
            for name, fn, gt in (("NSS", M.nss, binary), ("CC", M.cc, density), ("AUC_Judd", M.auc_judd, binary)):
                try:
                    scores[name].append(fn(sal, gt))
                except M.MetricError:
                    pass
        out = {"val_loss": float(np.mean(losses))}
        out.update({f"val_{k}": float(np.mean(v)) for k, v in scores.items() if v})
        return out

    # ------------------------------------------------------------- loop
    def run(self, progress: bool = True) -> TrainResult:
        """Step through the training images until max_iter, the time limit, a
        non-finite loss or Ctrl-C; then snapshot, validate and report."""
        if not self.train_set:
            raise TrainingError("no training images")
        (self.out / "config.json").write_text(json.dumps(asdict(self.config), indent=1))
        run = _Run(log_path=self.out / "log.jsonl", start=time.perf_counter(), first_iter=self.backend.iter,
                   max_iter=self.config.max_iter if self.config.max_iter is not None
                   else (self.solver_param.max_iter or None),
                   display=max(1, self.solver_param.display or 20))
        run.deadline = run.start + self.config.time_limit
        for info in self.python_layers.values():
            self.say(f"Python layer {info.describe()}")
        if progress:
            from tqdm import tqdm
            run.bar = tqdm(total=run.max_iter, initial=self.backend.iter, unit="step", dynamic_ncols=True)
        with open(run.log_path, "a") as log, _Interrupt(self.say if run.bar is None else run.bar.write) as stop:
            run.log = log
            run.record({"event": "start", "iter": self.backend.iter, "net": str(self.net_path),
                        "engine": self.engine, "device": str(self.device),
                        "python_layers": {n: i.to_dict() for n, i in self.python_layers.items()}})
            while (reason := self._stop_reason(run, stop)) is None:
                reason = self._step(run)
                if reason is not None:
                    break
            else:
                reason = self._flush(run) or reason
        if run.bar is not None:
            run.bar.close()
        return self._finish(run, reason)

    def _flush(self, run: _Run) -> str | None:
        """Read back the losses not yet read; a stop reason if one was not finite."""
        try:
            losses = self.backend.flush()
        except FloatingPointError as exc:
            return f"non-finite loss ({exc})"
        run.add_losses(losses)
        return None

    def _stop_reason(self, run: _Run, interrupt: _Interrupt) -> str | None:
        if run.max_iter is not None and self.backend.iter >= run.max_iter:
            return "max_iter"
        if time.perf_counter() >= run.deadline:
            return "time limit"
        return "interrupted" if interrupt.hit else None

    def _next_sample(self, run: _Run) -> PreparedSample:
        """The next training image: a new random order each epoch, a function of
        (seed, epoch), and a validation pass when an epoch ends."""
        epoch, pos = divmod(self.backend.iter, len(self.train_set))
        if epoch != run.order_epoch:
            run.order = np.random.default_rng([self.config.seed, epoch]).permutation(len(self.train_set))
            run.order_epoch = epoch
            if pos == 0 and epoch > 0:
                val = self.validate(self.test_set)
                run.record({"event": "epoch", "epoch": epoch, "iter": self.backend.iter, **val,
                            "time": time.perf_counter() - run.start})
                self.say(f"epoch {epoch} done at iter {self.backend.iter}: " + _describe(val))
        assert run.order is not None
        return self.train_set[run.order[pos]]

    def _step(self, run: _Run) -> str | None:
        """One solver step on one image, logged; a stop reason if the loss is not finite."""
        sample = self._next_sample(run)
        it = self.backend.iter + 1
        snapshot_due = bool(self.solver_param.snapshot) and it % self.solver_param.snapshot == 0
        try:  # losses are read back when logged or before a snapshot (every step on the per-blob path)
            losses = self.backend.step(self.feeds(sample), read=it % run.display == 0 or it == 1 or snapshot_due)
        except FloatingPointError as exc:
            return f"non-finite loss ({exc})"
        run.add_losses(losses)
        lr = learning_rate(self.solver_param, it - 1)
        rate = (it - run.first_iter) / max(time.perf_counter() - run.start, 1e-9)
        if it % run.display == 0 or it == 1:
            run.record({"event": "train", "iter": it, "loss": float(np.mean(run.recent)), "lr": lr,
                        "img_per_s": rate, "time": time.perf_counter() - run.start, "image": sample.name})
        if run.bar is not None:  # every step, so loss and time left never freeze
            run.bar.set_postfix(loss=f"{float(np.mean(run.recent)):.4g}", lr=f"{lr:.2g}", img_s=f"{rate:.2f}",
                                left=_hms(run.deadline - time.perf_counter()), refresh=False)
            run.bar.update(1)
        if snapshot_due:
            run.last_snapshot = self._snapshot()
        return None

    def _snapshot(self) -> tuple[Path, Path]:
        """A snapshot (weights and solver state) and its record ``<stem>.json``: what
        the weights are and how they were trained (the net, the Python layer files run)."""
        model, state = self.backend.snapshot(self.prefix)
        record = {"name": model.stem, "weights": {"file": model.name, "sha256": file_sha256(model)},
                  "training": {"iter": self.backend.iter, "net": str(self.net_path), "solver": str(self.config.solver),
                               "engine": self.engine, "solverstate": state.name,
                               "python_layers": {n: i.to_dict() for n, i in self.python_layers.items()}}}
        text = json.dumps(record, indent=1)
        atomic_write(model.with_suffix(".json"), lambda tmp: Path(tmp).write_text(text))
        return model, state

    def _finish(self, run: _Run, stop_reason: str) -> TrainResult:
        """The final snapshot (the last good one after a non-finite loss), validation,
        the end record, the pictures and the summary line."""
        failed = stop_reason.startswith("non-finite")
        if failed and not self.backend.keeps_weights_on_nan:
            if run.last_snapshot is None:
                raise TrainingError(f"{stop_reason} at iteration {self.backend.iter}, before any snapshot")
            model, state = run.last_snapshot
        else:
            model, state = self._snapshot()
        # An interrupted run ends quickly: its user wants control back, not a validation pass.
        val = self.validate(self.test_set) if not failed and stop_reason != "interrupted" else {"val_loss": None}
        seconds = time.perf_counter() - run.start
        with open(run.log_path, "a") as log:
            run.log = log
            run.record({"event": "end", "iter": self.backend.iter, "reason": stop_reason, **val, "time": seconds,
                        "model": model.name})
        self._plot(run.history)
        summary = "validation skipped" if stop_reason == "interrupted" else _describe(val)
        self.say(f"stopped after {self.backend.iter} iterations ({stop_reason}), {seconds:.0f} s; "
                 f"{summary}; wrote {model} and {state}")
        if failed:
            raise TrainingError(f"training stopped: {stop_reason}; the last good weights are in {model}")
        return TrainResult(self.backend.iter, seconds, stop_reason, model, state, run.train_loss, val["val_loss"],
                           run.log_path, run.history, {k: v for k, v in val.items() if k != "val_loss"})

    def _plot(self, history: list[dict]) -> None:
        from .visualize import plot_loss_curve, plot_validation_curve

        for plot, name in ((plot_loss_curve, "loss.png"), (plot_validation_curve, "validation.png")):
            try:
                plot(history, self.out / name)
            except (OSError, ValueError):
                pass


@dataclass
class _Run:
    """The state of one training loop."""
    log_path: Path
    start: float
    first_iter: int
    max_iter: int | None
    display: int
    deadline: float = 0.0
    bar: Any = None                    # the tqdm bar, when progress is shown
    log: Any = None                    # the open JSON-lines log
    history: list = field(default_factory=list)
    recent: list = field(default_factory=list)
    order: np.ndarray | None = None
    order_epoch: int = -1
    last_snapshot: tuple[Path, Path] | None = None
    train_loss: float = float("nan")

    def add_losses(self, losses: list[float]) -> None:
        """Losses just read back: the last is the training loss, the last ``display`` are logged."""
        if losses:
            self.train_loss = losses[-1]
            self.recent = (self.recent + losses)[-self.display:]

    def record(self, entry: dict) -> None:
        """Append ``entry`` to the JSON-lines log (flushed) and the history."""
        self.log.write(json.dumps(entry) + "\n")
        self.log.flush()
        self.history.append(entry)


class _TorchBackend:
    """Steps on the PyTorch engine with the project's Caffe-exact solver."""

    #: A non-finite loss is caught before the update, so the weights stay good.
    keeps_weights_on_nan = True

    def __init__(self, trainer: Trainer):
        self.trainer = trainer
        self.net = trainer.net
        kind = MultiTensorSolver if trainer.config.update == "multi-tensor" else Solver
        self.solver = kind(trainer.solver_param, trainer.net)

    @property
    def iter(self) -> int:
        return self.solver.iter

    def _objective(self, feeds) -> torch.Tensor:
        with precision_context(self.trainer.config.precision, self.trainer.device):
            return self.net.objective(self.net(**feeds, prefix=self.trainer.constant))

    def step(self, feeds, read: bool = True) -> list[float]:
        """One solver step; the losses read back now (the multi-tensor solver
        reads them only when ``read`` is set)."""
        loss = self.solver.step(feeds, forward=self._objective)
        if isinstance(loss, float):  # the per-blob solver reads it back every step
            return [loss]
        return self.solver.check() if read else []

    def flush(self) -> list[float]:
        return self.solver.check()

    @torch.no_grad()
    def loss(self, feeds) -> float:
        return float(self._objective(feeds))

    @torch.no_grad()
    def evaluate(self, feeds, map_blob: str) -> tuple[float, np.ndarray]:
        with precision_context(self.trainer.config.precision, self.trainer.device):
            out = self.net(**feeds, blobs=[map_blob], prefix=self.trainer.constant)
            loss = float(self.net.objective(out))
        return loss, out[map_blob].float().cpu().numpy().reshape(out[map_blob].shape[-2:])

    def snapshot(self, prefix):
        return self.solver.snapshot(prefix)

    def restore(self, state):
        self.solver.restore(state)


def _describe(val: dict) -> str:
    if val.get("val_loss") is None:
        return "no validation images"
    return ", ".join(f"{k[4:] if k.startswith('val_') else k} {v:.4g}" for k, v in val.items()
                     if v is not None).replace("loss", "validation loss", 1)


def _hms(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def train(config: TrainConfig, progress: bool = True, log: Callable[[str], None] = print) -> TrainResult:
    """Run a fine-tuning job (see :class:`TrainConfig`)."""
    return Trainer(config, log).run(progress)
