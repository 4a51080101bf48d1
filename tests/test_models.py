"""reidkit.models: registry shapes, baseline head, GeM/BNNeck, and strict loading of local weights."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from reidkit.models import (
    BNNeck,
    GeM,
    OSNet,
    ReIDBaseline,
    WeightsMismatchError,
    build_backbone,
    build_model,
    list_backbones,
    load_state_dict_file,
    load_torchreid_checkpoint,
)
from reidkit.models.backbones.osnet import osnet
from reidkit.paths import WEIGHTS_ENV

# Output stride per backbone on a (2, 3, 128, 64) input: ResNets default to last_stride=1.
EXPECTED_HW = {
    "resnet50": (8, 4),
    "resnet18": (8, 4),
    "mobilenet_v2": (4, 2),
    "efficientnet_lite0": (4, 2),
    "osnet_x1_0": (8, 4),
    "osnet_x0_75": (8, 4),
    "osnet_x0_5": (8, 4),
    "osnet_x0_25": (8, 4),
}
EXPECTED_C = {
    "resnet50": 2048,
    "resnet18": 512,
    "mobilenet_v2": 1280,
    "efficientnet_lite0": 1280,
    "osnet_x1_0": 512,
    "osnet_x0_75": 384,
    "osnet_x0_5": 256,
    "osnet_x0_25": 128,
}


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def x() -> torch.Tensor:
    return torch.rand(2, 3, 128, 64)


@pytest.fixture
def weights_env(weights_root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``$REIDKIT_WEIGHTS`` pointing at the real weights (skips when they are absent)."""
    monkeypatch.setenv(WEIGHTS_ENV, str(weights_root))
    return weights_root


def test_registry_names() -> None:
    assert set(list_backbones()) == set(EXPECTED_HW)


@pytest.mark.parametrize("name", sorted(EXPECTED_HW))
def test_backbone_feature_map_shape(name: str, x: torch.Tensor) -> None:
    bb = build_backbone(name).eval()
    assert bb.out_features == EXPECTED_C[name]
    with torch.no_grad():
        fmap = bb(x)
    assert fmap.shape == (2, EXPECTED_C[name], *EXPECTED_HW[name])


def test_resnet_last_stride_2(x: torch.Tensor) -> None:
    bb = build_backbone("resnet18", last_stride=2).eval()
    with torch.no_grad():
        assert bb(x).shape == (2, 512, 4, 2)


def test_unknown_names() -> None:
    with pytest.raises(ValueError, match="resnet50"):
        build_backbone("resnet51")
    with pytest.raises(ValueError, match="osnet"):
        build_model("resnet18", head="torchreid")
    with pytest.raises(ValueError, match="pooling"):
        build_model("osnet_x0_25", pooling="median")


def test_baseline_train_and_eval_outputs(x: torch.Tensor) -> None:
    model = build_model("osnet_x0_25", num_classes=7, pooling="gem")
    assert isinstance(model, ReIDBaseline)
    model.train()
    out = model(x)
    assert set(out) == {"logits", "features", "bn_features"}
    assert out["logits"].shape == (2, 7)
    assert out["features"].shape == out["bn_features"].shape == (2, 128)
    model.eval()
    with torch.no_grad():
        after = model(x)
        model.feat_after_bn = False
        before = model(x)
        pooled = model.pool(model.backbone(x))
    assert after.shape == before.shape == (2, model.feat_dim)
    torch.testing.assert_close(before, pooled)
    torch.testing.assert_close(after, model.neck(pooled))


def test_baseline_embedding_reduction(x: torch.Tensor) -> None:
    """feature_dim on the baseline head: pooled -> bias-free linear -> BNNeck, classifier on the reduced width."""
    model = build_model("mobilenet_v2", num_classes=5, feature_dim=24)
    assert model.feat_dim == 24 and model.classifier.in_features == 24 and model.reduce.bias is None
    out = model.train()(x)
    assert out["features"].shape == out["bn_features"].shape == (2, 24) and out["logits"].shape == (2, 5)
    model.eval()
    with torch.no_grad():
        got = model(x)
        pooled = model.backbone(x).mean(dim=(-2, -1))
        ref = (pooled @ model.reduce.weight.T - model.neck.running_mean) / torch.sqrt(model.neck.running_var + 1e-5)
    torch.testing.assert_close(got, ref * model.neck.weight + model.neck.bias)
    with pytest.raises(ValueError, match="embed_dim must be > 0"):
        ReIDBaseline(model.backbone, embed_dim=-1)


def test_baseline_without_classifier(x: torch.Tensor) -> None:
    model = build_model("resnet18", num_classes=0, neck="none").train()
    out = model(x)
    assert "logits" not in out
    torch.testing.assert_close(out["features"], out["bn_features"])


def test_bnneck_bias_frozen_and_classifier_bias_free(x: torch.Tensor) -> None:
    model = build_model("osnet_x0_25", num_classes=5).train()
    assert isinstance(model.neck, BNNeck)
    assert not model.neck.bias.requires_grad and model.neck.weight.requires_grad
    assert torch.all(model.neck.bias == 0)
    assert model.classifier is not None and model.classifier.bias is None
    model(x)["logits"].sum().backward()
    assert model.neck.bias.grad is None
    assert model.neck.weight.grad is not None


def test_gem() -> None:
    feat = torch.rand(3, 8, 5, 4) + 0.1
    gem = GeM()
    assert gem.p.requires_grad and gem.p.item() == pytest.approx(3.0)
    torch.testing.assert_close(GeM(p=1.0)(feat), feat.mean(dim=(2, 3)))
    assert torch.all(gem(feat) >= feat.mean(dim=(2, 3)) - 1e-6)  # power mean >= mean


@pytest.mark.parametrize("name", ["osnet_x0_25", "efficientnet_lite0"])
def test_channels_last(name: str, x: torch.Tensor) -> None:
    model = build_model(name, num_classes=3).eval()
    with torch.no_grad():
        ref = model(x)
        model = model.to(memory_format=torch.channels_last)
        out = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)


def test_torchreid_osnet_outputs(x: torch.Tensor) -> None:
    model = build_model("osnet_x0_25", num_classes=4, head="torchreid")
    assert isinstance(model, OSNet) and model.feat_dim == 512
    out = model.train()(x)
    assert out["logits"].shape == (2, 4) and out["features"].shape == (2, 512)
    with torch.no_grad():
        assert model.eval()(x).shape == (2, 512)


# ---------------------------------------------------------------- loading


@pytest.mark.parametrize(
    ("name", "file"),
    [
        ("mobilenet_v2", "imagenet/mobilenet_v2_imagenet_torchvision.pth"),
        ("efficientnet_lite0", "imagenet/efficientnet-lite0-57934424.pth"),
    ],
)
def test_imagenet_files_load_strictly(name: str, file: str, weights_env: Path) -> None:
    bb = build_backbone(name, pretrained=True)
    sd = load_state_dict_file(weights_env / file)
    own = bb.state_dict()
    head = tuple(bb.pretrained_ignore_keys)
    assert set(own) == {k for k in sd if not k.startswith(head)}  # strict, minus classifier
    for k, v in own.items():
        assert torch.equal(v, sd[k]), k
    # an explicit path gives the same weights
    bb2 = build_backbone(name, pretrained=weights_env / file)
    assert all(torch.equal(v, bb2.state_dict()[k]) for k, v in own.items())


@pytest.mark.parametrize(
    ("file", "classes"),
    [("reid/osnet_x0_25_market1501.pth", 751), ("reid/osnet_x0_25_msmt17.pth", 1041)],
)
def test_torchreid_osnet_files_load_strictly(
    file: str, classes: int, weights_root: Path, x: torch.Tensor
) -> None:
    path = weights_root / file
    model = osnet("osnet_x0_25", classes)
    sd = torch.load(path, map_location="cpu", weights_only=True)
    sd = sd.get("state_dict", sd)
    model.load_state_dict({k.removeprefix("module."): v for k, v in sd.items()}, strict=True)
    # same through the public builder, with nothing dropped
    built = build_model("osnet_x0_25", classes, pretrained=path, head="torchreid").eval()
    assert all(torch.equal(v, built.state_dict()[k]) for k, v in model.state_dict().items())
    with torch.no_grad():
        feats = built(x)
    assert feats.shape == (2, 512) and torch.all(feats >= 0)  # fc ends with BN + ReLU


def test_baseline_from_torchreid_checkpoint(weights_root: Path) -> None:
    path = weights_root / "reid/osnet_x0_25_market1501.pth"
    model = build_model("osnet_x0_25", 10, pretrained=path)
    sd = load_state_dict_file(path)
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(v, sd[k]), k


def test_wrong_class_count_classifier_is_dropped(
    weights_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = weights_root / "reid/osnet_x0_25_market1501.pth"
    model = osnet("osnet_x0_25", num_classes=10)
    fresh = model.classifier.weight.detach().clone()
    with caplog.at_level(logging.WARNING, logger="reidkit.models"):
        report = load_torchreid_checkpoint(model, path)
    assert sorted(report.dropped) == ["classifier.bias", "classifier.weight"]
    assert "751" in caplog.text and "10" in caplog.text and "dropping" in caplog.text
    assert torch.equal(model.classifier.weight, fresh)
    assert torch.equal(model.conv1.conv.weight, load_state_dict_file(path)["conv1.conv.weight"])
    with pytest.raises(ValueError, match="num_classes"):
        load_torchreid_checkpoint(model, path, num_classes=751)


def test_start_from_a_file_without_classifier(tmp_path: Path) -> None:
    # a packaged reidkit file drops the classifier: fine-tuning from it keeps a fresh classifier
    src = osnet("osnet_x0_25", num_classes=0)
    path = tmp_path / "packaged.pth"
    torch.save(src.state_dict(), path)
    dst = osnet("osnet_x0_25", num_classes=7)
    fresh = dst.classifier.weight.detach().clone()
    report = load_torchreid_checkpoint(dst, path)
    assert sorted(report.missing) == ["classifier.bias", "classifier.weight"]
    assert torch.equal(dst.classifier.weight, fresh)
    assert all(torch.equal(v, dst.state_dict()[k]) for k, v in src.state_dict().items())
    # only the classifier may be missing
    sd = src.state_dict()
    del sd["conv1.conv.weight"]
    torch.save(sd, path)
    with pytest.raises(WeightsMismatchError, match=r"conv1\.conv\.weight"):
        load_torchreid_checkpoint(osnet("osnet_x0_25", num_classes=7), path)


def test_missing_file_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path))
    expected = tmp_path / "imagenet" / "efficientnet-lite0-57934424.pth"
    with pytest.raises(FileNotFoundError) as err:
        build_backbone("efficientnet_lite0", pretrained=True)
    assert str(expected) in str(err.value) and WEIGHTS_ENV in str(err.value)
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match=r"nope\.pth"):
        build_model("osnet_x0_25", 5, pretrained=missing, head="torchreid")
    with pytest.raises(FileNotFoundError, match=WEIGHTS_ENV):
        build_backbone("mobilenet_v2", pretrained=str(missing))


def test_wrapped_and_module_prefixed_checkpoint(tmp_path: Path) -> None:
    src = osnet("osnet_x0_25", num_classes=3)
    path = tmp_path / "wrapped.pth"
    wrapped = {f"module.{k}": v for k, v in src.state_dict().items()}
    torch.save({"state_dict": wrapped, "epoch": 5}, path)
    dst = osnet("osnet_x0_25", num_classes=3)
    report = load_torchreid_checkpoint(dst, path)
    assert not report.dropped and not report.missing
    assert all(torch.equal(v, dst.state_dict()[k]) for k, v in src.state_dict().items())


def test_mismatched_checkpoint_raises(tmp_path: Path) -> None:
    path = tmp_path / "x0_25.pth"
    torch.save(osnet("osnet_x0_25", 3).state_dict(), path)
    with pytest.raises(WeightsMismatchError, match="shape"):
        load_torchreid_checkpoint(osnet("osnet_x0_5", 3), path)
    with pytest.raises(WeightsMismatchError, match="missing keys"):
        build_backbone("resnet18", pretrained=path)
