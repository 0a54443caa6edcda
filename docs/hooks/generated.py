"""MkDocs hook: the pages whose content comes from the code, built with the site.

- ``<!-- generated: cli -->``: every subcommand and option, from the argparse parsers;
- ``<!-- generated: http -->``: every route, parameter and answer, from the OpenAPI schema;
- ``<!-- generated: record NAME -->``: a model's record (the JSON beside its weights);
- ``images/bench/*.png``: the benchmark plots, drawn by ``benchmarks/plot_docs.py``
  from ``benchmarks/results/*.json`` into a temporary folder.
"""
from __future__ import annotations

import json
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MARKER = re.compile(r"<!-- generated: (\w+)(?: ([\w.]+))? -->")
_plots = tempfile.TemporaryDirectory(prefix="salicon-doc-plots-")


def on_files(files, config):
    from mkdocs.structure.files import File

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from plot_docs import draw_all

    out = Path(_plots.name) / "images" / "bench"
    for path in draw_all(ROOT / "benchmarks" / "results", out):
        rel = path.relative_to(_plots.name).as_posix()
        files.append(File(rel, _plots.name, config["site_dir"], config["use_directory_urls"]))
    return files


def on_page_markdown(markdown, page, config, files):
    return MARKER.sub(lambda m: _generate(m.group(1), m.group(2)), markdown)


def _generate(kind: str, arg: str | None) -> str:
    if kind == "cli":
        from salicon.cli.reference import markdown

        return markdown()
    if kind == "http":
        return http_markdown()
    if kind == "record":
        return record_markdown(arg)
    raise ValueError(f"unknown generated block {kind!r}")


def http_markdown() -> str:
    """Each route of the OpenAPI schema: method, path, summary, parameters, answers."""
    from salicon.webapp import openapi_schema

    schema = openapi_schema()
    lines = []
    for path, methods in schema["paths"].items():
        for method, op in methods.items():
            lines += [f"### `{method.upper()} {path}`", "", op.get("summary", "").strip() + ".", ""]
            params = op.get("parameters", [])
            body = op.get("requestBody", {}).get("content", {})
            if params or body:
                lines += ["| parameter | in | type | meaning |", "| --- | --- | --- | --- |"]
                for p in params:
                    kind = _type(p.get("schema", {}))
                    default = p.get("schema", {}).get("default")
                    note = p.get("description", "") + (f" (default: `{default}`)" if default not in (None, "") else "")
                    lines.append(f"| `{p['name']}` | {p['in']} | {kind} | {_cell(note)} |")
                for media in body:
                    lines.append(f"| `file` | body ({media}) | file | the upload, as the multipart form field `file` |")
                lines.append("")
            responses = op.get("responses", {}).items()
            answers = ", ".join(f"`{code}` {_cell(r.get('description', ''))}" for code, r in responses)
            lines += [f"Answers: {answers}.", ""]
    return "\n".join(lines)


def _type(schema: dict) -> str:
    if "anyOf" in schema:
        return " or ".join(_type(s) for s in schema["anyOf"] if s.get("type") != "null")
    return schema.get("type", "any")


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def record_markdown(name: str | None) -> str:
    """A model's record as a table: one row per field (nested fields dotted)."""
    from salicon.pretrained import model_records

    record = model_records()[name]
    rows = []

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict) and value and len(json.dumps(value)) > 160:
            for key, sub in value.items():
                walk(f"{prefix}.{key}" if prefix else key, sub)
        else:
            text = value if isinstance(value, str) else json.dumps(value)
            rows.append(f"| `{prefix}` | {_cell(text)} |")
    walk("", record.meta)
    where = f"the distribution `{record.distribution}`" if record.distribution else "this package"
    return "\n".join([f"The record of `{name}`, from {where} (`salicon models --json` prints it):", "",
                      "| field | value |", "| --- | --- |", *rows, ""])
