"""``python -m salicon.pycaffe script.py [args]``: run a pycaffe script unmodified
on the PyTorch engine (its ``import caffe`` gets :mod:`salicon.pycaffe`)."""
from __future__ import annotations

import importlib.abc
import importlib.util
import runpy
import sys
from pathlib import Path

USAGE = "usage: python -m salicon.pycaffe SCRIPT.py [ARGS...]"


class _Refused(importlib.abc.Loader):
    """Loads nothing: importing the module raises ImportError naming it."""

    def create_module(self, spec):
        raise ImportError(f"not supported by salicon.pycaffe: {spec.name}", name=spec.name)

    def exec_module(self, module) -> None:  # never reached
        raise ImportError(f"not supported by salicon.pycaffe: {module.__name__}")


class _CaffeSubmodules(importlib.abc.MetaPathFinder):
    """``caffe.<sub>`` imports: ``caffe.proto`` is the project's own Caffe protobuf
    module (``from caffe.proto import caffe_pb2`` works); any other submodule
    (``from caffe import layers``, ``caffe.io``) is refused by name, as attribute
    access is, instead of Python's bare "cannot import name"."""

    #: This package's own modules (``from caffe import x`` asks for ``salicon.pycaffe.x``).
    OWN = {"net", "solvers", "__main__"}

    def find_spec(self, fullname, path, target=None):
        if getattr(sys.modules.get("caffe"), "__name__", "") != "salicon.pycaffe":
            return None
        for prefix in ("caffe.", "salicon.pycaffe."):
            if fullname.startswith(prefix) and fullname[len(prefix):] not in self.OWN:
                name = "caffe." + fullname[len(prefix):]
                return importlib.util.spec_from_loader(name, _Refused())
        return None


def install_caffe_alias() -> None:
    """``import caffe`` (and ``caffe.proto``) answered by this package from now on."""
    from .. import proto, pycaffe
    from ..proto import caffe_pb2

    sys.modules["caffe"] = pycaffe
    sys.modules["caffe.proto"] = proto
    sys.modules["caffe.proto.caffe_pb2"] = caffe_pb2
    if not any(isinstance(f, _CaffeSubmodules) for f in sys.meta_path):
        sys.meta_path.insert(0, _CaffeSubmodules())


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE + "\n\nRuns a pycaffe script with `import caffe` answered by salicon.pycaffe "
              "(the PyTorch engine): no Caffe build needed.", file=sys.stderr if not argv else sys.stdout)
        return 0 if argv else 2
    script = Path(argv[0])
    if not script.is_file():
        print(f"salicon.pycaffe: error: {script}: no such script", file=sys.stderr)
        return 2
    install_caffe_alias()
    sys.argv = [str(script), *argv[1:]]
    sys.path.insert(0, str(script.resolve().parent))  # as `python script.py` would
    runpy.run_path(str(script), run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main())
