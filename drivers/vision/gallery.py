"""Opening the face gallery with the configured storage and thread bounds."""

from __future__ import annotations

import pathlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from threadpoolctl import threadpool_limits

from agent.config import AgentConfig
from agent.layout import StateLayout
from agent.matching.faces import FaceRecogniser
from agent.matching.gallery import Gallery
from agent.matching.tracks import Tracker
from agent.ports import AuditSink
from agent.purposes import Purpose
from drivers.vision.faces import FaceEmbedderImpl

if TYPE_CHECKING:
    from agent.keystore import DataKeys
    from drivers.vision.lazy_models import LazyEmbedder

_executors: dict[int, ThreadPoolExecutor] = {}


def face_gallery_dir(state_dir: pathlib.Path) -> pathlib.Path:
    return StateLayout(state_dir).faces_dir


def bound_blas_threads() -> None:
    """Hold BLAS to one thread: the gallery scan runs its own bounded worker threads."""
    threadpool_limits(limits=1, user_api="blas")


def search_executor(threads: int) -> ThreadPoolExecutor | None:
    if threads <= 1:
        return None
    if threads not in _executors:
        _executors[threads] = ThreadPoolExecutor(threads, thread_name_prefix="gallery-scan")
    return _executors[threads]


def open_face_gallery(
    config: AgentConfig, dim: int, keys: DataKeys | None = None, embedder: str = ""
) -> Gallery:
    """The gallery, decrypted into memory once here: matching never touches the files.

    ``embedder``: the name of the embedder whose vectors it holds; a gallery made
    by another is refused with :class:`agent.matching.store.EmbedderMismatch`.
    """
    settings = config.matching
    bound_blas_threads()
    return Gallery.open(
        face_gallery_dir(config.state_dir),
        dim,
        settings.gallery_storage,
        trim=settings.template_trim,
        max_samples_per_identity=settings.max_samples_per_identity,
        max_identities=settings.max_identities,
        executor=search_executor(settings.blas_threads),
        workers=settings.blas_threads,
        keys=keys,
        embedder=embedder,
        keep_crops=settings.keep_enrolment_crops,
    )


def build_recogniser(
    config: AgentConfig,
    embedder: FaceEmbedderImpl | LazyEmbedder,
    is_granted: Callable[[Purpose], bool],
    *,
    camera: str,
    audit: AuditSink | None = None,
    keys: DataKeys | None = None,
) -> FaceRecogniser:
    """The consent-gated recogniser over the configured gallery, for ``embedder``'s vectors."""
    settings = config.matching
    threshold = settings.face_threshold
    return FaceRecogniser(
        open_face_gallery(config, embedder.dim, keys, embedder.name),
        is_granted,
        threshold=embedder.default_threshold if threshold is None else threshold,
        tracker=Tracker(settings.consensus_frames, settings.consensus_window),
        camera=camera,
        audit=audit,
        calibration=embedder.calibration,
    )
