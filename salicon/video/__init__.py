"""Saliency for videos: a map for every frame of a clip (see :mod:`.pipeline`).

``reader`` decodes (PyAV / FFmpeg), ``temporal`` chooses the frames and blends
maps over time, ``writer`` encodes the map and overlay videos and the float16
archive, ``pipeline`` ties them to a :class:`~salicon.Salicon` model.
"""
from .pipeline import FrameMap, VideoOutputs, VideoResult, frame_maps, video_saliency, write_video
from .reader import (
                     VIDEO_SUFFIXES,
                     FrameInfo,
                     VideoError,
                     VideoInfo,
                     VideoLimitError,
                     is_video_name,
                     probe,
                     read_frames,
                     video_problem,
)
from .temporal import DEFAULT_CPU_FPS, FrameSampler, TemporalSmoother

__all__ = ["VIDEO_SUFFIXES", "FrameInfo", "VideoError", "VideoInfo", "VideoLimitError", "is_video_name", "probe",
           "read_frames", "video_problem", "DEFAULT_CPU_FPS", "FrameSampler", "TemporalSmoother", "FrameMap",
           "VideoOutputs", "VideoResult", "frame_maps", "video_saliency", "write_video"]
