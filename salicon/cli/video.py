"""``salicon predict`` on videos: a map video per clip (and on request an overlay
video with the clip's audio and a float16 archive of the computed maps)."""
from __future__ import annotations

import argparse
import sys

from ..errors import SaliconError
from ..inputs import Item
from ..video import (
    DEFAULT_CPU_FPS,
    FrameSampler,
    VideoError,
    VideoInfo,
    VideoOutputs,
    is_video_name,
    probe,
    video_problem,
    write_video,
)
from ..video.temporal import default_sampler
from .options import error, phrase, plural, positive_float, positive_int


def add_video_options(p: argparse.ArgumentParser) -> None:
    video = p.add_argument_group(
        "videos (inputs with a video suffix: .mp4, .mov, .mkv, .webm, .avi, ...; pip install -e \".[video]\")",
        "Each clip gets OUT/<name>.mp4, its map video (8-bit grey H.264, the clip's size, frame count and "
        "time stamps); --overlay adds <name>_overlay.mp4 (with the clip's audio), --npy <name>.npz (float16 "
        "maps of the computed frames, their timestamps and frame indices). On a CPU the net runs at "
        f"{DEFAULT_CPU_FPS:g} maps a second unless --fps or --every says otherwise; every frame on a GPU.")
    rate = video.add_mutually_exclusive_group()
    rate.add_argument("--fps", type=positive_float, metavar="F",
                      help="run the net on at most F frames a second of the clip's time (the others hold the "
                           "latest map, or are blended with --interpolate)")
    rate.add_argument("--every", type=positive_int, metavar="N", help="run the net on every N-th frame (1: all)")
    video.add_argument("--interpolate", action="store_true",
                       help="frames between computed maps get the linear blend of the maps around them, by time")
    video.add_argument("--temporal-smoothing", type=positive_float, metavar="SECONDS",
                       help="exponential moving average of the maps over time with this time constant (off by "
                            "default); the post-processing applies to each frame first, as for images")


def split_videos(items: list[Item]) -> tuple[list[Item], list[Item]]:
    """(images, videos) among the inputs, by suffix."""
    videos = [it for it in items if is_video_name(it.source)]
    return [it for it in items if not is_video_name(it.source)], videos


def video_outputs(args: argparse.Namespace) -> VideoOutputs:
    return VideoOutputs(overlay=args.overlay, npz=args.npy, threshold=args.threshold)


def videos_problem(args: argparse.Namespace, videos: list[Item]) -> str | None:
    """Why these options cannot process the videos (before any work), or None."""
    if not videos:
        if args.fps or args.every or args.interpolate or args.temporal_smoothing:
            return "--fps, --every, --interpolate and --temporal-smoothing apply to videos; no input is a video"
        return None
    if args.format != "png":
        return f"--format {args.format} applies to images; videos get map videos (--npy: float16 maps)"
    return video_problem()


def choose_sampler(args: argparse.Namespace, model, info: VideoInfo) -> tuple[FrameSampler, str]:
    """The frames to compute (the user's choice, else all on a GPU, else at most
    DEFAULT_CPU_FPS a second) and how to say it."""
    sampler = default_sampler(args.fps, args.every, model.device.type == "cpu",
                              float(info.rate) if info.rate else None)
    defaulted = args.fps is None and args.every is None and sampler.fps is not None
    return sampler, sampler.describe() + (" on the CPU (--fps / --every to change)" if defaulted else "")


def run_videos(model, videos: list[Item], args: argparse.Namespace) -> tuple[int, int]:
    """Process each clip; returns (clips written, clips failed). A clip that
    fails mid-way keeps the maps of the frames that decoded and counts as failed."""
    from tqdm import tqdm

    written = failed = 0
    outputs = video_outputs(args)
    for item in videos:
        try:
            info = probe(item.source, args.max_pixels)
        except (VideoError, SaliconError, OSError) as exc:
            error(phrase(exc))
            failed += 1
            continue
        sampler, chosen = choose_sampler(args, model, info)
        rate = f"{float(info.rate):.3g} fps" if info.rate else "unknown rate"
        if not args.quiet:
            print(f"salicon: {item.source}: {info.width}x{info.height}, {rate}, "
                  f"{info.duration or 0:.1f} s; the net runs on {chosen}", file=sys.stderr)
        total = info.expected_frames() or None
        bar = tqdm(total=total, unit="frame", disable=args.quiet, file=sys.stderr, dynamic_ncols=True,
                   desc=item.stem, leave=False)
        try:
            result = write_video(model, item.source, args.out, item.stem, outputs, sampler,
                                 smoothing=args.temporal_smoothing, interpolate=args.interpolate, info=info,
                                 batch_size=args.batch_size, progress=lambda _: bar.update(1))  # noqa: B023  # called now
        except (VideoError, SaliconError, OSError) as exc:
            bar.close()
            error(phrase(exc))
            failed += 1
            continue
        bar.close()
        if result.error:
            error(f"{result.error} (maps written for the {plural(result.frames, 'frame')} that decoded)")
            failed += 1
        else:
            written += 1
        if not args.quiet:
            print(f"salicon: {item.source}: {plural(result.frames, 'frame')}, {result.computed} computed, "
                  f"{result.frames / max(result.seconds, 1e-9):.1f} frames/s -> {', '.join(result.written)}",
                  file=sys.stderr)
    return written, failed
