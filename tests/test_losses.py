"""reidkit.losses: hand-computed values on tiny batches and a per-anchor loop reference."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from reidkit.config import LossConfig
from reidkit.losses import (
    CenterLoss,
    ReIDLoss,
    batch_hard_triplet_loss,
    cross_entropy_label_smooth,
    feature_distance,
    feature_distill_loss,
    relation_distill_loss,
)

LN2 = math.log(2.0)

# Four 2-D points, pairwise distances 3, 4, 5 (a 3-4-5 rectangle):
#   x0=(0,0) x1=(4,0) x2=(0,3) x3=(4,3); d01=4 d02=3 d03=5 d12=5 d13=3 d23=4
POINTS = torch.tensor([[0.0, 0.0], [4.0, 0.0], [0.0, 3.0], [4.0, 3.0]])
LABELS = torch.tensor([0, 0, 0, 1])
# anchor 0: positives {x1: 4, x2: 3} -> 4; negative x3: 5
# anchor 1: positives {x0: 4, x2: 5} -> 5; negative x3: 3
# anchor 2: positives {x0: 3, x1: 5} -> 5; negative x3: 4
# anchor 3: no other positive -> 0 (itself); negatives {5, 3, 4} -> 3
HARD_AP = [4.0, 5.0, 5.0, 0.0]
HARD_AN = [5.0, 3.0, 4.0, 3.0]


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


# ------------------------------------------------------------------------ label smoothing


def test_label_smoothing_three_classes_by_hand() -> None:
    # softmax([0, 0, ln 2]) = [1/4, 1/4, 1/2]; eps = 0.1 over C = 3 -> off-target mass 1/30 each.
    logits = torch.tensor([[0.0, 0.0, LN2], [0.0, 0.0, LN2]])
    # target 2: -(1/30 ln 1/4 * 2 + (0.9 + 1/30) ln 1/2) = ln2 * (4/30 + 28/30) = 32/30 ln 2
    one = cross_entropy_label_smooth(logits[:1], torch.tensor([2]), 0.1)
    assert one.item() == pytest.approx(32 / 30 * LN2, abs=1e-6)
    # target 0: -((0.9 + 1/30) ln 1/4 + 1/30 ln 1/4 + 1/30 ln 1/2) = 59/30 ln 2; the batch mean:
    both = cross_entropy_label_smooth(logits, torch.tensor([2, 0]), 0.1)
    assert both.item() == pytest.approx((32 + 59) / 60 * LN2, abs=1e-6)


def test_label_smoothing_matches_torch_and_plain_ce() -> None:
    g = torch.Generator().manual_seed(0)
    logits, targets = torch.randn(6, 5, generator=g), torch.randint(0, 5, (6,), generator=g)
    for eps in (0.0, 0.1, 0.3):
        ours = cross_entropy_label_smooth(logits, targets, eps)
        assert torch.allclose(ours, F.cross_entropy(logits, targets, label_smoothing=eps), atol=1e-6)


# ------------------------------------------------------------------------ triplet


def test_distances_by_hand() -> None:
    d = feature_distance(POINTS)
    expected = torch.tensor([[0, 4, 3, 5], [4, 0, 5, 3], [3, 5, 0, 4], [5, 3, 4, 0.0]])
    assert torch.allclose(d, expected, atol=1e-5)
    assert torch.equal(d.diagonal(), torch.zeros(4))


def test_batch_hard_margin_by_hand() -> None:
    loss, d_ap, d_an = batch_hard_triplet_loss(POINTS, LABELS, margin=0.3)
    assert torch.allclose(d_ap, torch.tensor(HARD_AP), atol=1e-5)
    assert torch.allclose(d_an, torch.tensor(HARD_AN), atol=1e-5)
    # relu(4-5+.3)=0, relu(5-3+.3)=2.3, relu(5-4+.3)=1.3, relu(0-3+.3)=0 -> mean 0.9
    assert loss.item() == pytest.approx(0.9, abs=1e-5)


def test_batch_hard_soft_margin_by_hand() -> None:
    loss, _, _ = batch_hard_triplet_loss(POINTS, LABELS, soft=True)
    expected = (softplus(-1) + softplus(2) + softplus(1) + softplus(-3)) / 4
    assert loss.item() == pytest.approx(expected, abs=1e-5)


def test_batch_hard_cosine_by_hand() -> None:
    # x0=(1,0) x1=(0,1) | x2=(1,1) x3=(-1,0); with r = 1/sqrt 2, 1 - cos:
    # d01=1 d02=1-r d03=2 d12=1-r d13=1 d23=1+r. Losses: r+.3, r+.3, 2r+.3, r+.3.
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]])
    r = 1 / math.sqrt(2)
    loss, d_ap, d_an = batch_hard_triplet_loss(x, torch.tensor([0, 0, 1, 1]), margin=0.3, metric="cosine")
    assert torch.allclose(d_ap, torch.tensor([1, 1, 1 + r, 1 + r]), atol=1e-6)
    assert torch.allclose(d_an, torch.tensor([1 - r, 1 - r, 1 - r, 1]), atol=1e-6)
    assert loss.item() == pytest.approx((5 * r + 1.2) / 4, abs=1e-6)


def test_normalized_euclidean_is_sqrt_of_twice_cosine() -> None:
    x = torch.randn(7, 5, generator=torch.Generator().manual_seed(1))
    eu = feature_distance(x, "euclidean", normalize=True)
    cos = feature_distance(x, "cosine")
    assert torch.allclose(eu, (2 * cos).clamp_min(1e-12).sqrt().fill_diagonal_(0), atol=1e-5)


def reference_triplet(x: torch.Tensor, y: torch.Tensor, margin: float, soft: bool, metric: str) -> torch.Tensor:
    """The textbook loop over anchors."""
    losses = []
    for i in range(len(x)):
        d = []
        for j in range(len(x)):
            if metric == "cosine":
                d.append(1 - F.cosine_similarity(x[i], x[j], dim=0) if i != j else x.new_zeros(()))
            else:
                d.append(torch.sqrt(((x[i] - x[j]) ** 2).sum().clamp_min(1e-12)) if i != j else x.new_zeros(()))
        pos = torch.stack([d[j] for j in range(len(x)) if y[j] == y[i]]).max()
        neg = torch.stack([d[j] for j in range(len(x)) if y[j] != y[i]]).min()
        losses.append(F.softplus(pos - neg) if soft else F.relu(pos - neg + margin))
    return torch.stack(losses).mean()


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("soft", [False, True])
def test_triplet_matches_loop_reference_values_and_grads(metric: str, soft: bool) -> None:
    g = torch.Generator().manual_seed(2)
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])[torch.randperm(12, generator=g)]
    base = torch.randn(12, 8, generator=g, dtype=torch.float64)
    x1 = base.clone().requires_grad_(True)
    x2 = base.clone().requires_grad_(True)
    ours = batch_hard_triplet_loss(x1, labels, margin=0.5, soft=soft, metric=metric)[0]
    ref = reference_triplet(x2, labels, 0.5, soft, metric)
    assert ours.item() == pytest.approx(ref.item(), abs=1e-9)
    ours.backward()
    ref.backward()
    assert torch.allclose(x1.grad, x2.grad, atol=1e-9)


def test_triplet_is_finite_with_duplicates_and_single_identity() -> None:
    x = torch.tensor([[1.0, 2.0], [1.0, 2.0], [0.5, 0.0]], requires_grad=True)
    loss, _, _ = batch_hard_triplet_loss(x, torch.tensor([0, 0, 1]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()
    one_id, _, _ = batch_hard_triplet_loss(x.detach(), torch.tensor([0, 0, 0]))  # no negatives at all
    assert one_id.item() == 0.0


# ------------------------------------------------------------------------ center loss and ReIDLoss


def test_center_loss_by_hand() -> None:
    c = CenterLoss(2, 2)
    with torch.no_grad():
        c.centers.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
    # |(1,0)-(0,0)|^2 = 1, |(1,3)-(1,1)|^2 = 4 -> mean 2.5
    loss = c(torch.tensor([[1.0, 0.0], [1.0, 3.0]]), torch.tensor([0, 1]))
    assert loss.item() == pytest.approx(2.5)
    loss.backward()  # d/dc_i = -2 (x_i - c_i) / N
    assert torch.allclose(c.centers.grad, torch.tensor([[-1.0, 0.0], [0.0, -2.0]]))


def test_reid_loss_combines_weighted_terms() -> None:
    logits = torch.tensor([[0.0, 0.0, LN2]] * 4)
    crit = ReIDLoss(3, 2, ce_weight=0.5, label_smoothing=0.1, triplet_weight=2.0, margin=0.3, center_weight=0.1)
    with torch.no_grad():
        crit.center.centers.zero_()
    out = crit({"logits": logits, "features": POINTS, "bn_features": POINTS * 0}, torch.tensor([2, 2, 2, 0]))
    assert set(out) == {"ce", "triplet", "center", "total"}
    ce = (3 * 32 / 30 * LN2 + 59 / 30 * LN2) / 4
    center = (0 + 16 + 9 + 25) / 4  # squared norms of the points
    assert out["ce"].item() == pytest.approx(ce, abs=1e-5)
    assert out["triplet"].item() == pytest.approx(0.9, abs=1e-5)
    assert out["center"].item() == pytest.approx(center, abs=1e-4)
    assert out["total"].item() == pytest.approx(0.5 * ce + 2.0 * 0.9 + 0.1 * center, abs=1e-4)


def test_reid_loss_from_config_and_errors() -> None:
    cfg = LossConfig.model_validate({"triplet": {"weight": 0.0}, "ce": {"label_smoothing": 0.0}})
    crit = ReIDLoss.from_config(cfg, num_classes=3, feat_dim=2)
    out = crit({"logits": torch.zeros(2, 3), "features": torch.zeros(2, 2)}, torch.tensor([0, 1]))
    assert set(out) == {"ce", "total"} and out["total"].item() == pytest.approx(math.log(3), abs=1e-6)
    with pytest.raises(KeyError, match="logits"):
        crit({"features": torch.zeros(2, 2)}, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="feat_dim"):
        ReIDLoss(3, None, center_weight=0.1)
    with pytest.raises(ValueError, match="at least one"):
        ReIDLoss(3, 2, ce_weight=0, triplet_weight=0)


# ------------------------------------------------------------------------ distillation


def test_feature_distill_by_hand() -> None:
    student = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    teacher = torch.tensor([[5.0, 0.0], [1.0, 0.0], [-1.0, -1.0]])
    # cosines 1, 0, -1 -> 1 - cos = 0, 1, 2 -> mean 1
    assert feature_distill_loss(student, teacher).item() == pytest.approx(1.0)
    assert feature_distill_loss(teacher, teacher).item() == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match="same size"):
        feature_distill_loss(student, torch.zeros(3, 4))


def test_relation_distill_by_hand_and_width_free() -> None:
    student = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # similarity matrix [[1, 0], [0, 1]]
    teacher = torch.tensor([[1.0, 0.0, 0.0], [2.0, 0.0, 0.0]])  # [[1, 1], [1, 1]]
    # differences 0, 1, 1, 0 squared -> mean 0.5
    assert relation_distill_loss(student, teacher).item() == pytest.approx(0.5)
    # a rotation of the student changes no similarity
    q, _ = torch.linalg.qr(torch.randn(8, 8))
    x = torch.randn(6, 8)
    assert relation_distill_loss(x @ q, x).item() == pytest.approx(0.0, abs=1e-6)


def test_reid_loss_distill_terms_use_the_bnneck_embedding() -> None:
    torch.manual_seed(0)
    targets = torch.tensor([0, 0, 1, 1])
    out = {
        "features": torch.randn(4, 6),
        "bn_features": torch.randn(4, 6, requires_grad=True),
        "logits": torch.randn(4, 3),
    }
    teacher = torch.randn(4, 6)
    crit = ReIDLoss(3, ce_weight=1.0, triplet_weight=1.0, distill_weight=2.0, relation_weight=3.0)
    terms = crit(out, targets, teacher)
    assert terms["distill"].item() == pytest.approx(feature_distill_loss(out["bn_features"], teacher).item())
    assert terms["relation"].item() == pytest.approx(relation_distill_loss(out["bn_features"], teacher).item())
    expected = terms["ce"] + terms["triplet"] + 2.0 * terms["distill"] + 3.0 * terms["relation"]
    assert terms["total"].item() == pytest.approx(expected.item())
    terms["total"].backward()
    assert out["bn_features"].grad is not None and out["bn_features"].grad.abs().sum() > 0
    with pytest.raises(ValueError, match="no teacher"):
        crit(out, targets)
    plain = ReIDLoss(3)(out, targets)
    assert "distill" not in plain and "relation" not in plain
    # an ensemble's target for the relation term only (any width); the feature term keeps the teacher
    ensemble = torch.randn(4, 10)
    both = crit(out, targets, teacher, ensemble)
    assert both["distill"].item() == pytest.approx(terms["distill"].item())
    assert both["relation"].item() == pytest.approx(relation_distill_loss(out["bn_features"], ensemble).item())


def test_distill_config_needs_a_teacher() -> None:
    with pytest.raises(ValueError, match="teacher"):
        LossConfig.model_validate({"distill": {"weight": 1.0}})
    assert not LossConfig().distill.enabled
    with pytest.raises(ValueError, match="relation_weight"):  # an ensemble serves the relation term only
        LossConfig.model_validate({"distill": {"teacher": "t.pth", "weight": 1.0, "ensemble": ["u.pth"]}})
