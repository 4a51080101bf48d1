"""Evaluation: distances, CMC/mAP/mINP and k-reciprocal re-ranking. Knows nothing of models."""

from __future__ import annotations

from typing import Any

import numpy as np

from reidkit.evaluation.distance import Metric, l2_normalize, pairwise_distance
from reidkit.evaluation.metrics import ApMode, EvalResult, combine_results, evaluate
from reidkit.evaluation.rerank import rerank, rerank_blocks
from reidkit.io import FeatureSet

__all__ = [
    "ApMode",
    "EvalResult",
    "Metric",
    "combine_results",
    "evaluate",
    "evaluate_features",
    "evaluate_reranked",
    "l2_normalize",
    "pairwise_distance",
    "rerank",
    "rerank_blocks",
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
        ids = (fs.q_pids, fs.g_pids, fs.q_camids, fs.g_camids)
        return evaluate_reranked(qf, gf, *ids, k1=k1, k2=k2, lambda_value=lambda_value, ap=ap)
    dist = pairwise_distance(fs.qf, fs.gf, metric)
    return evaluate(dist, fs.q_pids, fs.g_pids, fs.q_camids, fs.g_camids, ap=ap)


def evaluate_reranked(
    qf: Any,
    gf: Any,
    q_pids: Any,
    g_pids: Any,
    q_camids: Any,
    g_camids: Any,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    ap: ApMode = "standard",
    rows: int = 512,
) -> EvalResult:
    """:func:`evaluate` of the k-reciprocal re-ranked distances, a block of ``rows`` queries at a time
    (:func:`rerank_blocks`): the same figures as evaluating :func:`rerank`'s whole matrix, in memory
    that does not grow with Q x G."""
    qp, qc = np.asarray(q_pids), np.asarray(q_camids)
    parts = [
        evaluate(block, qp[s : s + len(block)], g_pids, qc[s : s + len(block)], g_camids, ap=ap, allow_empty=True)
        for s, block in rerank_blocks(qf, gf, k1=k1, k2=k2, lambda_value=lambda_value, rows=rows)
    ]
    return combine_results(parts)
