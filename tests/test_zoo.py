"""Model zoo: reidkit model files round-trip; torchreid checkpoints load by name."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from reidkit.models import WeightsMismatchError, build_model
from reidkit.models.zoo import ModelInfo, load_model, save_model_file

FIXTURES = Path(__file__).parent / "fixtures"


def test_reidkit_model_file_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("mobilenet_v2", num_classes=7, pooling="gem").eval()
    x = torch.randn(2, 3, 64, 32)
    for half, tol in ((False, 1e-5), (True, 2e-2)):
        path = tmp_path / f"m{half}.pth"
        save_model_file(path, model, ModelInfo("mobilenet_v2", 64, 32, build={"pooling": "gem"}), half=half)
        loaded, info = load_model(None, path)
        assert (info.name, info.height, info.width, info.feat_dim) == ("mobilenet_v2", 64, 32, 1280)
        with torch.inference_mode():
            a, b = model(x), loaded(x)
        cos = torch.nn.functional.cosine_similarity(a, b).min().item()
        assert cos > 1 - tol
    with pytest.raises(ValueError, match="holds a 'mobilenet_v2' model"):
        load_model("resnet50", tmp_path / "mFalse.pth")


def test_torchreid_resnet50_checkpoint(tmp_path: Path) -> None:
    import torchvision

    torch.manual_seed(0)
    tv = torchvision.models.resnet50().eval()
    sd = {k: v for k, v in tv.state_dict().items() if not k.startswith("fc.")}
    sd["classifier.weight"] = torch.randn(751, 2048)
    sd["classifier.bias"] = torch.zeros(751)
    path = tmp_path / "resnet50_market.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, path)
    model, info = load_model("resnet50", path)
    x = torch.randn(1, 3, 128, 64)
    with torch.inference_mode():
        y = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
        want = torch.flatten(tv.avgpool(tv.layer4(tv.layer3(tv.layer2(tv.layer1(y))))), 1)
        got = model(x)
    assert info.feat_dim == 2048 and torch.allclose(got, want, atol=1e-5)


def test_unknown_and_missing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.pth"):
        load_model("osnet_x0_25", tmp_path / "nope.pth")
    path = tmp_path / "x.pth"
    torch.save({"a": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="pass the architecture name"):
        load_model(None, path)
    with pytest.raises(ValueError, match="torchreid checkpoints are supported for"):
        load_model("mobilenet_v2", path)


def test_osnet_zoo_checkpoints(weights_root: Path) -> None:
    for file in ("osnet_x0_25_market1501.pth", "osnet_x0_25_msmt17.pth"):
        model, info = load_model("osnet_x0_25", weights_root / "reid" / file)
        with torch.inference_mode():
            f = model(torch.randn(2, 3, 256, 128))
        assert f.shape == (2, 512) and info.feat_dim == 512 and np.isfinite(f.numpy()).all()


def test_default_model_is_shipped() -> None:
    from reidkit.models.zoo import default_model_path

    path = default_model_path()
    assert path.stat().st_size < 12 * 2**20 and (path.parent / "MODEL_CARD.md").is_file()
    model, info = load_model()
    assert info.name == "osnet_x0_25" and info.meta.get("dataset") == "market1501" and info.feat_dim == 512
    with torch.inference_mode():
        f = model(torch.randn(2, 3, info.height, info.width))
    assert f.shape == (2, info.feat_dim) and torch.isfinite(f).all()


def _fill(key: str, shape: tuple[int, ...], index: int) -> torch.Tensor:
    """The fixture's deterministic weights (same rule as tests/fixtures/make_mobilenetv2_torchreid_fixture.py)."""
    if key.endswith("num_batches_tracked"):
        return torch.tensor(0)
    torch.manual_seed(index)
    if key.endswith("running_var"):
        return torch.rand(shape) + 0.5
    if key.endswith(".weight") and len(shape) == 1:  # BN gamma: some ReLU6 outputs clip at 6
        return torch.rand(shape) * 1.25 + 0.5
    if key.endswith(".weight"):
        return torch.randn(shape) / (math.prod(shape[1:]) ** 0.5)
    return torch.randn(shape) * 0.05


@pytest.mark.parametrize(("name", "dim"), [("mobilenetv2_x1_0", 1280), ("mobilenetv2_x1_4", 1792)])
def test_torchreid_mobilenetv2_parity(
    name: str, dim: int, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Same weights as torchreid's model in the fixture -> torchreid's eval-mode output (made offline)."""
    meta = json.loads((FIXTURES / "mobilenetv2_torchreid.json").read_text())
    keys = [(k, tuple(shape)) for k, shape in meta["models"][name]["keys"]]
    index = {k: i for i, k in enumerate(sorted(k for k, _ in keys))}
    sd = {k: _fill(k, shape, index[k]) for k, shape in keys}
    path = tmp_path / f"{name}.pth"
    torch.save({"state_dict": sd, "epoch": 1}, path)
    torch.manual_seed(meta["input_seed"])
    x = torch.randn(*meta["input_shape"])
    want = np.load(FIXTURES / f"{name}_torchreid_out.npy")
    assert want.shape == (2, dim) and np.abs(want[0] - want[1]).max() > 1e-2  # not a degenerate fixture

    with caplog.at_level(logging.INFO, logger="reidkit.models.weights"):
        model, info = load_model(name, path)
    assert "dropping classifier.weight, classifier.bias" in caplog.text
    assert [(k, tuple(v.shape)) for k, v in model.state_dict().items()] == [
        (k, s) for k, s in keys if not k.startswith("classifier.")
    ]
    assert not model.training and info.feat_dim == dim
    with torch.inference_mode():
        got = model(x).numpy()
    assert got.shape == want.shape and np.abs(got - want).max() <= 1e-4

    # The full model keeps a classifier of the checkpoint's class count; another count is dropped.
    full = build_model(name, 10, pretrained=path, head="torchreid")
    assert [(k, tuple(v.shape)) for k, v in full.state_dict().items()] == keys
    assert torch.equal(full.classifier.weight, sd["classifier.weight"])
    five = tmp_path / f"{name}_5.pth"
    head5 = {"classifier.weight": torch.randn(5, dim), "classifier.bias": torch.zeros(5)}
    torch.save({"state_dict": {**sd, **head5}}, five)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="reidkit.models.weights"):
        model5, _ = load_model(name, five)
        build_model(name, 10, pretrained=five, head="torchreid")
    assert "dropping classifier.weight, classifier.bias (the model has no classifier)" in caplog.text
    assert "checkpoint classifier has 5 classes but the model expects 10" in caplog.text
    with torch.inference_mode():
        assert np.abs(model5(x).numpy() - want).max() <= 1e-4

    # Everything else is strict.
    torch.save({"state_dict": {k: v for k, v in sd.items() if k != "conv9.bn.running_var"}}, five)
    with pytest.raises(WeightsMismatchError, match=r"missing keys: conv9\.bn\.running_var"):
        load_model(name, five)
    with pytest.raises(ValueError, match=name):  # listed among the supported torchreid checkpoints
        load_model("mobilenet_v2", path)


def test_every_shipped_model_has_its_card_and_calibration() -> None:
    """Each model file under models/pretrained is at most 32 MB, named by a model card there, loads, and is
    found its own search calibration (the file beside it, made for it); an INT8 file belongs to a shipped model."""
    from reidkit.extract import shipped_int8_path
    from reidkit.models.zoo import default_model_path
    from reidkit.search.query.calibrate import calibration_file_name, find_calibration

    root = default_model_path().parent
    cards = " ".join(p.read_text() for p in root.glob("MODEL_CARD*.md"))
    files = sorted(root.glob("*.pth"))
    assert len(files) >= 4  # the default, the MobileNetV2 baseline, RRID, HOReID
    int8s = set()
    for path in files:
        assert path.stat().st_size <= 32 * 2**20 and f"`{path.name}`" in cards, path.name
        _, info = load_model(None, path)
        assert info.meta.get("dataset") == "market1501" and info.feat_dim > 0, path.name
        record, source = find_calibration(info)
        assert source == str(root / calibration_file_name(path)) and record["weights"] == path.name, source
        int8s.add(shipped_int8_path(info, path))
    assert set(root.glob("*.int8.onnx")) <= int8s
