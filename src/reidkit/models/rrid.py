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

    def forward(self, rows: Tensor) -> tuple[Tensor, Tensor]:
        p = self.pool_parts(rows)
        total = p.sum(dim=1, keepdim=True)
        local = self.local(p)
        if self.rest is not None and self.fuse is not None:
            rest = (total - p) / (self.n - 1)
            parts = self.fuse(torch.cat([local, self.rest(rest)], dim=2)) + local
        else:
            parts = local
        m = rows.amax(dim=-1)
        gm = self.global_max(m.unsqueeze(1))
        if self.global_rest is not None and self.global_fuse is not None:
            r = (total.squeeze(1) - m) / (self.n - 1)
            g = gm + self.global_fuse(torch.cat([gm, self.global_rest(r.unsqueeze(1))], dim=2))
        else:
            g = gm
        return parts, g.squeeze(1)


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
        self.feat_dim = dim * (self.num_branches if embedding == "all" else len(parts))
        self.reset_classifier(num_classes)

    def new_classifier(self, num_classes: int) -> nn.ModuleList:
        """One linear classifier per branch, ``N(0, 0.001)`` with zero bias."""
        classifier = nn.ModuleList(nn.Linear(self.dim, num_classes) for _ in range(self.num_branches))
        for fc in classifier:
            nn.init.normal_(fc.weight, std=0.001)
            nn.init.zeros_(fc.bias)
        return classifier

    def branches(self, x: Tensor) -> Tensor:
        """``(N, B, dim)``: the part features of every granularity, then the global features."""
        rows = self.backbone(x).amax(dim=-1)  # (N, C, H)
        part_feats, global_feats = [], []
        for head in self.heads:
            parts, g = head(rows)
            part_feats.append(parts)
            global_feats.append(g.unsqueeze(1))
        return torch.cat(part_feats + global_feats, dim=1)

    def forward(self, x: Tensor) -> Tensor | dict[str, Tensor]:
        feats = self.branches(x)
        if not self.training:
            if self.embedding == "global":
                feats = feats[:, -len(self.parts) :]
            return feats.flatten(1)
        out = {"features": feats}
        if self.classifier is not None:
            out["logits"] = torch.stack([fc(feats[:, i]) for i, fc in enumerate(self.classifier)], dim=1)
        return out
