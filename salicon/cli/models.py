"""``salicon models``: the registered models.

List the models ``--model NAME`` accepts: each one's input sizes, the precisions
it runs in (int8 where a quantized file is recorded for its net and a runtime
for int8 is installed), its headline test scores and where it comes from
(this package, or a model distribution such as salicon-model-osie-fast,
found through the entry point group salicon.models), from its record
(<name>.json)."""
from __future__ import annotations

import argparse
import json

from .options import subcommand


def add_parser(sub) -> None:
    p = subcommand(sub, "models", "list the registered models (what --model NAME accepts)", __doc__)
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    p.set_defaults(func=cmd_models)


def model_rows() -> list[dict]:
    """One row per registered model: name, inputs, precisions, scores, description."""
    from .. import pretrained, runtimes

    rows = []
    for name, record in pretrained.model_records().items():
        prototxt = pretrained.record_prototxt(record)
        inputs = (record.meta.get("architecture") or {}).get("inputs", {})
        int8 = (record.meta.get("int8") or {}) if record.weights_file else {}
        has_int8 = bool(int8.get("prototxt_sha256")) and pretrained.file_sha256(prototxt) == int8["prototxt_sha256"]
        precisions = [p for p in runtimes.precisions() if p != "int8" or has_int8]
        rows.append({"name": name, "inputs": inputs, "precisions": precisions, "prototxt": prototxt.name,
                     "weights": record.weights_file, "scores": record.scores(),
                     "distribution": record.distribution or "salicon", "folder": str(record.folder),
                     "description": record.meta.get("description", "")})
    return rows


def cmd_models(args: argparse.Namespace) -> int:
    rows = model_rows()
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    for row in rows:
        sizes = " / ".join("x".join(str(d) for d in shape[2:]) for shape in row["inputs"].values())
        scores = ", ".join(f"{k} {row['scores'][k]:.3f}" for k in ("NSS", "CC", "AUC_Judd") if k in row["scores"])
        print(f"{row['name']}: inputs {sizes}; precisions {', '.join(row['precisions'])}; "
              f"OSIE test {scores or 'not scored'}; from {row['distribution']}")
        print(f"    {row['description']}")
    return 0
