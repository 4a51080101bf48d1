"""The shipped CPU-trained HOReID model: loads, embeds real crops with their keypoints, ingests and searches."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

PRETRAINED = Path(__file__).parents[1] / "src" / "reidkit" / "models" / "pretrained"
SHIPPED = PRETRAINED / "mobilenet_v2_horeid_market1501_cpu.pth"
VTEST = Path(os.environ.get("REIDKIT_VTEST", "/usr/share/doc/opencv-doc/examples/data/vtest.avi"))


def test_shipped_horeid_model_file_and_calibration() -> None:
    from reidkit.models.zoo import load_model
    from reidkit.search.query.calibrate import thresholds_for

    assert SHIPPED.stat().st_size < 32 * 2**20
    assert (PRETRAINED / "MODEL_CARD_horeid.md").is_file()
    model, info = load_model(None, SHIPPED)
    assert info.build["head"] == "horeid" and info.feat_dim == 14 * 1280
    assert model.classifier is None and model.verifier is not None  # classifiers dropped, verifier kept
    with torch.inference_mode():
        assert model(torch.zeros(1, 16, 256, 128)).shape == (1, 14 * 1280)
    assert thresholds_for(info).source.startswith("calibrated")


def test_shipped_horeid_tells_people_apart_on_real_crops(data_root: Path) -> None:
    from reidkit.extract import make_embedder

    gallery = sorted((data_root / "market1501" / "bounding_box_test").glob("*.jpg"))
    by_id: dict[str, list[Path]] = {}
    for p in gallery:
        if not p.name.startswith(("-1", "0000")):
            by_id.setdefault(p.name.split("_")[0], []).append(p)
    ids = [k for k, v in by_id.items() if len({q.name.split("_")[1][:2] for q in v}) > 1][:6]
    pairs = []
    for pid in ids:  # two images of each person from different cameras
        imgs = by_id[pid]
        other = next(q for q in imgs if q.name.split("_")[1][:2] != imgs[0].name.split("_")[1][:2])
        pairs += [imgs[0], other]
    emb, _ = make_embedder(None, SHIPPED, "torch", batch_size=12)
    f = emb.embed([str(p) for p in pairs])
    sim = f @ f.T
    same = np.array([sim[i, i + 1] for i in range(0, len(pairs), 2)])
    diff = np.array([sim[i, j] for i in range(0, len(pairs), 2) for j in range(0, len(pairs), 2) if i != j])
    assert same.mean() > diff.mean() + 0.15, (same, diff)
    # each person's other-camera image is its nearest neighbour for most people
    np.fill_diagonal(sim, -1)
    hits = sum(int(sim[i].argmax() == i + 1) for i in range(0, len(pairs), 2))
    assert hits >= len(ids) - 2


def test_shipped_horeid_ingests_and_searches_photos(tmp_path: Path) -> None:
    import cv2
    import typer
    from typer.testing import CliRunner

    from reidkit.cli.ingest import register as reg_ingest
    from reidkit.cli.search import register as reg_search
    from reidkit.search.storage import Gallery

    if not VTEST.is_file():
        if os.environ.get("REIDKIT_REQUIRE_DATA") == "1":
            pytest.fail(f"REIDKIT_REQUIRE_DATA=1 but {VTEST} is missing (Debian opencv-doc)", pytrace=False)
        pytest.skip(f"{VTEST} not installed (Debian opencv-doc)")
    photos = tmp_path / "cam1"
    photos.mkdir()
    cap = cv2.VideoCapture(str(VTEST))
    for i in range(161):
        ok, frame = cap.read()
        assert ok
        if i % 40 == 0:
            cv2.imwrite(str(photos / f"IMG_{i:04d}.jpg"), frame)
    cap.release()
    app = typer.Typer()
    reg_ingest(app)
    reg_search(app)
    g = str(tmp_path / "g")
    runner = CliRunner()
    res = runner.invoke(app, ["ingest", str(photos), "-g", g, "--weights", str(SHIPPED), "--threads", "1"])
    assert res.exit_code == 0, res.output
    with Gallery.open(g, read_only=True) as gal:
        records = list(gal.records())
        assert len(records) >= 5
        crop = Path(g) / records[0].crop
    args = ["search", str(crop), "--gallery", g, "--weights", str(SHIPPED), "--json", str(tmp_path / "r.json")]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    import json

    result = json.loads((tmp_path / "r.json").read_text())
    assert result["threshold_source"].startswith("calibrated"), result["threshold_source"]
    best = max(result["appearances"], key=lambda a: a["score"])
    # the query's own sighting comes first (not 1.0: the gallery embedded the frame's crop, the query its saved JPEG)
    assert best["best"]["id"] == records[0].id and best["score"] > 0.9, best
