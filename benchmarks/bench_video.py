#!/usr/bin/env python
"""Videos: frames a second through the video path against the same frames given
as image files, and the memory of a long clip.

Speed (``--speed``): a generated 1280x720 clip (a disc moving over texture,
30 fps); for each configuration, the clip through ``write_video`` with every
frame computed (decode ahead, net, map video encoded behind) and the same frames
as PNG files through ``iter_saliency`` + ``write_map`` (as ``salicon predict``
writes maps), alternating, median of ``--repeat`` after a warm-up.

Memory (``--memory-minutes M``): ``salicon predict`` on a generated 1080p clip of
M minutes in a child process; its resident memory (with any children's) sampled
every second, reported at each tenth of the run (flat means bounded) and at its peak.

    python benchmarks/bench_video.py --speed --repeat 3 --json benchmarks/results/video_speed_2core.json
    python benchmarks/bench_video.py --memory-minutes 10 --json benchmarks/results/video_memory_2core.json
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import write_rows  # noqa: E402

CONFIGS = {"salicon_osie int8 (CPU default)": {"precision": "auto"},
           "salicon_osie pytorch fp32": {"precision": "fp32", "runtime": "pytorch"},
           "salicon_osie_fast int8": {"model": "salicon_osie_fast", "precision": "auto"},
           # on a machine with a GPU (left out elsewhere)
           "salicon_osie cuda bf16": {"device": "cuda", "precision": "bf16"},
           "salicon_osie_fast cuda bf16": {"model": "salicon_osie_fast", "device": "cuda", "precision": "bf16"}}


def make_clip(path: Path, frames: int, size: tuple[int, int], rate: int = 30, distinct: int = 30) -> None:
    """A clip of a disc crossing a texture; ``distinct`` frames made once and cycled
    (x264's speed on them does not matter: the clip is made once)."""
    import av

    h, w = size
    texture = (np.random.default_rng(0).random((h // 4, w // 4, 3)) * 80 + 40).astype(np.uint8)
    texture = texture.repeat(4, 0).repeat(4, 1)
    yy, xx = np.ogrid[:h, :w]
    pictures = []
    for i in range(distinct):
        img = texture.copy()
        cx = int(w * (0.1 + 0.8 * i / max(1, distinct - 1)))
        img[(yy - h // 2) ** 2 + (xx - cx) ** 2 < (h // 10) ** 2] = 255
        pictures.append(av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p"))
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=rate, options={"preset": "ultrafast", "crf": "23"})
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.time_base = stream.codec_context.time_base = Fraction(1, rate)
        for i in range(frames):
            frame = pictures[(i // 4) % distinct]
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def frames_as_pngs(clip: Path, folder: Path) -> list[str]:
    from PIL import Image

    from salicon.video import read_frames

    paths = []
    for info, rgb in read_frames(clip):
        paths.append(str(folder / f"frame_{info.index:05d}.png"))
        Image.fromarray(rgb).save(paths[-1], compress_level=1)
    return paths


def time_video(model, clip: Path, out: Path) -> float:
    from salicon.video import FrameSampler, VideoOutputs, write_video

    start = time.perf_counter()
    result = write_video(model, str(clip), out, "clip", VideoOutputs(), FrameSampler(every=1))
    assert result.error is None and result.computed == result.frames
    return time.perf_counter() - start


def time_images(model, paths: list[str], out: Path) -> float:
    from salicon.outputs import OutputSpec, OutputStore, write_map

    store, spec = OutputStore(str(out)), OutputSpec()
    start = time.perf_counter()
    for index, saliency_map in model.iter_saliency(paths, workers=2):
        assert write_map(store, f"f{index:05d}", saliency_map, spec).ok
    return time.perf_counter() - start


def speed(args) -> list[dict]:
    import torch

    from salicon import Salicon

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, options in CONFIGS.items():
            if args.configs and name not in args.configs:
                continue
            if options.get("device") == "cuda" and not torch.cuda.is_available():
                print(f"{name}: no GPU here, left out", flush=True)
                continue
            frames = args.fp32_frames if "fp32" in name else args.frames * (4 if "cuda" in name else 1)
            clip = tmp / f"clip_{frames}.mp4"
            if not clip.exists():
                make_clip(clip, frames, (720, 1280))
            folder = tmp / f"png_{frames}"
            if not folder.exists():
                folder.mkdir()
                frames_as_pngs(clip, folder)
            paths = sorted(str(p) for p in folder.iterdir())
            model = Salicon(**options)
            first_video = time_video(model, clip, tmp / "warm")  # warm-up, reported apart
            video, images = [], []
            for _ in range(args.repeat):
                images.append(time_images(model, paths, tmp / "img"))
                video.append(time_video(model, clip, tmp / "vid"))
            row = {"config": name, "frames": frames, "size": "1280x720", "repeat": args.repeat,
                   "first_video_s": round(first_video, 3),
                   "video_s": round(statistics.median(video), 3), "images_s": round(statistics.median(images), 3),
                   "video_fps": round(frames / statistics.median(video), 3),
                   "images_fps": round(frames / statistics.median(images), 3)}
            row["video_over_images"] = round(row["video_s"] / row["images_s"], 3)
            print(row, flush=True)
            rows.append(row)
            del model
    return rows


def _rss(pid: int) -> int:
    total = 0
    for p in [pid] + _children(pid):
        try:
            with open(f"/proc/{p}/status") as fh:
                total += next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            pass
    return total


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            kids = [int(x) for x in fh.read().split()]
    except OSError:
        return []
    return kids + [g for k in kids for g in _children(k)]


def memory(args) -> dict:
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        tmp = Path(tmp)
        clip = tmp / "long.mp4"
        start = time.perf_counter()
        make_clip(clip, int(args.memory_minutes * 60 * 30), (1080, 1920))
        made = time.perf_counter() - start
        print(f"made a {args.memory_minutes} min 1080p clip ({clip.stat().st_size / 1e6:.0f} MB) in {made:.0f} s",
              flush=True)
        command = [sys.executable, "-m", "salicon", "predict", str(clip), "-o", str(tmp / "out"), "-q",
                   *args.memory_options.split()]
        proc = subprocess.Popen(command)
        samples = []
        start = time.perf_counter()
        while proc.poll() is None:
            samples.append((round(time.perf_counter() - start, 1), _rss(proc.pid)))
            time.sleep(1.0)
        seconds = time.perf_counter() - start
        code = proc.returncode
        outputs = {p.name: p.stat().st_size for p in (tmp / "out").iterdir()} if (tmp / "out").exists() else {}
    deciles = [samples[min(len(samples) - 1, int(len(samples) * k / 10))] for k in range(1, 11)] if samples else []
    report = {"clip": f"{args.memory_minutes} min, 1920x1080, 30 fps, H.264", "command": " ".join(command[1:]),
              "exit_status": code, "seconds": round(seconds, 1), "outputs_bytes": outputs,
              "rss_gb_at_each_tenth": [[t, round(r / 1e9, 3)] for t, r in deciles],
              "rss_gb_peak_sampled": round(max(r for _, r in samples) / 1e9, 3) if samples else None,
              "rss_gb_first_minute_peak": round(max([r for t, r in samples if t <= 60] or [0]) / 1e9, 3)}
    print(report, flush=True)
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--speed", action="store_true")
    parser.add_argument("--frames", type=int, default=48, help="frames of the speed clip (int8 configurations)")
    parser.add_argument("--fp32-frames", type=int, default=12, help="frames of the speed clip for PyTorch fp32")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--configs", type=lambda t: [c.strip() for c in t.split(",")], default=None)
    parser.add_argument("--memory-minutes", type=float)
    parser.add_argument("--memory-options", default="--model salicon_osie_fast --fps 2 --npy",
                        help="salicon predict's options for the memory run")
    parser.add_argument("--tmp", default=None, help="where the long clip is made (its size: ~1 MB a second)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not args.speed and not args.memory_minutes:
        parser.error("choose --speed and/or --memory-minutes M")
    fields = {}
    rows = speed(args) if args.speed else []
    if args.memory_minutes:
        fields["memory"] = memory(args)
    write_rows(args.json, rows, **fields)
    return 0


if __name__ == "__main__":
    sys.exit(main())
