#!/usr/bin/env python
"""CPU benchmark of the full-size SALICON net (1200x1600 + 600x800).

Measures, each in a fresh process so peak memory is the process's own:
  forward     the net's forward pass alone (preprocessing excluded), fp32,
              NCHW and channels_last memory layouts, median of --repeat runs
              after one warm-up;
  compute_saliency
              Salicon.compute_saliency end to end on an 800x600 JPEG (decode,
              published preprocessing, forward, resize back), first call and
              median of the next ones, and the peak resident set size.

Weights: both streams from the real VGG-16 conv layers when
../shared/weights/vgg16_conv.caffemodel exists (else random), so activations
have realistic magnitudes. Prints a table and, with --json, writes the results.

    python benchmarks/bench_cpu.py --json benchmarks/results/cpu.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VGG16 = ROOT.parent / "shared" / "weights" / "vgg16_conv.caffemodel"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def make_inputs(workdir: Path) -> tuple[Path, Path, str]:
    """An 800x600 JPEG and a model file for the shipped test prototxt."""
    import numpy as np
    from PIL import Image
    from skimage import data

    image = workdir / "photo.jpg"
    Image.fromarray(data.chelsea()).resize((800, 600), Image.BICUBIC).save(image, quality=95)
    model = workdir / "model.caffemodel"
    if VGG16.exists():
        from salicon.weights import init_from_vgg16
        net, _ = init_from_vgg16(VGG16, seed=0)
        source = "VGG-16 conv weights (both streams), saliency_map seeded"
    else:
        import torch
        from salicon.engine import Net
        from salicon.model import prototxt_path
        net = Net(prototxt_path("finetune_salicon.prototxt"), phase="train", seed=0)
        with torch.no_grad():
            for p in net.parameters():
                p.copy_(torch.randn(p.shape) * np.sqrt(2.0 / max(1, p[0].numel())))
        source = "random weights (../shared absent)"
    net.save(model)
    return image, model, source


def child_forward(model: str, layout: str, repeat: int) -> dict:
    import numpy as np
    import torch
    from salicon.engine import Net
    from salicon.model import prototxt_path

    net = Net(prototxt_path(), weights=model).eval().requires_grad_(False)
    if layout == "channels_last":
        net.to(memory_format=torch.channels_last)
        net.memory_format = torch.channels_last
    rng = np.random.default_rng(0)
    fine = torch.from_numpy(rng.uniform(-0.5, 0.5, (1, 3, 1200, 1600)).astype(np.float32))
    coarse = torch.from_numpy(rng.uniform(-0.5, 0.5, (1, 3, 600, 800)).astype(np.float32))
    times = []
    with torch.inference_mode():
        for _ in range(repeat + 1):
            t = time.perf_counter()
            net(fine_scale=fine, coarse_scale=coarse)
            times.append(time.perf_counter() - t)
    return {"warmup_s": times[0], "median_s": float(np.median(times[1:])), "peak_rss_mb": peak_rss_mb()}


def child_saliency(model: str, image: str, repeat: int) -> dict:
    import numpy as np
    from salicon import Salicon

    t = time.perf_counter()
    sal = Salicon(model, device="cpu")
    load_s = time.perf_counter() - t
    times = []
    for _ in range(repeat + 1):
        t = time.perf_counter()
        out = sal.compute_saliency(image)
        times.append(time.perf_counter() - t)
    assert out.shape == (600, 800)
    return {"load_s": load_s, "first_s": times[0], "median_s": float(np.median(times[1:])),
            "peak_rss_mb": peak_rss_mb()}


def run_child(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True,
                         cwd=ROOT, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"benchmark child {args} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def machine() -> dict:
    import torch
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="timed runs after the warm-up")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        result = child_forward(rest[0], rest[1], args.repeat) if kind == "forward" else \
            child_saliency(rest[0], rest[1], args.repeat)
        print(json.dumps(result))
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        image, model, source = make_inputs(Path(tmp))
        results = {"machine": machine(), "weights": source, "repeat": args.repeat}
        for layout in ("nchw", "channels_last"):
            results[f"forward_{layout}"] = run_child("forward", str(model), layout, "--repeat", str(args.repeat))
        results["compute_saliency"] = run_child("saliency", str(model), str(image), "--repeat", str(args.repeat))

    m = results["machine"]
    print(f"machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['torch_threads']} threads)")
    print(f"weights: {source}")
    print(f"{'measurement':38s} {'time (s)':>10s} {'peak RSS (GB)':>14s}")
    for layout in ("nchw", "channels_last"):
        r = results[f"forward_{layout}"]
        print(f"{'forward fp32, ' + layout + ' (median)':38s} {r['median_s']:10.2f} {r['peak_rss_mb'] / 1024:14.2f}")
    r = results["compute_saliency"]
    print(f"{'compute_saliency 800x600 (first call)':38s} {r['first_s']:10.2f}")
    print(f"{'compute_saliency 800x600 (median)':38s} {r['median_s']:10.2f} {r['peak_rss_mb'] / 1024:14.2f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
