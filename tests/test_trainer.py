"""reidkit.engine: schedule, checkpoints, determinism, resume after SIGKILL, DDP, real models.

Everything runs on a tiny synthetic dataset (8 ids x 2 cameras x 3 images of 32x16 pixels) on
the CPU with one thread.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from reidkit.config import ExperimentConfig, SolverConfig, load_config
from reidkit.engine import Trainer, WarmupLR, build_optimizer, train
from reidkit.engine import checkpoint as ckpt
from reidkit.models import build_model

sys.path.insert(0, str(Path(__file__).parent))
from _ddp_worker import make_tiny_dataset, params_hash, tiny_config_yaml

WORKER = Path(__file__).parent / "_ddp_worker.py"


@pytest.fixture(autouse=True)
def _restore_threads() -> Iterator[None]:
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_dataset(tmp_path_factory.mktemp("tiny"))


def config_file(tmp_path: Path, data_root: Path, out: str = "out", model: str = "osnet_x0_25") -> Path:
    p = tmp_path / f"{out}.yaml"
    p.write_text(tiny_config_yaml(data_root, tmp_path / out, model))
    return p


def state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """Weights of a final reidkit model file (the classifier is not part of it)."""
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def trained_state(final: Path) -> dict[str, torch.Tensor]:
    """All weights (classifier included) of a run's last checkpoint, beside its final model file."""
    return ckpt.load_checkpoint(ckpt.latest_checkpoint(final.parent / "checkpoints"))["model"]


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs (max abs diff {(a[k].float() - b[k].float()).abs().max()})"


def subprocess_env() -> dict[str, str]:
    return {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


# ------------------------------------------------------------------------ schedule and optimiser


def test_warmup_multistep_schedule_by_hand() -> None:
    cfg = SolverConfig(lr=1.0, warmup_epochs=10, warmup_factor=0.01, milestones=[40, 70], gamma=0.1)
    s = WarmupLR(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), cfg)
    # BoT: epoch e (0-based) < 10 -> 0.01 * (1 - e/10) + e/10
    assert s.factor(0) == pytest.approx(0.01)
    assert s.factor(5) == pytest.approx(0.01 * 0.5 + 0.5)
    assert s.factor(9) == pytest.approx(0.01 * 0.1 + 0.9)
    assert [s.factor(e) for e in (10, 39, 40, 69, 70, 119)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    s.step(40)
    assert s.get_last_lr() == pytest.approx([0.1])
    s2 = WarmupLR(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), cfg)
    s2.load_state_dict(s.state_dict())
    assert s2.get_last_lr() == pytest.approx([0.1])


def test_cosine_schedule() -> None:
    cfg = SolverConfig(lr=1.0, scheduler="cosine", warmup_epochs=2, max_epochs=12, min_lr_factor=0.1)
    s = WarmupLR(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), cfg)
    assert s.factor(1) == pytest.approx(0.01 * 0.5 + 0.5)
    assert s.factor(2) == pytest.approx(1.0)
    assert s.factor(7) == pytest.approx(0.1 + 0.9 * 0.5)  # half-way: cos(pi/2) = 0
    assert s.factor(12) == pytest.approx(0.1)


def test_optimizer_groups_bias_lr_and_decay() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    model[1].bias.requires_grad_(False)  # like the BNNeck: left out
    cfg = SolverConfig(optimizer="sgd", lr=0.1, bias_lr_factor=2.0, weight_decay=1e-4, weight_decay_bias=0.0)
    opt = build_optimizer(model, cfg)
    assert isinstance(opt, torch.optim.SGD)
    weights, biases = opt.param_groups
    assert len(weights["params"]) == 2 and len(biases["params"]) == 1
    assert (weights["lr"], weights["weight_decay"]) == (0.1, 1e-4)
    assert (biases["lr"], biases["weight_decay"], biases["base_lr"]) == (0.2, 0.0, 0.2)
    assert isinstance(build_optimizer(model, SolverConfig(optimizer="adam")), torch.optim.Adam)


def test_optimizer_backbone_lr_factor() -> None:
    model = build_model("osnet_x0_25", 4, head="rrid", parts=[2], dim=8)
    cfg = SolverConfig(optimizer="sgd", lr=0.01, backbone_lr_factor=0.1)
    groups = build_optimizer(model, cfg).param_groups
    by_lr: dict[float, int] = {}
    for g in groups:
        by_lr[round(g["lr"], 8)] = by_lr.get(round(g["lr"], 8), 0) + len(g["params"])
    n_backbone = sum(p.requires_grad for n, p in model.named_parameters() if n.startswith("backbone."))
    n_new = sum(p.requires_grad for n, p in model.named_parameters() if not n.startswith("backbone."))
    assert by_lr == {0.001: n_backbone, 0.01: n_new}


# ------------------------------------------------------------------------ checkpoints


def test_rng_state_round_trip_through_weights_only_checkpoint(tmp_path: Path) -> None:
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    state = ckpt.capture_rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(1).item(), np.random.randn())
    ckpt.save_checkpoint(tmp_path, 1, {"rng": [state], "epoch": 1})
    loaded = ckpt.load_checkpoint(tmp_path / "epoch_001.pt")  # weights_only=True
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    ckpt.restore_rng_state(loaded["rng"][0])
    assert (random.random(), np.random.rand(), torch.rand(1).item(), np.random.randn()) == expected


def test_latest_pointer_and_pruning(tmp_path: Path) -> None:
    assert ckpt.latest_checkpoint(tmp_path) is None
    for e in range(1, 5):
        ckpt.save_checkpoint(tmp_path, e, {"epoch": e})
    assert (tmp_path / "latest").read_text().strip() == "epoch_004.pt"
    removed = ckpt.prune_checkpoints(tmp_path, keep=2)
    assert sorted(p.name for p in removed) == ["epoch_001.pt", "epoch_002.pt"]
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["epoch_003.pt", "epoch_004.pt"]
    (tmp_path / "latest").unlink()  # a missing pointer falls back to the newest file
    assert ckpt.latest_checkpoint(tmp_path) == tmp_path / "epoch_004.pt"
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


# ------------------------------------------------------------------------ training


def test_train_writes_outputs_and_learns(tmp_path: Path, data_root: Path) -> None:
    final = train(config_file(tmp_path, data_root), ["engine.eval_every=1"])
    out = tmp_path / "out"
    assert final == out / "model_final.pth"
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    kinds = {r["type"] for r in records}
    assert kinds == {"train", "epoch", "eval"}
    evals = [r for r in records if r["type"] == "eval"]
    assert [r["epoch"] for r in evals] == [1, 2, 3]
    assert {"rank1", "mAP", "mINP"} <= set(evals[-1])
    train_recs = [r for r in records if r["type"] == "train"]
    assert {"ce", "triplet", "center", "total", "acc", "lr", "img_s"} <= set(train_recs[0])
    assert evals[-1]["mAP"] >= 50  # colour-coded identities are easy
    assert json.loads((out / "results.json").read_text())["epoch"] == 3
    assert load_config(out / "config.yaml").solver.max_epochs == 3
    # the final weights load into a freshly built model
    model = build_model("osnet_x0_25", 0)
    model.load_state_dict(state_dict_file(final))
    assert sorted(p.name for p in (out / "checkpoints").glob("*.pt")) == ["epoch_002.pt", "epoch_003.pt"]


def test_distillation_pulls_the_student_toward_a_cached_teacher(tmp_path: Path, data_root: Path) -> None:
    # a teacher: the tiny run's own trained model file; the student starts from scratch
    teacher = train(config_file(tmp_path, data_root, "teacher"), ["solver.max_epochs=2", "engine.eval_every=0"])
    cfg = config_file(tmp_path, data_root, "student")
    common = ["solver.max_epochs=2", "engine.eval_every=0", f"loss.distill.teacher={teacher}"]
    student = train(cfg, [*common, "loss.distill.weight=5", "loss.distill.relation_weight=1"])
    out = tmp_path / "student"
    cache = out / "teacher_features.npz"
    assert cache.is_file()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r["type"] == "epoch"]
    assert {"distill", "relation"} <= set(epochs[0])
    assert epochs[-1]["distill"] < epochs[0]["distill"]  # the student moves toward the teacher

    # the cache holds the teacher's flip-averaged unit embeddings of the train images, in order
    from reidkit.datasets import get_dataset
    from reidkit.embed import Embedder
    from reidkit.models.zoo import load_model

    with np.load(cache) as z:
        cached = z["features"]
    train_paths = [s.path for s in get_dataset("folder", data_root).train]
    model, _ = load_model(None, teacher)
    want = Embedder.from_model(model, threads=1, flip=True, height=32, width=16).embed(train_paths)
    assert cached.shape == want.shape
    np.testing.assert_allclose(cached, want, atol=1e-5)
    # a student of another input size gets the same targets: the teacher embeds at its own size (32x16)
    other = config_file(tmp_path, data_root, "student_40x20")
    train(other, ["solver.max_epochs=1", *common[1:], "loss.distill.weight=5", "data.height=40", "data.width=20"])
    with np.load(tmp_path / "student_40x20" / "teacher_features.npz") as z:
        np.testing.assert_allclose(z["features"], want, atol=1e-5)

    # a resumed or repeated run reuses the cache; a different teacher replaces it
    mtime = cache.stat().st_mtime_ns
    train(cfg, [*common, "loss.distill.weight=5", "solver.max_epochs=3"], resume=True)
    assert cache.stat().st_mtime_ns == mtime
    with pytest.raises(FileNotFoundError, match="teacher"):
        train(cfg, [*common[:2], f"loss.distill.teacher={tmp_path / 'missing.pth'}", "loss.distill.weight=1"])
    assert student.is_file()

    # an ensemble for the relation term (the teacher and the student file): unit rows whose similarities are
    # the mean of the two models' own cosine similarities, computed here straightforwardly
    from reidkit.config import DistillLossConfig
    from reidkit.engine.distill import teacher_targets

    ens_cfg = DistillLossConfig(teacher=str(teacher), relation_weight=1.0, ensemble=[str(student)])
    first, relation = teacher_targets(ens_cfg, get_dataset("folder", data_root).train, cache_dir=tmp_path / "ens")
    np.testing.assert_allclose(first.numpy(), want, atol=1e-5)
    both = relation.numpy()
    second = Embedder.from_model(load_model(None, student)[0], threads=1, flip=True, height=32, width=16)
    other_want = second.embed(train_paths)
    np.testing.assert_allclose(both @ both.T, (want @ want.T + other_want @ other_want.T) / 2, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(both, axis=1), 1.0, atol=1e-5)
    assert (tmp_path / "ens" / f"teacher_features_1_{student.stem}.npz").is_file()
    # the cache follows the weights' content: a copy (another path and time, as in a fresh checkout) keeps
    # it, other weights under the same name replace it
    samples = get_dataset("folder", data_root).train
    copy = tmp_path / "copies" / teacher.name
    copy.parent.mkdir()
    copy.write_bytes(teacher.read_bytes())
    stamp = (tmp_path / "ens" / "teacher_features.npz").stat().st_mtime_ns
    again, _ = teacher_targets(DistillLossConfig(teacher=str(copy)), samples, cache_dir=tmp_path / "ens")
    assert (tmp_path / "ens" / "teacher_features.npz").stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(again.numpy(), first.numpy())
    copy.write_bytes(student.read_bytes())
    replaced, _ = teacher_targets(DistillLossConfig(teacher=str(copy)), samples, cache_dir=tmp_path / "ens")
    np.testing.assert_allclose(replaced.numpy(), other_want, atol=1e-5)
    # ... and in a run: the relation term is trained on it
    ens_over = [*common[:2], f"loss.distill.teacher={teacher}", "loss.distill.relation_weight=1"]
    train(config_file(tmp_path, data_root, "ens_run"), [*ens_over, f"loss.distill.ensemble=[{student}]"])
    ens_records = [json.loads(line) for line in (tmp_path / "ens_run" / "metrics.jsonl").read_text().splitlines()]
    assert "relation" in [r for r in ens_records if r["type"] == "epoch"][-1]
    assert (tmp_path / "ens_run" / f"teacher_features_1_{student.stem}.npz").is_file()


def test_same_seed_same_weights(tmp_path: Path, data_root: Path) -> None:
    cfg = config_file(tmp_path, data_root, "a")
    overrides = ["solver.max_epochs=2", "engine.eval_every=0"]
    a = train(cfg, overrides)
    b = train(cfg, [*overrides, f"engine.output_dir={tmp_path / 'b'}"])
    c = train(cfg, [*overrides, f"engine.output_dir={tmp_path / 'c'}", "engine.seed=8"])
    assert_same_weights(trained_state(a), trained_state(b))
    assert_same_weights(state_dict_file(a), state_dict_file(b))
    assert not torch.equal(trained_state(a)["classifier.weight"], trained_state(c)["classifier.weight"])


def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path: Path, data_root: Path) -> None:
    # 1. uninterrupted: 3 epochs
    full = train(config_file(tmp_path, data_root, "full"))
    # 2. the same run in a subprocess, SIGKILLed in the middle of epoch 2 (after its batch 1)
    cfg = config_file(tmp_path, data_root, "killed")
    proc = subprocess.run(
        [sys.executable, str(WORKER), str(tmp_path / "report"), str(cfg), "--kill-at", "2:1"],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    ckpt_dir = tmp_path / "killed" / "checkpoints"
    assert ckpt.latest_checkpoint(ckpt_dir) == ckpt_dir / "epoch_001.pt"
    assert not (ckpt_dir / "epoch_002.pt").exists() and not (tmp_path / "killed" / "model_final.pth").exists()
    assert not list(ckpt_dir.glob(".*"))  # no half-written checkpoint
    # 3. resume to 3 epochs: identical weights
    resumed = train(cfg, resume=True)
    assert_same_weights(trained_state(full), trained_state(resumed))
    assert_same_weights(state_dict_file(full), state_dict_file(resumed))
    # metrics.jsonl: the killed run's partial epoch 2 records were dropped, none duplicated
    records = [json.loads(line) for line in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    its = [r["iteration"] for r in records if r["type"] == "train"]
    assert its == sorted(set(its))
    assert [r["epoch"] for r in records if r["type"] == "epoch"] == [1, 2, 3]


def test_resume_without_checkpoint_starts_fresh_and_resume_when_done_is_a_no_op(
    tmp_path: Path, data_root: Path
) -> None:
    cfg = config_file(tmp_path, data_root)
    first = train(cfg, ["solver.max_epochs=1", "engine.eval_every=0"], resume=True)
    before = state_dict_file(first)
    again = train(cfg, ["solver.max_epochs=1", "engine.eval_every=0"], resume=True)
    assert_same_weights(before, state_dict_file(again))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_processes_identical_parameters_disjoint_ids(tmp_path: Path, data_root: Path) -> None:
    cfg = config_file(tmp_path, data_root, "ddp")
    report = tmp_path / "report"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--nnodes", "1",
        "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
        str(WORKER), str(report), str(cfg),
        # frozen stem for epoch 1 exercises re-wrapping DDP when the trainable set changes
        "solver.max_epochs=2", "engine.eval_every=2", "freeze.modules=[backbone.conv1]", "freeze.epochs=1",
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    r0, r1 = (json.loads((report / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["world_size"] == r1["world_size"] == 2
    assert r0["hash"] == r1["hash"]  # parameters and buffers bit-identical across ranks
    for epoch in ("1", "2"):
        ids0, ids1 = set(r0["pids"][epoch]), set(r1["pids"][epoch])
        assert ids0 and ids1 and not ids0 & ids1
        assert ids0 | ids1 == set(range(8))
        assert r0["batches"][epoch] == r1["batches"][epoch] > 0
    assert (tmp_path / "ddp" / "model_final.pth").is_file() and (tmp_path / "ddp" / "results.json").is_file()


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_real_models_train_and_evaluate(tmp_path: Path, data_root: Path, name: str) -> None:
    cfg = load_config(
        config_file(tmp_path, data_root, model=name),
        ["solver.max_epochs=1", "engine.eval_every=1", "data.ids_per_batch=2", "solver.optimizer=adam",
         "solver.lr=3.5e-4", "engine.channels_last=true"],
    )  # fmt: skip
    trainer = Trainer(cfg)
    final = trainer.fit()
    assert trainer.last_eval is not None and 0 <= trainer.last_eval["mAP"] <= 100
    assert set(state_dict_file(final)) == {
        k for k in build_model(name, 8).state_dict() if not k.startswith("classifier.")
    }
    from reidkit.models.zoo import load_model

    model, info = load_model(None, final)  # the final file is self-describing
    assert info.name == name and info.meta["epochs"] == 1
    with torch.inference_mode():
        assert model(torch.randn(2, 3, info.height, info.width)).shape == (2, info.feat_dim)


def test_rrid_trains_evaluates_and_loads(tmp_path: Path, data_root: Path) -> None:
    cfg = load_config(
        config_file(tmp_path, data_root, model="osnet_x0_25"),
        ["model.head=rrid", "model.kwargs={parts: [6, 4, 2], dim: 16}", "data.height=96", "data.width=32",
         "solver.max_epochs=1", "engine.eval_every=1", "loss.center.weight=0", "loss.triplet.margin=1.2"],
    )  # fmt: skip
    trainer = Trainer(cfg)
    final = trainer.fit()
    assert trainer.last_eval is not None and 0 <= trainer.last_eval["mAP"] <= 100
    from reidkit.models.zoo import load_model

    model, info = load_model(None, final)
    assert info.build["head"] == "rrid" and info.feat_dim == 15 * 16
    with torch.inference_mode():
        assert model(torch.randn(2, 3, 96, 32)).shape == (2, 240)
    with pytest.raises(ValueError, match="center loss needs"):
        Trainer(load_config(config_file(tmp_path, data_root, "c"), ["model.head=rrid", "data.height=96",
                                                                    "model.kwargs={parts: [2]}"]))  # fmt: skip


def test_freeze_first_epoch(tmp_path: Path, data_root: Path) -> None:
    cfg = load_config(
        config_file(tmp_path, data_root),
        ["solver.max_epochs=2", "engine.eval_every=0", "freeze.modules=[backbone.conv1]", "freeze.epochs=1"],
    )
    trainer = Trainer(cfg)
    conv1 = {k: v.clone() for k, v in trainer.model.backbone.conv1.state_dict().items()}
    head = trainer.model.classifier.weight.detach().clone()
    snapshots: dict[int, dict[str, torch.Tensor]] = {}

    def on(event: str, t: Trainer) -> None:
        if event == "epoch_end":
            snapshots[t.epoch] = {k: v.clone() for k, v in t.model.backbone.conv1.state_dict().items()}

    trainer.callbacks.append(on)
    trainer.fit()
    assert_same_weights(conv1, snapshots[1])  # weights and BN statistics frozen during epoch 1
    assert not torch.equal(conv1["conv.weight"], snapshots[2]["conv.weight"])
    assert not torch.equal(head, trainer.model.classifier.weight)
    assert all(p.requires_grad for p in trainer.model.backbone.conv1.parameters())


def test_bad_freeze_prefix_and_too_few_ids(tmp_path: Path, data_root: Path) -> None:
    cfg = load_config(config_file(tmp_path, data_root), ["freeze.modules=[backbone.layer9]"])
    with pytest.raises(ValueError, match=r"backbone\.layer9.*modules include: backbone"):
        Trainer(cfg)
    with pytest.raises(ValueError, match="identities"):
        Trainer(load_config(config_file(tmp_path, data_root), ["data.ids_per_batch=9"]))


def test_injected_model_and_params_hash(tmp_path: Path, data_root: Path) -> None:
    cfg = ExperimentConfig.model_validate(
        {**load_config(config_file(tmp_path, data_root)).model_dump(), "loss": {"center": {"weight": 0}}}
    )
    model = build_model("osnet_x0_25", 8, neck="none")
    trainer = Trainer(cfg, model=model)
    assert trainer.model is model and trainer.criterion.center is None
    before = params_hash(model)
    trainer.train_epoch(1, None, None)
    assert params_hash(model) != before and math.isfinite(trainer.optimizer.param_groups[0]["lr"])


def test_train_cli_then_eval_cli(tmp_path: Path, data_root: Path) -> None:
    from typer.testing import CliRunner

    from reidkit.cli import app

    runner = CliRunner()
    cfg = config_file(tmp_path, data_root, "cli")
    bad = runner.invoke(app, ["train", str(cfg), "solver.max_epoch=1"])
    assert bad.exit_code == 2 and "max_epoch" in bad.output
    res = runner.invoke(app, ["train", str(cfg), "solver.max_epochs=1", "engine.eval_every=0"])
    assert res.exit_code == 0, res.output
    final = tmp_path / "cli" / "model_final.pth"
    assert final.is_file() and "reidkit eval --weights" in res.output


def test_horeid_trains_with_keypoints_evaluates_and_loads(tmp_path: Path, data_root: Path) -> None:
    cfg = load_config(
        config_file(tmp_path, data_root, model="osnet_x0_25"),
        ["model.head=horeid", "model.kwargs={gm_hidden: 16}", "data.height=96", "data.width=32",
         "solver.max_epochs=2", "engine.eval_every=2", "loss.center.weight=0", "loss.verification.start_epoch=2"],
    )  # fmt: skip
    trainer = Trainer(cfg)
    assert all("keypoints" in s.extra for s in trainer.dataset.train)
    x, *_ = trainer.loader.dataset[(0, 7)]
    assert x.shape == (16, 96, 32) and 0 < float(x[3:].amax()) <= 1.0  # RGB + 13 keypoint maps
    final = trainer.fit()
    rows = [json.loads(line) for line in (final.parent / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["type"] == "train"]
    assert all("verification" not in r for r in train_rows if r["epoch"] == 1)  # switched on at epoch 2
    assert any("verification" in r for r in train_rows if r["epoch"] == 2)
    assert trainer.last_eval is not None and 0 <= trainer.last_eval["mAP"] <= 100
    from reidkit.models.zoo import load_model

    model, info = load_model(None, final)
    assert info.build["head"] == "horeid" and model.in_channels == 16


def test_holdout_ids_are_kept_out_of_training(tmp_path: Path, data_root: Path) -> None:
    from reidkit.datasets import get_dataset
    from reidkit.datasets.base import holdout_split

    cfg = load_config(config_file(tmp_path, data_root), ["data.holdout_ids=2", "data.ids_per_batch=2"])
    trainer = Trainer(cfg)
    full = get_dataset(cfg.data.dataset, cfg.data.root, **cfg.data.options).train
    kept, held = holdout_split(full, 2)
    assert trainer.num_classes == len({s.pid for s in full}) - 2
    assert {s.path for s in trainer.dataset.train} == {s.path for s in kept}
    assert not {s.path for s in trainer.dataset.train} & {s.path for s in held}
    # evaluation during training runs on the held-out ids (query + gallery = exactly them), not the test split
    assert {s.path for s in [*trainer.dataset.query, *trainer.dataset.gallery]} == {s.path for s in held}


@pytest.mark.parametrize("flush", [True, False])
def test_trainer_flushes_denormals_unless_told_not_to(tmp_path: Path, data_root: Path, flush: bool) -> None:
    # a fresh process, as `reidkit train` is: after the Trainer is built, a multiply over 2^20 values on 2
    # threads turns 1e-39 (below float32's smallest normal) into zero everywhere, or nowhere when told not to
    cfg = config_file(tmp_path, data_root)
    code = (
        "import sys, torch\n"
        "from reidkit.config import load_config\n"
        "from reidkit.engine import Trainer\n"
        "t = Trainer(load_config(sys.argv[1], [f'engine.flush_denormal={sys.argv[2]}', 'engine.threads=2']))\n"
        "t.evaluate()\n"  # its Embedder keeps the Trainer's choice
        "x = torch.full((1 << 20,), 1e-39) * 1.0\n"
        "print(int(x.count_nonzero()), int(torch.get_num_threads()))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(cfg), str(flush).lower()],
        capture_output=True, text=True, env=subprocess_env(), check=True,
    )  # fmt: skip
    nonzero, threads = map(int, out.stdout.split())
    assert threads == 2
    assert nonzero == (0 if flush else 1 << 20)
