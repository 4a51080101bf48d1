"""Open a gallery by URI: a folder (SQLite + FAISS), a Milvus server or a Milvus Lite folder.

==========================================================  ===============================================
``/path/to/folder`` (anything else)                          the folder gallery (:class:`Gallery`)
``milvus://[USER:PASSWORD@]HOST[:PORT]/NAME[?OPTIONS]``        gallery ``NAME`` on a Milvus server (port 19530)
``milvus-lite:///path/to/gallery.db[?OPTIONS]``, or a path     a Milvus Lite folder (one process at a time)
ending ``.db``
==========================================================  ===============================================

``OPTIONS`` (Milvus): ``media=/shared/folder`` (where crops go; else ``$REIDKIT_MEDIA``, else the folder
recorded when the gallery was made; Milvus Lite defaults to ``gallery.media`` beside ``gallery.db``),
``name=NAME`` (Milvus Lite; default ``gallery``), ``index=flat|hnsw|ivf``, ``consistency=Session|Strong|
Bounded|Eventually``, ``secure=1`` (TLS). A token may also come from ``$REIDKIT_MILVUS_TOKEN`` (kept out
of URIs that end up in logs and process lists). Milvus needs the ``cluster`` extra (pymilvus,
milvus-lite); the folder gallery does not.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from reidkit.search.storage.base import GalleryBackend
from reidkit.search.storage.index import IndexConfig
from reidkit.search.storage.records import GalleryError

MILVUS_PORT = 19530
_OPTIONS = {"media", "name", "index", "consistency", "secure"}


def is_milvus(uri: str | os.PathLike[str]) -> bool:
    """Whether ``uri`` names a Milvus gallery (a server or a Milvus Lite folder) rather than a folder."""
    s = str(uri)
    return s.startswith(("milvus://", "milvus-lite://")) or (s.endswith(".db") and "://" not in s)


def _options(query: str) -> dict[str, str]:
    opts = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
    unknown = sorted(set(opts) - _OPTIONS)
    if unknown:
        raise GalleryError(f"unknown gallery URI option(s) {', '.join(unknown)}; known: {', '.join(sorted(_OPTIONS))}")
    return opts


def _milvus_module() -> Any:
    try:
        from reidkit.search.storage import milvus
    except ImportError as exc:  # pragma: no cover - only without the extra
        raise GalleryError(f"a Milvus gallery needs pymilvus: pip install 'reidkit[cluster]' ({exc})") from None
    try:
        import pymilvus  # noqa: F401
    except ImportError:
        raise GalleryError("a Milvus gallery needs pymilvus: pip install 'reidkit[cluster]'") from None
    return milvus


def open_gallery(
    uri: str | os.PathLike[str],
    *,
    create: bool = True,
    read_only: bool = False,
    dim: int | None = None,
    index: str | IndexConfig | None = None,
    model: str | None = None,
    **options: Any,
) -> GalleryBackend:
    """The gallery at ``uri`` (see the module docstring for the forms), made if ``create`` and new.

    ``dim``, ``index`` and ``read_only`` mean what they mean for :meth:`Gallery.open`; ``model`` (Milvus) is
    kept with a new gallery and a different one is refused, like ``dim``. ``options`` go to the backend:
    ``ef_search``, ``nprobe`` for both; ``autosave`` for a folder; ``media``, ``consistency``, ``token`` for
    Milvus. GalleryError says what is wrong (no gallery, a width or model mismatch, pymilvus missing).
    Close the gallery (or use it in a ``with``) when done.
    """
    s = str(uri)
    if s.startswith("milvus://"):
        parts = urlsplit(s)
        opts = _options(parts.query)
        name = unquote(parts.path.strip("/"))
        if not parts.hostname or not name or "/" in name:
            raise GalleryError(f"a Milvus gallery URI is milvus://HOST:PORT/NAME, got {s!r}")
        token = options.pop("token", None) or os.environ.get("REIDKIT_MILVUS_TOKEN")
        if parts.username:
            token = unquote(parts.username) + (f":{unquote(parts.password)}" if parts.password else "")
        scheme = "https" if opts.get("secure", "") not in ("", "0", "false") else "http"
        port = parts.port or MILVUS_PORT
        server = f"{scheme}://{parts.hostname}:{port}"
        where = f"milvus://{parts.hostname}:{port}/{name}"
        return _milvus_module().MilvusGallery(
            server, name, token=token, where=where, **_common(opts, create, read_only, dim, index, model, options)
        )
    if s.startswith("milvus-lite://") or (s.endswith(".db") and "://" not in s):
        path, opts = s, {}
        if s.startswith("milvus-lite://"):
            parts = urlsplit(s)
            path, opts = unquote(parts.netloc + parts.path), _options(parts.query)
        if not path.endswith(".db"):
            raise GalleryError(f"a Milvus Lite gallery is a folder ending .db, got {s!r}")
        if Path(path).is_file():
            raise GalleryError(
                f"{path} is a file: a Milvus Lite gallery is a folder ending .db (for a folder gallery give the "
                "folder that holds gallery.db)"
            )
        if not Path(path).exists() and not (create and not read_only):
            msg = "is not a reidkit gallery (no such Milvus Lite folder); open it with create=True"
            raise GalleryError(f"{path} {msg}")
        Path(path).absolute().parent.mkdir(parents=True, exist_ok=True)
        name = opts.pop("name", None) or "gallery"
        return _milvus_module().MilvusGallery(
            str(Path(path).absolute()), name, **_common(opts, create, read_only, dim, index, model, options)
        )
    from reidkit.search.storage.gallery import Gallery

    for key in ("media", "consistency", "token"):
        if options.get(key) is not None:
            raise GalleryError(f"{key!r} is an option of Milvus galleries, not of the folder gallery {s}")
        options.pop(key, None)
    return Gallery.open(s, create=create, dim=dim, index=index, read_only=read_only, **options)


def _common(
    opts: dict[str, str],
    create: bool,
    read_only: bool,
    dim: int | None,
    index: str | IndexConfig | None,
    model: str | None,
    options: dict[str, Any],
) -> dict[str, Any]:
    kw: dict[str, Any] = {"create": create, "read_only": read_only, "dim": dim, "model": model}
    kw["index"] = index if index is not None else opts.get("index") or None
    if opts.get("media"):
        kw["media"] = opts["media"]
    if opts.get("consistency"):
        kw["consistency"] = opts["consistency"]
    kw.update({k: v for k, v in options.items() if v is not None})
    return kw
