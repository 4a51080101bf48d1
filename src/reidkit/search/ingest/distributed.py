"""Ingest spread over a Ray cluster (``reidkit ingest ... --ray ADDRESS``), writing to one Milvus gallery.

The driver (the ``reidkit ingest`` process) starts ``workers`` Ray actors (:class:`IngestWorker`, one CPU
each by default), anywhere in the cluster. Each loads the model and the detector once and opens the
gallery itself (a Milvus URI: every node reaches the server; a folder gallery has one writer and is refused).
The driver hands out work one job at a time:

* a file job: one source (video, photo folder, frame sequence, crop folder), run by
  :func:`reidkit.search.ingest.pipeline.ingest`, exactly as on one machine;
* a camera job: a group of live cameras, run by :class:`~reidkit.search.ingest.live.LiveIngest` until
  the driver stops them (Ctrl-C / SIGTERM) or ``duration`` ends. Cameras are split over the workers so
  that one worker is left for the files, if there are any.

An actor that dies (its process killed, its node lost) fails its call with a Ray actor error: the driver
starts a new actor (Ray places it on any node with a free CPU) and gives it the same job again, up to
``retries`` times. The gallery makes that a resume: the source is registered again, an add the dead
worker left half-written is undone (:class:`~reidkit.search.storage.milvus.MilvusGallery`), and ingest
continues after the last committed frame from the tracker snapshot committed with it, so no sighting is
written twice (a restarted live camera continues from the stream's present, with new track ids).

Every node reads the sources by the same path or URL (a shared folder, a camera URL) and writes crops to
the gallery's media folder (``?media=`` in the URI, a path every node mounts). Ray itself: ``ray start
--head`` on one machine, ``ray start --address HEAD:6379`` on the others (see README), then
``--ray HEAD:6379`` (or ``auto``: the cluster this machine belongs to; ``local``: a one-machine Ray
started for this command).
"""

from __future__ import annotations

import collections
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from reidkit.raycluster import RayUnavailable, connect, worker_threads
from reidkit.search.ingest.report import IngestReport

__all__ = ["IngestWorker", "Job", "RayOutcome", "RayUnavailable", "WorkerSpec", "ingest_on_ray", "plan_jobs"]

log = logging.getLogger(__name__)
Event = Callable[[str, dict[str, Any]], None]  # (kind, details): started, done, failed, died, restarted


@dataclass(frozen=True)
class WorkerSpec:
    """What every worker needs to build its own model, detector and gallery connection."""

    gallery: str
    model: str | None = None
    weights: str | None = None
    backend: str = "torch"
    batch_size: int = 64
    threads: int | None = None
    detector: str | None = None
    detector_opts: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)  # ingest()'s per-source options
    live_batch: int = 64
    crops_per_track: int = 4


@dataclass
class Job:
    """One unit of work: a file source (``source``, ``sidecar``, ``camera``) or a group of live ``cameras``."""

    key: str
    source: str | None = None
    sidecar: str | None = None
    camera: str | None = None
    cameras: list[Any] = field(default_factory=list)
    attempts: int = 0

    @property
    def live(self) -> bool:
        return bool(self.cameras)

    @property
    def name(self) -> str:
        """What the job is, for messages: the source, or the cameras."""
        return self.key.split(":", 1)[1]


@dataclass
class RayOutcome:
    """What a distributed ingest did: one report per source, the errors of those that failed, the
    restarts (job key, the dead worker's pid and node, the error), and the workers used."""

    reports: list[IngestReport]
    errors: list[str]
    restarts: list[dict[str, Any]]
    workers: int


class IngestWorker:
    """A worker's state (made a Ray actor by :func:`ingest_on_ray`): the model, detector and gallery,
    built once; :meth:`run` runs a job; :meth:`stop` ends a running one (live cameras) from the driver."""

    def __init__(self, spec: WorkerSpec) -> None:
        from reidkit.extract import make_embedder
        from reidkit.search.ingest.detect import build_detector
        from reidkit.search.storage import open_gallery

        self.spec = spec
        self.embedder, self.info = make_embedder(
            spec.model, spec.weights, spec.backend, batch_size=spec.batch_size, threads=spec.threads  # type: ignore[arg-type]
        )
        self.detector = build_detector(spec.detector, **spec.detector_opts) if spec.detector else None
        self.gallery = open_gallery(spec.gallery, model=self.info.name)
        self._stop = threading.Event()

    def where(self) -> dict[str, Any]:
        """This worker's process id, host and Ray node."""
        import ray

        return {"pid": os.getpid(), "host": socket.gethostname(), "node": ray.get_runtime_context().get_node_id()}

    def stop(self) -> None:
        self._stop.set()

    def run(self, job: Job, duration: float | None = None) -> list[IngestReport]:
        """Ingest one job; a source's expected errors become a ``failed`` report naming it."""
        from reidkit.imaging import ImageError
        from reidkit.search.ingest.pipeline import ingest
        from reidkit.search.ingest.sources import SourceError
        from reidkit.search.storage import GalleryError

        if job.live:
            from reidkit.search.ingest.live import LiveIngest, LiveOptions

            opts = LiveOptions(batch_size=self.spec.live_batch, crops_per_track=self.spec.crops_per_track)
            return LiveIngest(self.gallery, job.cameras, self.embedder, self.detector, opts).run(self._stop, duration)
        assert job.source is not None
        options = dict(self.spec.options)
        if job.attempts:
            options["replace"] = False  # a restarted job resumes what its dead worker committed
        try:
            rep = ingest(self.gallery, job.source, self.embedder, detector=self.detector, sidecar=job.sidecar,
                         camera=job.camera, stop=self._stop, **options)  # fmt: skip
        except (SourceError, GalleryError, ImageError, ValueError) as exc:
            msg = str(exc)
            return [IngestReport(job.source, job.camera or "", -1, "failed", message=msg if msg.startswith(job.source)
                                 else f"{job.source}: {msg}")]  # fmt: skip
        return [rep]


def plan_jobs(files: Sequence[tuple[str, Any, str | None]], cameras: Sequence[Any], workers: int) -> list[Job]:
    """File sources one job each; live cameras split into groups over the workers (one worker kept for
    the files when there are any)."""
    jobs = [Job(f"file:{src}", source=str(src), sidecar=None if side is None else str(side), camera=cam)
            for src, side, cam in files]  # fmt: skip
    if cameras:
        groups = max(1, min(len(cameras), workers - (1 if files else 0)))
        for i in range(groups):
            group = list(cameras[i::groups])
            jobs.insert(i, Job("cameras:" + ",".join(c.name for c in group), cameras=group))
    return jobs


def ingest_on_ray(
    spec: WorkerSpec,
    files: Sequence[tuple[str, Any, str | None]],
    cameras: Sequence[Any] = (),
    *,
    address: str | None = None,
    workers: int | None = None,
    cpus_per_worker: float = 1.0,
    retries: int = 3,
    stop: threading.Event | None = None,
    duration: float | None = None,
    on_event: Event | None = None,
) -> RayOutcome:
    """Ingest ``files`` (source, sidecar, camera name) and live ``cameras`` on ``workers`` Ray actors
    (default: the cluster's CPUs / ``cpus_per_worker``; at most one per job, :func:`plan_jobs`) until every
    file is done and the cameras are stopped (``stop`` set, or after ``duration`` seconds); see the module
    docstring. ``on_event(kind, details)`` hears of every start, end, death and restart."""
    ray = connect(address)
    from ray.exceptions import RayActorError, RayTaskError

    stop = stop or threading.Event()
    tell = on_event or (lambda kind, info: None)
    spec = replace(spec, threads=worker_threads(spec.threads, cpus_per_worker))
    if workers is None:
        workers = max(1, int(ray.cluster_resources().get("CPU", 1) // cpus_per_worker))
    jobs = plan_jobs(files, cameras, workers)
    workers = max(1, min(workers, len(jobs)))
    actor_cls = ray.remote(num_cpus=cpus_per_worker, max_restarts=0, max_concurrency=2)(IngestWorker)
    deadline = None if duration is None else time.monotonic() + duration
    pending = collections.deque(jobs)
    running: dict[Any, tuple[Any, Job, dict[str, Any]]] = {}  # result ref -> (actor, job, where)
    idle: list[Any] = []
    reports: list[IngestReport] = []
    errors: list[str] = []
    restarts: list[dict[str, Any]] = []
    stopping = False

    located: dict[Any, Any] = {}  # actor -> its where() call, made as it is created (they load in parallel)

    def new_actor() -> Any:
        actor = actor_cls.remote(spec)
        located[actor] = actor.where.remote()
        return actor

    def start(actor: Any, job: Job) -> None:
        try:
            where = ray.get(located[actor])
        except RayActorError as exc:  # its constructor failed: no model, no gallery
            raise RayUnavailable(f"a worker could not start: {exc}") from None
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        running[actor.run.remote(job, left if job.live else None)] = (actor, job, where)
        tell("started", {"job": job.key, **where})

    try:
        actors = [new_actor() for _ in range(workers)]
        idle.extend(actors)
        while pending or running:
            if stop.is_set() and not stopping:
                stopping = True
                pending.clear()
                for actor, _, _ in running.values():
                    actor.stop.remote()
            while idle and pending:
                start(idle.pop(), pending.popleft())
            if not running:
                break
            done, _ = ray.wait(list(running), num_returns=1, timeout=0.5)
            for ref in done:
                actor, job, where = running.pop(ref)
                try:
                    got = ray.get(ref)
                except RayActorError as exc:  # the worker died: a new one takes the job over
                    ray.kill(actor, no_restart=True)
                    job.attempts += 1
                    info = {"job": job.key, **where, "error": str(exc).splitlines()[0][:200]}
                    restarts.append(info)
                    if job.attempts > retries or stopping:
                        errors.append(f"{job.name}: its worker died {job.attempts} time(s)")
                        tell("failed", info)
                    else:
                        pending.appendleft(job)
                        tell("died", info)
                    idle.append(new_actor())
                    continue
                except RayTaskError as exc:
                    errors.append(f"{job.name}: {exc.cause if exc.cause else exc}")
                    tell("failed", {"job": job.key, **where})
                    idle.append(actor)
                    continue
                for rep in got:
                    reports.append(rep)
                    if rep.status in ("failed", "truncated") and rep.message:
                        errors.append(rep.message)
                tell("done", {"job": job.key, **where, "reports": got})
                idle.append(actor)
        return RayOutcome(reports, errors, restarts, workers)
    finally:
        for actor in [*idle, *(a for a, _, _ in running.values())]:
            ray.kill(actor, no_restart=True)
