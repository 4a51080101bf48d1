"""Evaluation: distances, CMC/mAP/mINP and k-reciprocal re-ranking. Knows nothing of models."""

from __future__ import annotations

from reidkit.evaluation.distance import Metric, l2_normalize, pairwise_distance
from reidkit.evaluation.metrics import ApMode, EvalResult, evaluate
from reidkit.evaluation.rerank import rerank
from reidkit.io import FeatureSet

__all__ = [
    "ApMode",
    "EvalResult",
    "Metric",
    "evaluate",
    "evaluate_features",
    "l2_normalize",
    "pairwise_distance",
    "rerank",
]


def evaluate_features(
    fs: FeatureSet,
    metric: Metric = "cosine",
    rerank_: bool = False,
    ap: ApMode = "standard",
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
) -> EvalResult:
    """Distances (or re-ranked distances) between a feature set's query and gallery, evaluated.

    Re-ranking uses squared Euclidean distances between L2-normalised features for ``cosine`` (the
    same ranking) and between the raw features for ``euclidean``.
    """
    if rerank_:
        qf, gf = (fs.qf, fs.gf) if metric == "euclidean" else (l2_normalize(fs.qf), l2_normalize(fs.gf))
        dist = rerank(qf, gf, k1=k1, k2=k2, lambda_value=lambda_value)
    else:
        dist = pairwise_distance(fs.qf, fs.gf, metric)
    return evaluate(dist, fs.q_pids, fs.g_pids, fs.q_camids, fs.g_camids, ap=ap)
