"""The gallery: sightings with their features, behind one small interface (see :mod:`.base`).

The embedded backend is :class:`~reidkit.search.storage.gallery.Gallery` (SQLite metadata + FAISS
index in one folder); :mod:`.milvus` keeps a gallery in Milvus (the ``cluster`` extra). ``open_gallery(uri)``
opens either by URI (see :mod:`.open`). All of the gallery's SQL lives in this package.
"""

from reidkit.search.storage.gallery import Gallery
from reidkit.search.storage.index import IndexConfig
from reidkit.search.storage.media import save_crop
from reidkit.search.storage.open import is_milvus, open_gallery
from reidkit.search.storage.records import GalleryError, Hit, Record, Sighting, Source, Track, TrackHit

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
    "is_milvus",
    "open_gallery",
    "save_crop",
]
