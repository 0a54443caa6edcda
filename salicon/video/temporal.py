"""The time axis of a clip's maps: which frames the net sees, how maps are
smoothed over time, and which map each frame of the output shows.

- :class:`FrameSampler`: every frame, every N-th (``every``) or at most ``fps``
  maps a second on the clip's own clock (variable frame rates included).
- :class:`TemporalSmoother`: an exponential moving average of the computed
  maps with a time constant in seconds. Between maps ``dt`` seconds apart the
  old map keeps a weight ``exp(-dt / tau)``, so after a jump the difference
  decays as ``exp(-t / tau)`` whatever the sampling rate.
- :func:`between`: a frame that was not computed shows the latest map (held),
  or with ``interpolate`` the linear blend of the maps before and after it, by time.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Maps a second on a CPU when the user chooses no sampling (``salicon predict``):
#: a minute of video is then 300 maps, minutes rather than an hour on two cores.
DEFAULT_CPU_FPS = 5.0


@dataclass
class FrameSampler:
    """Chooses the frames the net runs on: all (neither set), every ``every``-th,
    or the first frame of each ``1 / fps`` slot of the clip's time."""
    fps: float | None = None
    every: int | None = None

    def __post_init__(self):
        if self.fps is not None and self.every is not None:
            raise ValueError("give fps or every, not both")
        if self.fps is not None and not (self.fps > 0 and math.isfinite(self.fps)):
            raise ValueError(f"fps must be a positive number, not {self.fps}")
        if self.every is not None and self.every < 1:
            raise ValueError(f"every must be at least 1, not {self.every}")
        self._last_slot = -1

    def take(self, index: int, time: float) -> bool:
        """Whether the frame ``index`` at ``time`` seconds is one to compute."""
        if self.every is not None:
            return index % self.every == 0
        if self.fps is None:
            return True
        slot = math.floor(time * self.fps + 1e-6)  # the tolerance keeps 1/fps steps of float time in their slot
        if slot > self._last_slot:
            self._last_slot = slot
            return True
        return False

    def describe(self) -> str:
        if self.every is not None:
            return "every frame" if self.every == 1 else f"one frame in {self.every}"
        return "every frame" if self.fps is None else f"{self.fps:g} maps a second"


def default_sampler(fps: float | None, every: int | None, on_cpu: bool, rate: float | None = None) -> FrameSampler:
    """The user's choice (``fps`` or ``every``), else every frame on a GPU or for a
    clip of at most :data:`DEFAULT_CPU_FPS` frames a second, else that many maps a
    second (what ``salicon predict``, the server and ``--ray`` jobs run)."""
    if fps is not None or every is not None:
        return FrameSampler(fps=fps, every=every)
    if not on_cpu or (rate is not None and rate <= DEFAULT_CPU_FPS):
        return FrameSampler()
    return FrameSampler(fps=DEFAULT_CPU_FPS)


class ChosenFrames(FrameSampler):
    """A sampler that takes the frames whose indices were chosen beforehand (by a
    :class:`FrameSampler` over the whole clip), so workers given parts of a clip
    compute exactly the maps one process would."""

    def __init__(self, indices, described: str = "chosen frames"):
        super().__init__()
        self.indices, self.described = frozenset(indices), described

    def take(self, index: int, time: float) -> bool:
        return index in self.indices

    def describe(self) -> str:
        return self.described


class TemporalSmoother:
    """Exponential moving average of maps over time (``tau`` seconds; 0 or None: off)."""

    def __init__(self, tau: float | None):
        if tau is not None and not (tau >= 0 and math.isfinite(tau)):
            raise ValueError(f"temporal smoothing must be a number of seconds >= 0, not {tau}")
        self.tau = tau or 0.0
        self._state: np.ndarray | None = None
        self._time = 0.0

    def __call__(self, time: float, saliency_map: np.ndarray) -> np.ndarray:
        """The smoothed map at ``time`` given the new map computed there."""
        if self.tau <= 0:
            return saliency_map
        if self._state is None or self._state.shape != saliency_map.shape:
            self._state = saliency_map.astype(np.float32, copy=True)
        else:
            keep = math.exp(-max(0.0, time - self._time) / self.tau)
            self._state *= keep
            self._state += (1.0 - keep) * saliency_map
        self._time = time
        return self._state.copy()


def between(before: tuple[float, np.ndarray], after: tuple[float, np.ndarray] | None, time: float,
            interpolate: bool) -> np.ndarray:
    """The map a frame at ``time`` shows, given the computed maps ``(time, map)``
    before it and after it (None at the clip's end)."""
    t0, m0 = before
    if not interpolate or after is None or after[0] <= t0:
        return m0
    t1, m1 = after
    w = float(np.clip((time - t0) / (t1 - t0), 0.0, 1.0))
    return ((1.0 - w) * m0 + w * m1).astype(np.float32)


__all__ = ["DEFAULT_CPU_FPS", "FrameSampler", "default_sampler", "ChosenFrames", "TemporalSmoother", "between"]
