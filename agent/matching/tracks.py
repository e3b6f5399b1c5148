"""Face boxes, a greedy IoU tracker and multi-frame identity consensus.

A camera sees the same person over many frames; reporting an identity from a
single frame would turn every look-alike frame into an event.  Each track
votes per frame; an identity is reported once it holds ``frames`` of the last
``window`` votes, and only once per track.
"""

from __future__ import annotations

import collections
import dataclasses

import numpy as np
import numpy.typing as npt


@dataclasses.dataclass(frozen=True)
class Box:
    x: int
    y: int
    w: int
    h: int
    score: float = 1.0
    landmarks: npt.NDArray[np.float32] | None = dataclasses.field(default=None, compare=False)

    @property
    def area(self) -> int:
        return max(0, self.w) * max(0, self.h)

    def iou(self, other: Box) -> float:
        ix = max(0, min(self.x + self.w, other.x + other.w) - max(self.x, other.x))
        iy = max(0, min(self.y + self.h, other.y + other.h) - max(self.y, other.y))
        inter = ix * iy
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0


@dataclasses.dataclass
class Track:
    id: int
    box: Box
    last_seen: float
    votes: collections.deque[str | None]
    reported: set[str] = dataclasses.field(default_factory=set)


class Tracker:
    """Greedy IoU association of boxes to tracks, with votes per track."""

    def __init__(
        self, frames: int, window: int, min_iou: float = 0.3, ttl_seconds: float = 2.0
    ) -> None:
        self.frames = min(frames, window)
        self.window = window
        self.min_iou = min_iou
        self.ttl = ttl_seconds
        self.tracks: dict[int, Track] = {}
        self._next_id = 1

    def assign(self, boxes: list[Box], now: float) -> list[Track]:
        """The track of each box (new tracks for unmatched boxes); stale tracks expire."""
        for track_id in [t.id for t in self.tracks.values() if now - t.last_seen > self.ttl]:
            del self.tracks[track_id]
        free = dict(self.tracks)
        result: list[Track] = []
        for box in boxes:
            best = max(free.values(), key=lambda t: t.box.iou(box), default=None)
            if best is None or best.box.iou(box) < self.min_iou:
                best = Track(self._next_id, box, now, collections.deque(maxlen=self.window))
                self.tracks[best.id] = best
                self._next_id += 1
            else:
                del free[best.id]
            best.box = box
            best.last_seen = now
            result.append(best)
        return result

    def vote(self, track: Track, identity: str | None) -> str | None:
        """Record this frame's identity (None = unknown); the identity to report, if any."""
        track.votes.append(identity)
        if identity is None or identity in track.reported:
            return None
        if sum(1 for v in track.votes if v == identity) >= self.frames:
            track.reported.add(identity)
            return identity
        return None

    def unknown_settled(self, track: Track) -> bool:
        """True once a track has been unknown for ``frames`` votes and not reported so."""
        key = "\0unknown"
        if key in track.reported:
            return False
        if sum(1 for v in track.votes if v is None) >= self.frames:
            track.reported.add(key)
            return True
        return False

    def clear(self) -> None:
        self.tracks.clear()
