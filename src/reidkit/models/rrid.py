"""The Relation Network for person re-id (RRID; Park & Ham, AAAI 2020) as a head on any backbone.

The backbone map ``(N, C, H, W)`` is cut into ``n`` horizontal parts for every granularity ``n``
in ``parts`` (default 6, 4, 2); each part is max-pooled to a ``C``-vector ``p_i``. Per granularity:

* **one-vs-rest relation** for every part: ``rest_i = mean_{j != i} p_j`` and
  ``q_i = R_i(cat[L_i(p_i), S_i(rest_i)]) + L_i(p_i)``;
* **global contrastive pooling (GCP)**: ``m = max over the whole map``,
  ``r = (sum_i p_i - m) / (n - 1)`` and ``g = M(m) + P(cat[M(m), Q(r)])``;

where every ``L, S, R, M, Q, P`` is its own 1x1 conv-BN-ReLU reducing to ``dim`` (applied to
pooled ``1x1`` maps, so it is written as a linear layer + BatchNorm1d + ReLU, the same function).
With the defaults that is 12 part features and 3 global features of 256 = 3840-d.

**Heights a granularity does not divide** (e.g. 6 parts of a 16-row map): part ``i`` covers rows
``floor(i*H/n)`` to ``ceil((i+1)*H/n)`` (the bins of :func:`torch.nn.functional.adaptive_max_pool2d`),
so neighbouring parts share a boundary row and no row is dropped; when ``n`` divides ``H``
the parts are the paper's disjoint stripes. A granularity larger than ``H`` is an error.

Train mode returns ``{"features": (N, B, dim), "logits": (N, B, num_classes)}`` over the ``B``
branches (parts then globals); :class:`reidkit.losses.ReIDLoss` averages its label-smoothed CE and
batch-hard triplet terms over the branches. Eval mode returns the concatenated ``(N, B * dim)``
embedding, or only the ``len(parts)`` global features with ``embedding="global"``.

``relation=False`` / ``gcp=False`` switch the two modules off for ablations: a part feature is then
``L_i(p_i)`` and a global feature ``M(m)`` (plain max pooling).

``aux_ce=True`` adds the official code's deep supervision: a classifier also on every intermediate feature
that differs from a branch output, ``L_i(p_i)`` and ``S_i(rest_i)`` of every part and ``M(m)`` and ``Q(r)``
of every granularity (12 + 12 + 3 + 3 = 30 more with the defaults; none for a module switched off). Train
mode then adds ``aux_logits`` ``(N, A, num_classes)``, which :class:`reidkit.losses.ReIDLoss` averages into
its CE with the branches' logits. The official code sums CE over all 45 classifiers and the triplet loss
over the 15 branches (``T + 2 C``); with both averaged, ``loss.ce.weight: 6`` keeps that balance. Eval
mode and the embedding are unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reidkit.models.heads import ResettableClassifier

__all__ = ["PartConv", "RelationHead", "RelationNet", "part_bounds"]

Embedding = Literal["all", "global"]


def part_bounds(height: int, n: int) -> list[tuple[int, int]]:
    """Row ranges ``[start, end)`` of the ``n`` parts of a map ``height`` rows high (see module doc)."""
    if n < 2:
        raise ValueError(f"a part granularity must be at least 2 (one-vs-rest needs a rest), got {n}")
    if n > height:
        raise ValueError(f"parts={n} is larger than the feature-map height {height}: use fewer parts or a taller input")
    return [((i * height) // n, -((-(i + 1) * height) // n)) for i in range(n)]


class PartConv(nn.Module):
    """``groups`` independent 1x1 conv-BN-ReLU blocks on pooled vectors, as one batched product.

    ``(N, groups, c_in) -> (N, groups, c_out)``; group ``i`` has its own weights and BatchNorm
    (an einsum over the groups: 4x faster on CPU than a grouped ``Conv1d``).
    """

    def __init__(self, groups: int, c_in: int, c_out: int) -> None:
        super().__init__()
        self.groups, self.c_in, self.c_out = groups, c_in, c_out
        self.weight = nn.Parameter(torch.empty(groups, c_in, c_out))
        self.bn = nn.BatchNorm1d(groups * c_out)
        for w in self.weight:  # kaiming (fan_out, ReLU), as for a 1x1 convolution
            nn.init.normal_(w, std=(2.0 / c_out) ** 0.5)

    def forward(self, x: Tensor) -> Tensor:
        y = torch.einsum("ngc,gcd->ngd", x, self.weight)
        n = y.shape[0]
        return F.relu(self.bn(y.reshape(n, self.groups * self.c_out))).reshape(n, self.groups, self.c_out)

    def extra_repr(self) -> str:
        return f"groups={self.groups}, c_in={self.c_in}, c_out={self.c_out}"


class RelationHead(nn.Module):
    """The relation module and GCP of one granularity.

    ``forward(rows)`` takes the row maxima ``(N, C, H)`` of the backbone map (``fmap.amax(-1)``:
    the max over a part's rectangle is the max over its rows' maxima, and one reduction of the big
    map is cheaper than one per part) and returns ``(parts (N, n, dim), global (N, dim))``.
    """

    def __init__(self, n: int, channels: int, dim: int, relation: bool = True, gcp: bool = True) -> None:
        super().__init__()
        if n < 2:
            raise ValueError(f"a part granularity must be at least 2 (one-vs-rest needs a rest), got {n}")
        self.n, self.relation, self.gcp = n, relation, gcp
        self.local = PartConv(n, channels, dim)  # L_i
        self.rest = PartConv(n, channels, dim) if relation else None  # S_i
        self.fuse = PartConv(n, 2 * dim, dim) if relation else None  # R_i
        self.global_max = PartConv(1, channels, dim)  # M
        self.global_rest = PartConv(1, channels, dim) if gcp else None  # Q
        self.global_fuse = PartConv(1, 2 * dim, dim) if gcp else None  # P

    def pool_parts(self, rows: Tensor) -> Tensor:
        """``(N, C, H) -> (N, n, C)``: each part max-pooled (see :func:`part_bounds`)."""
        bounds = part_bounds(int(rows.shape[-1]), self.n)
        return torch.stack([rows[:, :, s:e].amax(dim=-1) for s, e in bounds], dim=1)

    @property
    def num_aux(self) -> int:
        """How many intermediate features differ from the outputs (see ``aux_ce`` in the module doc)."""
        return 2 * self.n * (self.rest is not None) + 2 * (self.global_rest is not None)

    def forward(self, rows: Tensor) -> tuple[Tensor, Tensor]:
        parts, g, _ = self.forward_all(rows)
        return parts, g

    def forward_all(self, rows: Tensor) -> tuple[Tensor, Tensor, list[Tensor]]:
        """``forward``'s outputs and the intermediate features ``[L(p) (N, n, dim), S(rest) (N, n, dim),
        M(m) (N, 1, dim), Q(r) (N, 1, dim)]`` (those of the modules switched on; :attr:`num_aux` in all)."""
        aux: list[Tensor] = []
        p = self.pool_parts(rows)
        total = p.sum(dim=1, keepdim=True)
        local = self.local(p)
        if self.rest is not None and self.fuse is not None:
            rest = self.rest((total - p) / (self.n - 1))
            parts = self.fuse(torch.cat([local, rest], dim=2)) + local
            aux += [local, rest]
        else:
            parts = local
        m = rows.amax(dim=-1)
        gm = self.global_max(m.unsqueeze(1))
        if self.global_rest is not None and self.global_fuse is not None:
            r = self.global_rest(((total.squeeze(1) - m) / (self.n - 1)).unsqueeze(1))
            g = gm + self.global_fuse(torch.cat([gm, r], dim=2))
            aux += [gm, r]
        else:
            g = gm
        return parts, g.squeeze(1), aux


class RelationNet(ResettableClassifier, nn.Module):
    """RRID around a backbone returning ``(N, C, H, W)`` maps (see the module docstring)."""

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int = 0,
        parts: Sequence[int] = (6, 4, 2),
        dim: int = 256,
        relation: bool = True,
        gcp: bool = True,
        embedding: Embedding = "all",
        aux_ce: bool = False,
    ) -> None:
        super().__init__()
        parts = tuple(int(n) for n in parts)
        if not parts:
            raise ValueError("parts must list at least one granularity, e.g. [6, 4, 2]")
        if embedding not in ("all", "global"):
            raise ValueError(f"embedding must be 'all' or 'global', not {embedding!r}")
        if dim <= 0:
            raise ValueError(f"dim must be positive, got {dim}")
        channels = int(backbone.out_features)  # type: ignore[arg-type]
        self.backbone = backbone
        self.parts, self.dim, self.embedding = parts, dim, embedding
        self.heads = nn.ModuleList(RelationHead(n, channels, dim, relation, gcp) for n in parts)
        self.num_branches = sum(parts) + len(parts)
        self.num_aux = sum(h.num_aux for h in self.heads) if aux_ce else 0
        self.feat_dim = dim * (self.num_branches if embedding == "all" else len(parts))
        self.reset_classifier(num_classes)

    def new_classifier(self, num_classes: int) -> nn.ModuleList:
        """One linear classifier per branch, then one per intermediate feature with ``aux_ce``; ``N(0, 0.001)``
        with zero bias."""
        count = self.num_branches + self.num_aux
        classifier = nn.ModuleList(nn.Linear(self.dim, num_classes) for _ in range(count))
        for fc in classifier:
            nn.init.normal_(fc.weight, std=0.001)
            nn.init.zeros_(fc.bias)
        return classifier

    def branches(self, x: Tensor) -> Tensor:
        """``(N, B, dim)``: the part features of every granularity, then the global features."""
        return self._features(x, aux=False)[0]

    def _features(self, x: Tensor, aux: bool) -> tuple[Tensor, Tensor | None]:
        """The branches ``(N, B, dim)`` and, with ``aux``, the intermediate features ``(N, A, dim)``."""
        rows = self.backbone(x).amax(dim=-1)  # (N, C, H)
        part_feats, global_feats, aux_feats = [], [], []
        for head in self.heads:
            parts, g, inner = head.forward_all(rows)
            part_feats.append(parts)
            global_feats.append(g.unsqueeze(1))
            aux_feats += inner
        return torch.cat(part_feats + global_feats, dim=1), torch.cat(aux_feats, dim=1) if aux and aux_feats else None

    def forward(self, x: Tensor) -> Tensor | dict[str, Tensor]:
        if not self.training:
            feats = self.branches(x)
            if self.embedding == "global":
                feats = feats[:, -len(self.parts) :]
            return feats.flatten(1)
        with_aux = self.num_aux > 0 and self.classifier is not None
        feats, inner = self._features(x, aux=with_aux)
        out = {"features": feats}
        if self.classifier is not None:
            fcs = list(self.classifier)
            out["logits"] = torch.stack([fc(feats[:, i]) for i, fc in enumerate(fcs[: self.num_branches])], dim=1)
            if inner is not None:
                heads = fcs[self.num_branches :]
                out["aux_logits"] = torch.stack([fc(inner[:, i]) for i, fc in enumerate(heads)], dim=1)
        return out
