"""The match threshold of person search: calibrated per model on Market-1501's training split.

A detection matches a query when their cosine similarity is at least the model's threshold. How it
is chosen (:func:`calibrate`):

* Embed the images of ``n_ids`` identities (default 300, drawn with a fixed seed) of the
  **training** split, never the test split.
* Take every **cross-camera** pair of them (i < j, different cameras): same identity = positive,
  different identity = negative. Search is about finding a person on *other* cameras, and
  same-camera pairs are easier and near-duplicate.
* Choose the threshold that **maximises F1** of "similarity >= threshold" on those pairs
  (``method="f1"``; on a plateau of equal F1, its middle). F1 weighs the pairs at their natural
  ratio, about one positive per ``n_ids`` negatives, like a query among a gallery of a few hundred
  people. ``method="precision"`` instead takes the lowest threshold whose precision reaches
  ``target_precision`` (most recall at that precision).
* Record precision, recall, F1 and the false-positive rate there, plus the same figures on the
  **test** split (query x gallery cross-camera pairs, junk excluded, distractors as negatives) as a
  check. Precision depends on how many other people a gallery holds: bigger crowds, lower precision
  at the same threshold; recall and false-positive rate do not.

Caveat, measured: a model trained on Market-1501 has *seen* its training split, so same-id pairs look
more alike and different-id pairs less alike there than on unseen people. The training-split
threshold then comes out a little low and the figures optimistic; e.g. the shipped default model:
threshold 0.416, precision/recall 0.93/0.94 on train, 0.52/0.63 on test (whose own max-F1 threshold
is 0.447; test also has ~3.8x more negatives per positive). The test figures are the honest ones.

Similarities are counted in a fine histogram (``BINS`` bins over [-1, 1], 1e-4 wide), so any
number of pairs fits in constant memory and thresholds are bin edges.

The result is a JSON file, ``calibration_<weights file stem>.json``; :func:`threshold_for` finds it
in the model metadata (``ModelInfo.meta["calibration"]``), next to the weights file, or in
``reidkit/models/pretrained/``, and otherwise falls back to :data:`DEFAULT_THRESHOLD`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

log = logging.getLogger(__name__)

FORMAT = "reidkit-calibration/1"
BINS = 20_000
# Used when a model has no calibration file: the shipped default model's calibrated threshold (0.416 on
# Market-1501 train, max F1; 0.447 would be best on test), rounded, since `reidkit train` models (BNNeck
# features, different-id cosine ~0) are alike. Thresholds are model-specific: torchreid's osnet_x0_25
# (ReLU features, different-id cosine ~0.33) calibrates at 0.684. Calibrate every other model.
DEFAULT_THRESHOLD = 0.45
Method = Literal["f1", "precision"]


def _edges() -> np.ndarray:
    return np.linspace(-1.0, 1.0, BINS + 1)


def _bin(sims: np.ndarray) -> np.ndarray:
    """Bin index of each similarity: bin i holds [edge_i, edge_i+1)."""
    idx = np.floor((np.asarray(sims, dtype=np.float64) + 1.0) * (BINS / 2.0)).astype(np.int64)
    return np.clip(idx, 0, BINS - 1)


@dataclass
class PairStats:
    """Histograms of the cosine similarities of positive and negative pairs."""

    pos: np.ndarray
    neg: np.ndarray

    @classmethod
    def empty(cls) -> PairStats:
        return cls(np.zeros(BINS, np.int64), np.zeros(BINS, np.int64))

    @classmethod
    def from_scores(cls, pos: np.ndarray, neg: np.ndarray) -> PairStats:
        s = cls.empty()
        s.add(pos, neg)
        return s

    def add(self, pos: np.ndarray, neg: np.ndarray) -> None:
        self.pos += np.bincount(_bin(np.ravel(pos)), minlength=BINS)
        self.neg += np.bincount(_bin(np.ravel(neg)), minlength=BINS)

    @property
    def n_pos(self) -> int:
        return int(self.pos.sum())

    @property
    def n_neg(self) -> int:
        return int(self.neg.sum())

    def curve(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per bin edge t: (t, precision, recall, f1, false-positive rate) of "similarity >= t"."""
        tp = np.cumsum(self.pos[::-1])[::-1].astype(np.float64)
        fp = np.cumsum(self.neg[::-1])[::-1].astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = np.where(tp + fp > 0, tp / (tp + fp), 1.0)
            recall = tp / max(self.n_pos, 1)
            f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
            fpr = fp / max(self.n_neg, 1)
        return _edges()[:-1], precision, recall, f1, fpr

    def at(self, threshold: float) -> dict[str, float | int]:
        """Precision, recall, F1 and false-positive rate of "similarity >= threshold"."""
        i = int(np.clip(math.ceil((threshold + 1.0) * (BINS / 2.0) - 1e-9), 0, BINS))
        tp, fp = int(self.pos[i:].sum()), int(self.neg[i:].sum())
        precision = tp / (tp + fp) if tp + fp else 1.0
        recall = tp / self.n_pos if self.n_pos else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return {
            "threshold": float(threshold),
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "fpr": fp / self.n_neg if self.n_neg else 0.0,
            "tp": tp,
            "fp": fp,
            "fn": self.n_pos - tp,
            "n_pos": self.n_pos,
            "n_neg": self.n_neg,
        }

    def choose(self, method: Method = "f1", target_precision: float = 0.9) -> float:
        """The threshold by ``method`` (see the module docstring), a bin edge."""
        if self.n_pos == 0 or self.n_neg == 0:
            raise ValueError(f"need positive and negative pairs, got {self.n_pos} and {self.n_neg}")
        edges, precision, recall, f1, _ = self.curve()
        if method == "f1":
            top = f1.max()
            i = int(np.argmax(f1))
            j = i
            while j + 1 < BINS and f1[j + 1] >= top - 1e-12:
                j += 1
            return float(edges[(i + j) // 2])
        if method == "precision":
            ok = np.flatnonzero((precision >= target_precision) & (recall > 0))
            if len(ok) == 0:
                raise ValueError(f"no threshold reaches precision {target_precision} (best {precision.max():.3f})")
            return float(edges[ok[0]])
        raise ValueError(f"method must be 'f1' or 'precision', got {method!r}")

    def summary(self) -> dict[str, dict[str, float]]:
        """Mean, standard deviation and percentiles of each distribution (from the histogram)."""
        centres = _edges()[:-1] + 1.0 / BINS
        out = {}
        for name, h in (("positive", self.pos), ("negative", self.neg)):
            n = h.sum()
            if n == 0:
                continue
            mean = float((h * centres).sum() / n)
            std = float(math.sqrt(max((h * (centres - mean) ** 2).sum() / n, 0.0)))
            cdf = np.cumsum(h) / n
            pct = {f"p{p}": float(centres[min(int(np.searchsorted(cdf, p / 100)), BINS - 1)]) for p in (5, 50, 95)}
            out[name] = {"mean": mean, "std": std, **pct}
        return out

    def table(self, step: float = 0.05) -> list[dict[str, float]]:
        """Precision / recall / F1 every ``step`` of threshold from 0 to 1 (for the JSON record)."""
        rows = []
        for t in np.arange(0.0, 1.0 + 1e-9, step):
            r = self.at(float(round(t, 6)))
            rows.append({k: round(float(r[k]), 5) for k in ("threshold", "precision", "recall", "f1", "fpr")})
        return rows


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def pair_stats(feats: np.ndarray, pids: Sequence[int], cams: Sequence[int], chunk: int = 1024) -> PairStats:
    """Cross-camera pairs (i < j) within one set: same pid positive, different pid negative."""
    f = _unit(feats)
    p, c = np.asarray(pids), np.asarray(cams)
    stats = PairStats.empty()
    n = len(f)
    for s in range(0, n, chunk):
        e = min(s + chunk, n)
        sims = f[s:e] @ f.T
        upper = np.arange(n)[None, :] > np.arange(s, e)[:, None]
        cross = upper & (c[s:e, None] != c[None, :])
        same = p[s:e, None] == p[None, :]
        stats.add(sims[cross & same], sims[cross & ~same])
    return stats


def cross_pair_stats(
    qf: np.ndarray,
    q_pids: Sequence[int],
    q_cams: Sequence[int],
    gf: np.ndarray,
    g_pids: Sequence[int],
    g_cams: Sequence[int],
    chunk: int = 256,
    distractor_pid: int | None = 0,
) -> PairStats:
    """Query x gallery cross-camera pairs; junk (pid -1) left out; distractors (Market's pid 0, all
    different people) only ever negatives."""
    q, g = _unit(qf), _unit(gf)
    qp, qc, gp, gc = (np.asarray(a) for a in (q_pids, q_cams, g_pids, g_cams))
    keep = gp != -1
    g, gp, gc = g[keep], gp[keep], gc[keep]
    stats = PairStats.empty()
    for s in range(0, len(q), chunk):
        e = min(s + chunk, len(q))
        sims = q[s:e] @ g.T
        cross = (qc[s:e, None] != gc[None, :]) & (qp[s:e, None] != -1)
        same = qp[s:e, None] == gp[None, :]
        if distractor_pid is not None:
            same &= qp[s:e, None] != distractor_pid
        stats.add(sims[cross & same], sims[cross & ~same])
    return stats


def _sample_ids(samples: Sequence[Any], n_ids: int | None, seed: int) -> list[Any]:
    pids = sorted({s.pid for s in samples})
    if n_ids is not None and n_ids < len(pids):
        rng = np.random.default_rng(seed)
        chosen = set(rng.choice(pids, size=n_ids, replace=False).tolist())
        return [s for s in samples if s.pid in chosen]
    return list(samples)


def calibrate(
    embedder: Any,
    dataset: str = "market1501",
    *,
    root: str | os.PathLike[str] | None = None,
    n_ids: int | None = 300,
    seed: int = 0,
    method: Method = "f1",
    target_precision: float = 0.9,
    test: bool = True,
    model_info: Any = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Calibrate the match threshold of ``embedder`` on ``dataset``'s training split (see module doc).

    Returns the JSON-ready record (:func:`save_calibration` writes it). ``test=True`` also embeds the
    test split (query + gallery) and reports precision/recall of the threshold there.
    """
    from reidkit import __version__
    from reidkit.datasets import get_dataset

    ds = get_dataset(dataset, root)
    train = _sample_ids(ds.train, n_ids, seed)
    t0 = time.perf_counter()
    feats = embedder.embed([s.path for s in train], progress=progress)
    stats = pair_stats(feats, [s.pid for s in train], [s.camid for s in train])
    threshold = stats.choose(method, target_precision)
    source = str(getattr(model_info, "source", "") or "")
    record: dict[str, Any] = {
        "format": FORMAT,
        "model": getattr(model_info, "name", None),
        "weights": Path(source).name if source else None,
        "feat_dim": int(feats.shape[1]),
        "dataset": ds.name,
        "split": "train",
        "n_ids": len({s.pid for s in train}),
        "n_images": len(train),
        "seed": seed,
        "pairs": "cross-camera (i < j), same id = positive",
        "method": "max_f1" if method == "f1" else f"lowest threshold with precision >= {target_precision}",
        "threshold": round(threshold, 4),
        "train": _rounded(stats.at(threshold)),
        "distributions": _rounded(stats.summary()),
        "curve": stats.table(),
        "seconds": round(time.perf_counter() - t0, 1),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "reidkit": __version__,
    }
    if test:
        g = [s for s in ds.gallery if s.pid != -1]
        f = embedder.embed([s.path for s in [*ds.query, *g]], progress=progress)
        nq = len(ds.query)
        ts = cross_pair_stats(
            f[:nq],
            [s.pid for s in ds.query],
            [s.camid for s in ds.query],
            f[nq:],
            [s.pid for s in g],
            [s.camid for s in g],
        )
        record["test"] = {"split": "query x gallery (cross-camera, junk excluded)", **_rounded(ts.at(threshold))}
        record["test"]["max_f1_threshold"] = round(ts.choose("f1"), 4)
        record["seconds"] = round(time.perf_counter() - t0, 1)
    return record


def _rounded(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _rounded(v) for k, v in d.items()}
    return round(d, 5) if isinstance(d, float) else d


def save_calibration(path: str | os.PathLike[str], record: dict[str, Any]) -> Path:
    """Write a calibration record as JSON, atomically."""
    from reidkit.io import write_json

    write_json(path, record)
    return Path(path)


def load_calibration(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check a calibration file (ValueError naming the file if it is not one)."""
    p = Path(path)
    try:
        record = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{p}: not a readable calibration file ({exc})") from None
    if not isinstance(record, dict) or not isinstance(record.get("threshold"), int | float):
        raise ValueError(f"{p}: not a reidkit calibration file (no numeric 'threshold')")
    if not -1.0 <= float(record["threshold"]) <= 1.0:
        raise ValueError(f"{p}: threshold {record['threshold']} is not a cosine similarity in [-1, 1]")
    return record


def calibration_file_name(weights: str | os.PathLike[str]) -> str:
    """``calibration_<weights file stem>.json``: the name :func:`threshold_for` looks for."""
    return f"calibration_{Path(weights).stem}.json"


def find_calibration(model_info: Any) -> tuple[dict[str, Any] | None, str]:
    """The calibration record of a model, and where it came from; ``(None, reason)`` if none.

    Looked for in ``model_info.meta["calibration"]``, then as ``calibration_<weights stem>.json`` and
    ``calibration_<model name>.json`` beside the weights file and in ``reidkit/models/pretrained/``.
    A file found by model name must record the same weights file name (or none).
    """
    if model_info is None:
        return None, "no model given"
    meta = getattr(model_info, "meta", None) or {}
    cal = meta.get("calibration") if isinstance(meta, dict) else None
    if isinstance(cal, dict) and isinstance(cal.get("threshold"), int | float):
        return cal, "model metadata"
    source = str(getattr(model_info, "source", "") or "")
    name = getattr(model_info, "name", None)
    weights = Path(source) if source else None
    folders = [weights.parent] if weights is not None else []
    folders.append(Path(__file__).resolve().parents[1] / "models" / "pretrained")
    for folder in folders:
        names = [(calibration_file_name(weights), True)] if weights is not None else []
        if name:
            names.append((f"calibration_{name}.json", False))
        for fname, by_weights in names:
            path = folder / fname
            if not path.is_file():
                continue
            try:
                record = load_calibration(path)
            except ValueError as exc:
                log.warning("%s; ignoring it", exc)
                continue
            recorded = record.get("weights")
            if not by_weights and weights is not None and recorded and recorded != weights.name:
                log.info("%s was calibrated for %s, not %s; ignoring it", path, recorded, weights.name)
                continue
            return record, str(path)
    return None, "no calibration file found"


def threshold_for(model_info: Any = None) -> tuple[float, str]:
    """The match threshold for a model and where it came from (:data:`DEFAULT_THRESHOLD` if uncalibrated)."""
    record, where = find_calibration(model_info)
    if record is None:
        return DEFAULT_THRESHOLD, f"default ({where})"
    return float(record["threshold"]), f"calibrated ({where})"


def load_threshold(model_info: Any = None) -> float:
    """The calibrated match threshold of a model, or :data:`DEFAULT_THRESHOLD`."""
    return threshold_for(model_info)[0]
