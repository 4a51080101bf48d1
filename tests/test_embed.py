"""The Embedder: every input type gives the same features, batching is invisible, errors name files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from reidkit.embed import Embedder, Preprocess
from reidkit.imaging import ImageError
from reidkit.models import build_model


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    torch.manual_seed(0)
    return Embedder.from_model(build_model("osnet_x0_25"), height=64, width=32, batch_size=3)


def _images(tmp_path: Path, n: int = 5) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        p = tmp_path / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (40 + 7 * i, 20 + 3 * i, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


def test_inputs_agree(embedder: Embedder, tmp_path: Path) -> None:
    paths = _images(tmp_path)
    arrays = [np.array(Image.open(p).convert("RGB")) for p in paths]
    ref = embedder.embed(paths)
    assert ref.shape == (5, 128) and ref.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(ref, axis=1), 1.0, atol=1e-5)
    for other in (
        [str(p) for p in paths],
        [Image.open(p) for p in paths],
        arrays,
        [torch.from_numpy(a).permute(2, 0, 1) for a in arrays],
        [torch.from_numpy(a).permute(2, 0, 1).float() / 255 for a in arrays],
    ):
        np.testing.assert_allclose(embedder.embed(other), ref, atol=1e-5)
    bgr = [a[:, :, ::-1].copy() for a in arrays]
    np.testing.assert_allclose(embedder.embed(bgr, bgr=True), ref, atol=1e-5)
    assert np.abs(embedder.embed(bgr) - ref).max() > 1e-3  # BGR read as RGB is different


def test_batching_and_order(embedder: Embedder, tmp_path: Path) -> None:
    paths = _images(tmp_path)
    one = Embedder(embedder.backend, height=64, width=32, batch_size=1).embed(paths)
    np.testing.assert_allclose(embedder.embed(paths), one, atol=1e-5)
    np.testing.assert_allclose(embedder.embed(paths[::-1]), one[::-1], atol=1e-5)


def test_flip_tta_is_flip_invariant(embedder: Embedder, tmp_path: Path) -> None:
    paths = _images(tmp_path, 2)
    flip = Embedder(embedder.backend, height=64, width=32, flip=True)
    mirrored = [np.asarray(Image.open(p).convert("RGB"))[:, ::-1].copy() for p in paths]
    np.testing.assert_allclose(flip.embed(paths), flip.embed(mirrored), atol=1e-5)


def test_raw_outputs(embedder: Embedder, tmp_path: Path) -> None:
    paths = _images(tmp_path, 2)
    raw = Embedder(embedder.backend, height=64, width=32, normalize=False).embed(paths)
    np.testing.assert_allclose(raw / np.linalg.norm(raw, axis=1, keepdims=True), embedder.embed(paths), atol=1e-5)


def test_preprocess_matches_torchvision() -> None:
    from torchvision import transforms as T

    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (128, 64, 3), dtype=np.uint8))
    tv = T.Compose([T.Resize((256, 128)), T.ToTensor(), T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    np.testing.assert_allclose(Preprocess(256, 128)(img), tv(img).numpy(), atol=1e-5)
    # OpenCV's bilinear (the fast option) is within one grey level of PIL's, in every pixel.
    one_level = 1.0 / 255 / min(0.229, 0.224, 0.225) + 1e-5
    fast = Preprocess(256, 128, method="cv2")(img)
    assert np.abs(fast - tv(img).numpy()).max() <= one_level and not np.array_equal(fast, tv(img).numpy())
    with pytest.raises(ValueError, match="must be 'cv2' or 'pil'"):
        Preprocess(method="lanczos")  # type: ignore[arg-type]


def test_cv2_and_pil_decode_agree(tmp_path: Path) -> None:
    # Files: OpenCV decodes (EXIF orientation ignored, as PIL), formats it lacks fall back to PIL.
    rgb = np.random.default_rng(2).integers(0, 256, (40, 20, 3), dtype=np.uint8)
    png, gif = tmp_path / "a.png", tmp_path / "b.gif"
    Image.fromarray(rgb).save(png)
    Image.fromarray(rgb).convert("P").save(gif)
    for path in (png, gif):
        exact = Preprocess(40, 20, method="pil").resize(path)
        np.testing.assert_array_equal(Preprocess(40, 20, method="cv2").resize(path), exact)  # same size: no resampling
    np.testing.assert_array_equal(Preprocess(40, 20, method="cv2").resize(rgb[:, :, ::-1].copy(), bgr=True), rgb)


def test_errors_name_the_file(embedder: Embedder, tmp_path: Path) -> None:
    with pytest.raises(ImageError, match=r"missing\.jpg: no such image file"):
        embedder.embed([tmp_path / "missing.jpg"])
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(ImageError, match=r"broken\.jpg: not a readable image"):
        embedder.embed([bad])
    with pytest.raises(ImageError, match="H x W x 3 uint8"):
        embedder.embed([np.zeros((4, 4), dtype=np.uint8)])
    with pytest.raises(ValueError, match="no images"):
        embedder.embed([])


class _SlowMean:
    """A backend whose feature is the image's per-channel mean; random delays shuffle completion order."""

    channels_last = False

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self.rng = np.random.default_rng(0)

    def __call__(self, batch: torch.Tensor) -> np.ndarray:
        import time

        assert batch.is_contiguous()  # the layout ONNX Runtime wants
        time.sleep(float(self.rng.uniform(0, 0.01)))
        return batch.mean(dim=(2, 3)).numpy()


def test_parallel_batches_keep_input_order(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (30, 15, 3), dtype=np.uint8) for _ in range(37)]
    serial = Embedder(_SlowMean(1), height=30, width=15, batch_size=5, normalize=False).embed(images)
    done: list[int] = []
    par = Embedder(_SlowMean(3), height=30, width=15, batch_size=5, normalize=False)
    np.testing.assert_allclose(par.embed(images, progress=done.append), serial, atol=1e-6)
    assert sum(done) == 37 and max(done) == 5
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    means = np.stack([(im.reshape(-1, 3).mean(0) / 255 - mean) / std for im in images])
    np.testing.assert_allclose(serial, means, atol=1e-4)


def test_parallel_batches_name_the_bad_file(tmp_path: Path) -> None:
    paths = _images(tmp_path, 5)
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    emb = Embedder(_SlowMean(2), height=30, width=15, batch_size=2)
    with pytest.raises(ImageError, match=r"broken\.jpg: not a readable image"):
        emb.embed([*paths, bad, *paths])
    for method in ("pil", "cv2"):
        with pytest.raises(ImageError, match=r"nope\.png: no such image file"):
            Embedder(_SlowMean(2), height=30, width=15, resize=method).embed([tmp_path / "nope.png"])
