"""reidkit: person re-identification — datasets, training, evaluation and multi-camera search."""

__version__ = "0.1.0"
