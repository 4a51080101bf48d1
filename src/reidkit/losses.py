"""Re-id training losses (BoT, Luo et al. 2019): label-smoothed CE, batch-hard triplet, center loss.

:class:`ReIDLoss` combines them with configurable weights and returns every term by name plus
``"total"`` (the weighted sum)::

    criterion = ReIDLoss(num_classes=751, feat_dim=2048, center_weight=5e-4)
    losses = criterion(model(images), pids)       # {"ce", "triplet", "center", "total"}
    losses["total"].backward()
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

if TYPE_CHECKING:
    from reidkit.config import LossConfig

__all__ = [
    "CenterLoss",
    "CrossEntropyLabelSmooth",
    "ReIDLoss",
    "TripletLoss",
    "batch_hard_triplet_loss",
    "cross_entropy_label_smooth",
    "feature_distance",
    "feature_distill_loss",
    "relation_distill_loss",
]

DistanceMetric = Literal["euclidean", "cosine"]


def _full(x: Tensor) -> Tensor:
    """Half-precision inputs (AMP) in float32; float32/float64 unchanged."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def cross_entropy_label_smooth(logits: Tensor, targets: Tensor, epsilon: float = 0.1) -> Tensor:
    """Mean cross-entropy against ``(1 - epsilon) * one_hot + epsilon / C`` (Szegedy et al.; BoT)."""
    log_probs = F.log_softmax(_full(logits), dim=1)
    num_classes = logits.shape[1]
    smoothed = torch.full_like(log_probs, epsilon / num_classes)
    smoothed.scatter_(1, targets.long().unsqueeze(1), 1.0 - epsilon + epsilon / num_classes)
    return -(smoothed * log_probs).sum(1).mean()


class CrossEntropyLabelSmooth(nn.Module):
    """Module form of :func:`cross_entropy_label_smooth`."""

    def __init__(self, epsilon: float = 0.1) -> None:
        super().__init__()
        if not 0.0 <= epsilon < 1.0:
            raise ValueError(f"label smoothing epsilon must be in [0, 1), got {epsilon}")
        self.epsilon = epsilon

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        return cross_entropy_label_smooth(logits, targets, self.epsilon)


def feature_distance(x: Tensor, metric: DistanceMetric = "euclidean", normalize: bool = False) -> Tensor:
    """``(N, N)`` distances between the rows of ``x``.

    ``euclidean``: non-squared L2 (BoT; squared distances clamped at 1e-12 before the square root);
    ``cosine``: ``1 - cos``. ``normalize`` L2-normalises first. The diagonal is exactly 0.
    """
    if metric not in ("euclidean", "cosine"):
        raise ValueError(f"metric must be 'euclidean' or 'cosine', got {metric!r}")
    x = _full(x)
    if normalize or metric == "cosine":
        x = F.normalize(x, dim=1)
    if metric == "cosine":
        dist = 1.0 - x @ x.T
    else:
        sq = (x * x).sum(1)
        dist = (sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)).clamp_min(1e-12).sqrt()
    eye = torch.eye(len(x), dtype=torch.bool, device=x.device)
    return dist.masked_fill(eye, 0.0)


def batch_hard_triplet_loss(
    features: Tensor,
    targets: Tensor,
    margin: float = 0.3,
    soft: bool = False,
    metric: DistanceMetric = "euclidean",
    normalize: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """Batch-hard triplet loss (Hermans et al. 2017), vectorised over anchors.

    For every anchor: hardest positive = farthest sample with its label (itself included, so an
    anchor without another positive uses distance 0), hardest negative = closest other label.
    Loss per anchor: ``relu(d_ap - d_an + margin)``, or ``softplus(d_ap - d_an)`` when ``soft``;
    anchors without any negative contribute 0. Returns ``(loss, d_ap, d_an)``.
    """
    dist = feature_distance(features, metric, normalize)
    same = targets[:, None] == targets[None, :]
    d_ap = torch.where(same, dist, torch.full_like(dist, float("-inf"))).amax(1)
    d_an = torch.where(same, torch.full_like(dist, float("inf")), dist).amin(1)
    diff = d_ap - d_an
    per_anchor = F.softplus(diff) if soft else F.relu(diff + margin)
    return per_anchor.mean(), d_ap, d_an


def feature_distill_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """Mean ``1 - cos(student_i, teacher_i)`` over the batch: the student's embedding pulled toward the
    teacher's embedding of the same image (both ``(N, D)``, same ``D``)."""
    if student.shape != teacher.shape:
        raise ValueError(
            f"feature distillation needs the student's and the teacher's embeddings of the same size, got "
            f"{tuple(student.shape)} and {tuple(teacher.shape)}: use loss.distill.relation_weight instead"
        )
    return (1.0 - F.cosine_similarity(_full(student), _full(teacher).to(student.device), dim=1)).mean()


def relation_distill_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """Mean squared difference between the batch's ``(N, N)`` cosine-similarity matrices of the
    student's and the teacher's embeddings (relational distillation; the widths may differ)."""
    s = F.normalize(_full(student), dim=1)
    t = F.normalize(_full(teacher).to(student.device), dim=1)
    return ((s @ s.T - t @ t.T) ** 2).mean()


class TripletLoss(nn.Module):
    """Module form of :func:`batch_hard_triplet_loss` (returns the loss only)."""

    def __init__(
        self,
        margin: float = 0.3,
        soft: bool = False,
        metric: DistanceMetric = "euclidean",
        normalize: bool = False,
    ) -> None:
        super().__init__()
        self.margin, self.soft, self.metric, self.normalize = margin, soft, metric, normalize

    def forward(self, features: Tensor, targets: Tensor) -> Tensor:
        return batch_hard_triplet_loss(features, targets, self.margin, self.soft, self.metric, self.normalize)[0]

    def extra_repr(self) -> str:
        kind = "soft" if self.soft else f"margin={self.margin}"
        return f"{kind}, metric={self.metric}, normalize={self.normalize}"


class CenterLoss(nn.Module):
    """Center loss (Wen et al. 2016): mean squared distance of each feature to its class center.

    The centers are learnable; BoT trains them with their own SGD optimiser (lr 0.5) and divides
    their gradient by the loss weight (see :class:`reidkit.engine.trainer.Trainer`).
    """

    def __init__(self, num_classes: int, feat_dim: int) -> None:
        super().__init__()
        self.centers = nn.Parameter(torch.randn(num_classes, feat_dim))

    def forward(self, features: Tensor, targets: Tensor) -> Tensor:
        diff = _full(features) - self.centers[targets.long()]
        return (diff * diff).sum(1).clamp(1e-12, 1e12).mean()


class ReIDLoss(nn.Module):
    """Weighted sum of label-smoothed CE (on ``logits``), batch-hard triplet and center loss (on
    ``features``, pre-BNNeck as in BoT). A term with weight 0 is neither computed nor returned.
    Multi-branch models (RRID) give ``logits`` ``(N, B, C)`` and ``features`` ``(N, B, D)``: CE and
    triplet are then computed per branch and averaged over the ``B`` branches; CE also over the classifiers of
    intermediate features, ``aux_logits`` ``(N, A, C)``, when the model gives them (one mean over ``B + A``).

    ``forward(outputs, targets)`` takes the model's train-mode dict (``logits``, ``features``) and
    returns the unweighted terms (``ce``, ``triplet``, ``center``) and ``total`` = weighted sum.
    """

    def __init__(
        self,
        num_classes: int,
        feat_dim: int | None = None,
        *,
        ce_weight: float = 1.0,
        label_smoothing: float = 0.1,
        triplet_weight: float = 1.0,
        margin: float = 0.3,
        soft_margin: bool = False,
        metric: DistanceMetric = "euclidean",
        normalize: bool = False,
        center_weight: float = 0.0,
        verification_weight: float = 1.0,
        verification_start: int = 1,
        distill_weight: float = 0.0,
        relation_weight: float = 0.0,
    ) -> None:
        super().__init__()
        if min(distill_weight, relation_weight) < 0:
            raise ValueError("distillation weights must be >= 0")
        self.distill_weight, self.relation_weight = distill_weight, relation_weight
        self.distill_on = "bn_features"  # the model's eval embedding; the trainer sets "features" for
        # models that embed before their BNNeck (feat_after_bn=False)
        self.label_smoothing = label_smoothing
        self.verification_weight, self.verification_start = verification_weight, verification_start
        self.epoch = 1  # set by the trainer each epoch (HOReID's verification starts at verification_start)
        if min(ce_weight, triplet_weight, center_weight) < 0:
            raise ValueError("loss weights must be >= 0")
        if ce_weight == triplet_weight == center_weight == 0:
            raise ValueError("at least one loss weight must be > 0")
        self.ce_weight, self.triplet_weight, self.center_weight = ce_weight, triplet_weight, center_weight
        self.ce = CrossEntropyLabelSmooth(label_smoothing)
        self.triplet = TripletLoss(margin, soft_margin, metric, normalize)
        self.center: CenterLoss | None = None
        if center_weight > 0:
            if feat_dim is None:
                raise ValueError("the center loss needs feat_dim (the size of the model's features)")
            self.center = CenterLoss(num_classes, feat_dim)

    @classmethod
    def from_config(cls, cfg: LossConfig, num_classes: int, feat_dim: int | None = None) -> ReIDLoss:
        return cls(
            num_classes,
            feat_dim,
            ce_weight=cfg.ce.weight,
            label_smoothing=cfg.ce.label_smoothing,
            triplet_weight=cfg.triplet.weight,
            margin=cfg.triplet.margin,
            soft_margin=cfg.triplet.soft,
            metric=cfg.triplet.metric,
            normalize=cfg.triplet.normalize,
            center_weight=cfg.center.weight,
            verification_weight=cfg.verification.weight,
            verification_start=cfg.verification.start_epoch,
            distill_weight=cfg.distill.weight,
            relation_weight=cfg.distill.relation_weight,
        )

    def forward(
        self,
        outputs: dict[str, Tensor] | Tensor,
        targets: Tensor,
        teacher: Tensor | None = None,
        relation_teacher: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """``teacher``: the teacher's ``(N, D)`` embeddings of the batch, needed when a distillation
        weight is > 0; they are compared with the model's eval embedding (``distill_on``: ``bn_features``
        unless the trainer says the model embeds before its neck). ``relation_teacher``: the relation term's
        target instead of ``teacher`` (an ensemble's, :func:`reidkit.engine.distill.teacher_targets`)."""
        if isinstance(outputs, Tensor):
            outputs = {"features": outputs}
        terms: dict[str, Tensor] = {}
        total: Tensor | None = None

        def add(name: str, value: Tensor, weight: float) -> None:
            nonlocal total
            terms[name] = value
            total = weight * value if total is None else total + weight * value

        if "confidence" in outputs:  # HOReID's graph outputs
            return self._graph_terms(outputs, targets)
        feats = outputs["features"]
        if self.ce_weight > 0:
            if "logits" not in outputs:
                raise KeyError("the cross-entropy loss needs 'logits' in the model outputs (num_classes > 0)")
            logits = outputs["logits"]
            if "aux_logits" in outputs:
                logits = torch.cat([logits, outputs["aux_logits"]], dim=1)
            if logits.dim() == 3:  # (N, branches, C): the mean of the branches' losses
                targets_b = targets.repeat_interleave(logits.shape[1])
                add("ce", self.ce(logits.flatten(0, 1), targets_b), self.ce_weight)
            else:
                add("ce", self.ce(logits, targets), self.ce_weight)
        if self.triplet_weight > 0:
            if feats.dim() == 3:  # (N, branches, D): one batch-hard triplet loss per branch, averaged
                per_branch = torch.stack([self.triplet(f, targets) for f in feats.unbind(1)])
                add("triplet", per_branch.mean(), self.triplet_weight)
            else:
                add("triplet", self.triplet(feats, targets), self.triplet_weight)
        if self.center is not None:
            if feats.dim() != 2:
                raise ValueError("the center loss needs (N, D) features; this model returns one feature per branch")
            add("center", self.center(feats, targets), self.center_weight)
        if self.distill_weight > 0 or self.relation_weight > 0:
            if teacher is None:
                raise ValueError("a distillation weight is > 0 but no teacher embeddings were given")
            student = outputs.get(self.distill_on, feats)
            if student.dim() != 2:
                raise ValueError("distillation needs (N, D) embeddings; this model returns one per branch")
            if self.distill_weight > 0:
                add("distill", feature_distill_loss(student, teacher), self.distill_weight)
            if self.relation_weight > 0:
                target = teacher if relation_teacher is None else relation_teacher
                add("relation", relation_distill_loss(student, target), self.relation_weight)
        assert total is not None
        terms["total"] = total
        return terms

    def _graph_terms(self, out: dict[str, Any], targets: Tensor) -> dict[str, Tensor]:
        """HOReID: per-node CE weighted by keypoint confidence and a triplet loss on the concatenated
        nodes, for the semantic and (if present) relation nodes, averaged over the two; then the
        verification loss on hard pairs (mined by the global node) from ``verification_start`` on."""
        from reidkit.models.horeid import GLOBAL, confidence_weighted_ce, hard_pairs, verification_loss

        conf = out["confidence"]
        stages = [("features", "logits")]
        if "relation_features" in out:
            stages.append(("relation_features", "relation_logits"))
        terms: dict[str, Tensor] = {}
        total = conf.new_zeros(())
        if self.ce_weight > 0:
            ce = torch.stack([confidence_weighted_ce(out[lg], targets, conf, self.label_smoothing) for _, lg in stages])
            terms["ce"] = ce.mean()
            total = total + self.ce_weight * terms["ce"]
        if self.triplet_weight > 0:
            tri = torch.stack([self.triplet(out[f].flatten(1), targets) for f, _ in stages])
            terms["triplet"] = tri.mean()
            total = total + self.triplet_weight * terms["triplet"]
        if self.verification_weight > 0 and "pairs" in out and self.epoch >= self.verification_start:
            pos, neg = hard_pairs(out["features"][:, GLOBAL], targets)
            idx = torch.arange(len(targets), device=targets.device)
            # one verifier pass over positives and negatives together: its BatchNorm normalising each
            # set on its own would erase the very difference it has to learn (loss stuck at ln 2)
            logits = out["pairs"](torch.cat([idx, idx]), torch.cat([pos, neg]))
            terms["verification"] = verification_loss(logits[: len(idx)], logits[len(idx) :])
            total = total + self.verification_weight * terms["verification"]
        terms["total"] = total
        return terms
