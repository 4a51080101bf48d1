"""HOReID's modules against hand computations and straightforward references on tiny tensors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reidkit.models.horeid import (
    AdaptiveDirectionGCN,
    GraphMatching,
    K,
    SemanticNodes,
    Verifier,
    _ADGCLayer,
    confidence_weighted_ce,
    hard_pairs,
    log_sinkhorn,
    skeleton_mask,
    stage1_embedding,
    verification_loss,
)
from reidkit.pose.skeleton import EDGES, GLOBAL, NUM_LOCAL


def test_semantic_nodes_by_hand() -> None:
    fmap = torch.arange(2 * 2 * 3, dtype=torch.float32).reshape(1, 2, 2, 3)  # C=2, h=2, w=3
    heat = torch.zeros(1, NUM_LOCAL, 2, 3)
    heat[0, 0, 1, 2] = 1.0  # node 0 sits on cell (1, 2)
    heat[0, 1] = 1.0 / 6  # node 1 spread evenly
    v = SemanticNodes()(fmap, heat)
    assert v.shape == (1, K, 2)
    torch.testing.assert_close(v[0, 0], fmap[0, :, 1, 2])
    torch.testing.assert_close(v[0, 1], fmap[0].mean((1, 2)))
    torch.testing.assert_close(v[0, GLOBAL], fmap[0].mean((1, 2)) + fmap[0].amax((1, 2)))
    with pytest.raises(ValueError, match=r"want \(N, 13, h, w\)"):
        SemanticNodes()(fmap, torch.zeros(1, 13, 4, 3))


def _reference_adjacency(layer: _ADGCLayer, v: torch.Tensor) -> torch.Tensor:
    """The adjacency written out edge by edge (as the paper describes it)."""
    n, k, _ = v.shape
    d = (v - v[:, GLOBAL : GLOBAL + 1]).abs()
    mask = skeleton_mask()
    adj = torch.ones(n, k, k)
    pairs = sorted((min(i, j), max(i, j)) for i, j in EDGES)
    gaps = torch.stack([15.0 * (d[:, i] - d[:, j]) for i, j in pairs], 1)  # (N, E, C)
    bn = layer.bn
    normed = (gaps - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
    a = torch.sigmoid(layer.scale * (normed @ layer.direction.weight[0]))
    for e, (i, j) in enumerate(pairs):
        adj[:, i, j] = 2 * a[:, e]
        adj[:, j, i] = 2 * (1 - a[:, e])
    adj = adj * mask
    return adj / adj.sum(2, keepdim=True)


def test_learned_adjacency_shape_normalisation_reference_and_gradient() -> None:
    torch.manual_seed(0)
    layer = _ADGCLayer(8, 8, scale=2.0).eval()
    with torch.no_grad():
        layer.bn.running_mean.uniform_(-0.1, 0.1)
        layer.bn.running_var.uniform_(0.5, 2.0)
    v = torch.randn(3, K, 8)
    adj = layer.adjacency(v)
    assert adj.shape == (3, K, K)
    torch.testing.assert_close(adj.sum(2), torch.ones(3, K))  # row-normalised
    assert (adj[:, skeleton_mask() == 0] == 0).all()  # only skeleton edges, self loops, global -> body
    torch.testing.assert_close(adj[:, GLOBAL], F.one_hot(torch.tensor(GLOBAL), K).float().expand(3, K))
    assert (adj[:, :GLOBAL, GLOBAL] > 0).all()  # every body node hears the global node
    torch.testing.assert_close(adj, _reference_adjacency(layer, v))
    # the direction of an edge flips with the sign of the difference: i gets more when it differs more
    layer.train()
    gcn = AdaptiveDirectionGCN(8, scale=2.0)
    x = torch.randn(4, K, 8, requires_grad=True)
    out = gcn(x)
    assert out.shape == (4, K, 8)
    out.square().mean().backward()
    for name, p in gcn.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert x.grad is not None and x.grad.abs().sum() > 0


def _sinkhorn_reference(s: torch.Tensor, iterations: int) -> torch.Tensor:
    """Sinkhorn in linear space, as written down: rows, then columns, normalised to sum 1."""
    for _ in range(iterations):
        s = s / s.sum(2, keepdim=True)
        s = s / s.sum(1, keepdim=True)
    return s


def test_sinkhorn_is_doubly_stochastic() -> None:
    s = log_sinkhorn(torch.log(torch.rand(2, 5, 5) + 0.1), iterations=50)
    torch.testing.assert_close(s.sum(1), torch.ones(2, 5), atol=1e-4, rtol=0)
    torch.testing.assert_close(s.sum(2), torch.ones(2, 5), atol=1e-4, rtol=0)
    x = torch.randn(2, 5, 5)
    torch.testing.assert_close(log_sinkhorn(x, 50), _sinkhorn_reference(torch.softmax(x, 2), 50), atol=1e-5, rtol=0)
    sharp = (200 * torch.randn(2, 5, 5)).requires_grad_()  # HOReID's alpha: linear space underflows
    log_sinkhorn(sharp).sum().backward()
    assert sharp.grad is not None and torch.isfinite(sharp.grad).all()


def test_graph_matching_shapes_and_node_order_invariance() -> None:
    torch.manual_seed(1)
    gm = GraphMatching(16, hidden=12, alpha=5.0)
    v1, v2 = torch.randn(2, K, 16), torch.randn(2, K, 16, requires_grad=True)
    s, o1, o2 = gm(v1, v2)
    assert s.shape == (2, K, K) and o1.shape == o2.shape == (2, K, 16)
    torch.testing.assert_close(s.sum(1), torch.ones(2, K), atol=1e-3, rtol=0)
    perm = torch.randperm(K)
    adj = gm.adj.float()
    s_p, o1_p, o2_p = gm(v1, v2[:, perm], adj, adj[perm][:, perm])
    torch.testing.assert_close(o1_p, o1, atol=1e-5, rtol=1e-5)  # graph 1's output ignores graph 2's order
    torch.testing.assert_close(o2_p, o2[:, perm], atol=1e-5, rtol=1e-5)  # graph 2's output follows it
    torch.testing.assert_close(s_p, s[:, :, perm], atol=1e-5, rtol=1e-5)
    (o1.sum() + o2.sum()).backward()
    assert all(p.grad is not None for p in gm.parameters())


def test_verifier_and_verification_loss() -> None:
    ver = Verifier(6)
    g = torch.randn(5, K, 6)
    logit = ver(g, g)
    assert logit.shape == (5,)
    zero = torch.zeros(3)
    assert verification_loss(zero, zero).item() == pytest.approx(math.log(2))
    big = torch.full((3,), 20.0)
    assert verification_loss(big, -big).item() < 1e-6
    assert verification_loss(-big, big).item() == pytest.approx(20.0, abs=1e-3)
    (verification_loss(ver(g, g.flip(0)), ver(g, g))).backward()
    assert ver.fc.weight.grad is not None and ver.fc.weight.grad.abs().sum() > 0


def test_verifier_learns_hard_pairs_through_the_loss() -> None:
    """The loss must show the verifier positives and negatives in one batch: its BatchNorm,
    normalising each set on its own, erased their difference (the loss sat at ln 2)."""
    from reidkit.losses import ReIDLoss

    torch.manual_seed(0)
    ids, per, c = 8, 4, 16
    pids = torch.arange(ids).repeat_interleave(per)
    protos = torch.randn(ids, K, c)
    gm, ver = GraphMatching(c, 16), Verifier(c)
    opt = torch.optim.Adam([*gm.parameters(), *ver.parameters()], lr=1e-2)
    loss_fn = ReIDLoss(ids, triplet_weight=0.0, verification_start=1)
    losses = []
    for _ in range(60):
        nodes = protos[pids] + 0.8 * torch.randn(len(pids), K, c)
        z = F.normalize(nodes, dim=2)
        out = {
            "features": nodes,
            "confidence": torch.ones(len(pids), K),
            "logits": torch.zeros(len(pids), K, ids),
            "pairs": lambda a, b, z=z: ver(*gm(z[a], z[b])[1:]),
        }
        loss = loss_fn(out, pids)["verification"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] > 0.6  # the old code: 0.734 -> 0.695 (ln 2) after 60 steps; now -> 0.001
    assert sum(losses[-10:]) / 10 < 0.2


def test_confidence_weighted_ce_by_hand() -> None:
    logits = torch.tensor([[[2.0, 0.0], [0.0, 1.0]], [[0.5, 0.5], [3.0, 0.0]]])  # (N=2, K=2, classes=2)
    y = torch.tensor([0, 1])
    conf = torch.tensor([[1.0, 0.5], [0.0, 1.0]])
    got = confidence_weighted_ce(logits, y, conf, label_smoothing=0.0)

    def ce(z: list[float], t: int) -> float:
        return -(z[t] - math.log(sum(math.exp(v) for v in z)))

    node0 = (1.0 * ce([2, 0], 0) + 0.0 * ce([0.5, 0.5], 1)) / 1.0
    node1 = (0.5 * ce([0, 1], 0) + 1.0 * ce([3, 0], 1)) / 1.5
    assert got.item() == pytest.approx((node0 + node1) / 2, rel=1e-5)
    only = confidence_weighted_ce(logits, y, torch.tensor([[1.0, 0.0], [1.0, 0.0]]), label_smoothing=0.0)
    assert only.item() == pytest.approx((ce([2, 0], 0) + ce([0.5, 0.5], 1)) / 2, rel=1e-5)  # node 1 unseen


def test_stage1_embedding_is_confidence_weighted_cosine() -> None:
    a, b = torch.randn(1, K, 4), torch.randn(1, K, 4)
    ca, cb = torch.rand(1, K), torch.rand(1, K)
    dot = (stage1_embedding(a, ca) * stage1_embedding(b, cb)).sum()
    cos = F.cosine_similarity(a[0], b[0], dim=1)
    assert dot.item() == pytest.approx(float((torch.sqrt(ca[0] * cb[0]) * cos).sum()), rel=1e-5)


def test_hard_pairs_by_hand() -> None:
    f = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.7, 0.6], [0.1, 0.9]])
    pids = torch.tensor([0, 0, 1, 1, 2])
    pos, neg = hard_pairs(f, pids)
    assert pos.tolist()[:4] == [1, 0, 3, 2] and pos[4] == 4  # the only other same-id row; itself if none
    # hardest negative = the closest row of another id
    assert neg.tolist() == [3, 3, 4, 1, 2]


# --- the model --------------------------------------------------------------------------------------


def _tiny_input(n: int = 4, h: int = 64, w: int = 32) -> torch.Tensor:
    import numpy as np

    from reidkit.pose.skeleton import render_nodes

    rng = np.random.default_rng(0)
    rgb = torch.randn(n, 3, h, w)
    maps = []
    for _ in range(n):
        nodes = np.c_[rng.uniform(0, w, 13), rng.uniform(0, h, 13), rng.uniform(0.2, 1, 13)].astype(np.float32)
        maps.append(torch.from_numpy(render_nodes(nodes, (h, w), (h, w), sigma=2.0)))
    return torch.cat([rgb, torch.stack(maps)], 1)


def _model(num_classes: int = 5, **kw):
    from reidkit.models import build_model

    return build_model("resnet18", num_classes, head="horeid", gm_hidden=32, **kw)


def test_horeid_head_train_and_eval_outputs_and_gradients() -> None:
    torch.manual_seed(0)
    model = _model()
    x = _tiny_input()
    out = model.train()(x)
    c = model.channels
    assert out["features"].shape == (4, K, c) and out["logits"].shape == (4, K, 5)
    assert out["relation_logits"].shape == (4, K, 5) and out["confidence"].shape == (4, K)
    assert (out["confidence"][:, GLOBAL] == 1).all() and (out["confidence"][:, :GLOBAL] <= 1).all()
    pos, neg = hard_pairs(out["features"][:, GLOBAL], torch.tensor([0, 0, 1, 1]))
    ver = out["pairs"](torch.arange(4), pos), out["pairs"](torch.arange(4), neg)
    y = torch.tensor([0, 0, 1, 1])
    loss = (
        confidence_weighted_ce(out["logits"], y, out["confidence"])
        + confidence_weighted_ce(out["relation_logits"], y, out["confidence"])
        + verification_loss(*ver)
    )
    loss.backward()
    for name in ("backbone", "relation", "topology", "verifier", "classifier"):
        grads = [p.grad for n, p in model.named_parameters() if n.startswith(name) and p.requires_grad]
        assert grads and all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads), name
    emb = model.eval()(x)
    assert emb.shape == (4, model.feat_dim) and model.feat_dim == K * c
    with pytest.raises(ValueError, match="16 input channels"):
        model(torch.randn(1, 3, 64, 32))
    s_only = _model(relation=False, topology=False).train()(x)
    assert "relation_logits" not in s_only and "pairs" not in s_only


def test_horeid_bad_options() -> None:
    from reidkit.models import build_model

    with pytest.raises(ValueError, match="only apply to head='baseline'"):
        build_model("resnet18", head="horeid", pooling="max")
    with pytest.raises(ValueError, match="HOReID takes"):
        build_model("resnet18", head="horeid", parts=[6])


def test_horeid_stage1_onnx_parity_and_model_file(tmp_path) -> None:
    from reidkit.export import export_onnx, onnx_features, parity
    from reidkit.models.zoo import ModelInfo, load_model, save_model_file

    torch.manual_seed(0)
    model = _model(num_classes=0).eval()
    x = _tiny_input(3)
    report = export_onnx(model, tmp_path / "horeid.onnx", height=64, width=32)
    assert report.min_cosine > 0.9999
    with torch.no_grad():
        ref = model(x).numpy()
    cos, _ = parity(ref, onnx_features(tmp_path / "horeid.onnx", x.numpy()))
    assert cos > 0.9999
    info = ModelInfo("resnet18", 64, 32, model.feat_dim, build={"head": "horeid", "gm_hidden": 32})
    save_model_file(tmp_path / "horeid.pth", model, info)
    again, got = load_model(None, tmp_path / "horeid.pth")
    assert got.feat_dim == model.feat_dim
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x))
    # embedded without its keypoint source: one sentence naming the file, torch and ONNX alike
    from reidkit.embed import Embedder

    image = np.zeros((64, 32, 3), np.uint8)
    with pytest.raises(ValueError, match=r"horeid\.pth takes 16 input channels .* keypoint source"):
        Embedder.from_model(again, height=64, width=32).embed([image])
    with pytest.raises(ValueError, match=r"horeid\.onnx: this model takes 16 input channels .* keypoint source"):
        Embedder.from_onnx(tmp_path / "horeid.onnx", height=64, width=32).embed([image])


def test_horeid_model_file_embeds_paths_and_arrays_with_keypoints(tmp_path, data_root) -> None:
    import numpy as np

    from reidkit.extract import make_embedder
    from reidkit.imaging import to_rgb_array
    from reidkit.models.zoo import ModelInfo, save_model_file

    torch.manual_seed(0)
    model = _model(num_classes=0).eval()
    info = ModelInfo("resnet18", 64, 32, model.feat_dim, build={"head": "horeid", "gm_hidden": 32})
    weights = tmp_path / "horeid_random.pth"
    save_model_file(weights, model, info)
    paths = [str(p) for p in sorted((data_root / "market1501" / "query").glob("*.jpg"))[:6]]
    emb, got = make_embedder(None, weights, "torch", batch_size=4, threads=1)
    assert emb.keypoints is not None and got.feat_dim == K * model.channels
    f = emb.embed(paths)
    assert f.shape == (6, model.feat_dim) and np.isfinite(f).all()
    assert len(emb.keypoints.cache) >= 6  # computed once, kept by content
    arrays = emb.embed([to_rgb_array(p) for p in paths])  # in-memory crops: computed, same keypoints
    np.testing.assert_allclose(arrays, f, atol=1e-5)
    onnx, _ = make_embedder(None, weights, "onnx", batch_size=4, threads=1)
    np.testing.assert_allclose(onnx.embed(paths), f, atol=1e-4)
    flip, _ = make_embedder(None, weights, "torch", batch_size=4, threads=1, flip=True)
    ff = flip.embed(paths)
    assert ff.shape == f.shape and not np.allclose(ff, f)


@pytest.mark.parametrize("name", ["cpu_horeid_mobilenetv2.yaml", "horeid_resnet50.yaml"])
def test_horeid_configs_load_and_build(name: str) -> None:
    from pathlib import Path

    from reidkit.config import ConfigError, load_config
    from reidkit.models.build import build_model

    path = Path(__file__).parents[1] / "configs" / "market1501" / name
    cfg = load_config(path, ["model.pretrained=false"])
    assert cfg.model.head == "horeid" and cfg.loss.verification.start_epoch > 1
    model = build_model(cfg.model.name, 10, None, head="horeid", last_stride=cfg.model.last_stride, **cfg.model.kwargs)
    assert model.in_channels == 16
    with pytest.raises(ConfigError, match="applies only to head=baseline"):
        load_config(path, ["model.pooling=max"])


def test_rescore_top_k_by_hand() -> None:
    import numpy as np

    from reidkit.evaluation.verify import rescore_top_k

    dist = np.array([[0.1, 0.2, 0.3, 0.9], [0.5, 0.4, 0.1, 0.2]])
    qf, gf = np.zeros((2, 1)), np.arange(4, dtype=np.float64)[:, None]
    probs = {0: 0.0, 1: 0.9, 2: 0.0, 3: 1.0}  # the verifier trusts gallery 1 and 3

    def verify(a, b):
        return np.array([probs[int(g)] for g in b[:, 0]])

    out = rescore_top_k(dist, qf, gf, verify, k=2, sign=1.0)
    # query 0: top 2 are g0 (sim 0.9 + 0) and g1 (0.8 + 0.9): g1 moves first, taking distance 0.1
    np.testing.assert_allclose(out[0], [0.2, 0.1, 0.3, 0.9])
    # query 1: top 2 are g2 (0.9 + 0) and g3 (0.8 + 1.0): swapped; the others untouched
    np.testing.assert_allclose(out[1], [0.5, 0.4, 0.2, 0.1])
    np.testing.assert_allclose(rescore_top_k(dist, qf, gf, verify, k=2, sign=-1.0), dist)  # -prob keeps them
    with pytest.raises(ValueError, match="k must be"):
        rescore_top_k(dist, qf, gf, verify, k=0)


def test_cli_eval_stage2(tmp_path, data_root, monkeypatch) -> None:
    from rich.console import Console
    from typer.testing import CliRunner

    import reidkit.cli.common
    from reidkit.cli import app
    from reidkit.models.zoo import ModelInfo, save_model_file

    torch.manual_seed(0)
    model = _model(num_classes=0).eval()
    weights = tmp_path / "h.pth"
    info = ModelInfo("resnet18", 64, 32, model.feat_dim, build={"head": "horeid", "gm_hidden": 32})
    save_model_file(weights, model, info)
    src = sorted((data_root / "market1501" / "bounding_box_test").glob("000[12]_*.jpg"))[:10]
    src += sorted((data_root / "market1501" / "query").glob("000[12]_*.jpg"))[:4]
    root = tmp_path / "mini"
    for p in src:
        split = "query" if p.parent.name == "query" else "gallery"
        (root / split).mkdir(parents=True, exist_ok=True)
        (root / split / p.name).write_bytes(p.read_bytes())
    monkeypatch.setattr(reidkit.cli.common, "console", Console(width=200))
    args = ["eval", "--weights", str(weights), "--dataset", "folder", "--root", str(root), "--backend", "torch"]
    plus_only = CliRunner().invoke(app, [*args, "--stage2", "4"])  # the default sign: +prob
    assert plus_only.exit_code == 0, plus_only.output
    assert "stage 2 (+prob, top 4)" in plus_only.output and "-prob" not in plus_only.output
    res = CliRunner().invoke(app, [*args, "--stage2", "4", "--stage2-sign", "both"])
    assert res.exit_code == 0, res.output
    assert "stage 2 (+prob, top 4)" in res.output and "stage 2 (-prob, top 4)" in res.output
    feats = tmp_path / "f.npz"  # saved features + the weights for the verifier: the same figures
    assert CliRunner().invoke(app, ["extract", "--out", str(feats), *args[1:]]).exit_code == 0
    again = CliRunner().invoke(
        app, ["eval", "--features", str(feats), "--weights", str(weights), "--stage2", "4", "--stage2-sign", "both"]
    )
    assert again.exit_code == 0, again.output
    rows = [line for line in res.output.splitlines() if line.startswith("│")]
    assert len(rows) == 3 and rows == [line for line in again.output.splitlines() if line.startswith("│")]
    other = tmp_path / "base.pth"
    from reidkit.models import build_model

    base = build_model("resnet18", 0).eval()
    save_model_file(other, base, ModelInfo("resnet18", 64, 32, 512, build={}))
    bad = CliRunner().invoke(app, ["eval", "--weights", str(other), "--dataset", "folder", "--root", str(root),
                                   "--backend", "torch", "--stage2", "4"])  # fmt: skip
    assert bad.exit_code == 2 and "not a HOReID model" in bad.output


def test_horeid_starts_from_a_trained_baseline_trunk() -> None:
    """``model.pretrained: <a reidkit model file>`` initialises the trunk from its ``backbone.`` part."""
    from reidkit.models import build_model
    from reidkit.models.weights import load_state_dict_file
    from reidkit.models.zoo import default_model_path

    path = default_model_path().parent / "mobilenet_v2_market1501_bot_cpu.pth"  # the shipped MobileNetV2 baseline
    model = build_model("mobilenet_v2", 5, str(path), head="horeid", last_stride=1)
    sd = load_state_dict_file(path)
    own = model.backbone.state_dict()
    assert {k.removeprefix("backbone.") for k in sd if k.startswith("backbone.")} == set(own)
    for k, v in own.items():
        torch.testing.assert_close(v, sd["backbone." + k].to(v.dtype))
