"""The search service (``reidkit serve``): HTTP API and web page over one gallery; see :mod:`reidkit.service.app`."""

from reidkit.service.app import create_app

__all__ = ["create_app"]
