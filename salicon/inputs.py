"""What a user names as input, turned into images with unique output stems.

``salicon predict`` (single-process and ``--ray``), ``evaluate
--saliency-maps`` and ``serve`` all read their inputs through this module:

- an image file; a folder (its image files, sorted; sub-folders with
  ``recursive``); a glob (``photos/*/*.jpg``, ``**`` for any depth);
- a list file: ``.txt`` / ``.lst`` (a path per line, ``#`` comments),
  ``.csv`` (column ``path``, else the first), ``.parquet`` (column ``path``,
  else the first text column); relative entries are read from the list's folder;
- a URI that pyarrow's file systems understand (``s3://``, ``gs://``,
  ``file://``), for a file, a folder, a glob or a list.

Each image gets an output *stem*: its path below the folder (or the common
folder of a list or glob) without suffix, so outputs mirror the input tree;
two inputs that would share a stem keep their suffix (``a.jpg``, ``a.png``).
"""
from __future__ import annotations

import csv
import fnmatch
import glob
import io
import os
import posixpath
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .errors import SaliconError
from .image import IMAGE_SUFFIXES, is_video_name
from .types import PathLike

#: Files read as lists of images (one path or URI per line / row).
LIST_SUFFIXES = frozenset({".txt", ".lst", ".csv", ".parquet"})


class InputError(SaliconError):
    """An input that names no image: missing, empty, unreadable or of the wrong kind."""


@dataclass(frozen=True)
class Item:
    """One image to process: where it is read and where its outputs go."""
    source: str   # a local path or a URI
    stem: str     # output path relative to OUT, without suffix (posix separators)


def is_uri(text: str) -> bool:
    """Whether ``text`` is a URI (``scheme://...``) rather than a local path."""
    return "://" in text


def is_image_name(name: str) -> bool:
    """Whether a file name has one of the image suffixes the package decodes."""
    return PurePosixPath(name).suffix.lower() in IMAGE_SUFFIXES


def image_files(folder: PathLike, recursive: bool = False,
                suffixes: Collection[str] = IMAGE_SUFFIXES) -> list[Path]:
    """The files directly in ``folder`` (or below it) whose suffix is in ``suffixes``, sorted."""
    pattern = "**/*" if recursive else "*"
    return [f for f in sorted(Path(folder).glob(pattern)) if f.is_file() and f.suffix.lower() in suffixes]


def split_uri(uri: str):
    """(pyarrow file system, path inside it) of a URI; one file system per bucket or host."""
    from pyarrow import fs

    scheme, rest = uri.split("://", 1)
    if scheme == "file":
        return fs.LocalFileSystem(), "/" + rest.lstrip("/")
    try:
        filesystem, path = fs.FileSystem.from_uri(uri)
    except (ValueError, OSError) as exc:
        raise InputError(f"{uri}: cannot open this URI ({exc})") from None
    return filesystem, path


def read_bytes(source: str) -> bytes:
    """The bytes of a local file or of a URI's object."""
    if not is_uri(source):
        with open(source, "rb") as fh:
            return fh.read()
    filesystem, path = split_uri(source)
    with filesystem.open_input_file(path) as fh:
        return fh.read()


def list_inputs(inputs: Sequence[str], recursive: bool = False,
                suffixes: Collection[str] = IMAGE_SUFFIXES) -> tuple[list[Item], list[str]]:
    """The images named by ``inputs`` (files, folders, globs, list files, URIs)
    with unique output stems, and one problem message per input that names none.
    Folders and globs take the files whose suffix is in ``suffixes`` (``salicon
    predict`` adds the video suffixes)."""
    found: list[tuple[str, str]] = []
    problems: list[str] = []
    for arg in inputs:
        before = len(found)
        try:
            found.extend(_expand(arg, recursive, frozenset(suffixes)))
        except InputError as exc:
            problems.append(str(exc))
            continue
        except OSError as exc:
            problems.append(f"{arg}: {exc}")
            continue
        if len(found) == before:
            problems.append(f"{arg}: no images found")
    stems = unique_stems([(src.split("://")[-1], stem) for src, stem in found])
    return [Item(src, stem) for (src, _), stem in zip(found, stems)], problems


def unique_stems(items: Sequence[tuple[str, str]]) -> list[str]:
    """Output stems without collisions, for (source, stem) pairs: 'a.jpg' and
    'a.png' become 'a.jpg' / 'a.png'; any remaining repeat gets '_2', '_3', ..."""
    counts: dict[str, int] = {}
    for _, stem in items:
        counts[stem] = counts.get(stem, 0) + 1
    out, taken = [], set()
    for source, stem in items:
        name = stem if counts[stem] == 1 else stem + PurePosixPath(source).suffix
        base, k = name, 1
        while name in taken:
            k += 1
            name = f"{base}_{k}"
        taken.add(name)
        out.append(name)
    return out


def _has_suffix(name: str, suffixes: Collection[str]) -> bool:
    return PurePosixPath(name).suffix.lower() in suffixes


def _expand(arg: str, recursive: bool, suffixes: Collection[str]) -> list[tuple[str, str]]:
    if is_uri(arg):
        return _expand_uri(arg, recursive, suffixes)
    if any(c in arg for c in "*?["):
        matches = sorted(glob.glob(arg, recursive=True))
        return _with_common_stems([m for m in matches if os.path.isfile(m) and _has_suffix(m, suffixes)])
    path = Path(arg)
    if path.is_dir():
        return [(str(f), f.relative_to(path).with_suffix("").as_posix())
                for f in image_files(path, recursive, suffixes)]
    if not path.exists():
        raise InputError(f"{arg}: no such file or folder")
    return _file_entry(arg)


def _expand_uri(arg: str, recursive: bool, suffixes: Collection[str]) -> list[tuple[str, str]]:
    from pyarrow import fs

    filesystem, path = split_uri(arg)
    if any(c in path for c in "*?["):
        folder, pattern = path.rsplit("/", 1) if "/" in path else ("", path)
        return _list_uri_folder(_join_uri(arg, folder), recursive or "**" in pattern, suffixes, pattern)
    info = filesystem.get_file_info(path)
    if info.type == fs.FileType.Directory:
        return [(u, str(PurePosixPath(rel).with_suffix(""))) for u, rel in _list_uri_folder(arg, recursive, suffixes)]
    if info.type == fs.FileType.NotFound:
        raise InputError(f"{arg}: no such file or folder")
    return _file_entry(arg)


def _join_uri(base_uri: str, path: str) -> str:
    scheme = base_uri.split("://", 1)[0]
    return f"{scheme}://{path}" if scheme != "file" else f"file://{path}"


def _list_uri_folder(uri: str, recursive: bool, suffixes: Collection[str] = IMAGE_SUFFIXES,
                     pattern: str | None = None) -> list[tuple[str, str]]:
    """(URI, path relative to the folder) of the images below a folder URI."""
    from pyarrow import fs

    filesystem, root = split_uri(uri)
    root = root.rstrip("/")
    infos = filesystem.get_file_info(fs.FileSelector(root, recursive=recursive, allow_not_found=True))
    found = []
    for info in sorted(infos, key=lambda i: i.path):
        rel = posixpath.relpath(info.path, root)
        wanted = _has_suffix(rel, suffixes) and (not pattern or fnmatch.fnmatch(rel, pattern))
        if info.type == fs.FileType.File and wanted:
            found.append((_join_uri(uri, info.path), rel))
    return found


def _file_entry(arg: str) -> list[tuple[str, str]]:
    """A list file's entries, or the file itself as one image."""
    if PurePosixPath(arg.split("://")[-1]).suffix.lower() not in LIST_SUFFIXES:
        return [(arg, PurePosixPath(arg.split("://")[-1]).with_suffix("").name)]
    base = arg.rsplit("/", 1)[0] if is_uri(arg) else str(Path(arg).parent)
    entries = []
    for entry in read_list(arg):
        if is_uri(entry) or os.path.isabs(entry):
            entries.append(entry)
        else:  # relative entries are read from the list file's folder
            entries.append(f"{base}/{entry}" if is_uri(arg) else os.path.join(base, entry))
    return _with_common_stems(entries)


def read_list(source: str) -> list[str]:
    """Entries of a list file: .txt/.lst (a path per line), .csv (column 'path' or
    the first), .parquet (column 'path' or the first string column)."""
    suffix = PurePosixPath(source.split("://")[-1]).suffix.lower()
    data = read_bytes(source)
    if suffix == ".parquet":
        return _read_parquet_list(source, data)
    text = data.decode("utf-8-sig")
    if suffix == ".csv":
        rows = list(csv.reader(io.StringIO(text)))
        if not rows:
            return []
        column = rows[0].index("path") if "path" in rows[0] else 0
        first = rows[0][column]
        body = rows[1:] if ("path" in rows[0] or not (is_image_name(first) or is_video_name(first))) else rows
        return [r[column].strip() for r in body if len(r) > column and r[column].strip()]
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def _read_parquet_list(source: str, data: bytes) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(io.BytesIO(data))
    names = [n for n in table.column_names if n == "path"] or \
        [n for n, t in zip(table.column_names, table.schema.types) if pa.types.is_string(t)
         or pa.types.is_large_string(t)]
    if not names:
        raise InputError(f"{source}: no 'path' column and no text column to read image paths from")
    return [str(v) for v in table.column(names[0]).to_pylist() if v]


def _with_common_stems(entries: list[str]) -> list[tuple[str, str]]:
    """Stems below the entries' common folder, so a list mirrors its tree too."""
    if not entries:
        return []
    keys = [e.split("://", 1)[-1] if is_uri(e) else os.path.abspath(e) for e in entries]
    parents = [posixpath.dirname(k.replace(os.sep, "/")) for k in keys]
    common = posixpath.commonpath(parents) if len(set(k.startswith("/") for k in keys)) == 1 else ""
    out = []
    for entry, key in zip(entries, keys):
        rel = posixpath.relpath(key.replace(os.sep, "/"), common) if common else posixpath.basename(key)
        out.append((entry, str(PurePosixPath(rel).with_suffix(""))))
    return out


__all__ = ["Item", "InputError", "LIST_SUFFIXES", "is_uri", "is_image_name", "image_files", "split_uri",
           "read_bytes", "read_list", "list_inputs", "unique_stems"]
