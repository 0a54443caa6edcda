"""The shipped model scored by pysaliency (the MIT/Tübingen Saliency Benchmark's
code) and by `salicon evaluate`, on the same OSIE images, in one run.

pysaliency side: OSIE loaded as pysaliency ``FileStimuli`` and ``Fixations``
(salicon.pysaliency.load_osie), the maps of ``SaliconSaliencyMapModel`` for
AUC-Judd, NSS and CC (against pysaliency's ``FixationMap`` blurred as OSIE's
maps are), the log-density of ``SaliconModel`` for the information gain over
salicon evaluate's centre-bias baseline; every metric averaged per image, as
salicon evaluate averages. salicon side: ``salicon.evaluate.evaluate`` with
the model's default post-processing. Both use the shipped model at fp32 (the
exact path; ``--precision`` to change).

    python benchmarks/pysaliency_agreement.py --data ../shared/data/osie \
        --json benchmarks/results/osie_test_pysaliency.json
"""
from __future__ import annotations

import argparse
import math
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from machine import cpu_features, write_report  # noqa: E402

#: salicon evaluate's metric -> its pysaliency counterpart's name in the report.
PAIRS = {"AUC_Judd": "AUC_Judd", "NSS": "NSS", "CC": "CC", "IG": "information_gain"}
TOLERANCE = 0.005


def pysaliency_scores(salicon, data: Path, names: list[str]) -> dict[str, float]:
    """AUC-Judd, NSS, CC and information gain computed by pysaliency."""
    from salicon.pysaliency import (CenterBiasModel, SaliconModel, SaliconSaliencyMapModel, fixation_map_model,
                                    load_osie)

    stimuli, fixations = load_osie(data, names=names)
    maps, density = SaliconSaliencyMapModel(salicon=salicon), SaliconModel(salicon=salicon)
    return {
        "AUC_Judd": float(maps.AUC_Judd(stimuli, fixations)),
        "AUC_uniform": float(maps.AUC(stimuli, fixations, nonfixations="uniform", average="image")),
        "NSS": float(maps.NSS(stimuli, fixations, average="image")),
        "CC": float(maps.CC(stimuli, fixation_map_model(stimuli, fixations))),
        "information_gain": float(density.information_gain(stimuli, fixations, baseline_model=CenterBiasModel(),
                                                           average="image")),
        "log_likelihood_bits": float(density.log_likelihood(stimuli, fixations, average="image") / math.log(2)),
    }


def salicon_scores(salicon, data: Path, names: list[str]) -> dict[str, float]:
    from salicon.data import open_dataset
    from salicon.evaluate import evaluate

    dataset = open_dataset(f"osie:{data}")
    result = evaluate(dataset, lambda s: salicon.compute_saliency(s.image_path), names=names,
                      metrics=list(PAIRS), baselines=False)
    return {m: v["mean"] for m, v in result.summary()["salicon"].items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="OSIE folder")
    parser.add_argument("--split", type=Path, default=ROOT / "splits" / "osie_test.txt")
    parser.add_argument("--limit", type=int, help="only the first N images (a quick check)")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from importlib.metadata import version

    import torch

    from salicon import Salicon
    from salicon.evaluate import read_split

    names = read_split(args.split)[: args.limit]
    salicon = Salicon(precision=args.precision)
    start = time.perf_counter()
    ours = salicon_scores(salicon, args.data, names)
    theirs = pysaliency_scores(salicon, args.data, names)
    seconds = time.perf_counter() - start
    differences = {m: abs(ours[m] - theirs[p]) for m, p in PAIRS.items()}
    print(f"{'metric':10s} {'salicon evaluate':>17s} {'pysaliency':>11s} {'|diff|':>8s}")
    for m, p in PAIRS.items():
        print(f"{m:10s} {ours[m]:17.4f} {theirs[p]:11.4f} {differences[m]:8.4f}")
    agree = all(d <= TOLERANCE for d in differences.values())
    print(f"agree within {TOLERANCE}: {agree} ({len(names)} images, {seconds:.0f} s)")
    write_report(args.json, {
        "command": "python benchmarks/pysaliency_agreement.py --data path/to/osie"
                   + (f" --limit {args.limit}" if args.limit else "") + " --json ...",
        "what": "the shipped model (default post-processing, precision " + args.precision + ") on "
                f"{len(names)} OSIE test images: salicon evaluate vs pysaliency " + version("pysaliency")
                + " (AUC_Judd, NSS, information gain over salicon's centre bias: per-image means; CC against "
                  "pysaliency's FixationMap, Gaussian sigma 24 px, zero padding)",
        "machine": {"cpu": cpu_features()["model"], "cores": torch.get_num_threads(),
                    "torch": torch.__version__, "python": platform.python_version()},
        "images": len(names), "wall_time_s": round(seconds, 1),
        "salicon_evaluate": ours, "pysaliency": theirs, "abs_difference": differences,
        "tolerance": TOLERANCE, "agree": agree,
    })
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
