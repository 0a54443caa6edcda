#!/usr/bin/env python
"""CPU benchmark of the full-size SALICON net (1200x1600 + 600x800), on the
PyTorch engine and, with --caffe, on real Caffe in the same run.

Measures, each in a fresh process so peak memory is the process's own:
  forward     the net's forward pass alone (preprocessing excluded), fp32:
              PyTorch with NCHW and channels_last layouts, and Caffe;
              median of --repeat runs after one warm-up (Caffe: --caffe-repeat);
  compute_saliency
              end to end on an 800x600 JPEG (decode, preprocessing, forward,
              resize back): Salicon on PyTorch with its defaults, and (--caffe)
              the published OpenSALICON pipeline on Caffe: scipy.ndimage.zoom
              resizes (resize="scipy") and pycaffe; first call, median of the
              next ones, and the peak resident set size.

Weights: both streams from the real VGG-16 conv layers when
../shared/weights/vgg16_conv.caffemodel exists (else random), so activations
have realistic magnitudes. Prints a table and, with --json, writes the results.

    python benchmarks/bench_cpu.py --caffe --json benchmarks/results/cpu_2core.json
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
    import contextlib

    import numpy as np

    rng = np.random.default_rng(0)
    fine = rng.uniform(-0.5, 0.5, (1, 3, 1200, 1600)).astype(np.float32)
    coarse = rng.uniform(-0.5, 0.5, (1, 3, 600, 800)).astype(np.float32)
    if layout == "caffe":
        os.environ.setdefault("GLOG_minloglevel", "2")
        sys.path.insert(0, str(ROOT / "layers"))
        import caffe
        caffe.set_mode_cpu()
        cnet = caffe.Net(str(ROOT / "prototxt" / "salicon.prototxt"), caffe.TEST, weights=model)
        context = contextlib.nullcontext()

        def run():
            cnet.blobs["fine_scale"].data[...] = fine
            cnet.blobs["coarse_scale"].data[...] = coarse
            cnet.forward()
    else:
        import torch
        from salicon.engine import Net
        from salicon.model import prototxt_path
        context = torch.inference_mode()
        net = Net(prototxt_path(), weights=model).eval().requires_grad_(False)
        if layout == "channels_last":
            net.to(memory_format=torch.channels_last)
            net.memory_format = torch.channels_last
        fine, coarse = torch.from_numpy(fine), torch.from_numpy(coarse)
        run = lambda: net(fine_scale=fine, coarse_scale=coarse)  # noqa: E731
    times = []
    with context:
        for _ in range(repeat + 1):
            t = time.perf_counter()
            run()
            times.append(time.perf_counter() - t)
    return {"warmup_s": times[0], "median_s": float(np.median(times[1:])), "peak_rss_mb": peak_rss_mb()}


def published_pipeline(caffe_net, image_path: str):
    """OpenSALICON's Salicon.compute_saliency, step by step, on a pycaffe net."""
    import numpy as np
    import scipy.ndimage
    from PIL import Image

    mean = np.array([103.939, 116.779, 123.68])[:, None, None]
    im = np.array(Image.open(image_path), dtype=np.float32)
    im = (np.transpose(im, (2, 0, 1))[::-1, :, :] - mean)[None] / 255
    for name, shape in (("coarse_scale", (1, 3, 600, 800)), ("fine_scale", (1, 3, 1200, 1600))):
        factors = tuple(np.array(shape, dtype=np.float32) / np.asarray(im.shape, dtype=np.float32))
        caffe_net.blobs[name].data[...] = scipy.ndimage.zoom(im, factors, np.dtype(np.float32), mode="nearest")
    caffe_net.forward()
    sal = caffe_net.blobs["saliency_map_out"].data[0, 0]
    sal = sal - np.amin(sal)
    sal = sal / np.amax(sal)
    factors = tuple(np.asarray(im.shape[2:], dtype=np.float32) / np.asarray(sal.shape, dtype=np.float32))
    return scipy.ndimage.zoom(sal, factors, np.dtype(np.float32), mode="nearest")


def child_saliency(model: str, image: str, engine: str, repeat: int) -> dict:
    import numpy as np

    t = time.perf_counter()
    if engine == "caffe":
        # As the published Salicon class does: pycaffe alone (no PyTorch in
        # this process), the project's layers/ on sys.path.
        os.environ.setdefault("GLOG_minloglevel", "2")
        sys.path.insert(0, str(ROOT / "layers"))
        import caffe
        caffe.set_mode_cpu()
        net = caffe.Net(str(ROOT / "prototxt" / "salicon.prototxt"), caffe.TEST, weights=model)
        compute = lambda: published_pipeline(net, image)  # noqa: E731
    else:
        from salicon import Salicon
        compute = Salicon(model, device="cpu").compute_saliency
    load_s = time.perf_counter() - t
    times = []
    for _ in range(repeat + 1):
        t = time.perf_counter()
        out = compute(image) if engine != "caffe" else compute()
        times.append(time.perf_counter() - t)
    assert out.shape == (600, 800)
    return {"load_s": load_s, "first_s": times[0], "median_s": float(np.median(times[1:])),
            "peak_rss_mb": peak_rss_mb()}


def run_child(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True,
                         cwd=ROOT, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"benchmark child {args} failed with exit status {out.returncode} "
                           f"(-9: killed, e.g. out of memory):\n{out.stderr}")
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
    parser.add_argument("--repeat", type=int, default=3, help="timed PyTorch runs after the warm-up")
    parser.add_argument("--caffe", action="store_true", help="also measure real Caffe (pycaffe)")
    parser.add_argument("--caffe-repeat", type=int, default=1, help="timed Caffe runs after the warm-up")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "prepare":
            image, model, source = make_inputs(Path(rest[0]))
            result = {"image": str(image), "model": str(model), "source": source}
        elif kind == "forward":
            result = child_forward(rest[0], rest[1], args.repeat)
        else:
            result = child_saliency(rest[0], rest[1], rest[2], args.repeat)
        print(json.dumps(result))
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        # Every step in its own process: the parent stays small, so each
        # measurement has the machine's memory to itself (Caffe needs ~20 GB).
        made = run_child("prepare", tmp)
        image, model, source = made["image"], made["model"], made["source"]
        results = {"machine": machine(), "weights": source, "repeat": args.repeat}
        for layout in ("nchw", "channels_last"):
            results[f"forward_{layout}"] = run_child("forward", str(model), layout, "--repeat", str(args.repeat))
        results["compute_saliency"] = run_child("saliency", str(model), str(image), "pytorch",
                                                "--repeat", str(args.repeat))
        if args.caffe:
            results["caffe_repeat"] = args.caffe_repeat
            results["forward_caffe"] = run_child("forward", str(model), "caffe", "--repeat", str(args.caffe_repeat))
            results["compute_saliency_caffe_published"] = run_child(
                "saliency", str(model), str(image), "caffe", "--repeat", str(args.caffe_repeat))

    m = results["machine"]
    print(f"machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['torch_threads']} threads)")
    print(f"weights: {source}")
    print(f"{'measurement':52s} {'time (s)':>9s} {'peak RSS (GB)':>14s}")
    rows = [("forward, PyTorch fp32 NCHW", "forward_nchw"),
            ("forward, PyTorch fp32 channels_last", "forward_channels_last"),
            ("forward, Caffe", "forward_caffe"),
            ("compute_saliency, PyTorch engine (defaults)", "compute_saliency"),
            ("compute_saliency, published pipeline on Caffe", "compute_saliency_caffe_published")]
    for label, key in rows:
        if key in results:
            r = results[key]
            print(f"{label:52s} {r['median_s']:9.2f} {r['peak_rss_mb'] / 1024:14.2f}")
    if args.caffe:
        f, c = results["forward_channels_last"], results["forward_caffe"]
        s, p = results["compute_saliency"], results["compute_saliency_caffe_published"]
        print(f"forward: PyTorch takes {f['median_s'] / c['median_s']:.3f} of Caffe's time; "
              f"compute_saliency: {s['median_s'] / p['median_s']:.3f} of the time and "
              f"{s['peak_rss_mb'] / p['peak_rss_mb']:.3f} of the peak memory")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
