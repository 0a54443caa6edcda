"""The ``salicon`` command: one entry point, a module per subcommand.

    salicon predict photos/ -o maps/ --overlay
    salicon evaluate --dataset osie:OSIE --split splits/osie_test.txt
    salicon train --data osie:OSIE -o run/ --weights untrained.caffemodel
    salicon serve --port 7860
    salicon init-weights --vgg16 VGG_ILSVRC_16_layers.caffemodel -o untrained.caffemodel

Each subcommand module (``predict``, ``evaluate``, ``train``, ``serve``,
``export``) builds its own arguments and runs them; ``options`` holds what
they share.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .._version import __version__
from . import evaluate, export, models, predict, serve, train
from .options import HelpFormatter, error


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="salicon",
        description="SALICON saliency maps (OpenSALICON) from Caffe prototxt/.caffemodel files, run on PyTorch.",
        formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    predict.add_parser(sub)
    train.add_parser(sub)
    evaluate.add_parser(sub)
    serve.add_parser(sub)
    export.add_parsers(sub)
    models.add_parser(sub)
    return parser


def _join_negative_values(argv: Sequence[str]) -> list[str]:
    """'--time-limit -5m' -> '--time-limit=-5m': argparse would take '-5m' for an
    option and say 'expected one argument'; joined, the value's own check speaks.
    '--ray photos/' -> '--ray=local photos/': only a cluster address is --ray's value."""
    out: list[str] = []
    for arg in argv:
        if (out and out[-1].startswith("--") and "=" not in out[-1] and len(arg) > 1 and arg[0] == "-"
                and (arg[1].isdigit() or arg[1] == ".")):
            out[-1] = f"{out[-1]}={arg}"
        elif not predict.join_ray_address(out, arg):
            out.append(arg)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(_join_negative_values(sys.argv[1:] if argv is None else argv))
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    # The subcommand's usage line, printed before a usage error found after parsing (options that do not go together).
    args.usage = parser._subparsers._group_actions[0].choices[args.command].format_usage()  # type: ignore[union-attr,index]
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(file=sys.stderr)  # the progress bar's line is left open: the message gets a line of its own
        error("interrupted")
        return 130
    except BrokenPipeError:  # the reader went away (salicon models | head): stop quietly, as Unix tools do
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return 141


__all__ = ["main", "build_parser"]
