#!/usr/bin/env python
"""Fine-tune SALICON, as OpenSALICON's finetune_salicon.py: the same as
`salicon train` (see `python scripts/finetune_salicon.py --help`)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from salicon.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
