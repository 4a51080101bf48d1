"""Model zoo: reidkit model files round-trip; torchreid checkpoints load by name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from reidkit.models import build_model
from reidkit.models.zoo import ModelInfo, load_model, save_model_file


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
    assert info.name == "mobilenet_v2" and info.meta.get("dataset") == "market1501"
    with torch.inference_mode():
        f = model(torch.randn(2, 3, info.height, info.width))
    assert f.shape == (2, info.feat_dim) and torch.isfinite(f).all()
