"""``reidkit eval --features`` end to end on a small synthetic features file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from reidkit.cli import app
from reidkit.io import FeatureSet, load_features, save_features

runner = CliRunner()


def _features(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 20, 300)
    cams = rng.integers(0, 4, 300)
    f = rng.standard_normal((20, 32))[ids] + 0.8 * rng.standard_normal((300, 32))
    fs = FeatureSet(f[:60], f[60:], ids[:60], ids[60:], cams[:60], cams[60:])
    path = tmp_path / "feats.npz"
    save_features(path, fs)
    return path


def test_eval_writes_json_and_plot(tmp_path: Path) -> None:
    path = _features(tmp_path)
    out, plot = tmp_path / "r.json", tmp_path / "cmc.png"
    res = runner.invoke(app, ["eval", "--features", str(path), "--rerank", "--json", str(out), "--plot", str(plot)])
    assert res.exit_code == 0, res.output
    assert "rank-1" in res.output and "re-ranking" in res.output
    figures = json.loads(out.read_text())["results"]
    assert set(figures) == {"cosine", "cosine + re-ranking"}
    assert 0 < figures["cosine"]["rank1"] <= 100 and len(figures["cosine"]["cmc"]) == 50
    assert plot.read_bytes()[:4] == b"\x89PNG"
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


def test_round_trip(tmp_path: Path) -> None:
    fs = load_features(_features(tmp_path))
    assert fs.qf.dtype == np.float32 and fs.q_pids.dtype == np.int64 and fs.qf.shape == (60, 32)


def test_bad_features_file_is_one_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.npz"
    np.savez(bad, qf=np.zeros((2, 3)), gf=np.zeros((2, 3)))
    res = runner.invoke(app, ["eval", "--features", str(bad)])
    assert res.exit_code == 2
    assert "bad.npz" in res.output and "missing keys" in res.output
    res = runner.invoke(app, ["eval", "--features", str(tmp_path / "nope.npz")])
    assert res.exit_code == 2 and "no such features file" in res.output
    (tmp_path / "junk.npz").write_text("not a zip")
    res = runner.invoke(app, ["eval", "--features", str(tmp_path / "junk.npz")])
    assert res.exit_code == 2 and "not a readable" in res.output
