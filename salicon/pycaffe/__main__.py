"""``python -m salicon.pycaffe script.py [args]``: run a pycaffe script unmodified
on the PyTorch engine (its ``import caffe`` gets :mod:`salicon.pycaffe`)."""
from __future__ import annotations

import runpy
import sys
from pathlib import Path

USAGE = "usage: python -m salicon.pycaffe SCRIPT.py [ARGS...]"


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
    from .. import pycaffe

    sys.modules["caffe"] = pycaffe
    sys.argv = [str(script), *argv[1:]]
    sys.path.insert(0, str(script.resolve().parent))  # as `python script.py` would
    runpy.run_path(str(script), run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main())
