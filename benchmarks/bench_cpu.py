#!/usr/bin/env python
"""CPU benchmark of the SALICON net on the PyTorch engine and, with --caffe,
on real Caffe in the same run: every measurement reports the first call and
the steady state (the median of --repeat calls after that first one).

Measures, each in a fresh process so peak memory is the process's own:
  forward     the net's forward pass alone (preprocessing excluded), fp32:
              PyTorch with NCHW and channels_last layouts, the fast variant
              (prototxt/salicon_fast.prototxt, half the input sizes), and Caffe;
  compute_saliency
              end to end on an 800x600 JPEG (decode, preprocessing, forward,
              resize back): Salicon on PyTorch with its defaults, with the fast
              variant, and (--caffe) the published OpenSALICON pipeline on
              Caffe: scipy.ndimage.zoom resizes and pycaffe;
  throughput  (--throughput N) `salicon predict` over a folder of N generated
              800x600 JPEGs, full size, fast and int8: images per hour after the first;
  OpenVINO    (when openvino is installed) the same forward and compute_saliency
              rows on the OpenVINO runtime in fp32, bf16 and int8 (the shipped
              int8 model file), beside PyTorch in the same run.

Weights: the shipped trained model (exported to a float32 .caffemodel for
Caffe and PyTorch; OpenVINO fp32/bf16 convert that file, int8 runs the shipped
int8 file quantized from the same weights). Caffe allocates its buffers (about 18 GB) on its first call, which is
why its first call is much slower than its later ones; ratios use the
steady state. Prints a table and, with --json, writes the results.

    python benchmarks/bench_cpu.py --caffe --throughput 20 --json benchmarks/results/cpu_2core.json
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


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def make_inputs(workdir: Path) -> tuple[Path, Path, str]:
    """An 800x600 JPEG and the shipped model as a float32 .caffemodel."""
    from PIL import Image
    from skimage import data

    from salicon.export import export_caffemodel

    image = workdir / "photo.jpg"
    Image.fromarray(data.chelsea()).resize((800, 600), Image.BICUBIC).save(image, quality=95)
    model = export_caffemodel(workdir, name="model")["caffemodel"]
    return image, model, "the shipped model (salicon_osie), float32"


def prototxt_for(variant: str) -> Path:
    return ROOT / "prototxt" / ("salicon_fast.prototxt" if variant == "fast" else "salicon.prototxt")


def child_forward(model: str, layout: str, repeat: int) -> dict:
    import contextlib

    import numpy as np

    rng = np.random.default_rng(0)
    fast = layout == "fast"
    fine = rng.uniform(-0.5, 0.5, (1, 3) + ((600, 800) if fast else (1200, 1600))).astype(np.float32)
    coarse = rng.uniform(-0.5, 0.5, (1, 3) + ((300, 400) if fast else (600, 800))).astype(np.float32)
    if layout.startswith("openvino"):
        from salicon import Salicon
        precision = layout.split("-")[1]
        net = Salicon(None if precision == "int8" else model, device="cpu", precision=precision,
                      runtime="openvino").net
        context = contextlib.nullcontext()
        run = lambda: net(fine_scale=fine, coarse_scale=coarse)  # noqa: E731
    elif layout == "caffe":
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
        context = torch.inference_mode()
        if layout == "bf16":  # bfloat16 autocast, as precision="bf16" runs it
            context = contextlib.ExitStack()
            context.enter_context(torch.inference_mode())
            context.enter_context(torch.autocast("cpu", dtype=torch.bfloat16))
        net = Net(prototxt_for("fast" if fast else "full"), weights=model).eval().requires_grad_(False)
        if layout in ("channels_last", "fast", "bf16"):
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
    return {"first_s": times[0], "median_s": float(np.median(times[1:])), "runs_s": times[1:],
            "peak_rss_mb": peak_rss_mb()}


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
    elif engine.startswith("openvino"):
        from salicon import Salicon
        precision = engine.split("-")[1]
        compute = Salicon(None if precision == "int8" else model, device="cpu", precision=precision,
                          runtime="openvino").compute_saliency
    else:
        from salicon import Salicon
        variant = "fast" if engine == "fast" else "full"
        compute = Salicon(model, prototxt_for(variant), device="cpu",
                          precision="bf16" if engine == "bf16" else "fp32").compute_saliency
    load_s = time.perf_counter() - t
    times = []
    for _ in range(repeat + 1):
        t = time.perf_counter()
        out = compute(image) if engine != "caffe" else compute()
        times.append(time.perf_counter() - t)
    assert out.shape == (600, 800)
    return {"load_s": load_s, "first_s": times[0], "median_s": float(np.median(times[1:])), "runs_s": times[1:],
            "peak_rss_mb": peak_rss_mb()}


def child_throughput(model: str, folder: str, variant: str) -> dict:
    """`salicon predict` over a folder: seconds for the first image and per image after it."""
    from salicon.cli import main as salicon_main
    out = Path(folder).parent / f"maps_{variant}"
    stamps = []

    import tqdm
    original = tqdm.tqdm.update

    def update(self, n=1):
        stamps.append(time.perf_counter())
        return original(self, n)
    tqdm.tqdm.update = update
    start = time.perf_counter()
    args = ["predict", folder, "-o", str(out), "--device", "cpu", "-q"]
    if variant == "int8":  # the shipped model's int8 file
        args += ["--precision", "int8"]
    else:
        args += ["--model", model] + (["--fast"] if variant == "fast" else [])
    code = salicon_main(args)
    total = time.perf_counter() - start
    steady = (stamps[-1] - stamps[0]) / (len(stamps) - 1)
    return {"exit_status": code, "images": len(stamps), "total_s": total, "first_image_s": stamps[0] - start,
            "steady_s_per_image": steady, "images_per_hour": 3600.0 / steady, "peak_rss_mb": peak_rss_mb()}


def make_folder(workdir: Path, n: int) -> Path:
    import numpy as np
    from PIL import Image
    from skimage import data
    folder = workdir / "photos"
    folder.mkdir()
    base = [data.chelsea(), data.coffee(), data.astronaut()]
    rng = np.random.default_rng(0)
    for i in range(n):
        img = Image.fromarray(base[i % 3]).resize((800, 600), Image.BICUBIC)
        arr = np.clip(np.asarray(img, np.int16) + rng.integers(-8, 9, (600, 800, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(arr).save(folder / f"img{i:04d}.jpg", quality=90)
    return folder


def run_child(*args: str) -> dict:
    """One measurement in its own process; a failure is recorded, not fatal, so
    the other measurements of a long run are kept."""
    out = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True,
                         cwd=ROOT, check=False)
    if out.returncode != 0:
        reason = "killed (out of memory?)" if out.returncode == -9 else out.stderr.strip().splitlines()[-1:]
        print(f"benchmark child {args[0]} {args[-3:]} failed with exit status {out.returncode}: {reason}",
              file=sys.stderr)
        return {"error": f"exit status {out.returncode}: {reason}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def openvino_installed() -> bool:
    import importlib.util
    return importlib.util.find_spec("openvino") is not None


def machine() -> dict:
    import torch
    from machine import cpu_features
    features = cpu_features()
    return {"cpu": features["model"], "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "flags": features["flags"], "native_bf16": features["native_bf16"],
            "torch_cpu_capability": features["torch_capability"],
            "torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform(),
            "openvino": _version_of("openvino")}


def _version_of(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="timed PyTorch runs after the warm-up")
    parser.add_argument("--caffe", action="store_true", help="also measure real Caffe (pycaffe)")
    parser.add_argument("--caffe-repeat", type=int, default=3, help="timed Caffe runs after the first call")
    parser.add_argument("--skip-published", action="store_true",
                        help="with --caffe, leave out the published pipeline (it needs about 23 GB of memory)")
    parser.add_argument("--throughput", type=int, default=0, metavar="N",
                        help="also time `salicon predict` over N generated photos (full size and --fast)")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "prepare":
            image, model, source = make_inputs(Path(rest[0]))
            result = {"image": str(image), "model": str(model), "source": source}
            if openvino_installed():  # the one-off conversion is cached before anything is timed
                from salicon.runtimes.openvino import convert_net
                convert_net(ROOT / "prototxt" / "salicon.prototxt", model)
        elif kind == "forward":
            result = child_forward(rest[0], rest[1], args.repeat)
        elif kind == "throughput":
            result = child_throughput(rest[0], rest[1], rest[2])
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
        for layout in ("nchw", "channels_last", "fast"):
            results[f"forward_{layout}"] = run_child("forward", str(model), layout, "--repeat", str(args.repeat))
        results["compute_saliency"] = run_child("saliency", str(model), str(image), "pytorch",
                                                "--repeat", str(args.repeat))
        results["compute_saliency_fast"] = run_child("saliency", str(model), str(image), "fast",
                                                     "--repeat", str(args.repeat))
        if results["machine"]["native_bf16"]:  # bf16 only pays where the CPU computes it natively
            results["forward_bf16"] = run_child("forward", str(model), "bf16", "--repeat", str(args.repeat))
            results["compute_saliency_bf16"] = run_child("saliency", str(model), str(image), "bf16",
                                                         "--repeat", str(args.repeat))
        if openvino_installed():
            for precision in ("fp32", "bf16", "int8"):
                results[f"forward_openvino_{precision}"] = run_child(
                    "forward", str(model), f"openvino-{precision}", "--repeat", str(args.repeat))
                results[f"compute_saliency_openvino_{precision}"] = run_child(
                    "saliency", str(model), str(image), f"openvino-{precision}", "--repeat", str(args.repeat))
        if args.throughput:
            folder = make_folder(Path(tmp), args.throughput)
            for variant in ("full", "fast") + (("int8",) if openvino_installed() else ()):
                results[f"throughput_{variant}"] = run_child("throughput", str(model), str(folder), variant)
        if args.caffe:
            results["caffe_repeat"] = args.caffe_repeat
            results["forward_caffe"] = run_child("forward", str(model), "caffe", "--repeat", str(args.caffe_repeat))
            if not args.skip_published:
                results["compute_saliency_caffe_published"] = run_child(
                    "saliency", str(model), str(image), "caffe", "--repeat", str(args.caffe_repeat))

    m = results["machine"]
    print(f"machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['torch_threads']} threads), "
          f"CPU capability {m['torch_cpu_capability']}, native bf16: {m['native_bf16']}")
    print(f"weights: {source}")
    print(f"{'measurement':52s} {'first (s)':>10s} {'steady (s)':>11s} {'peak RSS (GB)':>14s}")
    rows = [("forward, PyTorch fp32 NCHW", "forward_nchw"),
            ("forward, PyTorch fp32 channels_last", "forward_channels_last"),
            ("forward, PyTorch fast (600x800 / 300x400)", "forward_fast"),
            ("forward, PyTorch bf16 autocast (native bf16 CPUs)", "forward_bf16"),
            ("forward, OpenVINO fp32", "forward_openvino_fp32"),
            ("forward, OpenVINO bf16", "forward_openvino_bf16"),
            ("forward, OpenVINO int8", "forward_openvino_int8"),
            ("forward, Caffe", "forward_caffe"),
            ("compute_saliency, PyTorch engine (defaults)", "compute_saliency"),
            ("compute_saliency, PyTorch engine, fast", "compute_saliency_fast"),
            ("compute_saliency, PyTorch engine, bf16", "compute_saliency_bf16"),
            ("compute_saliency, OpenVINO fp32", "compute_saliency_openvino_fp32"),
            ("compute_saliency, OpenVINO bf16", "compute_saliency_openvino_bf16"),
            ("compute_saliency, OpenVINO int8", "compute_saliency_openvino_int8"),
            ("compute_saliency, published pipeline on Caffe", "compute_saliency_caffe_published")]
    for label, key in rows:
        if key in results and "error" not in results[key]:
            r = results[key]
            print(f"{label:52s} {r['first_s']:10.2f} {r['median_s']:11.2f} {r['peak_rss_mb'] / 1024:14.2f}")
    for variant in ("full", "fast", "int8"):
        r = results.get(f"throughput_{variant}")
        if r:
            print(f"salicon predict, {variant}: {r['images']} images, first {r['first_image_s']:.1f} s, then "
                  f"{r['steady_s_per_image']:.2f} s/image = {r['images_per_hour']:.0f} images/hour")
    s, f = results["compute_saliency"], results["compute_saliency_fast"]
    ratios = {"fast_vs_full_end_to_end": f["median_s"] / s["median_s"],
              "fast_vs_full_forward": (results["forward_fast"]["median_s"]
                                       / results["forward_channels_last"]["median_s"])}
    if "compute_saliency_bf16" in results:
        ratios["bf16_vs_fp32_end_to_end"] = results["compute_saliency_bf16"]["median_s"] / s["median_s"]
    for precision in ("fp32", "bf16", "int8"):
        row = results.get(f"compute_saliency_openvino_{precision}", {})
        if "median_s" in row:  # > 1: faster than PyTorch fp32 (the default)
            ratios[f"speedup_openvino_{precision}_vs_pytorch_fp32_end_to_end"] = s["median_s"] / row["median_s"]
            ratios[f"peak_rss_openvino_{precision}_vs_pytorch_fp32"] = row["peak_rss_mb"] / s["peak_rss_mb"]
    if "images_per_hour" in results.get("throughput_int8", {}) and "images_per_hour" in results.get(
            "throughput_full", {}):
        ratios["predict_int8_vs_fp32_images_per_hour"] = (results["throughput_int8"]["images_per_hour"]
                                                          / results["throughput_full"]["images_per_hour"])
    c, p = results.get("forward_caffe", {}), results.get("compute_saliency_caffe_published", {})
    if "median_s" in c:
        ratios["forward_vs_caffe"] = results["forward_channels_last"]["median_s"] / c["median_s"]
    if "median_s" in p:
        ratios.update({"end_to_end_vs_published": s["median_s"] / p["median_s"],
                       "memory_vs_published": s["peak_rss_mb"] / p["peak_rss_mb"]})
    results["steady_state_ratios"] = ratios
    print("steady-state ratios: " + ", ".join(f"{k} {v:.3f}" for k, v in ratios.items()))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
