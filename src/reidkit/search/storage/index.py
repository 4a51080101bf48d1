"""The FAISS side of a gallery: inner-product vector indexes keyed by int64 ids.

Three structures, all over L2-normalised float32 rows (inner product = cosine similarity):

* ``flat``: ``IndexIDMap2(IndexFlatIP)``, exact brute force; removals supported.
* ``hnsw``: ``IndexIDMap2(IndexHNSWFlat, inner product)``; FAISS cannot remove from HNSW, so the
  gallery masks removed ids at search time and rebuilds once too many accumulate.
* ``ivf``: ``IndexIVFFlat`` (inner product, ids stored natively); removals supported. It needs
  training, so a gallery configured for IVF searches a flat index until it holds ``min_train``
  vectors and is then rebuilt as IVF. With a ``codec`` other than ``flat`` the lists hold compressed
  vectors (``IndexIVFScalarQuantizer``): ``sq8`` (1 byte a dimension: 512 B for a 512-d feature, a
  quarter of float32), ``sq4`` (half a byte) or ``fp16``. Kind strings ``ivf-sq8``, ``ivf-sq4``,
  ``ivf-fp16`` name both. The gallery keeps the exact float32 features in SQLite (on disk), so only the
  compressed codes are in memory: the choice for galleries of millions (docs/scaling.md, BENCHMARKS.md).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from reidkit.io import atomic_path

KINDS = ("flat", "hnsw", "ivf")
CODECS = {"flat": None, "sq8": "QT_8bit", "sq4": "QT_4bit", "fp16": "QT_fp16"}  # IVF list storage


class IndexFileError(ValueError):
    """An index file is missing, unreadable or not one of ours."""


@dataclass(frozen=True)
class IndexConfig:
    """Which index to build and how to search it.

    ``hnsw_m`` / ``ef_construction`` and ``nlist`` fix the structure when it is built;
    ``ef_search`` and ``nprobe`` are search-time knobs (recall against speed).
    """

    kind: str = "flat"
    hnsw_m: int = 32
    ef_construction: int = 120
    ef_search: int = 128
    nlist: int = 1024
    nprobe: int = 32
    train_size: int | None = None  # IVF: vectors needed before training; default 39 * nlist
    codec: str = "flat"  # IVF: how list entries are stored (CODECS)

    def __post_init__(self) -> None:
        if "-" in self.kind:  # "ivf-sq8": the kind and its codec in one word
            kind, codec = self.kind.split("-", 1)
            object.__setattr__(self, "kind", kind)
            object.__setattr__(self, "codec", codec)
        if self.codec not in CODECS:
            raise ValueError(f"unknown index codec {self.codec!r}; expected one of {tuple(CODECS)}")
        if self.codec != "flat" and self.kind != "ivf":
            raise ValueError(f"index codec {self.codec!r} needs kind 'ivf' ('ivf-{self.codec}'), not {self.kind!r}")
        if self.kind not in KINDS:
            raise ValueError(f"unknown index kind {self.kind!r}; expected one of {KINDS}")
        for name in ("hnsw_m", "ef_construction", "ef_search", "nlist", "nprobe"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"index option {name} must be >= 1, got {getattr(self, name)}")

    @property
    def min_train(self) -> int:
        """Vectors an IVF gallery needs before it is trained (FAISS wants ~39 per centroid)."""
        return int(self.train_size) if self.train_size else 39 * self.nlist

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IndexConfig:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def _structure(index: faiss.Index) -> str:
    if isinstance(index, faiss.IndexIVFFlat | faiss.IndexIVFScalarQuantizer):
        return "ivf"
    if isinstance(index, faiss.IndexIDMap2):
        inner = faiss.downcast_index(index.index)
        if isinstance(inner, faiss.IndexHNSWFlat):
            return "hnsw"
        if isinstance(inner, faiss.IndexFlatIP):
            return "flat"
    raise IndexFileError(f"unsupported FAISS index type {type(index).__name__}")


def bitmap_selector(mask: np.ndarray) -> tuple[faiss.IDSelector, np.ndarray]:
    """An ``IDSelectorBitmap`` accepting the ids where ``mask`` is true.

    Returns the selector and its backing buffer; keep both alive for as long as the selector is used.
    """
    bits = np.packbits(np.asarray(mask, dtype=bool), bitorder="little")
    return faiss.IDSelectorBitmap(len(bits), faiss.swig_ptr(bits)), bits


class VectorIndex:
    """A FAISS index of one of the :data:`KINDS` with int64 ids; see the module docstring."""

    def __init__(self, index: faiss.Index, config: IndexConfig) -> None:
        self.index = index
        self.config = config
        self.structure = _structure(index)
        if self.structure == "hnsw":
            self._hnsw = faiss.downcast_index(index.index)

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def empty(cls, dim: int, config: IndexConfig) -> VectorIndex:
        """An empty index; an IVF config gives a flat one (IVF needs training data first)."""
        if config.kind == "hnsw":
            hnsw = faiss.IndexHNSWFlat(dim, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            hnsw.hnsw.efConstruction = config.ef_construction
            hnsw.hnsw.efSearch = config.ef_search
            return cls(faiss.IndexIDMap2(hnsw), config)
        return cls(faiss.IndexIDMap2(faiss.IndexFlatIP(dim)), config)

    @classmethod
    def trained_ivf(cls, train: np.ndarray, config: IndexConfig) -> VectorIndex:
        """An empty IVF index with centroids trained by k-means on ``train`` (>= nlist rows)."""
        train = np.ascontiguousarray(train, dtype=np.float32)
        if len(train) < config.nlist:
            raise ValueError(f"IVF with nlist={config.nlist} needs at least that many training rows, got {len(train)}")
        quantizer = faiss.IndexFlatIP(train.shape[1])
        d, ip = train.shape[1], faiss.METRIC_INNER_PRODUCT
        if config.codec == "flat":
            ivf = faiss.IndexIVFFlat(quantizer, d, config.nlist, ip)
        else:
            qtype = getattr(faiss.ScalarQuantizer, CODECS[config.codec])
            ivf = faiss.IndexIVFScalarQuantizer(quantizer, d, config.nlist, qtype, ip)
        ivf.cp.max_points_per_centroid = max(39, math.ceil(len(train) / config.nlist))  # no silent subsampling
        ivf.train(train)
        ivf.nprobe = config.nprobe
        ivf.own_fields = True
        quantizer.this.disown()  # the IVF index owns (and frees) its quantizer
        return cls(ivf, config)

    @classmethod
    def read(cls, path: str | os.PathLike[str], config: IndexConfig) -> VectorIndex:
        """Load an index file written by :meth:`write`."""
        p = Path(path)
        if not p.is_file():
            raise IndexFileError(f"{p}: no such index file")
        try:
            index = faiss.read_index(str(p))
        except RuntimeError as exc:
            raise IndexFileError(f"{p}: not a readable FAISS index ({str(exc).splitlines()[0]})") from None
        if index.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise IndexFileError(f"{p}: index metric is not inner product")
        return cls(index, config)

    def write(self, path: str | os.PathLike[str]) -> None:
        """Write the index atomically (temp file, fsync, rename): a crash leaves the old file intact."""
        with atomic_path(path) as tmp:
            faiss.write_index(self.index, str(tmp))
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    # -- contents -----------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return int(self.index.d)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def supports_remove(self) -> bool:
        return self.structure != "hnsw"

    def ids(self) -> np.ndarray:
        """Every id stored in the index (int64, unordered; an id may repeat only if added twice)."""
        if self.structure != "ivf":
            return faiss.vector_to_array(self.index.id_map).astype(np.int64, copy=False)
        inv = self.index.invlists
        parts = [np.empty(0, np.int64)]
        for lst in range(self.index.nlist):
            n = inv.list_size(lst)
            if n:
                ptr = inv.get_ids(lst)
                parts.append(faiss.rev_swig_ptr(ptr, n).copy())
                inv.release_ids(lst, ptr)
        return np.concatenate(parts)

    def reconstruct(self, ids: np.ndarray) -> np.ndarray | None:
        """The stored vectors of ``ids`` (flat and HNSW; None for IVF, which keeps no id lookup)."""
        if self.structure == "ivf":
            return None
        return self.index.reconstruct_batch(np.ascontiguousarray(ids, dtype=np.int64))

    def add(self, ids: np.ndarray, x: np.ndarray) -> None:
        """Add rows ``x`` under ``ids`` (the caller guarantees the ids are new)."""
        if len(ids):
            self.index.add_with_ids(np.ascontiguousarray(x, dtype=np.float32), np.ascontiguousarray(ids, np.int64))

    def remove(self, ids: np.ndarray) -> int:
        """Remove ``ids``; returns how many vectors went. Not supported by HNSW (returns 0)."""
        if not self.supports_remove or len(ids) == 0:
            return 0
        return int(self.index.remove_ids(np.ascontiguousarray(ids, dtype=np.int64)))

    # -- search -------------------------------------------------------------------------------
    def params(
        self, selector: faiss.IDSelector | None = None, ef_search: int | None = None, nprobe: int | None = None
    ) -> faiss.SearchParameters:
        """Search parameters for this structure (runtime knobs default to the config's)."""
        if self.structure == "hnsw":
            p = faiss.SearchParametersHNSW()
            p.efSearch = int(ef_search or self.config.ef_search)
        elif self.structure == "ivf":
            p = faiss.SearchParametersIVF()
            p.nprobe = min(int(nprobe or self.config.nprobe), int(self.index.nlist))
        else:
            p = faiss.SearchParameters()
        if selector is not None:
            p.sel = selector
        return p

    def search(
        self,
        x: np.ndarray,
        k: int,
        selector: faiss.IDSelector | None = None,
        ef_search: int | None = None,
        nprobe: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` inner products and ids per row of ``x`` (id -1 pads missing results)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.ntotal == 0 or k <= 0:
            return np.full((len(x), max(k, 0)), -np.inf, np.float32), np.full((len(x), max(k, 0)), -1, np.int64)
        params = self.params(selector, ef_search, nprobe)
        return self.index.search(x, int(k), params=params)
