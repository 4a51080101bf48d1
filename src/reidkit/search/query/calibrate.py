"""The match rule of person search, calibrated per model on Market-1501's training split.

A gallery detection matches a query when **both**

* its cosine similarity to the query is at least the model's ``threshold``, and
* it **stands out from the crowd**: its similarity, standardised by the query's similarities to a
  random reference sample of the gallery (``z = (s - median) / spread``, spread = 1.4826 x median
  absolute deviation, :data:`REFERENCE` detections, almost all of other people; see
  :func:`reference_stats`), is at least the model's ``z_threshold``.

Why the second test: absolute similarities shift with the footage. On Market-1501 the shipped model
gives different people a cosine of 0.01 +- 0.09; on OpenCV's ``vtest.avi`` (small, blurred people
seen from above) the median similarity between two different tracks is 0.44, above the Market
threshold, so a cosine threshold alone matched 146 of the 242 other detections for the demo's query
there. A match has to be an outlier among the gallery's similarities to the query, whatever their
level; on that footage nothing is (best z 2.1-2.5 for the tracks tried), and that is the honest
answer. On Market-1501 itself the two tests together are also better than either (shipped model,
test split, cross-camera pairs, thresholds from the training split; `reidkit calibrate`): cosine
alone precision 0.523 / recall 0.635 (F1 0.574), z alone 0.534 / 0.618 (0.573), both 0.589 / 0.592
(0.591). Galleries smaller than
:data:`MIN_REFERENCE` detections have no reliable crowd and use the cosine test only.

A third score covers galleries of a few people in one scene: the **relative similarity** ``r = (s - median) /
(1 - median)``, how far a similarity lies from the crowd's median towards 1 (an identical picture). A
calibration with an ``r_threshold`` (max F1, like the others) makes the rule ``cosine >= threshold and (z >=
z_threshold or r >= r_threshold)``. Why: z divides by the crowd's spread, and in a gallery of some 20 people
from one camera that spread comes from a handful of people, so z cannot get high: on issue 22's campus
pictures (110 detections, distilled OSNet) the crowd's median was 0.63 and spread 0.089, so even the query's
own crop (cosine 0.97) reached only z 3.9 and the woman's other detections z 1.5-3.6, against a calibrated z
of 4.5, while their r was 0.59-0.92 (one poor crop: 0.37) and everyone else's at most 0.31. Search lets r
count only where an identical picture could pass the z test, ``(1 - median) / spread >= z_threshold``: on
vtest.avi the distilled OSNet's crowd has median 0.80 and spread 0.10, nothing could reach z 1.9, and r alone
matched the upper half of the crowd. (Calibration does not apply that gate: on Market-1501's test split it is
open for every query, whose (1 - median) / spread is 6.0 or more, median 7.8, with the distilled OSNet.) On
Market-1501's test split (the first, 24-epoch distilled OSNet, thresholds from its training split) r alone has
F1 0.599 where z alone has 0.516 and cosine alone 0.571; the rule with both tests 0.601 (recall 0.728), with
the z test alone 0.611 (recall 0.631). The shipped default's figures: BENCHMARKS.md, "match_rule_parts".

The z threshold depends on how many other people a query meets. Max F1 on the calibration's pairs
fits a crowd of a few thousand images per query; in a gallery of a few hundred detections the same z
threshold gives up recall to keep out false matches that are not there. So a calibration also records
``z_by_gallery``, the max-F1 z threshold with the negatives counted at a gallery's size
(:func:`z_by_gallery`), and search uses the one for its gallery's size (:meth:`Thresholds.z_for`).
On Market-1501's test split (unseen people) the max-F1 z for a gallery of 138 detections was 3.18 where
the training split says 3.50 (distilled OSNet): a model's own training identities look more alike to it,
so calibrate on held-out identities where there are some (``reidkit calibrate --holdout N``).

How the thresholds are chosen (:func:`calibrate`):

* Embed the images of ``n_ids`` identities (default 300, drawn with a fixed seed) of the
  **training** split, never the test split; the z reference is a random sample of those images.
* Take every **cross-camera** pair of them (i < j, different cameras): same identity = positive,
  different identity = negative. Search is about finding a person on *other* cameras, and
  same-camera pairs are easier and near-duplicate.
* Choose each threshold on its own to **maximise F1** of "score >= threshold" on those pairs
  (``method="f1"``; on a plateau of equal F1, its middle). F1 weighs the pairs at their natural
  ratio, about one positive per ``n_ids`` negatives, like a query among a gallery of a few hundred
  people. ``method="precision"`` instead takes the lowest threshold whose precision reaches
  ``target_precision`` (most recall at that precision).
* Record precision, recall, F1 and the false-positive rate of each test and of both together, on the
  training pairs and, as a check, on the **test** split (query x gallery cross-camera pairs, junk
  excluded, distractors as negatives; z reference from the test gallery). Precision depends on how
  many other people a gallery holds: bigger crowds, lower precision at the same threshold.

Caveat, measured: a model trained on Market-1501 has *seen* its training split, so same-id pairs look
more alike and different-id pairs less alike there than on unseen people. The training-split
figures are optimistic (shipped model, cosine test: precision/recall 0.93/0.94 on train, 0.52/0.63
on test, whose own max-F1 cosine threshold is 0.447 rather than 0.416; test also has ~3.8x more
negatives per positive). The test figures are the honest ones.

Scores are counted in fine histograms (``BINS`` bins; cosine over [-1, 1], z over ``Z_RANGE``), so
any number of pairs fits in constant memory and thresholds are bin edges.

The result is a JSON file, ``calibration_<weights file stem>.json``; :func:`thresholds_for` finds it
in the model metadata (``ModelInfo.meta["calibration"]``), next to the weights file, or in
``reidkit/models/pretrained/``, and otherwise falls back to :data:`DEFAULT_THRESHOLD` and
:data:`DEFAULT_Z_THRESHOLD`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np

log = logging.getLogger(__name__)

FORMAT = "reidkit-calibration/2"
BINS = 20_000
COS_RANGE = (-1.0, 1.0)
Z_RANGE = (-10.0, 30.0)
R_RANGE = (-4.0, 1.0)  # relative similarity r = (cosine - median) / (1 - median): at most 1 (an identical picture)
REFERENCE = 1000  # gallery detections sampled to standardise a query's similarities
MIN_REFERENCE = 100  # smaller galleries: cosine test only
# Gallery sizes (detections) at which a calibration records its z threshold for max F1 (z_by_gallery).
GALLERY_SIZES = (100, 150, 200, 300, 500, 700, 1000, 1500, 2000, 3000, 5000, 10000)
# Used when a model has no calibration file: the shipped default model's calibrated threshold (0.416 on
# Market-1501 train, max F1; 0.447 would be best on test), rounded, since `reidkit train` models (BNNeck
# features, different-id cosine ~0) are alike. Cosine thresholds are model-specific: torchreid's
# osnet_x0_25 (ReLU features, different-id cosine ~0.33) calibrates at 0.684. Calibrate every other model.
DEFAULT_THRESHOLD = 0.45
# The shipped model calibrates at z 4.55 (Market-1501 train, max F1; 4.78 would be best on test). Unlike
# cosine, z is already relative to the model's own spread of similarities, so it carries over better.
DEFAULT_Z_THRESHOLD = 4.5
Method = Literal["f1", "precision"]


@dataclass
class PairStats:
    """Histograms of the scores (cosine similarities, or z) of positive and negative pairs."""

    pos: np.ndarray
    neg: np.ndarray
    lo: float = COS_RANGE[0]
    hi: float = COS_RANGE[1]

    @classmethod
    def empty(cls, lo: float = COS_RANGE[0], hi: float = COS_RANGE[1]) -> PairStats:
        return cls(np.zeros(BINS, np.int64), np.zeros(BINS, np.int64), lo, hi)

    @classmethod
    def from_scores(
        cls, pos: np.ndarray, neg: np.ndarray, lo: float = COS_RANGE[0], hi: float = COS_RANGE[1]
    ) -> PairStats:
        s = cls.empty(lo, hi)
        s.add(pos, neg)
        return s

    @property
    def width(self) -> float:
        return (self.hi - self.lo) / BINS

    def edges(self) -> np.ndarray:
        return np.linspace(self.lo, self.hi, BINS + 1)

    def _bin(self, scores: np.ndarray) -> np.ndarray:
        """Bin index of each score: bin i holds [edge_i, edge_i+1) (outside the range: the end bins)."""
        idx = np.floor((np.asarray(scores, dtype=np.float64) - self.lo) / self.width).astype(np.int64)
        return np.clip(idx, 0, BINS - 1)

    def add(self, pos: np.ndarray, neg: np.ndarray) -> None:
        self.pos += np.bincount(self._bin(np.ravel(pos)), minlength=BINS)
        self.neg += np.bincount(self._bin(np.ravel(neg)), minlength=BINS)

    @property
    def n_pos(self) -> int:
        return int(self.pos.sum())

    @property
    def n_neg(self) -> int:
        return int(self.neg.sum())

    def curve(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per bin edge t: (t, precision, recall, f1, false-positive rate) of "score >= t"."""
        tp = np.cumsum(self.pos[::-1])[::-1].astype(np.float64)
        fp = np.cumsum(self.neg[::-1])[::-1].astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = np.where(tp + fp > 0, tp / (tp + fp), 1.0)
            recall = tp / max(self.n_pos, 1)
            f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
            fpr = fp / max(self.n_neg, 1)
        return self.edges()[:-1], precision, recall, f1, fpr

    def at(self, threshold: float) -> dict[str, float | int]:
        """Precision, recall, F1 and false-positive rate of "score >= threshold"."""
        i = int(np.clip(math.ceil((threshold - self.lo) / self.width - 1e-6), 0, BINS))
        return _counts(int(self.pos[i:].sum()), int(self.neg[i:].sum()), self.n_pos, self.n_neg, threshold)

    def choose(self, method: Method = "f1", target_precision: float = 0.9, neg_weight: float = 1.0) -> float:
        """The threshold by ``method`` (see the module docstring), a bin edge. ``neg_weight`` counts each
        negative pair that many times in F1 (fewer or more other people per query than these pairs have)."""
        if self.n_pos == 0 or self.n_neg == 0:
            raise ValueError(f"need positive and negative pairs, got {self.n_pos} and {self.n_neg}")
        edges, precision, recall, f1, _ = self.curve()
        if method == "f1":
            if neg_weight != 1.0:
                tp = np.cumsum(self.pos[::-1])[::-1].astype(np.float64)
                fp = np.cumsum(self.neg[::-1])[::-1].astype(np.float64)
                f1 = 2 * tp / (2 * tp + neg_weight * fp + (self.n_pos - tp))
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
        centres = self.edges()[:-1] + self.width / 2
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

    def table(self, start: float = 0.0, stop: float = 1.0, step: float = 0.05) -> list[dict[str, float]]:
        """Precision / recall / F1 every ``step`` of threshold from ``start`` to ``stop`` (for the record)."""
        rows = []
        for t in np.arange(start, stop + 1e-9, step):
            r = self.at(float(round(t, 6)))
            rows.append({k: round(float(r[k]), 5) for k in ("threshold", "precision", "recall", "f1", "fpr")})
        return rows


def _counts(tp: int, fp: int, n_pos: int, n_neg: int, threshold: Any = None) -> dict[str, Any]:
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / n_pos if n_pos else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    out: dict[str, Any] = {} if threshold is None else {"threshold": threshold}
    out.update(
        precision=precision,
        recall=recall,
        f1=f1,
        fpr=fp / n_neg if n_neg else 0.0,
        tp=tp,
        fp=fp,
        fn=n_pos - tp,
        n_pos=n_pos,
        n_neg=n_neg,
    )
    return out


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def reference_stats(sims: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the centre and spread of a query's similarities to the reference sample.

    Median and 1.4826 x median absolute deviation (the standard deviation for a normal distribution),
    not mean and standard deviation: the reference may hold many detections of the query's own person
    (a small gallery, a person seen for long), and those must not inflate the crowd's spread. With
    42 of 380 detections of the query's person, mean/std pushed every true match under the z
    threshold; median/MAD barely move.
    """
    sims = np.asarray(sims, dtype=np.float64)
    med = np.median(sims, axis=1)
    mad = np.median(np.abs(sims - med[:, None]), axis=1) * 1.4826
    return med, np.maximum(mad, 1e-6)


def _reference(n: int, size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=min(size, n), replace=False))


Pairs = Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]  # cosine, z, r, pos, neg


class Labelled(NamedTuple):
    """A set of features (N, D) with the identity and camera of each row (a query or gallery split)."""

    feats: np.ndarray
    pids: Sequence[int]
    cams: Sequence[int]


def relative(sims: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Relative similarity per row: how far each similarity lies from the crowd's median (``centre``, one per
    row) towards 1, an identical picture: ``(s - median) / (1 - median)``."""
    c = np.asarray(centre, dtype=np.float64)[:, None]
    return ((sims - c) / np.maximum(1.0 - c, 1e-6)).astype(np.float32)


def _scores(a: np.ndarray, b: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cosine similarities of unit rows ``a`` x ``b``, their z and their relative similarity against the
    columns ``ref`` of ``b``."""
    sims = a @ b.T
    centre, spread = reference_stats(sims[:, ref])
    z = (sims - centre[:, None].astype(np.float32)) / spread[:, None].astype(np.float32)
    return sims, z, relative(sims, centre)


def _within_pairs(
    feats: np.ndarray, pids: Sequence[int], cams: Sequence[int], reference: int, seed: int, chunk: int = 1024
) -> Pairs:
    """Cross-camera pairs (i < j) within one set: same pid positive, different pid negative; z
    standardises row i by its similarities to ``reference`` random members."""
    f, p, c = _unit(feats), np.asarray(pids), np.asarray(cams)
    n = len(f)
    ref = _reference(n, reference, seed)
    for s in range(0, n, chunk):
        e = min(s + chunk, n)
        sims, z, r = _scores(f[s:e], f, ref)
        cross = (np.arange(n)[None, :] > np.arange(s, e)[:, None]) & (c[s:e, None] != c[None, :])
        same = p[s:e, None] == p[None, :]
        yield sims, z, r, cross & same, cross & ~same


def _cross_pairs(
    query: Labelled, gallery: Labelled, reference: int, seed: int, chunk: int = 256, distractor_pid: int | None = 0
) -> Pairs:
    """Query x gallery cross-camera pairs; junk (pid -1) left out; distractors only ever negatives;
    z reference from the gallery."""
    gp, gc = np.asarray(gallery.pids), np.asarray(gallery.cams)
    keep = gp != -1
    g, gp, gc = _unit(gallery.feats)[keep], gp[keep], gc[keep]
    q, qp, qc = _unit(query.feats), np.asarray(query.pids), np.asarray(query.cams)
    ref = _reference(len(g), reference, seed)
    for s in range(0, len(q), chunk):
        e = min(s + chunk, len(q))
        sims, z, r = _scores(q[s:e], g, ref)
        cross = (qc[s:e, None] != gc[None, :]) & (qp[s:e, None] != -1)
        same = qp[s:e, None] == gp[None, :]
        if distractor_pid is not None:
            same &= qp[s:e, None] != distractor_pid
        yield sims, z, r, cross & same, cross & ~same


class Collected(NamedTuple):
    """Histograms of the cosine, z and relative similarity of pairs, and the figures of a rule on them."""

    cos: PairStats
    z: PairStats
    r: PairStats
    both: dict[str, Any] | None


def _collect(pairs: Pairs, rule: tuple[float, float, float | None] | None = None) -> Collected:
    """The histograms of the pairs and, given ``rule`` = (threshold, z_threshold, r_threshold), the figures of
    the match rule (:func:`matches`), in one pass."""
    cos, z, r = PairStats.empty(*COS_RANGE), PairStats.empty(*Z_RANGE), PairStats.empty(*R_RANGE)
    tp = fp = 0
    for sims, zs, rs, pos, neg in pairs:
        cos.add(sims[pos], sims[neg])
        z.add(zs[pos], zs[neg])
        r.add(rs[pos], rs[neg])
        if rule is not None:
            hit = matches(sims, zs, rs, *rule)
            tp += int((hit & pos).sum())
            fp += int((hit & neg).sum())
    return Collected(cos, z, r, None if rule is None else _counts(tp, fp, cos.n_pos, cos.n_neg))


def matches(
    sims: np.ndarray, z: np.ndarray, r: np.ndarray, threshold: float, z_threshold: float, r_threshold: float | None
) -> np.ndarray:
    """The match rule: ``cosine >= threshold`` and the pair stands out from the crowd, ``z >= z_threshold``
    or, when the model has an ``r_threshold``, ``r >= r_threshold``."""
    out = z >= z_threshold
    if r_threshold is not None:
        out |= r >= r_threshold
    return (sims >= threshold) & out


def pair_stats(
    feats: np.ndarray,
    pids: Sequence[int],
    cams: Sequence[int],
    chunk: int = 1024,
    reference: int = REFERENCE,
    seed: int = 0,
) -> tuple[PairStats, PairStats]:
    """(cosine, z) statistics of the cross-camera pairs (i < j) within one set: same pid positive,
    different pid negative; z standardises row i by its similarities to ``reference`` random members."""
    c = _collect(_within_pairs(feats, pids, cams, reference, seed, chunk))
    return c.cos, c.z


def cross_pair_stats(
    query: Labelled,
    gallery: Labelled,
    chunk: int = 256,
    distractor_pid: int | None = 0,
    reference: int = REFERENCE,
    seed: int = 0,
) -> tuple[PairStats, PairStats]:
    """(cosine, z) statistics of query x gallery cross-camera pairs; junk (pid -1) left out;
    distractors (Market's pid 0, all different people) only ever negatives; z reference from the gallery."""
    c = _collect(_cross_pairs(query, gallery, reference, seed, chunk, distractor_pid))
    return c.cos, c.z


def _sample_ids(samples: Sequence[Any], n_ids: int | None, seed: int) -> list[Any]:
    pids = sorted({s.pid for s in samples})
    if n_ids is not None and n_ids < len(pids):
        rng = np.random.default_rng(seed)
        chosen = set(rng.choice(pids, size=n_ids, replace=False).tolist())
        return [s for s in samples if s.pid in chosen]
    return list(samples)


def _rounded(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _rounded(v) for k, v in d.items()}
    return round(d, 5) if isinstance(d, float) else d


def _figures(c: Collected, t: float, tz: float, tr: float | None) -> dict[str, Any]:
    out = {"cosine": _rounded(c.cos.at(t)), "z": _rounded(c.z.at(tz))}
    if tr is not None:
        out["r"] = _rounded(c.r.at(tr))
    return {**out, "both": _rounded(c.both)}


def z_by_gallery(
    z: PairStats, negatives_per_query: float, z_full: float, sizes: Sequence[int] = GALLERY_SIZES
) -> dict[str, Any]:
    """The max-F1 z threshold for galleries of ``sizes`` detections, smaller than the calibration's crowd.

    A query of the calibration meets ``negatives_per_query`` other people's images on average; a query of
    a gallery of n detections meets about n. Counting each negative pair n / ``negatives_per_query`` times
    gives the F1 of a query among n detections, and its maximum the z threshold for that gallery: fewer
    others to mistake for the target, so a lower threshold finds more of it at the same balance of
    precision and recall. Never above ``z_full`` (the calibrated z); never lower for a bigger gallery.
    """
    rows = [n for n in sizes if n < negatives_per_query]
    zs = [min(z_full, z.choose("f1", neg_weight=n / negatives_per_query)) for n in rows]
    zs = np.maximum.accumulate(np.asarray(zs, dtype=np.float64)).tolist() if zs else []
    return {"negatives_per_query": round(float(negatives_per_query), 1), "sizes": rows, "z": [round(v, 3) for v in zs]}


def calibrate_features(
    feats: np.ndarray,
    pids: Sequence[int],
    cams: Sequence[int],
    *,
    method: Method = "f1",
    target_precision: float = 0.9,
    reference: int = REFERENCE,
    seed: int = 0,
) -> dict[str, Any]:
    """The thresholds and their figures from features of a calibration set (see the module docstring)."""
    c = _collect(_within_pairs(feats, pids, cams, reference, seed))
    t, tz = round(c.cos.choose(method, target_precision), 4), round(c.z.choose(method, target_precision), 3)
    tr = round(c.r.choose(method, target_precision), 4)
    rule = _collect(_within_pairs(feats, pids, cams, reference, seed), (t, tz, tr))  # the rule needs t, tz, tr
    out = {
        "threshold": t,
        "z_threshold": tz,
        "r_threshold": tr,
        "train": _figures(rule, t, tz, tr),
        "distributions": {k: _rounded(h.summary()) for k, h in (("cosine", c.cos), ("z", c.z), ("r", c.r))},
        "curve": {"cosine": c.cos.table(), "z": c.z.table(0.0, 8.0, 0.5), "r": c.r.table(0.0, 1.0, 0.05)},
    }
    if method == "f1":  # each image is one side of 2 * n_neg / n negative pairs on average
        out["z_by_gallery"] = z_by_gallery(c.z, 2 * c.z.n_neg / max(len(feats), 1), tz)
    return out


def check_features(
    query: Labelled,
    gallery: Labelled,
    threshold: float,
    z_threshold: float,
    reference: int = REFERENCE,
    seed: int = 0,
    sizes: Sequence[tuple[int, float]] = (),
    r_threshold: float | None = None,
) -> dict[str, Any]:
    """Figures of given thresholds on a test split's query x gallery cross-camera pairs; ``sizes``:
    (gallery size, calibrated z) pairs to check the same way (:func:`z_by_gallery`)."""
    c = _collect(_cross_pairs(query, gallery, reference, seed), (threshold, z_threshold, r_threshold))
    z = c.z
    out = _figures(c, threshold, z_threshold, r_threshold)
    out["max_f1_threshold"] = round(c.cos.choose("f1"), 4)
    out["max_f1_z_threshold"] = round(z.choose("f1"), 3)
    out["max_f1_r_threshold"] = round(c.r.choose("f1"), 4)
    if sizes:  # the test split's own max-F1 z per gallery size, and F1 there at the calibrated ones
        negq = z.n_neg / max(len(query.feats), 1)
        own = z_by_gallery(z, negq, math.inf, [n for n, _ in sizes])
        f1 = []
        for n, zt in sizes:
            r = z.at(zt)
            tp, fp = float(r["tp"]), float(r["fp"]) * n / negq
            f1.append(round(2 * tp / (2 * tp + fp + (z.n_pos - tp)), 4) if z.n_pos else 0.0)
        out["z_by_gallery"] = {**own, "f1_at_calibrated": f1}
    return out


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
    holdout: int = 0,
) -> dict[str, Any]:
    """Calibrate the match rule of ``embedder`` on ``dataset``'s training split (see the module doc).

    Returns the JSON-ready record (:func:`save_calibration` writes it). ``test=True`` also embeds the
    test split (query + gallery) and reports the figures of the thresholds there. ``holdout``: calibrate
    on the last ``holdout`` training identities only, the ones a model trained with that
    ``data.holdout_ids`` never saw (the honest case: search is for people the model has not seen).
    """
    from reidkit import __version__
    from reidkit.datasets import get_dataset
    from reidkit.datasets.base import holdout_split

    ds = get_dataset(dataset, root)
    pool = holdout_split(ds.train, holdout)[1] if holdout else ds.train
    train = _sample_ids(pool, n_ids, seed)
    t0 = time.perf_counter()
    feats = embedder.embed([s.path for s in train], progress=progress)
    fit = calibrate_features(
        feats, [s.pid for s in train], [s.camid for s in train], method=method, target_precision=target_precision
    )
    source = str(getattr(model_info, "source", "") or "")
    record: dict[str, Any] = {
        "format": FORMAT,
        "model": getattr(model_info, "name", None),
        "weights": Path(source).name if source else None,
        "feat_dim": int(feats.shape[1]),
        "rule": "cosine >= threshold and (z >= z_threshold or r >= r_threshold), z = (cosine - median) / "
        f"(1.4826 MAD) and r = (cosine - median) / (1 - median) over the query's similarities to {REFERENCE} random "
        f"gallery detections (galleries under {MIN_REFERENCE}: cosine only; smaller galleries than the "
        "calibration's crowd: z_by_gallery)",
        "threshold": fit["threshold"],
        "z_threshold": fit["z_threshold"],
        "r_threshold": fit["r_threshold"],
        **({"z_by_gallery": fit["z_by_gallery"]} if "z_by_gallery" in fit else {}),
        "method": "max_f1" if method == "f1" else f"lowest threshold with precision >= {target_precision}",
        "dataset": ds.name,
        "split": f"train, the {holdout} held-out ids (not trained on)" if holdout else "train",
        "n_ids": len({s.pid for s in train}),
        "n_images": len(train),
        "seed": seed,
        "pairs": "cross-camera (i < j), same id = positive",
        "train": fit["train"],
        "distributions": fit["distributions"],
        "curve": fit["curve"],
        "seconds": round(time.perf_counter() - t0, 1),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "reidkit": __version__,
    }
    if test:
        g = [s for s in ds.gallery if s.pid != -1]
        f = embedder.embed([s.path for s in [*ds.query, *g]], progress=progress)
        nq = len(ds.query)
        query = Labelled(f[:nq], [s.pid for s in ds.query], [s.camid for s in ds.query])
        table = fit.get("z_by_gallery", {})
        check = check_features(
            query, Labelled(f[nq:], [s.pid for s in g], [s.camid for s in g]), fit["threshold"], fit["z_threshold"],
            sizes=list(zip(table.get("sizes", []), table.get("z", []), strict=True)), r_threshold=fit["r_threshold"],
        )  # fmt: skip
        record["test"] = {"split": "query x gallery (cross-camera, junk excluded)", **check}
        record["seconds"] = round(time.perf_counter() - t0, 1)
    return record


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
    for key in ("z_threshold", "r_threshold"):
        if record.get(key) is not None and not isinstance(record[key], int | float):
            raise ValueError(f"{p}: {key} {record[key]!r} is not a number")
    table = record.get("z_by_gallery")
    if table is not None and not _valid_table(table):
        raise ValueError(f"{p}: z_by_gallery must hold 'negatives_per_query' and equally long 'sizes' and 'z' lists")
    return record


def _valid_table(table: Any) -> bool:
    if not isinstance(table, dict) or not isinstance(table.get("negatives_per_query"), int | float):
        return False
    sizes, zs = table.get("sizes"), table.get("z")
    return (
        isinstance(sizes, list)
        and isinstance(zs, list)
        and len(sizes) == len(zs)
        and all(isinstance(v, int | float) and v > 0 for v in sizes)
        and all(isinstance(v, int | float) for v in zs)
    )


def calibration_file_name(weights: str | os.PathLike[str]) -> str:
    """``calibration_<weights file stem>.json``: the name :func:`thresholds_for` looks for."""
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


@dataclass(frozen=True)
class Thresholds:
    """A model's match rule: cosine ``threshold``, ``z_threshold`` and where they came from;
    ``z_by_gallery``: (gallery size, z threshold) points for galleries smaller than the calibration's
    crowd, ending at (its negatives per query, ``z_threshold``); empty: ``z_threshold`` at every size."""

    threshold: float
    z_threshold: float
    source: str
    z_by_gallery: tuple[tuple[float, float], ...] = ()
    r_threshold: float | None = None  # None: the z test alone decides whether a detection stands out

    def z_for(self, n: int) -> float:
        """The z threshold for a gallery of ``n`` detections: the table interpolated in log size, clamped
        to its ends (never above ``z_threshold``)."""
        if not self.z_by_gallery:
            return self.z_threshold
        sizes, zs = zip(*self.z_by_gallery, strict=True)
        z = float(np.interp(math.log(max(n, 1)), np.log(sizes), zs))
        return round(min(z, self.z_threshold), 3)


def _table(record: dict[str, Any], z: float) -> tuple[tuple[float, float], ...]:
    t = record.get("z_by_gallery")
    if not _valid_table(t) or not t["sizes"]:
        return ()
    pts = [(float(n), float(v)) for n, v in zip(t["sizes"], t["z"], strict=True)]
    return (*pts, (max(float(t["negatives_per_query"]), pts[-1][0] + 1), z))


def thresholds_for(model_info: Any = None) -> Thresholds:
    """The calibrated match rule of a model, or the defaults (:data:`DEFAULT_THRESHOLD`,
    :data:`DEFAULT_Z_THRESHOLD`); a calibration without ``z_threshold`` gets the default z."""
    record, where = find_calibration(model_info)
    if record is None:
        return Thresholds(DEFAULT_THRESHOLD, DEFAULT_Z_THRESHOLD, f"default ({where})")
    z = record.get("z_threshold")
    if z is None:
        return Thresholds(float(record["threshold"]), DEFAULT_Z_THRESHOLD, f"calibrated ({where}; default z)")
    r = record.get("r_threshold")
    return Thresholds(
        float(record["threshold"]),
        float(z),
        f"calibrated ({where})",
        _table(record, float(z)),
        float(r) if isinstance(r, int | float) else None,
    )


def threshold_for(model_info: Any = None) -> tuple[float, str]:
    """The cosine threshold of a model and where it came from (see :func:`thresholds_for`)."""
    t = thresholds_for(model_info)
    return t.threshold, t.source


def load_threshold(model_info: Any = None) -> float:
    """The calibrated cosine threshold of a model, or :data:`DEFAULT_THRESHOLD`."""
    return threshold_for(model_info)[0]
