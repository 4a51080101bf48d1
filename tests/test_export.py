"""ONNX export parity (random and real Market weights/images), atomic writes, static INT8 quantisation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from reidkit.embed import Embedder
from reidkit.export import (
    ExportError,
    cpu_has_vnni,
    export_onnx,
    onnx_features,
    parity,
    preprocess_images,
    quantize_int8,
)
from reidkit.models.build import build_model


def _market_query(data_root: Path) -> list[Path]:
    images = sorted((data_root / "market1501" / "query").glob("*.jpg"))
    if len(images) < 200:
        pytest.skip(f"too few Market query images under {data_root}")
    return images


def test_tiny_model_export_matches_torch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("mobilenet_v2").eval()
    path = tmp_path / "m.onnx"
    report = export_onnx(model, path, height=64, width=32, exporter="torchscript")
    assert path.is_file() and report.min_cosine >= 0.9999
    assert report.batch_sizes == (1, 4) and report.feat_dim == 1280 and report.opset == 17
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["images"]
    assert [o.name for o in sess.get_outputs()] == ["features"]
    assert not model.training
    for n in (1, 3):
        x = torch.randn(n, 3, 64, 32)
        with torch.inference_mode():
            ref = model(x).numpy()
        out = onnx_features(path, x.numpy())
        cos, _ = parity(ref, out)
        assert out.shape == (n, 1280) and cos >= 0.9999


def test_percentile_calibration_with_a_ragged_last_batch(tmp_path: Path) -> None:
    """10 calibration images in batches of 4: ONNX Runtime's histogram calibrators stack every batch's
    activations, so a short last batch once failed ("inhomogeneous shape") on MobileNetV2."""
    torch.manual_seed(0)
    model = build_model("mobilenet_v2").eval()
    fp32 = export_onnx(model, tmp_path / "m.onnx", height=64, width=32, exporter="torchscript").path
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (64, 32, 3), dtype=np.uint8) for _ in range(10)]
    report = quantize_int8(fp32, tmp_path / "q.onnx", images, 64, 32, method="percentile", calibration_batch=4)
    assert report.path.is_file() and report.calibration_images == 10
    x = preprocess_images(images[:3], 64, 32)
    cos, _ = parity(onnx_features(fp32, x), onnx_features(report.path, x))
    assert cos > 0.9


def test_float_convs_leave_the_leading_convolutions_unquantised(tmp_path: Path) -> None:
    """``float_convs=2``: the first two convolutions keep float weights and float input; every later one
    reads quantised weights."""
    import onnx

    torch.manual_seed(0)
    fp32 = export_onnx(build_model("mobilenet_v2").eval(), tmp_path / "m.onnx", 64, 32, exporter="torchscript").path
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (64, 32, 3), dtype=np.uint8) for _ in range(8)]
    report = quantize_int8(fp32, tmp_path / "q.onnx", images, 64, 32, method="minmax", float_convs=2)
    assert report.float_convs == 2
    graph = onnx.load(str(report.path)).graph
    producer = {out: n.op_type for n in graph.node for out in n.output}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    quantised = [producer.get(c.input[1]) == "DequantizeLinear" for c in convs]
    assert len(convs) == 52 and quantised[:2] == [False, False] and all(quantised[2:])
    assert producer.get(convs[0].input[0]) != "DequantizeLinear"  # its input is not quantised either


@pytest.fixture(scope="module")
def osnet_export(tmp_path_factory: pytest.TempPathFactory, data_root: Path, weights_root: Path):
    """osnet_x0_25 with Market weights, exported by the default (dynamo) exporter, checked on 8 queries."""
    model = build_model(
        "osnet_x0_25", head="torchreid", pretrained=weights_root / "reid" / "osnet_x0_25_market1501.pth"
    ).eval()
    images = _market_query(data_root)
    path = tmp_path_factory.mktemp("osnet") / "osnet_x0_25.onnx"
    report = export_onnx(model, path, check_images=images[:8])
    return model, images, report


@pytest.mark.data
def test_osnet_market_export_real_parity(osnet_export) -> None:
    model, images, report = osnet_export
    assert report.exporter == "dynamo" and report.opset >= 18
    assert report.real_images and report.batch_sizes == (1, 8)
    assert report.min_cosine >= 0.9999, report
    # Independently, through the Embedder (decode, resize, L2): 8 other real queries, torch vs ONNX Runtime.
    queries = images[::400][:8]
    ref = Embedder.from_model(model, batch_size=4).embed(queries)
    out = Embedder.from_onnx(report.path, batch_size=4).embed(queries)
    cos, diff = parity(ref, out)
    print(f"osnet fp32 ONNX vs torch on 8 Market queries: min cosine {cos:.7f}, max abs diff {diff:.2e}")
    assert cos >= 0.9999


class _NumpyInForward(nn.Module):
    """Runs eagerly, but its output leaves the graph through numpy (exported as a constant)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x).mean((2, 3))
        return torch.from_numpy(y.detach().numpy() * 2)


class _Noisy(nn.Module):
    """Exports fine, but its output is random, so ONNX Runtime cannot match torch."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x).mean((2, 3))
        return y + torch.randn_like(y) * 10


def _half_written_then_crash(model: nn.Module, args: tuple, f: str, **kw: object) -> None:
    Path(f).write_bytes(b"\x08\x07half an onnx file")
    raise RuntimeError("exporter crashed")


def _export_fails(tmp_path: Path, model: nn.Module, exporter: str, match: str) -> None:
    path = tmp_path / "out" / "model.onnx"
    with pytest.raises(ExportError, match=match):
        export_onnx(model, path, height=32, width=16, exporter=exporter)  # type: ignore[arg-type]
    assert list(path.parent.iterdir()) == []
    # An existing file is left as it was.
    path.write_bytes(b"old")
    with pytest.raises(ExportError, match=match):
        export_onnx(model, path, height=32, width=16, exporter=exporter)  # type: ignore[arg-type]
    assert path.read_bytes() == b"old" and [p.name for p in path.parent.iterdir()] == ["model.onnx"]


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_crashing_exporter_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exporter: str) -> None:
    monkeypatch.setattr(torch.onnx, "export", _half_written_then_crash)
    _export_fails(tmp_path, _Noisy(), exporter, "exporter crashed")


@pytest.mark.parametrize(
    ("model", "match"),
    [(_NumpyInForward(), "expected"), (_Noisy(), "disagrees")],
    ids=["input-not-used", "parity-failure"],
)
def test_bad_export_leaves_no_file(tmp_path: Path, model: nn.Module, match: str) -> None:
    _export_fails(tmp_path, model, "torchscript", match)


@pytest.mark.data
def test_osnet_int8_static_quantisation(osnet_export, tmp_path: Path) -> None:
    _, images, report = osnet_export
    calib = images[1::200][:16]  # 16 images across identities and cameras
    evals = images[50::100][:24]  # other images
    assert not set(calib) & set(evals)
    out = tmp_path / "osnet_int8.onnx"
    q = quantize_int8(report.path, out, calib, 256, 128, per_channel=True, method="minmax")
    assert out.is_file() and q.size_out < q.size_in and q.calibration_images == 16
    assert q.reduce_range == (not cpu_has_vnni())  # 7-bit weights where AVX2 alone saturates
    assert [p.name for p in tmp_path.iterdir()] == ["osnet_int8.onnx"]
    import onnx

    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    batch = preprocess_images(evals, 256, 128)
    fp32 = onnx_features(report.path, batch)
    int8 = onnx_features(out, batch)
    na = fp32 / np.linalg.norm(fp32, axis=1, keepdims=True)
    nb = int8 / np.linalg.norm(int8, axis=1, keepdims=True)
    cos = (na * nb).sum(axis=1)
    print(f"osnet INT8 vs fp32 on {len(evals)} Market queries: mean cosine {cos.mean():.4f}, min {cos.min():.4f}")
    assert cos.mean() >= 0.95


def test_openvino_runs_the_fp32_and_the_qdq_file_like_onnx_runtime(osnet_export, tmp_path: Path) -> None:
    """OpenVINO (f32) on the exported file gives torch's features, in its own precision (bf16 where the CPU
    has it) close ones; on the QDQ INT8 file it stays close to fp32 (its
    INT8 kernels are not ONNX Runtime's, so not bit-equal), and the Embedder's parallel streams keep order."""
    model, images, report = osnet_export
    queries = images[3::300][:10]
    ref = Embedder.from_model(model, batch_size=4).embed(queries)
    from reidkit.embed import OpenVinoBackend

    fp32 = Embedder(OpenVinoBackend(report.path, threads=2, precision="f32"), batch_size=4).embed(queries)
    cos, _ = parity(ref, fp32)
    assert cos >= 0.9999, cos
    own = Embedder.from_openvino(report.path, batch_size=4, threads=2).embed(queries)  # bf16 where the CPU has it
    assert parity(ref, own)[0] >= 0.995
    q = tmp_path / "q.onnx"
    quantize_int8(report.path, q, images[1::200][:16], 256, 128)
    ort_int8 = Embedder.from_onnx(q, batch_size=4).embed(queries)
    ov_int8 = Embedder.from_openvino(q, batch_size=4, threads=2).embed(queries)
    mean_int8 = float((ref * ov_int8).sum(1).mean())  # unit rows
    cos_ort, _ = parity(ort_int8, ov_int8)
    print(f"OpenVINO INT8 vs torch fp32: mean cosine {mean_int8:.4f}; vs ORT on the same QDQ file: min {cos_ort:.4f}")
    assert mean_int8 >= 0.97 and cos_ort >= 0.99
    assert not np.allclose(ov_int8, fp32, atol=1e-4)  # it did run quantised
    single = np.concatenate([Embedder.from_openvino(q, batch_size=1).embed([p]) for p in queries[:3]])
    np.testing.assert_allclose(single, ov_int8[:3], atol=1e-5)


def test_openvino_int8_backend_uses_the_shipped_file_or_says_what_it_needs(tmp_path: Path) -> None:
    from reidkit.extract import make_embedder, shipped_int8_path
    from reidkit.models.zoo import ModelInfo, default_model_path, load_model, save_model_file

    info = load_model()[1]
    shipped = shipped_int8_path(info, None)
    assert shipped == default_model_path().with_name(default_model_path().stem + ".int8.onnx") and shipped.is_file()
    emb, _ = make_embedder(None, None, "openvino-int8")
    assert Path(emb.backend.path) == shipped
    weights = tmp_path / "tiny.pth"
    save_model_file(weights, build_model("osnet_x0_25", num_classes=0), ModelInfo("osnet_x0_25", 64, 32))
    with pytest.raises(ValueError, match=r"calibration images, or a QDQ file beside the weights \(.*tiny\.int8\.onnx"):
        make_embedder(None, weights, "openvino-int8")
    with pytest.raises(ValueError, match="backend must be one of"):
        make_embedder(None, weights, "tensorrt")  # type: ignore[arg-type]


def test_quantize_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        quantize_int8(tmp_path / "missing.onnx", tmp_path / "q.onnx", ["x.jpg"])
    with pytest.raises(ValueError, match="method"):
        quantize_int8(tmp_path / "missing.onnx", tmp_path / "q.onnx", ["x.jpg"], method="kl")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="calibration"):
        quantize_int8(tmp_path / "missing.onnx", tmp_path / "q.onnx", [])


def test_onnx_backend_exports_once_per_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import reidkit.export as export_mod
    from reidkit.extract import make_embedder
    from reidkit.models.zoo import ModelInfo, save_model_file

    torch.manual_seed(0)
    net = build_model("osnet_x0_25", num_classes=0)
    weights = tmp_path / "tiny.pth"
    info = ModelInfo("osnet_x0_25", 64, 32)
    save_model_file(weights, net, info)
    calls: list[Path] = []
    real = export_mod.export_onnx

    def counting(m: nn.Module, path: Path, **kw: object) -> object:
        calls.append(Path(path))
        return real(m, path, **kw)

    monkeypatch.setattr(export_mod, "export_onnx", counting)
    monkeypatch.setenv("REIDKIT_CACHE", str(tmp_path / "cache"))
    img = [np.random.default_rng(0).integers(0, 256, (64, 32, 3), dtype=np.uint8)]
    first = make_embedder(None, weights, "onnx")[0].embed(img)
    second = make_embedder(None, weights, "onnx")[0].embed(img)
    assert len(calls) == 1 and calls[0].parent == tmp_path / "cache" / "onnx" and calls[0].is_file()
    np.testing.assert_array_equal(first, second)
    save_model_file(weights, build_model("osnet_x0_25", num_classes=0), info)
    make_embedder(None, weights, "onnx")  # other weights, other file: exported again
    assert len(calls) == 2 and calls[1] != calls[0]


def test_export_cli(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from reidkit.cli import app
    from reidkit.models.zoo import ModelInfo, save_model_file

    torch.manual_seed(0)
    weights = tmp_path / "tiny.pth"
    save_model_file(weights, build_model("osnet_x0_25", num_classes=0), ModelInfo("osnet_x0_25", 64, 32))
    pic = tmp_path / "p.png"
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 256, (70, 30, 3), dtype=np.uint8)).save(pic)
    out = tmp_path / "m.onnx"
    res = CliRunner().invoke(app, ["export", "--weights", str(weights), "--onnx", str(out), "--check-image", str(pic)])
    assert res.exit_code == 0, res.output
    assert out.is_file() and "parity on real images" in res.output and "min cosine 1.0000" in res.output
    feats = Embedder.from_onnx(out, height=64, width=32).embed([pic])
    assert feats.shape == (1, 128)  # osnet_x0_25 trunk width, baseline head
    args = ["export", "--weights", str(tmp_path / "none.pth"), "--onnx", str(tmp_path / "x.onnx")]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2 and "none.pth" in res.output and not (tmp_path / "x.onnx").exists()
