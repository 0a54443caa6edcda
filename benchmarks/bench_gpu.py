#!/usr/bin/env python
"""GPU benchmark of the full-size SALICON net (1200x1600 + 600x800).

    python benchmarks/bench_gpu.py --batch-sizes 1 8 16 --json benchmarks/results/gpu.json

For each precision (fp32 without TF32, tf32, bf16 autocast) and batch size:
forward throughput of the net alone (channels_last, inputs already on the
GPU, after warm-up, CUDA-synchronised), and the agreement of the resulting
[0, 1] maps with fp32 (Pearson CC and max |difference|). Needs CUDA.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
VGG16 = ROOT.parent / "shared" / "weights" / "vgg16_conv.caffemodel"


def main() -> int:
    import numpy as np
    import torch

    from salicon.device import precision_context
    from salicon.engine import Net, count_flops
    from salicon.pretrained import prototxt_path

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 16])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "tf32", "bf16"])
    parser.add_argument("--seconds", type=float, default=5.0, help="timed seconds per setting")
    parser.add_argument("--predict", type=int, default=0, metavar="N",
                        help="also time `salicon predict` end to end over N 800x600 JPEGs")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("bench_gpu: CUDA is not available", file=sys.stderr)
        return 1
    device = torch.device("cuda")
    net = Net(prototxt_path(), device=device, seed=0).eval().requires_grad_(False)
    if VGG16.exists():
        from salicon.weights import init_from_vgg16
        init, _ = init_from_vgg16(VGG16, seed=0)
        net.copy_from(init.state_arrays())
    net.to(memory_format=torch.channels_last)
    net.memory_format = torch.channels_last
    flops = count_flops(net)
    rng = np.random.default_rng(0)
    results = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "tflop_per_image": flops / 1e12,
               "runs": []}
    reference = {}
    for batch in args.batch_sizes:
        fine = torch.from_numpy(rng.uniform(-0.5, 0.5, (batch, 3, 1200, 1600)).astype(np.float32)).to(device)
        coarse = torch.from_numpy(rng.uniform(-0.5, 0.5, (batch, 3, 600, 800)).astype(np.float32)).to(device)
        for precision in args.precisions:
            with torch.inference_mode(), precision_context(precision, device):
                def run(fine=fine, coarse=coarse):
                    return net(fine_scale=fine, coarse_scale=coarse)["saliency_map_out"].float()
                out = run()
                torch.cuda.synchronize()
                n, start = 0, time.perf_counter()
                while time.perf_counter() - start < args.seconds:
                    run()
                    n += 1
                torch.cuda.synchronize()
                elapsed = time.perf_counter() - start
            maps = out.reshape(batch, -1)
            maps = (maps - maps.min(1, keepdim=True).values) / (maps.max(1, keepdim=True).values
                                                               - maps.min(1, keepdim=True).values)
            if precision == "fp32":
                reference[batch] = maps
            ref = reference.get(batch)
            cc = max_diff = None
            if ref is not None:
                a, b = maps - maps.mean(1, keepdim=True), ref - ref.mean(1, keepdim=True)
                cc = float(((a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))).min())
                max_diff = float((maps - ref).abs().max())
            row = {"batch": batch, "precision": precision, "img_per_s": n * batch / elapsed,
                   "tflops": n * batch * flops / elapsed / 1e12, "cc_vs_fp32": cc, "max_abs_diff_vs_fp32": max_diff}
            results["runs"].append(row)
            print(f"batch {batch:3d} {precision:5s}: {row['img_per_s']:8.1f} img/s ({row['tflops']:.0f} TFLOP/s)"
                  + (f", CC {cc:.5f}, max |diff| {max_diff:.4f} vs fp32" if cc is not None else ""))
    if args.predict:
        results["predict"] = time_predict(args.predict, max(args.batch_sizes), "bf16" if "bf16" in args.precisions
                                          else args.precisions[-1])
        r = results["predict"]
        print(f"salicon predict: {r['images']} JPEGs 800x600, batch {r['batch']}, {r['precision']}: "
              f"{r['img_per_s']:.1f} img/s end to end (decode, resize, forward, PNG writing)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def time_predict(n: int, batch: int, precision: str) -> dict:
    """`salicon predict` over a folder of n distinct 800x600 JPEGs (after a warm-up run)."""
    import tempfile

    import numpy as np
    from PIL import Image
    from skimage import data

    from salicon.cli import main as cli
    from salicon.weights import init_from_vgg16

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = np.asarray(Image.fromarray(data.astronaut()).resize((800, 600)))
        (tmp / "in").mkdir()
        for i in range(n):
            Image.fromarray(np.roll(base, 7 * i, axis=1)).save(tmp / "in" / f"{i:05d}.jpg", quality=90)
        model = tmp / "model.caffemodel"
        if VGG16.exists():
            init_from_vgg16(VGG16, seed=0)[0].save(model)
        else:
            from salicon.engine import Net
            from salicon.pretrained import prototxt_path
            Net(prototxt_path(), seed=0).save(model)
        args = ["predict", str(tmp / "in"), "--model", str(model), "--device", "cuda", "--batch-size", str(batch),
                "--precision", precision, "-q"]
        cli(args + ["-o", str(tmp / "warm")])
        start = time.perf_counter()
        code = cli(args + ["-o", str(tmp / "out")])
        elapsed = time.perf_counter() - start
    return {"images": n, "batch": batch, "precision": precision, "seconds": elapsed, "img_per_s": n / elapsed,
            "exit_code": code}


if __name__ == "__main__":
    sys.exit(main())
