"""One-command reproduction of torchreid's published Market-1501 figure for osnet_x0_25
(model zoo: rank-1 91.2, mAP 75.0, Euclidean on raw features), through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from reidkit.cli import app


@pytest.mark.data
def test_osnet_x0_25_market1501(data_root: Path, weights_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    args = [
        "eval",
        "--model",
        "osnet_x0_25",
        "--weights",
        str(weights_root / "reid/osnet_x0_25_market1501.pth"),
        "--dataset",
        "market1501",
        "--root",
        str(data_root),
        "--raw",
        "--metric",
        "euclidean",
        "--batch-size",
        "64",
        "--json",
        str(out),
    ]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    r = json.loads(out.read_text())["results"]["euclidean"]
    assert r["rank1"] == pytest.approx(91.2, abs=0.5)
    assert r["mAP"] == pytest.approx(75.0, abs=0.5)
    assert r["num_valid_queries"] == 3368


def test_datasets_info_cli(data_root: Path) -> None:
    res = CliRunner().invoke(app, ["datasets", "info", "market1501", "--root", str(data_root)])
    assert res.exit_code == 0, res.output
    for figure in ("12,936", "751", "3,368", "750", "19,732", "15,913"):
        assert figure in res.output


@pytest.mark.data
def test_default_model_beats_torchreid_mobilenetv2(data_root: Path, tmp_path: Path) -> None:
    """The shipped default model (no --weights) vs torchreid's GPU-trained mobilenetv2_x1_0 (85.6 / 67.3)."""
    out = tmp_path / "r.json"
    args = ["eval", "--dataset", "market1501", "--root", str(data_root), "--batch-size", "64", "--json", str(out)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    r = json.loads(out.read_text())["results"]["cosine"]
    assert r["rank1"] > 85.6 and r["mAP"] > 67.3
