"""Multi-camera person search, laid out as its pipeline (see ARCHITECTURE.md):

* :mod:`reidkit.search.storage`: the gallery (metadata + vector index behind one interface) and its media;
* :mod:`reidkit.search.ingest`: sources -> detect -> track -> crops -> embed -> storage;
* :mod:`reidkit.search.query`: person search, calibration, clustering, reports;
* :mod:`reidkit.search.api`: the application API that the CLI and the HTTP service call.
"""
