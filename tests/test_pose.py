"""Body keypoints: HOReID's node mapping, heatmaps, adjacency, the MoveNet wrapper and the keypoint cache."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch

from reidkit.pose import (
    NODES,
    KeypointCache,
    KeypointCacheError,
    MoveNet,
    PoseError,
    adjacency,
    coco_to_horeid,
    heatmaps,
    keypoints_for,
)
from reidkit.pose.movenet import letterbox


def test_coco_to_horeid_by_hand() -> None:
    kp = np.zeros((17, 3), np.float32)
    kp[:, 0] = np.arange(17)  # x = COCO index
    kp[:, 1] = 100 + np.arange(17)
    kp[:, 2] = 0.5
    kp[0] = (10, 20, 0.9)  # nose
    kp[1] = (14, 20, 0.3)  # left eye
    kp[2:5, 2] = 0.0  # other head points invisible
    nodes = coco_to_horeid(kp)
    assert nodes.shape == (13, 3) and len(NODES) == 13
    # head: confidence-weighted mean of the five head points (zero weights ~ ignored), best score
    assert nodes[0, 0] == pytest.approx((10 * 0.9 + 14 * 0.3) / 1.2, abs=1e-3)
    assert nodes[0, 1] == pytest.approx(20.0, abs=1e-3) and nodes[0, 2] == pytest.approx(0.9)
    np.testing.assert_array_equal(nodes[1:], kp[5:])  # shoulders ... ankles, in COCO order
    assert NODES[1] == "left_shoulder" and NODES[12] == "right_ankle"
    assert coco_to_horeid(np.stack([kp, kp])).shape == (2, 13, 3)
    with pytest.raises(ValueError, match=r"\(\.\.\., 17, 3\)"):
        coco_to_horeid(np.zeros((13, 3)))


def test_adjacency() -> None:
    a = adjacency()
    assert a.shape == (14, 14) and (a == a.T).all() and (np.diag(a) == 1).all()
    assert (a[13] == 1).all()  # the global node is linked to every node
    assert a[0, 1] == 1 and a[0, 12] == 0 and a[9, 11] == 1  # head-shoulder, not head-ankle; knee-ankle
    assert np.diag(adjacency(self_loops=False)).sum() == 0


def test_heatmaps_peak_sum_and_sigma() -> None:
    nodes = torch.tensor([[[63.5, 127.5, 1.0], [0.0, 0.0, 0.5]]])  # image 256 x 128 -> map 16 x 8
    h = heatmaps(nodes, (256, 128), (16, 8), sigma=1.0)
    assert h.shape == (1, 2, 16, 8)
    torch.testing.assert_close(h.sum((-2, -1)), torch.ones(1, 2))
    # pixel (63.5, 127.5) is the centre between cells (3, 7) and (4, 8): four equal maxima
    top = h[0, 0]
    assert torch.isclose(top[7, 3], top[8, 4]) and torch.isclose(top[7, 4], top[8, 3]) and top[7, 3] == top.max()
    corner = h[0, 1]
    assert corner.argmax() == 0  # pixel (0, 0) -> cell (0, 0)
    # a Gaussian by hand at one cell
    cx, cy = (0 + 0.5) * 8 / 128 - 0.5, (0 + 0.5) * 16 / 256 - 0.5
    g = np.exp(-((np.arange(16)[:, None] - cy) ** 2 + (np.arange(8)[None, :] - cx) ** 2) / 2)
    np.testing.assert_allclose(corner.numpy(), g / g.sum(), rtol=1e-5, atol=1e-12)
    wide = heatmaps(nodes, (256, 128), (16, 8), sigma=3.0)
    assert wide[0, 0].max() < top.max()


def test_letterbox_maps_points_back() -> None:
    img = np.zeros((128, 64, 3), np.uint8)
    sq, s, px, py = letterbox(img)
    assert sq.shape == (192, 192, 3) and s == pytest.approx(1.5) and (px, py) == (48, 0)


@pytest.fixture(scope="module")
def pose() -> MoveNet:
    try:
        return MoveNet()
    except PoseError as exc:
        pytest.skip(str(exc))


def test_movenet_on_real_crops(pose: MoveNet, data_root: Path) -> None:
    paths = sorted((data_root / "market1501" / "query").glob("*.jpg"))[:24]
    kp = pose.predict(paths)
    assert kp.shape == (24, 17, 3) and np.isfinite(kp).all()
    assert (kp[:, :, 0] >= 0).all() and (kp[:, :, 0] <= 63).all() and (kp[:, :, 1] <= 127).all()
    assert np.median(kp[:, :, 2]) > 0.4  # confident on ordinary upright pedestrians
    nodes = coco_to_horeid(kp)
    upright = (nodes[:, 0, 1] < nodes[:, 7, 1]) & (nodes[:, 7, 1] < nodes[:, 11, 1])  # head above hips above ankles
    assert upright.mean() > 0.9
    assert pose.predict([]).shape == (0, 17, 3)


def test_bad_image_and_model_errors(pose: MoveNet, tmp_path: Path) -> None:
    from reidkit.imaging import ImageError

    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(ImageError, match=r"bad\.jpg"):
        pose.predict([bad])
    with pytest.raises(PoseError, match=r"nope\.tflite: no such pose model file"):
        MoveNet(tmp_path / "nope.tflite")
    (tmp_path / "junk.tflite").write_bytes(b"\0" * 64)
    with pytest.raises(PoseError, match=r"junk\.tflite"):
        MoveNet(tmp_path / "junk.tflite").predict_one(np.zeros((8, 8, 3), np.uint8))


def test_cache_is_keyed_by_content_resumable_and_reproducible(pose: MoveNet, data_root: Path, tmp_path: Path) -> None:
    paths = sorted((data_root / "market1501" / "query").glob("*.jpg"))[:20]
    copy = tmp_path / "renamed.jpg"
    copy.write_bytes(paths[3].read_bytes())
    direct = pose.predict(paths)
    cache_file = tmp_path / "kp.sqlite"
    with KeypointCache(cache_file, pose.id) as kc:
        first, sizes = keypoints_for(paths[:12], pose, kc, batch=5)  # as if killed after 12
        assert len(kc) == 12 and (sizes == (64, 128)).all()
    seen: list[tuple[int, int]] = []
    with KeypointCache(cache_file, pose.id) as kc:
        kp, _ = keypoints_for([*paths, copy], pose, kc, batch=8, on_batch=lambda d, c: seen.append((d, c)))
        assert len(kc) == 20 and seen[-1] == (21, 8)  # only the 8 missing computed; the copy is a cache hit
    np.testing.assert_array_equal(kp[:20], direct)  # cached == computed: reproducible
    np.testing.assert_array_equal(kp[20], direct[3])
    np.testing.assert_array_equal(first, direct[:12])
    with pytest.raises(KeypointCacheError, match=r"kp\.sqlite: holds keypoints of pose model movenet"):
        KeypointCache(cache_file, "other_pose:123")
    (tmp_path / "junk.sqlite").write_bytes(b"x" * 4096)
    with pytest.raises(KeypointCacheError, match=r"junk\.sqlite: not a keypoint cache"):
        KeypointCache(tmp_path / "junk.sqlite", pose.id)
    db = sqlite3.connect(cache_file)
    db.execute("UPDATE keypoints SET kp = ? WHERE rowid = 1", (b"\0" * 8,))
    db.commit()
    db.close()
    with KeypointCache(cache_file, pose.id) as kc, pytest.raises(KeypointCacheError, match="not 17 x 3"):
        keypoints_for(paths, pose, kc)


def test_cli_keypoints(tmp_path: Path, data_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import typer
    from PIL import Image
    from rich.console import Console
    from typer.testing import CliRunner

    import reidkit.cli.common
    from reidkit.cli.pose import register

    monkeypatch.setattr(reidkit.cli.common, "console", Console(width=200))
    src = sorted((data_root / "market1501" / "query").glob("*.jpg"))[:12]
    root = tmp_path / "mine"  # a custom folder dataset: <split>/<pid>_c<cam>_*.jpg
    for split, chunk in (("query", src[:4]), ("gallery", src[4:])):
        (root / split).mkdir(parents=True)
        for p in chunk:
            (root / split / p.name).write_bytes(p.read_bytes())
    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)
    args = ["keypoints", "--dataset", "folder", "--root", str(root), "--cache", str(tmp_path / "kp.sqlite")]
    run = CliRunner().invoke(app, [*args, "--sheet", str(tmp_path / "sheet.png"), "--sheet-count", "6"])
    assert run.exit_code == 0, run.output
    assert "12 computed" in run.output and (tmp_path / "sheet.png").is_file()
    assert Image.open(tmp_path / "sheet.png").size[0] >= 6 * 128
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and "0 computed" in again.output and "12 from the cache" in again.output
    bad = CliRunner().invoke(app, [*args, "--split", "val"])
    assert bad.exit_code == 2 and "--split must be one of" in bad.output


def test_render_nodes_and_flip_permutation() -> None:
    from reidkit.pose.skeleton import FLIP_NODES, render_nodes

    nodes = np.zeros((13, 3), np.float32)
    nodes[:, :2] = (10.0, 20.0)
    nodes[:, 2] = np.linspace(0, 1, 13)
    nodes[3] = (31.0, 63.0, 0.8)
    maps = render_nodes(nodes, (128, 64), (256, 128), sigma=2.0)  # drawn at twice the size
    assert maps.shape == (13, 256, 128) and maps.dtype == np.float32
    assert np.unravel_index(maps[3].argmax(), maps[3].shape) == (126, 62)  # (63 + 0.5) * 2 - 0.5 = 126.5
    assert maps[3].max() == pytest.approx(0.8, rel=0.1) and maps[0].max() == 0.0
    assert [NODES[i] for i in FLIP_NODES[1:3]] == ["right_shoulder", "left_shoulder"]
    assert [FLIP_NODES[i] for i in FLIP_NODES] == list(range(13)) and FLIP_NODES[0] == 0
    for i, j in enumerate(FLIP_NODES):
        if i:
            assert NODES[i].replace("left", "X").replace("right", "left").replace("X", "right") == NODES[j]
