"""HOReID's three modules (Wang et al., CVPR 2020, "High-Order Information Matters"), as small parts.

Notation: ``N`` images, ``K = 14`` graph nodes (13 body keypoints, then the global node; see
:mod:`reidkit.pose.skeleton`), ``C`` channels.

* :class:`SemanticNodes` (one-order, **S**): local node ``k`` is the heatmap-weighted average of the
  backbone map (``sum_xy H_k(x, y) F(x, y)`` with ``H_k`` summing to 1); the global node is
  ``GAP(F) + GMP(F)``. Each node has its own BNNeck and classifier; the per-node cross-entropy is
  weighted by the keypoint confidence (the global node's is 1), see :func:`confidence_weighted_ce`.
* :class:`AdaptiveDirectionGCN` (high-order relation, **R**): a graph convolution over the skeleton
  whose adjacency is learned per image. For every skeleton edge ``(i, j)`` between body nodes,
  ``d_k = |v_k - v_global|`` and ``a = sigmoid(s * w . BN(15 (d_i - d_j)))``; the edge gets weight
  ``2a`` from ``j`` to ``i`` and ``2(1 - a)`` from ``i`` to ``j`` (information flows towards the
  node that differs more from the global feature, i.e. away from occluded, unreliable nodes). Body
  nodes also receive from the global node, which keeps only itself; rows are L1-normalised. One
  layer is ``ReLU(W_m A V) + W_o V``; the module stacks two.
* :class:`GraphMatching` (high-order topology, **T**): cross-graph embedded alignment between two
  graphs. Two siamese graph-conv layers, each followed by a bilinear affinity ``S_ij = e1_i M e2_j``,
  a softmax "voting" (``alpha``) and Sinkhorn normalisation to a soft correspondence; after the first
  layer each graph is mixed with its aligned counterpart (``W [e1, S e2]``). The outputs are
  ``v1 + S v2`` and ``v2 + S^T v1``: each graph completed by the nodes of the other that match it.
  Permuting one graph's nodes (with its adjacency) permutes the correspondence and leaves the other
  graph's output unchanged: nothing in it depends on node order.
* :class:`Verifier`: ``sigmoid(w . BN(scale * n1 * n2) + b)`` on the L2-normalised, aligned nodes,
  flattened: the probability that the two images show the same person, trained with
  :func:`verification_loss` on hard pairs mined by the global feature (:func:`hard_pairs`).

At test time stage 1 ranks by the cosine of the node features scaled by ``sqrt(confidence)``
(:func:`stage1_embedding`); stage 2 re-scores the top candidates with the verifier.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reidkit.models.heads import ResettableClassifier
from reidkit.pose.skeleton import EDGES, GLOBAL, NUM_LOCAL, adjacency

K = NUM_LOCAL + 1

__all__ = [
    "AdaptiveDirectionGCN",
    "GraphMatching",
    "HOReIDNet",
    "SemanticNodes",
    "Verifier",
    "confidence_weighted_ce",
    "hard_pairs",
    "log_sinkhorn",
    "stage1_embedding",
    "verification_loss",
]


def skeleton_mask() -> Tensor:
    """``(K, K)`` 0/1: who receives from whom. Skeleton edges both ways, self loops, body nodes
    receive from the global node, the global node only from itself."""
    a = torch.from_numpy(adjacency(self_loops=True))
    a[GLOBAL, :GLOBAL] = 0.0
    return a


class SemanticNodes(nn.Module):
    """Backbone map + heatmaps -> ``(N, K, C)`` node features (see the module docstring)."""

    def forward(self, fmap: Tensor, heat: Tensor) -> Tensor:
        if heat.shape[0] != fmap.shape[0] or heat.shape[-2:] != fmap.shape[-2:] or heat.shape[1] != NUM_LOCAL:
            raise ValueError(
                f"heatmaps {tuple(heat.shape)} do not fit the feature map {tuple(fmap.shape)}: want (N, 13, h, w)"
            )
        local = torch.einsum("nkhw,nchw->nkc", heat, fmap)
        glob = fmap.mean((2, 3)) + fmap.amax((2, 3))
        return torch.cat([local, glob[:, None]], 1)


class _ADGCLayer(nn.Module):
    def __init__(self, c_in: int, c_out: int, scale: float) -> None:
        super().__init__()
        self.scale = scale
        self.bn = nn.BatchNorm1d(c_in)
        self.direction = nn.Linear(c_in, 1, bias=False)
        self.merged = nn.Linear(c_in, c_out, bias=False)
        self.original = nn.Linear(c_in, c_out, bias=False)
        edges = [(i, j) for i, j in EDGES if i < j] + [(j, i) for i, j in EDGES if i > j]
        self.register_buffer("edge_i", torch.tensor([e[0] for e in edges]), persistent=False)
        self.register_buffer("edge_j", torch.tensor([e[1] for e in edges]), persistent=False)
        self.register_buffer("mask", skeleton_mask(), persistent=False)

    def adjacency(self, v: Tensor) -> Tensor:
        """The learned, row-normalised ``(N, K, K)`` adjacency of node features ``v`` ``(N, K, C)``."""
        n = v.shape[0]
        d = (v - v[:, GLOBAL : GLOBAL + 1]).abs()  # (N, K, C)
        gap = 15.0 * (d[:, self.edge_i] - d[:, self.edge_j])  # (N, E, C)
        e = gap.shape[1]
        a = torch.sigmoid(self.scale * self.direction(self.bn(gap.reshape(n * e, -1))).reshape(n, e))
        adj = torch.ones(n, K, K, dtype=v.dtype, device=v.device)
        adj = adj.index_put((torch.arange(n, device=v.device)[:, None], self.edge_i, self.edge_j), 2 * a)
        adj = adj.index_put((torch.arange(n, device=v.device)[:, None], self.edge_j, self.edge_i), 2 * (1 - a))
        return F.normalize(adj * self.mask, p=1, dim=2)

    def forward(self, v: Tensor) -> Tensor:
        return F.relu(self.merged(self.adjacency(v) @ v)) + self.original(v)


class AdaptiveDirectionGCN(nn.Module):
    """Two adaptive-direction graph-conv layers over the skeleton (**R**): ``(N, K, C) -> (N, K, C)``."""

    def __init__(self, channels: int, hidden: int | None = None, scale: float = 20.0) -> None:
        super().__init__()
        hidden = hidden or channels
        self.layers = nn.ModuleList([_ADGCLayer(channels, hidden, scale), _ADGCLayer(hidden, channels, scale)])

    def forward(self, v: Tensor) -> Tensor:
        for layer in self.layers:
            v = layer(v)
        return v


def log_sinkhorn(log_s: Tensor, iterations: int = 20) -> Tensor:
    """Sinkhorn normalisation of ``exp(log_s)`` ``(N, K, K)``: rows, then columns, alternately
    normalised to sum 1 (doubly stochastic), computed on logarithms: with HOReID's sharp voting
    (``alpha = 200``) most entries underflow to 0 in linear space, and the division's gradient by a
    vanishing row sum turned the training loss to NaN."""
    for _ in range(iterations):
        log_s = log_s - torch.logsumexp(log_s, 2, keepdim=True)
        log_s = log_s - torch.logsumexp(log_s, 1, keepdim=True)
    return log_s.exp()


def _norm_adj(adj: Tensor) -> Tensor:
    return F.normalize(adj, p=1, dim=-1)


class GraphMatching(nn.Module):
    """Cross-graph embedded alignment (**T**): ``(v1, v2[, adj1, adj2]) -> (S, out1, out2)``."""

    def __init__(self, channels: int, hidden: int = 512, alpha: float = 200.0, iterations: int = 20) -> None:
        super().__init__()
        self.alpha, self.iterations = alpha, iterations
        self.gconv = nn.ModuleList([nn.Linear(channels, hidden), nn.Linear(hidden, hidden)])
        self.affinity = nn.ParameterList([nn.Parameter(torch.eye(hidden) + 0.01 * torch.randn(hidden, hidden))
                                          for _ in range(2)])  # fmt: skip
        self.cross = nn.Linear(2 * hidden, hidden)
        self.register_buffer("adj", skeleton_mask() + skeleton_mask().T > 0, persistent=False)

    def correspondence(self, e1: Tensor, e2: Tensor, layer: int) -> Tensor:
        s = e1 @ self.affinity[layer] @ e2.transpose(1, 2) / e1.shape[-1] ** 0.5
        # softmax voting over each row, then Sinkhorn: one log-domain Sinkhorn of alpha * s
        return log_sinkhorn(self.alpha * s / (s.abs().amax((1, 2), keepdim=True) + 1e-6), self.iterations)

    def forward(
        self, v1: Tensor, v2: Tensor, adj1: Tensor | None = None, adj2: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        a1 = _norm_adj((self.adj if adj1 is None else adj1).to(v1.dtype))
        a2 = _norm_adj((self.adj if adj2 is None else adj2).to(v2.dtype))
        e1, e2 = v1, v2
        s = v1.new_zeros(v1.shape[0], v1.shape[1], v2.shape[1])
        for i, lin in enumerate(self.gconv):
            e1, e2 = F.relu(lin(a1 @ e1)), F.relu(lin(a2 @ e2))
            s = self.correspondence(e1, e2, i)
            if i == 0:
                e1, e2 = (
                    self.cross(torch.cat([e1, s @ e2], -1)),
                    self.cross(torch.cat([e2, s.transpose(1, 2) @ e1], -1)),
                )
        return s, v1 + s @ v2, v2 + s.transpose(1, 2) @ v1


class Verifier(nn.Module):
    """Same-person logit of two aligned graphs ``(N, K, C)`` each (see the module docstring)."""

    def __init__(self, channels: int, scale: float = 10.0) -> None:
        super().__init__()
        self.scale = scale
        self.bn = nn.BatchNorm1d(K * channels)
        self.fc = nn.Linear(K * channels, 1)

    def forward(self, g1: Tensor, g2: Tensor) -> Tensor:
        x = self.scale * F.normalize(g1, dim=2) * F.normalize(g2, dim=2)
        return self.fc(self.bn(x.flatten(1))).squeeze(1)


def confidence_weighted_ce(logits: Tensor, targets: Tensor, confidence: Tensor, label_smoothing: float = 0.1) -> Tensor:
    """Mean over nodes of ``sum_n c_nk CE(logits_nk, y_n) / sum_n c_nk``: ``logits (N, K, classes)``,
    ``confidence (N, K)`` (1 for the global node). A node invisible in the whole batch adds nothing."""
    n, k, m = logits.shape
    ce = F.cross_entropy(logits.reshape(n * k, m), targets.repeat_interleave(k), reduction="none",
                         label_smoothing=label_smoothing).reshape(n, k)  # fmt: skip
    w = confidence.to(ce.dtype)
    per_node = (ce * w).sum(0) / w.sum(0).clamp_min(1e-6)
    return per_node[w.sum(0) > 0].mean()


def stage1_embedding(nodes: Tensor, confidence: Tensor) -> Tensor:
    """``(N, K * C)``: each node L2-normalised and scaled by ``sqrt(confidence)``, concatenated (its
    cosine is the confidence-weighted mean of the per-node cosines when confidences sum alike)."""
    return (F.normalize(nodes, dim=2) * confidence.clamp_min(0).sqrt()[..., None]).flatten(1)


def hard_pairs(global_feat: Tensor, pids: Tensor) -> tuple[Tensor, Tensor]:
    """For each row: the index of its hardest positive (farthest same-id, not itself when it has
    another) and hardest negative (closest other-id), by cosine distance of ``global_feat``."""
    f = F.normalize(global_feat.detach(), dim=1)
    dist = 1 - f @ f.T
    same = pids[:, None] == pids[None, :]
    eye = torch.eye(len(pids), dtype=torch.bool, device=pids.device)
    pos_d = dist.masked_fill(~same | (eye & (same.sum(1, keepdim=True) > 1)), -1.0)
    neg_d = dist.masked_fill(same, float("inf"))
    return pos_d.argmax(1), neg_d.argmin(1)


def verification_loss(pos_logit: Tensor, neg_logit: Tensor) -> Tensor:
    """Binary cross-entropy: positive pairs towards 1, negative pairs towards 0."""
    return 0.5 * (
        F.binary_cross_entropy_with_logits(pos_logit, torch.ones_like(pos_logit))
        + F.binary_cross_entropy_with_logits(neg_logit, torch.zeros_like(neg_logit))
    )


class _NodeLinear(nn.Module):
    """``K`` independent linear maps ``(N, K, C) -> (N, K, out)`` as one batched product."""

    def __init__(self, nodes: int, c_in: int, c_out: int, bias: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(nodes, c_out, c_in) * 0.001)
        self.bias = nn.Parameter(torch.zeros(nodes, c_out)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        y = torch.einsum("nkc,koc->nko", x, self.weight)
        return y if self.bias is None else y + self.bias


class HOReIDNet(ResettableClassifier, nn.Module):
    """HOReID around a backbone returning ``(N, C, h, w)`` maps.

    Input: ``(N, 3 + 13, H, W)``: the normalised RGB image and the 13 keypoint channels of
    :func:`reidkit.pose.skeleton.render_nodes` (so keypoints follow every resize, flip and crop, and
    the exported ONNX model is one tensor in, one out). Heatmaps are the keypoint channels
    average-pooled to the map and normalised to sum 1; confidences are their maxima.

    Eval mode returns the stage-1 embedding (:func:`stage1_embedding` of the relation-module nodes
    after their BNNeck, or of the semantic nodes with ``relation=False``): ``K * C`` wide. Train mode returns
    ``features`` ``(N, K, C)`` (semantic nodes, before their BNNeck), ``logits`` ``(N, K, classes)``,
    ``confidence`` ``(N, K)``, the same for the relation module (``relation_*``) and ``pairs``: a
    function of two index tensors giving the verifier's logits for those pairs of the batch (the
    topology module on the stage-1 nodes, used by the loss once it is switched on).
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int = 0,
        *,
        relation: bool = True,
        topology: bool = True,
        gm_hidden: int = 512,
    ) -> None:
        super().__init__()
        c = int(backbone.out_features)  # type: ignore[arg-type]
        self.backbone = backbone
        self.channels = c
        self.in_channels = 3 + NUM_LOCAL
        self.source: str | None = None  # the model file, once loaded from one (named by errors)
        self.nodes = SemanticNodes()
        self.bn = nn.BatchNorm1d(K * c)
        self.bn.bias.requires_grad_(False)
        self.relation = AdaptiveDirectionGCN(c) if relation else None
        self.relation_bn = nn.BatchNorm1d(K * c) if relation else None
        if self.relation_bn is not None:
            self.relation_bn.bias.requires_grad_(False)
        self.topology = GraphMatching(c, gm_hidden) if topology else None
        self.verifier = Verifier(c) if topology else None
        self.feat_dim = K * c
        self.reset_classifier(num_classes)

    def new_classifier(self, num_classes: int) -> nn.ModuleDict:
        """Per-node identity classifiers for the semantic (and relation) nodes."""
        heads = {"semantic": _NodeLinear(K, self.channels, num_classes)}
        if self.relation is not None:
            heads["relation"] = _NodeLinear(K, self.channels, num_classes)
        return nn.ModuleDict(heads)

    def graph(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(N, K, C)`` semantic nodes and ``(N, K)`` confidences of a ``(N, 16, H, W)`` batch."""
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"{self.source or 'this HOReID model'} takes {self.in_channels} input channels (RGB + 13 keypoint "
                f"maps), got {x.shape[1]}: embed it with its keypoint source (reidkit.pose.KeypointSource; "
                "reidkit.extract.make_embedder attaches one)"
            )
        fmap = self.backbone(x[:, :3])
        kp = x[:, 3:]
        heat = F.adaptive_avg_pool2d(kp, fmap.shape[-2:]).clamp_min(0)
        heat = heat / heat.sum((2, 3), keepdim=True).clamp_min(1e-12)
        conf = torch.cat([kp.amax((2, 3)).clamp(0, 1), kp.new_ones(kp.shape[0], 1)], 1)
        return self.nodes(fmap, heat), conf

    def _bn(self, bn: nn.BatchNorm1d, v: Tensor) -> Tensor:
        return bn(v.flatten(1)).view_as(v)

    def forward(self, x: Tensor) -> Tensor | dict[str, object]:
        v, conf = self.graph(x)
        bn_v = self._bn(self.bn, v)
        r = self.relation(v) if self.relation is not None else None
        bn_r = self._bn(self.relation_bn, r) if r is not None and self.relation_bn is not None else None
        final = stage1_embedding(bn_v if bn_r is None else bn_r, conf)
        if not self.training:
            return final
        out: dict[str, object] = {"features": v, "confidence": conf}
        if self.classifier is not None:
            out["logits"] = self.classifier["semantic"](bn_v)
        if r is not None and bn_r is not None:
            out["relation_features"] = r
            if self.classifier is not None:
                out["relation_logits"] = self.classifier["relation"](bn_r)
        if self.topology is not None and self.verifier is not None:
            z = final.view(final.shape[0], K, -1)  # the stage-1 nodes, as stage 2 sees gallery entries
            out["pairs"] = lambda a, b: self.verify(z[a], z[b])
        return out

    def verify(self, g1: Tensor, g2: Tensor) -> Tensor:
        """Same-person logits of graph pairs ``(M, K, C)`` x 2, given as stage-1 nodes (an embedding
        reshaped to ``(K, C)``), so stage 2 runs on stored gallery features: align, then verify."""
        if self.topology is None or self.verifier is None:
            raise ValueError("this HOReID model was built with topology=False: it has no verifier")
        _, o1, o2 = self.topology(g1, g2)
        return self.verifier(o1, o2)
