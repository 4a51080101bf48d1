"""RRID (reidkit.models.rrid): part splitting, the relation module and GCP by hand, gradients,
train/eval outputs, ONNX parity, model files, configs and bad input."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from reidkit.config import ConfigError, load_config
from reidkit.losses import ReIDLoss
from reidkit.models import build_model
from reidkit.models.rrid import PartConv, RelationHead, RelationNet, part_bounds
from reidkit.models.weights import WeightsMismatchError, load_weights

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "market1501"


class TinyBackbone(nn.Module):
    """Two convolutions, output stride 4: a (N, 3, 4H, W) image gives an (N, 8, H, W/4) map."""

    out_features = 8

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, 2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@pytest.mark.parametrize("height", [24, 16, 13])
@pytest.mark.parametrize("n", [6, 4, 2])
def test_part_bounds_cover_every_row_and_match_adaptive_pooling(height: int, n: int) -> None:
    bounds = part_bounds(height, n)
    assert len(bounds) == n and bounds[0][0] == 0 and bounds[-1][1] == height
    assert all(s < e for s, e in bounds)
    for (_, e0), (s1, _) in itertools.pairwise(bounds):
        assert s1 <= e0  # contiguous: no row is skipped (neighbours may share a boundary row)
    if height % n == 0:  # the paper's disjoint stripes
        assert bounds == [(i * height // n, (i + 1) * height // n) for i in range(n)]
    rows = torch.randn(2, 5, height)
    head = RelationHead(n, 5, 3)
    ref = F.adaptive_max_pool2d(rows.unsqueeze(-1), (n, 1)).flatten(2).transpose(1, 2)
    assert torch.equal(head.pool_parts(rows), ref)


def test_part_bounds_by_hand() -> None:
    assert part_bounds(16, 6) == [(0, 3), (2, 6), (5, 8), (8, 11), (10, 14), (13, 16)]
    assert part_bounds(13, 6) == [(0, 3), (2, 5), (4, 7), (6, 9), (8, 11), (10, 13)]
    assert part_bounds(24, 6) == [(0, 4), (4, 8), (8, 12), (12, 16), (16, 20), (20, 24)]


def test_too_many_parts_is_one_clear_error() -> None:
    with pytest.raises(ValueError, match=r"parts=6 is larger than the feature-map height 4"):
        part_bounds(4, 6)
    with pytest.raises(ValueError, match="at least 2"):
        RelationHead(1, 8, 4)
    model = RelationNet(TinyBackbone(), parts=(6, 2)).eval()
    with pytest.raises(ValueError, match=r"parts=6 is larger than the feature-map height 4"):
        model(torch.randn(1, 3, 16, 16))


def _set_scalar_weights(conv: PartConv, weights: list[list[float]]) -> None:
    """PartConv with 1-d outputs: ``weights[g]`` are group g's input weights; BatchNorm = identity."""
    with torch.no_grad():
        conv.weight.copy_(torch.tensor(weights).unsqueeze(-1))
    conv.bn.eps = 0.0


def test_relation_and_gcp_by_hand() -> None:
    # One channel, three rows = three parts p = [1, 4, 2]; every conv maps to 1 channel (dim = 1).
    head = RelationHead(3, channels=1, dim=1).eval()
    _set_scalar_weights(head.local, [[1.0], [1.0], [-1.0]])  # L_i: part 3 goes negative -> ReLU 0
    _set_scalar_weights(head.rest, [[2.0], [2.0], [2.0]])  # S_i
    _set_scalar_weights(head.fuse, [[1.0, 1.0]] * 3)  # R_i on cat[L, S]
    _set_scalar_weights(head.global_max, [[1.0]])  # M
    _set_scalar_weights(head.global_rest, [[3.0]])  # Q
    _set_scalar_weights(head.global_fuse, [[1.0, 1.0]])  # P on cat[M, Q]
    rows = torch.tensor([[[1.0, 4.0, 2.0]]])  # (N=1, C=1, H=3)
    parts, g = head(rows)
    # local = relu([1, 4, -2]) = [1, 4, 0]; rest = mean of the others = [3, 1.5, 2.5];
    # S(rest) = [6, 3, 5]; R = relu(local + S) = [7, 7, 5]; part = R + local = [8, 11, 5].
    assert parts.shape == (1, 3, 1)
    assert parts.flatten().tolist() == pytest.approx([8.0, 11.0, 5.0])
    # GCP: m = 4, r = (1 + 4 + 2 - 4) / 2 = 1.5; M(m) = 4, Q(r) = 4.5, P = relu(4 + 4.5) = 8.5; g = 4 + 8.5.
    assert g.flatten().tolist() == pytest.approx([12.5])


def test_ablation_switches_by_hand() -> None:
    head = RelationHead(3, channels=1, dim=1, relation=False, gcp=False).eval()
    assert head.rest is None and head.fuse is None and head.global_rest is None and head.global_fuse is None
    _set_scalar_weights(head.local, [[1.0], [2.0], [1.0]])
    _set_scalar_weights(head.global_max, [[1.0]])
    parts, g = head(torch.tensor([[[1.0, 4.0, 2.0]]]))
    assert parts.flatten().tolist() == pytest.approx([1.0, 8.0, 2.0])  # L_i(p_i) only
    assert g.flatten().tolist() == pytest.approx([4.0])  # plain max pooling


def test_partconv_groups_are_independent_convs() -> None:
    conv = PartConv(3, 5, 4).eval()
    x = torch.randn(2, 3, 5)
    out = conv(x)
    for i in range(3):  # a reference 1x1 conv + BN + ReLU per group
        ref_conv = nn.Conv2d(5, 4, 1, bias=False)
        ref_conv.weight.data = conv.weight[i].T.reshape(4, 5, 1, 1)
        bn = conv.bn
        sl = slice(4 * i, 4 * i + 4)
        y = ref_conv(x[:, i].reshape(2, 5, 1, 1)).flatten(1)
        y = (y - bn.running_mean[sl]) / torch.sqrt(bn.running_var[sl] + bn.eps) * bn.weight[sl] + bn.bias[sl]
        torch.testing.assert_close(out[:, i], F.relu(y))


def test_train_outputs_losses_and_gradients_reach_every_branch() -> None:
    torch.manual_seed(0)
    model = RelationNet(TinyBackbone(), num_classes=5, dim=4).train()
    assert model.num_branches == 15 and model.feat_dim == 60
    x = torch.randn(8, 3, 48, 16)  # a 12 x 4 map
    pids = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    out = model(x)
    assert set(out) == {"features", "logits"}
    assert out["features"].shape == (8, 15, 4) and out["logits"].shape == (8, 15, 5)
    losses = ReIDLoss(5, margin=1.2)(out, pids)
    per_branch_ce = [F.cross_entropy(out["logits"][:, b], pids, label_smoothing=0.1) for b in range(15)]
    assert losses["ce"].item() == pytest.approx(torch.stack(per_branch_ce).mean().item(), rel=1e-5)
    losses["total"].backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert no_grad == []


@pytest.mark.parametrize(("relation", "gcp", "n_aux"), [(True, True, 30), (False, True, 6), (True, False, 24)])
def test_aux_ce_supervises_the_intermediate_features(relation: bool, gcp: bool, n_aux: int) -> None:
    # the official code's deep supervision: a classifier on L(p) and S(rest) of every part and M(m), Q(r) of every
    # granularity, those of a module switched off left out; CE is one mean over branches and intermediates
    torch.manual_seed(0)
    model = RelationNet(TinyBackbone(), num_classes=5, dim=4, relation=relation, gcp=gcp, aux_ce=True).train()
    assert model.num_aux == n_aux and len(model.classifier) == 15 + n_aux
    x = torch.randn(8, 3, 48, 16)
    pids = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    out = model(x)
    assert out["logits"].shape == (8, 15, 5) and out["aux_logits"].shape == (8, n_aux, 5)
    # by hand for the first granularity (6 parts): L(p) and S(rest) of part 0 feed classifiers 15 and 21
    rows = model.backbone(x).amax(-1)
    head = model.heads[0]
    p = head.pool_parts(rows)
    local = head.local(p)
    if relation:
        rest = head.rest((p.sum(1, keepdim=True) - p) / 5)
        torch.testing.assert_close(out["aux_logits"][:, 0], model.classifier[15](local[:, 0]))
        torch.testing.assert_close(out["aux_logits"][:, 6], model.classifier[21](rest[:, 0]))
    elif gcp:  # no relation: only M(m) and Q(r) per granularity
        gm = head.global_max(rows.amax(-1).unsqueeze(1))
        torch.testing.assert_close(out["aux_logits"][:, 0], model.classifier[15](gm[:, 0]))
    losses = ReIDLoss(5, margin=1.2)(out, pids)
    every = torch.cat([out["logits"], out["aux_logits"]], 1)
    per_head = [F.cross_entropy(every[:, b], pids, label_smoothing=0.1) for b in range(15 + n_aux)]
    assert losses["ce"].item() == pytest.approx(torch.stack(per_head).mean().item(), rel=1e-5)
    # the aux classifiers alone reach the modules they supervise
    model.zero_grad()
    out["aux_logits"].logsumexp(-1).sum().backward()
    assert model.heads[0].local.weight.grad.abs().sum() > 0 if relation else model.heads[0].global_max.weight.grad.any()
    # eval is unchanged: the same embedding as a model without aux classifiers
    plain = RelationNet(TinyBackbone(), num_classes=0, dim=4, relation=relation, gcp=gcp)
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("classifier.")})
    torch.testing.assert_close(model.eval()(x), plain.eval()(x))


def test_eval_embedding_sizes() -> None:
    x = torch.randn(2, 3, 48, 16)
    full = RelationNet(TinyBackbone(), dim=4).eval()
    assert full(x).shape == (2, 60)
    small = RelationNet(TinyBackbone(), dim=4, embedding="global").eval()
    small.load_state_dict(full.state_dict())
    assert small.feat_dim == 12
    torch.testing.assert_close(small(x), full(x)[:, -12:])  # the three GCP features
    custom = RelationNet(TinyBackbone(), parts=(3, 2), dim=4).eval()
    assert custom(x).shape == (2, 4 * (3 + 2 + 2))


def test_build_model_rrid_on_registry_backbones() -> None:
    model = build_model("mobilenet_v2", 10, head="rrid", last_stride=1).eval()
    assert isinstance(model, RelationNet) and model.feat_dim == 3840
    with torch.inference_mode():
        assert model.backbone(torch.randn(1, 3, 128, 64)).shape[-2:] == (8, 4)  # stride 16 with last_stride=1
        assert model(torch.randn(1, 3, 128, 64)).shape == (1, 3840)
    model = build_model("osnet_x0_25", 0, head="rrid", parts=[4, 2], dim=32).eval()
    with torch.inference_mode():
        assert model(torch.randn(2, 3, 64, 32)).shape == (2, 32 * 8)


def test_bad_options_name_the_setting() -> None:
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['partz'\]"):
        build_model("osnet_x0_25", head="rrid", partz=[6])
    with pytest.raises(ValueError, match=r"\['pooling'\] only apply to head='baseline'"):
        build_model("osnet_x0_25", head="rrid", pooling="max")
    with pytest.raises(ConfigError, match=r"model\.neck applies only to head=baseline"):
        load_config(CONFIGS / "cpu_rrid_mobilenetv2.yaml", ["model.neck=none"])
    with pytest.raises(ValueError, match="embedding must be"):
        build_model("osnet_x0_25", head="rrid", embedding="parts")


def test_checkpoint_of_another_head_is_named() -> None:
    baseline = build_model("osnet_x0_25", 0)
    rrid = build_model("osnet_x0_25", 0, head="rrid")
    match = r"^baseline\.pth does not fit RelationNet: it holds a head='baseline'"
    with pytest.raises(WeightsMismatchError, match=match):
        load_weights(rrid, baseline.state_dict(), source="baseline.pth")


@pytest.mark.parametrize("name", ["cpu_rrid_mobilenetv2.yaml", "rrid_resnet50.yaml"])
def test_configs_load_and_build(name: str) -> None:
    cfg = load_config(CONFIGS / name)
    assert cfg.model.head == "rrid" and cfg.model.kwargs["parts"] == [6, 4, 2]
    assert cfg.loss.triplet.margin == 1.2
    from reidkit.engine.trainer import build_model_from_config, build_optimizer

    cfg.model.pretrained = False
    model = build_model_from_config(cfg.model, 751)
    assert isinstance(model, RelationNet) and model.feat_dim == 3840
    if name == "rrid_resnet50.yaml":  # the paper: 1e-3 for the backbone, 1e-2 for the new layers
        assert (cfg.data.height, cfg.solver.optimizer, cfg.solver.milestones) == (384, "sgd", [40, 60])
        assert model.num_aux == 30 and len(model.classifier) == 45  # the official code's 45 classifiers
        with torch.inference_mode():
            assert model.eval().backbone(torch.randn(1, 3, 384, 128)).shape[-2:] == (24, 8)
        lrs = sorted({g["lr"] for g in build_optimizer(model, cfg.solver).param_groups})
        assert lrs == pytest.approx([1e-3, 1e-2])


def test_onnx_export_parity(tmp_path: Path) -> None:
    from reidkit.export import export_onnx, onnx_features, parity

    torch.manual_seed(0)
    model = build_model("osnet_x0_25", 0, head="rrid", dim=64).eval()
    path = tmp_path / "rrid.onnx"
    report = export_onnx(model, path, height=96, width=32)
    assert report.feat_dim == 64 * 15 and report.min_cosine >= 0.9999
    x = torch.randn(3, 3, 96, 32)
    with torch.inference_mode():
        ref = model(x).numpy()
    cos, max_abs = parity(ref, onnx_features(path, x.numpy()))
    assert cos >= 0.9999 and max_abs < 1e-3


def test_model_file_round_trip_and_embedder(tmp_path: Path) -> None:
    from reidkit.embed import Embedder
    from reidkit.models.zoo import ModelInfo, load_model, save_model_file

    torch.manual_seed(0)
    model = build_model("osnet_x0_25", 7, head="rrid", dim=32).eval()
    build = {"head": "rrid", "pooling": "avg", "neck": "bnneck", "feat_after_bn": True, "parts": [6, 4, 2], "dim": 32}
    path = tmp_path / "rrid.pth"
    save_model_file(path, model, ModelInfo("osnet_x0_25", 96, 32, model.feat_dim, build=build), half=True)
    assert not any(k.startswith("classifier.") for k in torch.load(path, weights_only=True)["state_dict"])
    loaded, info = load_model(None, path)
    assert isinstance(loaded, RelationNet) and info.feat_dim == 480
    feats = Embedder.from_model(loaded, height=96, width=32).embed([torch.rand(3, 96, 32) for _ in range(2)])
    assert feats.shape == (2, 480)
    assert abs(float((feats**2).sum(1).mean()) - 1.0) < 1e-4


def test_shipped_rrid_model_loads_with_its_calibration() -> None:
    from reidkit.models.zoo import load_model
    from reidkit.search.query.calibrate import thresholds_for

    pretrained = Path(__file__).parents[1] / "src" / "reidkit" / "models" / "pretrained"
    path = pretrained / "mobilenet_v2_rrid_market1501_cpu.pth"
    assert path.stat().st_size < 32 * 2**20
    model, info = load_model(None, path)
    assert info.build["head"] == "rrid" and info.feat_dim == 3840
    with torch.inference_mode():
        assert model(torch.randn(1, 3, 256, 128)).shape == (1, 3840)
    assert thresholds_for(info).source.startswith("calibrated")
