"""Multi-camera person search: a gallery of crops (SQLite metadata + FAISS index) and its queries."""

from reidkit.search.gallery import Gallery, save_crop
from reidkit.search.index import IndexConfig
from reidkit.search.store import GalleryError, Hit, Record, Sighting, Source, Track, TrackHit

__all__ = [
    "Gallery",
    "GalleryError",
    "Hit",
    "IndexConfig",
    "Record",
    "Sighting",
    "Source",
    "Track",
    "TrackHit",
    "save_crop",
]
