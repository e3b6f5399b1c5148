"""Voting on plate readings across the frames of a track.

A plate seen by the camera is read in several frames; single readings of a
small or blurred plate often lose or swap a character.  :class:`PlateVoter`
groups readings into tracks by where they are in the frame (box overlap, or a
centre within a box width of the last one: a car moves), and a track's text is
decided once ``vote_frames`` readings agree on it.  Each track reports a text
at most once, so a parked car is one event, not one per frame.
"""

from __future__ import annotations

import collections
import dataclasses

from agent.matching.plates import PlateReading
from agent.matching.tracks import Box

MAX_TRACKS = 64  # plates in view at once; the oldest track goes first


@dataclasses.dataclass(frozen=True)
class LocatedReading:
    reading: PlateReading
    box: Box


@dataclasses.dataclass
class _Track:
    box: Box
    last_seen: float
    votes: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    weight: dict[str, float] = dataclasses.field(default_factory=dict)
    reported: set[str] = dataclasses.field(default_factory=set)


def _overlap(a: Box, b: Box) -> float:
    x0, y0 = max(a.x, b.x), max(a.y, b.y)
    x1, y1 = min(a.x + a.w, b.x + b.w), min(a.y + a.h, b.y + b.h)
    inter = max(0, x1 - x0) * max(0, y1 - y0)
    union = a.w * a.h + b.w * b.h - inter
    return inter / union if union > 0 else 0.0


def _near(a: Box, b: Box) -> bool:
    dx = (a.x + a.w / 2) - (b.x + b.w / 2)
    dy = (a.y + a.h / 2) - (b.y + b.h / 2)
    reach = max(a.w, b.w)
    return dx * dx + dy * dy <= reach * reach


class PlateVoter:
    """Tracks of plate readings; ``add`` returns the texts decided by this frame's readings."""

    def __init__(self, vote_frames: int = 2, forget_after: float = 3.0) -> None:
        self.vote_frames = max(1, vote_frames)
        self.forget_after = forget_after
        self._tracks: list[_Track] = []

    def __len__(self) -> int:
        return len(self._tracks)

    def clear(self) -> None:
        self._tracks.clear()

    def _track_for(self, box: Box, now: float) -> _Track:
        best: _Track | None = None
        best_overlap = 0.0
        for track in self._tracks:
            overlap = _overlap(track.box, box)
            if overlap > best_overlap or (best is None and _near(track.box, box)):
                best, best_overlap = track, overlap
        if best is None:
            best = _Track(box, now)
            self._tracks.append(best)
            if len(self._tracks) > MAX_TRACKS:
                self._tracks.pop(0)
        return best

    def add(self, readings: list[LocatedReading], now: float) -> list[str]:
        """Add one frame's readings; the texts that reached ``vote_frames`` just now."""
        self._tracks = [t for t in self._tracks if now - t.last_seen <= self.forget_after]
        decided: list[str] = []
        for located in readings:
            text = located.reading.text
            if not text:
                continue
            track = self._track_for(located.box, now)
            track.box, track.last_seen = located.box, now
            track.votes[text] += 1
            track.weight[text] = track.weight.get(text, 0.0) + located.reading.confidence
            leader = max(track.votes, key=lambda t: (track.votes[t], track.weight[t]))
            if (
                leader == text
                and track.votes[text] >= self.vote_frames
                and text not in track.reported
            ):
                track.reported.add(text)
                decided.append(text)
        return decided
