"""What the subcommands share: argument types, the model and post-processing
options (defined once here), the help formatter, and ``Salicon`` built from
the parsed arguments in one place."""
from __future__ import annotations

import argparse
import dataclasses
import re
import sys

import numpy as np

from ..image import DEFAULT_MAX_PIXELS

INPUT_SCALES = {"published": 1.0 / 255.0, "vgg": 1.0}
#: Marker for --fast, turned into the shipped salicon_fast.prototxt's path when used.
FAST_PROTOTXT = "salicon_fast.prototxt"
#: The registered model --fast stands for when no --model is given.
FAST_MODEL = "salicon_osie_fast"
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def error(message: str) -> None:
    """Print ``salicon: error: MESSAGE`` on stderr (on a line of its own)."""
    print(f"salicon: error: {message}", file=sys.stderr)


def usage_error(args: argparse.Namespace, message: str) -> int:
    """Report options that do not go together as argparse reports a usage error:
    the subcommand's usage line, then the message; exit status 2."""
    if getattr(args, "usage", None):
        print(args.usage, end="", file=sys.stderr)
    error(message)
    return 2


def plural(count: int, noun: str, plural_form: str | None = None) -> str:
    """'1 image', '2 images'."""
    return f"{count} {noun if count == 1 else (plural_form or noun + 's')}"


# ------------------------------------------------------------------- types


def whole_number(minimum: int, maximum: int | None = None):
    """An argparse type: a whole number in [minimum, maximum]."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum}, got {value}")
        return value
    return parse


positive_int = whole_number(1)
non_negative_int = whole_number(0)


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or not np.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def duration(text: str) -> float:
    """'9000', '90s', '45m', '2.5h' -> seconds (positive)."""
    text = text.strip().lower()
    units = {"s": 1, "m": 60, "h": 3600}
    try:
        value = float(text[:-1]) * units[text[-1]] if text and text[-1] in units else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r} (e.g. 9000, 90s, 45m, 2.5h)") from None
    if not value > 0 or not np.isfinite(value):
        raise argparse.ArgumentTypeError(f"the duration must be positive, got {text!r}")
    return value


def max_pixels(text: str) -> int | None:
    """'none', a pixel count, or megapixels with an M suffix ('250M'); 0 is an error."""
    text = text.strip()
    if text.lower() in ("none", "unlimited"):
        return None
    try:
        value = float(text[:-1]) * 1e6 if text[-1:].lower() == "m" else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a pixel count, megapixels like 250M, or 'none'; "
                                         f"got {text!r}") from None
    if not value >= 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 pixel, got {text} ('none' lifts the limit)")
    return int(value)


def pixels_text(count: int) -> str:
    """A pixel limit as the help texts write it: '50000000 (50M)'."""
    return f"{count} ({count / 1e6:.0f}M)"


def input_scale(text: str) -> float:
    if text in INPUT_SCALES:
        return INPUT_SCALES[text]
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid input scale {text!r}: 'published', 'vgg' or a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"input scale must be positive, not {text}")
    return value


def device(text: str) -> str:
    if not _DEVICE.match(text):
        raise argparse.ArgumentTypeError(f"invalid device {text!r}; use auto, cpu, cuda or cuda:N")
    return text


def postprocess_spec(text: str) -> str:
    """A post-processing specification checked for its syntax and values; what it
    refers to in the model ('default', 'prior=learned') is resolved when the model loads."""
    from ..postprocess import CenterPrior, PostProcess, PostProcessError, parse_postprocess

    try:  # a stand-in for the model's learned prior and recorded default
        parse_postprocess(text, CenterPrior(), PostProcess(name="default"))
    except PostProcessError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


# ----------------------------------------------------------------- options


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a default only where there is one worth showing (not None, not a
    flag's False; 0 is shown) and the help text does not already describe it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ""
        if action.default is None or action.default is False or action.default is argparse.SUPPRESS \
                or "default:" in help_text:
            return help_text
        return super()._get_help_string(action) or ""


def subcommand(sub, name: str, summary: str, doc: str) -> argparse.ArgumentParser:
    """A subcommand's parser: its one-line summary for ``salicon --help``; its
    description for its own, the paragraphs of its module's docstring after the title."""
    description = " ".join(doc.split("\n\n", 1)[-1].split())
    return sub.add_parser(name, help=summary, description=description, formatter_class=HelpFormatter)


def add_out(p: argparse.ArgumentParser, metavar: str, what: str, required: bool = True,
            default: str | None = None) -> None:
    """-o/--out, the output of every subcommand (--output is kept as an alias)."""
    p.add_argument("-o", "--out", "--output", dest="out", required=required, default=default, metavar=metavar,
                   help=what)


def add_model(p: argparse.ArgumentParser, fast: bool = True, many: bool = False) -> None:
    """--model (repeatable with ``many``) and --prototxt (with its shorthand --fast)."""
    p.add_argument("--model", action="append" if many else "store",
                   help="a registered model's name (salicon models lists them) or trained weights, "
                        ".caffemodel or .safetensors (default: salicon_osie, the shipped pretrained "
                        "model, SALICON trained on OSIE)"
                        + ("; give it again to serve several models (the first is the default; the page and "
                           "the API's model= choose)" if many else ""))
    if not fast:
        p.add_argument("--prototxt", help="test net prototxt (default: prototxt/salicon.prototxt)")
        return
    group = p.add_mutually_exclusive_group()
    group.add_argument("--prototxt", help="test net prototxt (default: prototxt/salicon.prototxt)")
    group.add_argument("--fast", dest="prototxt", action="store_const", const=FAST_PROTOTXT,
                       help="the model salicon_osie_fast: SALICON trained at half the input sizes (600x800 / "
                            "300x400), about 4x less arithmetic (salicon models shows its scores); with --model "
                            "FILE, that file at these sizes (prototxt/salicon_fast.prototxt)")


def forward_variants(text: str) -> str:
    """--variants: names checked now, kept as text (Salicon parses them)."""
    from ..engine.fast import ForwardOptions

    try:
        ForwardOptions.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def add_engine(p: argparse.ArgumentParser, engine_help: str, inference: bool = True,
               precision: str = "auto") -> None:
    """--device, --engine, --precision (default ``precision``), --input-scale and, for inference, --runtime."""
    p.add_argument("--device", default="auto", type=device, help="auto, cpu, cuda or cuda:N")
    from .. import runtimes

    p.add_argument("--engine", default="auto", choices=["auto", "pytorch", "caffe"], help=engine_help)
    if inference:
        auto_for = ", ".join(f"{r.name} for {'/'.join(r.auto_for)}" for r in runtimes.available().values()
                             if r.auto_for)
        p.add_argument("--runtime", default="auto", choices=["auto", *runtimes.names()],
                       help=f"where the net runs: {runtimes.help_text()}; auto: {auto_for}")
        p.add_argument("--precision", default=precision, choices=["auto", *runtimes.precisions()],
                       help="numerics: fp32 (exact, Caffe-equal), tf32 (GPU), bf16, int8 (OpenVINO on the CPU, "
                            "the model's quantized file: 3.6x faster than fp32 on 2 cores, maps CC >= 0.999 "
                            "with fp32), or auto: int8 on a CPU where the model has an int8 file (the shipped "
                            "model has), else fp32")
        p.add_argument("--variants", default="", type=forward_variants, metavar="NAMES",
                       help="forward variants of the PyTorch net, comma-separated: channels-last, fuse-relu, "
                            "cast-weights (bf16 weights, no autocast), compile (torch.compile), cuda-graphs "
                            "(GPU); 'all' or none (default). Same maps within float rounding; speed-ups are "
                            "measured by benchmarks/gpu_check.sh")
    else:
        p.add_argument("--precision", default="fp32", choices=["fp32", "tf32", "bf16"],
                       help="numerics: fp32 (exact), tf32 or bf16 autocast (faster on GPUs)")
    p.add_argument("--input-scale", type=input_scale,
                   help="factor after mean subtraction: 'published' (1/255, for the published weights), "
                        "'vgg' (1) or a number (default: the model file's own convention, else 'published')")
    p.add_argument("--python-layers", choices=["auto", "as-written", "native"], default=None,
                   help="how the prototxt's Python layers run: auto (a native layer where the module's file is "
                        "one it reproduces: this project's layers/ and OpenSALICON's files; any other file as "
                        "written, on the host), as-written (every file as written), native (the native layer of "
                        "that name even for an edited file); default: $SALICON_PYTHON_LAYERS, else auto. "
                        "Modules are found as Caffe imports them: sys.path/PYTHONPATH, then layers/")


POSTPROCESS_HELP = ("'default' (the model's recorded post-processing: the shipped model's centre prior), "
                    "'none' (the published output) or key=value pairs, e.g. "
                    "'blur=0.02,prior=learned,weight=1,normalize=probability' (see docs/guides/maps.md)")


def add_postprocess(p: argparse.ArgumentParser, repeat: bool = False, extra: str = "") -> None:
    """--postprocess SPEC (repeatable where several configurations are scored)."""
    if repeat:
        p.add_argument("--postprocess", action="append", metavar="SPEC", type=postprocess_spec,
                       help=POSTPROCESS_HELP + "; repeat it to score several configurations from one forward "
                                               "pass (default: 'default')" + extra)
    else:
        p.add_argument("--postprocess", default="default", metavar="SPEC", type=postprocess_spec,
                       help=POSTPROCESS_HELP + extra)


def add_max_pixels(p: argparse.ArgumentParser, default: int, why: str) -> None:
    p.add_argument("--max-pixels", type=max_pixels, default=default,
                   help=f"refuse images with more pixels than this: a count, megapixels like 250M, or 'none' "
                        f"(default: {pixels_text(default)}, {why})")


def add_quiet(p: argparse.ArgumentParser, what: str = "no progress bar") -> None:
    p.add_argument("-q", "--quiet", action="store_true", help=what)


# ------------------------------------------------------------------- model


def prototxt_arg(args: argparse.Namespace) -> str | None:
    """The --prototxt path, with --fast turned into the shipped fast prototxt."""
    if args.prototxt == FAST_PROTOTXT:
        from ..pretrained import prototxt_path
        return str(prototxt_path(FAST_PROTOTXT))
    return args.prototxt


class UsageError(ValueError):
    """Options that do not go together (int8 on PyTorch, real Caffe with OpenVINO): exit status 2."""


def with_model(args: argparse.Namespace, model: str | None) -> argparse.Namespace:
    """A copy of ``args`` with one ``--model`` (for commands that take it several times)."""
    return argparse.Namespace(**{**vars(args), "model": model})


def salicon_config(args: argparse.Namespace, **overrides):
    """The :class:`~salicon.config.SaliconConfig` the arguments describe (--model,
    --prototxt/--fast, --device, --engine, --runtime, --precision, --input-scale
    and, where the subcommand has them, --resize, --max-pixels, --postprocess,
    --variants, --python-layers); ``overrides`` win. Options that do not go
    together raise UsageError, phrased with the flags."""
    from ..config import SaliconConfig
    from ..errors import OptionError
    from ..runtimes import resolve

    if isinstance(args.model, list):  # serve's repeatable --model: one configuration per model
        if len(args.model) > 1:
            raise UsageError("one --model here (salicon serve builds one configuration per --model)")
        args = with_model(args, args.model[0] if args.model else None)
    fast = args.prototxt == FAST_PROTOTXT
    # Every config field the subcommand has an option for (the option's dest is the field's name).
    options = {f.name: getattr(args, f.name) for f in dataclasses.fields(SaliconConfig) if hasattr(args, f.name)}
    options["engine"] = args.engine
    if fast and args.model is None:  # --fast alone is the registered model salicon_osie_fast
        options.update(model=FAST_MODEL, prototxt=None)
    elif fast:  # with --model FILE: that file at the fast sizes
        options["prototxt"] = prototxt_arg(args)
    options.update(overrides)
    try:
        config = SaliconConfig.from_options(**options)
        resolve(config.runtime, "fp32" if config.precision == "auto" else config.precision)
    except OptionError as exc:
        raise UsageError(exc.describe(flag)) from None
    return config


def build_salicon(args: argparse.Namespace, **overrides):
    """The ``Salicon`` the arguments describe (see :func:`salicon_config`)."""
    from ..model import Salicon

    return Salicon(config=salicon_config(args, **overrides))


def ray_problem(args: argparse.Namespace, address: str | None, dependencies_missing, single: str) -> int | None:
    """The checks before a --ray job or server: the cluster's token (set before
    Ray is imported), the optional dependencies, the engine. An exit status, or
    None when it may start."""
    import os

    from ..batch import use_token_auth

    use_token_auth(address)
    # Lines Ray relays from its own processes (the raylet's at shutdown) come without colour codes,
    # like the command's own lines; a user's RAY_COLOR_PREFIX wins.
    os.environ.setdefault("RAY_COLOR_PREFIX", "0")
    missing = dependencies_missing()
    if missing:
        error(missing)
        return 1
    if args.engine == "caffe":
        return usage_error(args, f"--ray runs the PyTorch engine; --engine caffe is for {single}")
    return None


def flag(name: str) -> str:
    """The command-line spelling of the option a Python name stands for."""
    return "--" + name.replace("_", "-")


def phrase(exc: BaseException) -> str:
    """An error's message as the command line says it: options as flags."""
    from ..errors import ImageTooLargeError, OptionError

    if isinstance(exc, ImageTooLargeError):
        return exc.describe("--max-pixels")
    if isinstance(exc, OptionError):
        return exc.describe(flag)
    return str(exc)


def model_problem(exc: Exception, args: argparse.Namespace | None = None) -> int:
    """Report a model that cannot be built: a bad file, or a post-processing this
    model cannot give (its syntax was checked with the arguments), exit status 1;
    options that do not go together, exit status 2, after the subcommand's usage
    line (as argparse reports a usage error)."""
    from ..errors import OptionError
    from ..postprocess import PostProcessError

    usage = isinstance(exc, (UsageError, OptionError))
    if usage and args is not None and getattr(args, "usage", None):
        print(args.usage, end="", file=sys.stderr)
    error(f"--postprocess: {exc}" if isinstance(exc, PostProcessError) else phrase(exc))
    return 2 if usage else 1


__all__ = ["usage_error", "phrase", "flag", "subcommand", "HelpFormatter", "build_salicon", "salicon_config",
           "model_problem", "ray_problem", "error", "plural", "add_out", "add_model", "add_engine", "add_postprocess",
           "add_max_pixels", "add_quiet", "prototxt_arg", "positive_int", "non_negative_int", "positive_float",
           "whole_number", "duration", "max_pixels", "input_scale", "device", "postprocess_spec", "DEFAULT_MAX_PIXELS",
           "INPUT_SCALES", "FAST_PROTOTXT"]
