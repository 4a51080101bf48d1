"""Ingest: sources (videos, streams, photo folders, crop folders) -> detect -> track -> crops -> embed
-> storage. :func:`reidkit.search.ingest.pipeline.ingest` runs one source."""
