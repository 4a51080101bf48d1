"""reidkit.config: YAML + dotted overrides, strict keys, clear error messages."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from reidkit.config import ConfigError, ExperimentConfig, apply_overrides, config_to_yaml, load_config

CONFIGS = sorted((Path(__file__).parents[1] / "configs" / "market1501").glob("bot_*.yaml"))


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "exp.yaml"
    p.write_text(text)
    return p


def test_defaults_are_the_bot_recipe() -> None:
    cfg = load_config()
    assert cfg.solver.optimizer == "adam" and cfg.solver.lr == 3.5e-4 and cfg.solver.milestones == [40, 70]
    assert cfg.loss.ce.label_smoothing == 0.1 and cfg.loss.triplet.margin == 0.3
    assert cfg.data.batch_size == 64 and (cfg.data.height, cfg.data.width) == (256, 128)
    assert cfg.output_path == Path("runs/experiment") and cfg.checkpoint_path == Path("runs/experiment/checkpoints")


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_shipped_configs_load(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.data.dataset == "market1501" and cfg.loss.center.weight == 0.0005
    assert cfg.solver.max_epochs == 120 and cfg.solver.warmup_epochs == 10


def test_shipped_configs_cover_three_models() -> None:
    assert {load_config(p).model.name for p in CONFIGS} >= {"resnet50", "mobilenet_v2", "osnet_x0_25"}


def test_yaml_plus_overrides_parse_values_with_yaml(tmp_path: Path) -> None:
    p = write(tmp_path, "name: a\nsolver: {max_epochs: 30, lr: 0.1}\ndata: {height: 256}\n")
    cfg = load_config(
        p,
        [
            "solver.max_epochs=12",
            "data.height=128",
            "solver.milestones=[5, 9]",
            "engine.device=cuda:1",
            "model.pretrained=false",
            "loss.triplet.soft=true",
            "data.options.variant=detected",
            "engine.threads=",  # empty -> None
            "name=b",
        ],
    )
    assert cfg.solver.max_epochs == 12 and cfg.solver.lr == 0.1  # untouched file value kept
    assert cfg.data.height == 128 and cfg.solver.milestones == [5, 9]
    assert cfg.engine.device == "cuda:1" and cfg.model.pretrained is False and cfg.loss.triplet.soft is True
    assert cfg.data.options == {"variant": "detected"} and cfg.engine.threads is None and cfg.name == "b"
    assert cfg.output_path == Path("runs/b")


def test_unknown_key_names_it_and_lists_valid_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, ["solver.max_epoch=3"])
    msg = str(err.value)
    assert "'solver.max_epoch'" in msg and "did you mean 'solver.max_epochs'" in msg
    assert "valid keys in solver:" in msg and "warmup_epochs" in msg
    p = write(tmp_path, "loss:\n  triplet: {margn: 0.2}\n")
    with pytest.raises(ConfigError, match=r"'loss\.triplet\.margn'.*valid keys in loss\.triplet: weight, margin"):
        load_config(p)
    with pytest.raises(ConfigError, match=r"unknown key 'trainer'.*valid keys in the top level: name, model"):
        load_config(None, ["trainer.epochs=3"])


@pytest.mark.parametrize(
    ("override", "pattern"),
    [
        ("solver.lr=abc", r"solver\.lr: .*valid number.*'abc'"),
        ("data.height=-1", r"data\.height: .*greater than 0"),
        ("solver.optimizer=rmsprop", r"solver\.optimizer: .*'sgd', 'adam' or 'adamw'"),
        ("solver.milestones=[50, 20]", r"solver\.milestones: .*increasing"),
        ("data.transforms.hflip=2", r"data\.transforms\.hflip: .*less than or equal to 1"),
        ("engine.eval_every=often", r"engine\.eval_every: .*valid integer"),
        ("model.feat_dim=0", r"model\.feat_dim: .*greater than 0"),
        ("solver=3", r"solver: .*valid dictionary"),
        ("model.pretrained=[1]", r"model\.pretrained: .*valid boolean, or .*valid string"),
    ],
)
def test_bad_values_name_the_key(override: str, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        load_config(None, [override])


def test_feat_dim_is_refused_for_part_heads() -> None:
    with pytest.raises(ConfigError, match="feat_dim applies to head=baseline or torchreid, not rrid"):
        load_config(None, ["model.head=rrid", "model.feat_dim=256"])


def test_all_loss_weights_zero_is_an_error() -> None:
    with pytest.raises(ConfigError, match="at least one"):
        load_config(None, ["loss.ce.weight=0", "loss.triplet.weight=0"])


def test_malformed_overrides_and_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"key\.subkey=value"):
        load_config(None, ["solver.max_epochs"])
    with pytest.raises(ConfigError, match="empty part"):
        load_config(None, ["solver..lr=1"])
    with pytest.raises(ConfigError, match=r"'solver\.max_epochs' is a value"):
        apply_overrides({"solver": {"max_epochs": 3}}, ["solver.max_epochs.x=1"])
    with pytest.raises(ConfigError, match="cannot parse value"):
        load_config(None, ["solver.milestones=[1, 2"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(write(tmp_path, "- a\n- b\n"))
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "solver: {lr: [\n"))
    assert load_config(write(tmp_path, "")) == ExperimentConfig()


def test_resolved_yaml_round_trips(tmp_path: Path) -> None:
    cfg = load_config(CONFIGS[0], ["solver.max_epochs=7", "freeze.modules=[backbone.conv1]", "freeze.epochs=2"])
    text = config_to_yaml(cfg)
    assert yaml.safe_load(text)["solver"]["max_epochs"] == 7
    assert load_config(write(tmp_path, text)) == cfg


def test_overrides_do_not_mutate_the_input() -> None:
    tree = {"solver": {"lr": 0.1}}
    out = apply_overrides(tree, ["solver.lr=0.2", "solver.gamma=0.5"])
    assert tree == {"solver": {"lr": 0.1}} and out == {"solver": {"lr": 0.2, "gamma": 0.5}}
