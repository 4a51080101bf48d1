"""What ``reidkit eval`` and ``reidkit export`` run, as functions: the research path's counterpart of
:mod:`reidkit.search.api`. A command parses its options, calls one function here and prints.

* :func:`run_eval`: a features file, or a checkpoint's features of a dataset
  (:func:`reidkit.extract.extract_features`), evaluated (CMC, mAP, mINP), optionally re-ranked and
  re-ordered by a HOReID model's verifier (stage 2);
* :func:`export_model` and :func:`quantize_model`: a checkpoint to ONNX (parity checked), then INT8;
* :class:`DatasetKeypoints`: the body keypoints of a dataset, computed once into the content-keyed
  cache (build it, :meth:`~DatasetKeypoints.run` it, optionally write a contact sheet).

Bad input raises the library's own errors (DatasetError, FeatureFileError, ValueError,
FileNotFoundError, WeightsMismatchError, ImageError, ExportError, PoseError, KeypointCacheError), each
naming what is wrong.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from reidkit.evaluation import ApMode, EvalResult, Metric
from reidkit.io import FeatureSet

Stage2Sign = Literal["plus", "minus", "both"]


@dataclass
class EvalRun:
    """What :func:`run_eval` evaluated (``label``), its features, and per variant (``cosine``,
    ``cosine + re-ranking``, ``cosine + stage 2 (+prob, top 8)``...) the figures and the seconds taken.
    ``extracted``: ``(ModelInfo, ExtractStats)`` when the features came from a checkpoint."""

    label: str
    features: FeatureSet
    results: dict[str, EvalResult] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    extracted: tuple[Any, Any] | None = None

    @property
    def title(self) -> str:
        return f"{self.label}: {len(self.features.qf)} queries x {len(self.features.gf)} gallery"

    def timed(self, name: str, evaluate: Callable[..., EvalResult], *args: Any) -> None:
        """Add the variant ``name``: ``evaluate(*args)``, timed."""
        t0 = time.perf_counter()
        self.results[name] = evaluate(*args)
        self.seconds[name] = time.perf_counter() - t0


def stage2_verifier(model: str | None, weights: str | os.PathLike[str]) -> Callable[[Any, Any], Any]:
    """The pairwise verifier of a HOReID checkpoint (head=horeid, topology on), for
    :func:`reidkit.evaluation.verify.rescore_top_k`; ValueError for any other model."""
    from reidkit.evaluation.verify import model_verifier
    from reidkit.models.horeid import K
    from reidkit.models.zoo import load_model

    net, _ = load_model(model, weights)
    if not hasattr(net, "verify") or getattr(net, "topology", None) is None:
        raise ValueError(f"--stage2: {weights} is not a HOReID model with a verifier (head=horeid, topology on)")
    return model_verifier(net, K)


def run_eval(
    features: str | os.PathLike[str] | None = None,
    *,
    model: str | None = None,
    weights: str | os.PathLike[str] | None = None,
    dataset: str = "market1501",
    root: str | os.PathLike[str] | None = None,
    metric: Metric = "cosine",
    ap: ApMode = "standard",
    rerank: bool = False,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    stage2: int = 0,
    stage2_sign: Stage2Sign = "plus",
    **extract_options: Any,
) -> EvalRun:
    """Evaluate a features file (``features``), or else the features of ``dataset`` by the checkpoint
    ``model`` / ``weights`` (``extract_options`` go to :func:`reidkit.extract.extract_features`: backend,
    flip, batch_size, resize, raw, holdout, progress, ...).

    Variants: ``metric``; with ``rerank`` also k-reciprocal re-ranking (``k1``, ``k2``, ``lambda_value``);
    with ``stage2 = K`` each query's top K re-ordered by the HOReID verifier of ``weights`` (loaded first,
    so a model without one fails before any extraction), adding ``+prob`` and/or ``-prob``.
    """
    from reidkit.evaluation import evaluate_features, pairwise_distance
    from reidkit.extract import extract_features
    from reidkit.io import load_features

    if stage2 and weights is None:
        raise ValueError("--stage2 needs the HOReID model: --weights FILE")
    verify = stage2_verifier(model, weights) if stage2 and weights is not None else None
    if features is not None:
        run = EvalRun(Path(features).name, load_features(features))
    else:
        fs, info, stats = extract_features(model, weights, dataset, root, **extract_options)
        crowd = ", the trained ids as distractors" if extract_options.get("distractors") else ""
        held = f" (held-out {extract_options['holdout']} training ids{crowd})" if extract_options.get("holdout") else ""
        name = model or (Path(weights).name if weights else "default model")
        run = EvalRun(f"{name} on {dataset}{held}", fs, extracted=(info, stats))
    fs = run.features
    variants = {metric: False, f"{metric} + re-ranking": True} if rerank else {metric: False}
    for name, rr in variants.items():
        run.timed(name, evaluate_features, fs, metric, rr, ap, k1, k2, lambda_value)
    if verify is not None:
        dist = pairwise_distance(fs.qf, fs.gf, metric)
        for sign, s in (("plus", 1.0), ("minus", -1.0)):
            if stage2_sign in (sign, "both"):
                name = f"{metric} + stage 2 ({'+' if s > 0 else '-'}prob, top {stage2})"
                run.timed(name, _rescored, dist, fs, verify, stage2, s, ap)
    return run


def _rescored(
    dist: Any, fs: FeatureSet, verify: Callable[[Any, Any], Any], k: int, sign: float, ap: ApMode
) -> EvalResult:
    """The figures once each query's top ``k`` is re-ordered by ``verify`` (stage 2)."""
    from reidkit.evaluation import evaluate
    from reidkit.evaluation.verify import rescore_top_k

    d2 = rescore_top_k(dist, fs.qf, fs.gf, verify, k=k, sign=sign)
    return evaluate(d2, fs.q_pids, fs.g_pids, fs.q_camids, fs.g_camids, ap=ap)


def export_model(
    onnx: str | os.PathLike[str],
    model: str | None = None,
    weights: str | os.PathLike[str] | None = None,
    *,
    exporter: Literal["dynamo", "torchscript"] = "dynamo",
    opset: int | None = None,
    check_images: Sequence[Path] | None = None,
) -> tuple[Any, Any]:
    """``(ModelInfo, ExportReport)``: the checkpoint exported to ``onnx`` at its input size, written only
    once ONNX Runtime reproduces torch on ``check_images`` (default: random input)."""
    from reidkit.export import export_onnx
    from reidkit.models.zoo import load_model

    for p in check_images or []:
        if not Path(p).is_file():
            raise FileNotFoundError(f"{p}: no such image file")
    net, info = load_model(model, weights)
    rep = export_onnx(
        net, onnx, height=info.height, width=info.width, opset=opset, exporter=exporter, check_images=check_images
    )
    return info, rep


def quantize_model(
    onnx: str | os.PathLike[str],
    int8: str | os.PathLike[str],
    info: Any,
    calibration: str = "market1501",
    root: str | os.PathLike[str] | None = None,
    float_convs: int = 0,
) -> Any:
    """Static INT8 of an exported model (:class:`reidkit.export.QuantizeReport`), calibrated on 256
    training images of the dataset ``calibration``, spread over its split; the first ``float_convs``
    convolutions stay in float."""
    from reidkit.datasets import get_dataset
    from reidkit.export import quantize_int8

    train = get_dataset(calibration, root).train
    calib = [s.path for s in train[:: max(1, len(train) // 256)]][:256]
    return quantize_int8(onnx, int8, calib, height=info.height, width=info.width, float_convs=float_convs)


# --- body keypoints of a dataset (HOReID) ---------------------------------------------------------------
SPLITS = ("train", "query", "gallery")


@dataclass
class KeypointsDone:
    """What :meth:`DatasetKeypoints.run` did: images, how many computed (the rest came from the cache)
    and in how long, the mean keypoint score, and the cache file."""

    images: int
    computed: int
    seconds: float
    mean_score: float
    cache: Path

    @property
    def images_per_s(self) -> float:
        return self.computed / self.seconds if self.computed else 0.0


class DatasetKeypoints:
    """The images of a dataset's ``splits`` (each once), the pose model and the keypoint cache.

    ``cache`` defaults to ``<cache>/keypoints/<pose model>.sqlite``; ``pose_model`` to the installed
    MoveNet Lightning. Raises DatasetError / KeyError / ValueError (dataset or splits), PoseError,
    KeypointCacheError.
    """

    def __init__(
        self,
        dataset: str,
        root: str | os.PathLike[str] | None = None,
        *,
        splits: Sequence[str] = SPLITS,
        cache: str | os.PathLike[str] | None = None,
        pose_model: str | os.PathLike[str] | None = None,
    ) -> None:
        from reidkit.datasets import get_dataset
        from reidkit.pose.cache import KeypointCache, default_cache_path
        from reidkit.pose.movenet import MoveNet

        bad = sorted(set(splits) - set(SPLITS))
        if bad:
            raise ValueError(f"splits must be among {', '.join(SPLITS)}, got {', '.join(bad)}")
        ds = get_dataset(dataset, root)
        self.name = ds.name
        self.splits = list(splits)
        self.pose = MoveNet(pose_model)
        self.cache = KeypointCache(cache or default_cache_path(self.pose.id), self.pose.id)
        self.paths = list(dict.fromkeys(str(s.path) for sp in self.splits for s in getattr(ds, sp)))
        self.keypoints: Any = None

    def run(self, workers: int = 2, on_batch: Callable[[int, int], None] | None = None) -> KeypointsDone:
        """Keypoints of every image (``workers`` in flight, one interpreter each), cached ones read;
        ``on_batch(done, computed)`` reports progress. Closes the cache. Raises ImageError,
        KeypointCacheError, PoseError."""
        from reidkit.pose.cache import keypoints_for

        before = len(self.cache)
        t0 = time.perf_counter()
        try:
            self.keypoints, _ = keypoints_for(self.paths, self.pose, self.cache, workers=workers, on_batch=on_batch)
            computed = len(self.cache) - before
        finally:
            self.cache.close()
        seconds = time.perf_counter() - t0
        return KeypointsDone(len(self.paths), computed, seconds, float(self.keypoints[:, :, 2].mean()), self.cache.path)

    def sheet(self, out: str | os.PathLike[str], count: int = 40) -> list[str]:
        """Write a contact sheet of ``count`` crops spread over the dataset (many identities), with their
        keypoints drawn (after :meth:`run`); returns the crops drawn."""
        from reidkit.pose.sheet import keypoint_sheet

        if self.keypoints is None:
            raise ValueError("no keypoints yet: run() first")
        idx = {p: i for i, p in enumerate(self.paths)}
        sub = self.paths[:: max(1, len(self.paths) // count)][:count]
        keypoint_sheet(sub, self.keypoints[[idx[p] for p in sub]], out)
        return sub
