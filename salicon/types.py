"""Types shared by the package's modules."""
from __future__ import annotations

import os
from typing import Union

#: A file-system path as users give it: a string or any ``os.PathLike``.
PathLike = Union[str, os.PathLike]

__all__ = ["PathLike"]
