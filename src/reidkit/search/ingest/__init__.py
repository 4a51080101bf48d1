"""Ingest: sources (videos, streams, photo folders, crop folders) -> detect -> track -> crops -> embed
-> storage. :func:`reidkit.search.ingest.pipeline.ingest` runs one source."""

from reidkit.search.ingest import refine as _refine  # noqa: F401 - registers the "ssd-tiled" detector
