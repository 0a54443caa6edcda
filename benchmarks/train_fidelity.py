"""Training-run equality: the same fine-tuning on the PyTorch engine and on real
Caffe (pycaffe), step by step.

Both start from the same VGG-16 initialisation (``salicon init-weights``),
run the shipped solver (prototxt/solver.prototxt: SGD, momentum 0.9, weight
decay 5e-4, lr_mult 1/2 and decay_mult 1/0 on the trained layers, conv1-conv2
frozen) on the train net edited to smaller inputs (``--size``; the edit the
the prototxt guide (docs/guides/prototxt-and-layers.md) describes), and take one step per image over
OSIE training images in one fixed order (splits/osie_train.txt), both fed
the same input blobs. Recorded: every step's loss on both engines, the
relative difference of every trained blob at the checkpoints (and of its
change since the start, a much stricter measure), whether frozen blobs are
bit-equal, and validation loss, NSS and CC of both final nets on held-out
images (splits/osie_val.txt).

    python benchmarks/train_fidelity.py --data ../shared/data/osie \
        --vgg16 ../shared/weights/vgg16_conv.caffemodel --json benchmarks/results/train_fidelity_2core.json
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from machine import cpu_features, write_report  # noqa: E402

CHECKPOINTS = (1, 10, 50, 200)
#: The bar: trained blobs within this relative difference of Caffe's, validation NSS within NSS_TOLERANCE.
BLOB_TOLERANCE = 1e-3
NSS_TOLERANCE = 0.005


def pool_size(n: int, pools: int = 5) -> int:
    """A side after ``pools`` 2x2/2 max-poolings in Caffe's ceil mode."""
    for _ in range(pools):
        n = math.ceil(n / 2)
    return n


def edited_train_net(height: int, width: int, folder: Path) -> Path:
    """prototxt/finetune_salicon.prototxt with the fine input at height x width,
    the coarse at half of it, and the map sizes that follow."""
    text = (ROOT / "prototxt" / "finetune_salicon.prototxt").read_text()
    h, w = pool_size(height), pool_size(width)
    for old, new in {"1,3,1200,1600": f"1,3,{height},{width}", "1,3,600,800": f"1,3,{height // 2},{width // 2}",
                     "1,512,38,50": f"1,512,{h},{w}", "1,1,38,50": f"1,1,{h},{w}"}.items():
        if old not in text:
            raise SystemExit(f"finetune_salicon.prototxt no longer holds {old}; update this script")
        text = text.replace(old, new)
    path = folder / f"finetune_{height}x{width}.prototxt"
    path.write_text(text)
    return path


def caffe_params(backend) -> dict[str, list[np.ndarray]]:
    return {name: [np.array(b.data, dtype=np.float32) for b in blobs]
            for name, blobs in backend.solver.net.params.items()}


def compare(ours: dict, theirs: dict, init: dict, trained: set) -> dict:
    """Per trained blob: max |ours - caffe| / max |caffe| and the same for the
    change since the start; per frozen blob: bit-equality."""
    rows = {}
    for layer, blobs in theirs.items():
        for i, b in enumerate(blobs):
            a, start = ours[layer][i], init[layer][i]
            key = f"{layer}[{i}]"
            if (layer, i) in trained:
                change = np.abs(b - start).max()
                rows[key] = {"rel_diff": float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30)),
                             "rel_diff_of_change": float(np.abs((a - start) - (b - start)).max() / change)
                             if change > 0 else None,
                             "max_change": float(change)}
            else:
                rows[key] = {"frozen_bit_equal": bool(np.array_equal(a, b) and np.array_equal(a, start))}
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="OSIE folder")
    parser.add_argument("--vgg16", type=Path, required=True, help="VGG-16 conv layers .caffemodel")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--size", default="240x320", help="fine input HxW (coarse: half)")
    parser.add_argument("--val", type=int, default=30, help="validation images")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import torch

    from salicon.evaluate import read_split
    from salicon.runtimes.caffe import caffe_available
    from salicon.train import TrainConfig, Trainer
    from salicon.weights import init_from_vgg16

    if not caffe_available():
        raise SystemExit("real Caffe (pycaffe) is needed: bash scripts/install_caffe.sh")
    height, width = (int(v) for v in args.size.lower().split("x"))
    work = Path(tempfile.mkdtemp(prefix="train_fidelity_"))
    net_path = edited_train_net(height, width, work)
    init_net, _ = init_from_vgg16(args.vgg16, net_path, seed=0)
    init_path = work / "init.caffemodel"
    init_net.save(init_path)
    train_names = read_split(ROOT / "splits" / "osie_train.txt")[: args.steps]
    val_names = read_split(ROOT / "splits" / "osie_val.txt")[: args.val]
    split = work / "split.json"
    split.write_text(json.dumps({"train": train_names, "test": val_names}))
    trainers = {}
    for engine in ("pytorch", "caffe"):
        config = TrainConfig(data=f"osie:{args.data}", out=str(work / engine), prototxt=str(net_path),
                             weights=str(init_path), split=str(split), engine=engine, device="cpu", seed=0)
        trainers[engine] = Trainer(config, log=lambda _: None)
    ours, theirs = trainers["pytorch"], trainers["caffe"]
    infos = ours.net.param_info()
    trained = {(i.layer, i.index) for i in infos if i.lr_mult != 0}
    init = {name: [np.array(b) for b in blobs] for name, blobs in ours.net.state_arrays().items()}
    losses, seconds, checkpoints = [], {"pytorch": 0.0, "caffe": 0.0}, {}
    order = [ours.train_set[i % len(ours.train_set)] for i in range(args.steps)]
    for step, sample in enumerate(order, start=1):
        feeds = ours.feeds(sample)
        pair = []
        for engine, trainer in trainers.items():
            start = time.perf_counter()
            pair.append(trainer.backend.step(feeds)[0])
            seconds[engine] += time.perf_counter() - start
        losses.append(pair)
        if step in CHECKPOINTS or step == args.steps:
            checkpoints[step] = compare(ours.net.state_arrays(), caffe_params(theirs.backend), init, trained)
            worst = max((r["rel_diff"] for r in checkpoints[step].values() if "rel_diff" in r), default=0.0)
            print(f"step {step}: loss {pair[0]:.6g} (pytorch) {pair[1]:.6g} (caffe); worst trained blob "
                  f"rel. diff {worst:.2e}", flush=True)
    validation = {engine: t.validate(t.test_set) for engine, t in trainers.items()}
    return report(args, losses, checkpoints, validation, seconds, torch)


def report(args, losses, checkpoints, validation, seconds, torch) -> int:
    loss_diff = [abs(a - b) / max(abs(b), 1e-30) for a, b in losses]
    last = checkpoints[max(checkpoints)]
    worst_blob = max(r["rel_diff"] for r in last.values() if "rel_diff" in r)
    frozen_equal = all(r["frozen_bit_equal"] for r in last.values() if "frozen_bit_equal" in r)
    nss_diff = abs(validation["pytorch"]["val_NSS"] - validation["caffe"]["val_NSS"])
    ok = worst_blob <= BLOB_TOLERANCE and frozen_equal and nss_diff <= NSS_TOLERANCE
    print(f"{len(losses)} steps: loss rel. diff max {max(loss_diff):.2e}; worst trained blob rel. diff "
          f"{worst_blob:.2e}; frozen blobs bit-equal: {frozen_equal}; validation NSS "
          f"{validation['pytorch']['val_NSS']:.4f} (pytorch) {validation['caffe']['val_NSS']:.4f} (caffe); "
          f"within the bar: {ok}; seconds a step: "
          + ", ".join(f"{k} {v / len(losses):.2f}" for k, v in seconds.items()))
    write_report(args.json, {
        "command": f"python benchmarks/train_fidelity.py --data path/to/osie --vgg16 path/to/vgg16_conv.caffemodel "
                   f"--steps {args.steps} --size {args.size} --val {args.val}",
        "what": "the shipped solver on the train net edited to a smaller input, from the VGG-16 initialisation, "
                "one step per OSIE training image in splits/osie_train.txt order, on the PyTorch engine and real "
                "Caffe fed the same blobs; rel_diff = max|ours - caffe| / max|caffe| per blob, "
                "rel_diff_of_change = the same for the change since the start",
        "machine": {"cpu": cpu_features()["model"], "cores": torch.get_num_threads(), "torch": torch.__version__,
                    "python": platform.python_version()},
        "size": args.size, "steps": len(losses), "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "loss": {"pytorch": [a for a, _ in losses], "caffe": [b for _, b in losses],
                 "max_rel_diff": max(loss_diff), "median_rel_diff": float(np.median(loss_diff))},
        "checkpoints": checkpoints, "validation": validation,
        "bar": {"blob_tolerance": BLOB_TOLERANCE, "worst_blob_rel_diff": worst_blob,
                "frozen_bit_equal": frozen_equal, "val_nss_diff": nss_diff, "nss_tolerance": NSS_TOLERANCE,
                "ok": ok},
    })
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
