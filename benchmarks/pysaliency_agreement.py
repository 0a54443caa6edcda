"""The shipped model scored by pysaliency (the MIT/Tübingen Saliency Benchmark's
code) and by `salicon evaluate`, on the same OSIE images, in one run.

pysaliency side: OSIE loaded as pysaliency ``FileStimuli`` and ``Fixations``
(salicon.pysaliency.load_osie), the maps of ``SaliconSaliencyMapModel`` for
AUC-Judd, NSS and CC (against pysaliency's ``FixationMap`` blurred as OSIE's
maps are), the log-density of ``SaliconModel`` for the information gain over
salicon evaluate's centre-bias baseline; every metric averaged per image, as
salicon evaluate averages. salicon side: ``salicon.evaluate.evaluate`` with
the model's default post-processing. Both use the shipped model at fp32 (the
exact path; ``--precision`` to change); each image's map is computed once
and scored by both (the comparison is of the scoring, not of two forward
passes).

pysaliency is run on two sets of fixations: every fixation (pysaliency's own
convention: two observers fixating one pixel count twice) and one fixation
per fixated pixel (the MIT benchmark's binary fixation map, which salicon
evaluate scores); the agreement is judged on the second, like with like.

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


class MapCache:
    """``compute_saliency`` once per image content: both scorers see the same maps."""

    def __init__(self, salicon):
        self.salicon, self.maps = salicon, {}
        self.device, self.model_path, self.post = salicon.device, salicon.model_path, salicon.post

    def compute_saliency(self, image):
        import hashlib

        from salicon.image import load_image

        pixels = load_image(image, as_float=False)
        key = hashlib.sha1(pixels.tobytes() + str(pixels.shape).encode()).hexdigest()
        if key not in self.maps:
            self.maps[key] = self.salicon.compute_saliency(pixels)
        return self.maps[key]


def pysaliency_scores(salicon, data: Path, names: list[str], unique_pixels: bool) -> dict[str, float]:
    """AUC-Judd, NSS, CC and information gain computed by pysaliency."""
    from salicon.pysaliency import CenterBiasModel, SaliconModel, SaliconSaliencyMapModel, fixation_map_model, load_osie

    stimuli, fixations = load_osie(data, names=names, unique_pixels=unique_pixels)
    maps, density = SaliconSaliencyMapModel(salicon=salicon), SaliconModel(salicon=salicon)
    return {
        "AUC_Judd": float(maps.AUC_Judd(stimuli, fixations)),
        "AUC_uniform": float(maps.AUC(stimuli, fixations, nonfixations="uniform", average="image")),
        "NSS": float(maps.NSS(stimuli, fixations, average="image")),
        "CC": float(maps.CC(stimuli, fixation_map_model(stimuli, fixations))),
        "information_gain": float(density.information_gain(stimuli, fixations, baseline_model=CenterBiasModel(),
                                                           average="image")),
        "log_likelihood_bits": float(density.log_likelihood(stimuli, fixations, average="image") / math.log(2)),
        "fixations": int(len(fixations.x)),
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
    salicon = MapCache(Salicon(precision=args.precision))
    start = time.perf_counter()
    ours = salicon_scores(salicon, args.data, names)
    same = pysaliency_scores(salicon, args.data, names, unique_pixels=True)
    every = pysaliency_scores(salicon, args.data, names, unique_pixels=False)
    seconds = time.perf_counter() - start
    differences = {m: abs(ours[m] - same[p]) for m, p in PAIRS.items()}
    print(f"{'metric':10s} {'salicon evaluate':>17s} {'pysaliency':>11s} {'|diff|':>8s} {'every fixation':>15s}")
    for m, p in PAIRS.items():
        print(f"{m:10s} {ours[m]:17.4f} {same[p]:11.4f} {differences[m]:8.4f} {every[p]:15.4f}")
    agree = all(d <= TOLERANCE for d in differences.values())
    print(f"agree within {TOLERANCE}: {agree} ({len(names)} images, {seconds:.0f} s)")
    write_report(args.json, {
        "command": "python benchmarks/pysaliency_agreement.py --data path/to/osie"
                   + (f" --limit {args.limit}" if args.limit else "") + " --json ...",
        "what": "the shipped model (default post-processing, precision " + args.precision + ") on "
                f"{len(names)} OSIE test images, each map computed once: salicon evaluate vs pysaliency "
                + version("pysaliency") + " (AUC_Judd, NSS, information gain over salicon's centre bias: "
                "per-image means; CC against pysaliency's FixationMap, Gaussian sigma 24 px, zero padding). "
                "pysaliency_unique_pixels: one fixation per fixated pixel, the ground truth salicon evaluate "
                "scores (MIT's binary fixation map); pysaliency_every_fixation: pysaliency's own convention",
        "machine": {"cpu": cpu_features()["model"], "cores": torch.get_num_threads(),
                    "torch": torch.__version__, "python": platform.python_version()},
        "images": len(names), "wall_time_s": round(seconds, 1),
        "salicon_evaluate": ours, "pysaliency_unique_pixels": same, "pysaliency_every_fixation": every,
        "abs_difference": differences, "tolerance": TOLERANCE, "agree": agree,
    })
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
