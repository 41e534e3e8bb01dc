"""The training config: every error at once with its path, valid names listed, --set overrides,
YAML / TOML / JSON files."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmdev.errors import LmdevError
from lmdev.train.config import (
    CNNConfig,
    ConfigError,
    GPTConfig,
    MLPConfig,
    PythonModelConfig,
    TrainConfig,
    apply_overrides,
    load_config,
)

ROOT = Path(__file__).resolve().parents[3]


def test_examples_load() -> None:
    cfg = load_config(ROOT / "examples" / "digits_mlp.yaml")
    assert isinstance(cfg.model, MLPConfig) and cfg.model.hidden == [128, 64]
    assert cfg.loss.type == "cross_entropy" and cfg.optimizer.type == "sgd"
    gpt = load_config(ROOT / "examples" / "arithmetic_gpt.yaml")
    assert isinstance(gpt.model, GPTConfig) and gpt.model.n_kv_head == 2
    assert gpt.optimizer.betas == (0.9, 0.95)


def test_defaults_and_short_forms() -> None:
    cfg = load_config({"model": "cnn", "loss": "mse"})
    assert isinstance(cfg.model, CNNConfig)
    assert cfg.loss.type == "mse"
    assert isinstance(load_config({}).model, MLPConfig)
    assert isinstance(load_config({"model": {"hidden": [8]}}).model, MLPConfig)  # type defaults to mlp
    py = load_config({"model": {"type": "python:pkg.mod:make", "kwargs": {"n": 3}}}).model
    assert isinstance(py, PythonModelConfig) and py.kwargs == {"n": 3}


def test_every_error_is_reported_at_once_with_its_path() -> None:
    bad = {
        "optimizer": {"type": "sgd", "lr": -1},
        "train": {"max_steps": 0, "log_every": "often"},
        "data": {"batch_size": 0},
        "precision": "fp8",
        "epochs": 3,
        "model": {"type": "mlp", "hidden": [64], "activation": "swish"},
    }
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    msg = str(info.value)
    assert "7 error(s)" in msg
    for path in ("optimizer.lr", "train.max_steps", "train.log_every", "data.batch_size", "precision",
                 "epochs", "model.activation"):
        assert f"  {path}: " in msg, path
    assert "model.mlp." not in msg  # the union's tag is not part of the path a user writes
    assert isinstance(info.value, LmdevError) and info.value.exit_code == 2


def test_error_inside_a_gpt_model_names_model_fields() -> None:
    with pytest.raises(ConfigError) as info:
        load_config({"model": {"type": "gpt", "n_layer": 0}})
    assert "  model.n_layer: " in str(info.value) and "model.gpt" not in str(info.value)
    with pytest.raises(ConfigError) as info:
        load_config({"model": {"type": "gpt", "n_embd": 30, "n_head": 4}})
    assert "  model: n_embd (30) must be divisible by n_head (4)" in str(info.value)
    with pytest.raises(ConfigError, match="n_kv_head"):
        load_config({"model": {"type": "gpt", "n_head": 4, "n_kv_head": 3}})


def test_gpt_cross_field_errors_come_with_field_errors() -> None:
    with pytest.raises(ConfigError) as info:
        load_config({"model": {"type": "gpt", "n_embd": 30, "n_head": 4, "n_layer": 0}})
    assert "model.n_layer:" in str(info.value) and "divisible by n_head" in str(info.value)


@pytest.mark.parametrize("section, value, valid", [
    ("model", {"type": "transformer"}, ["mlp", "cnn", "gpt", "python:"]),
    ("model", "resnet", ["mlp", "cnn", "gpt"]),
    ("loss", "hinge", ["cross_entropy", "mse", "bce", "l1", "huber"]),
    ("optimizer", {"type": "lion"}, ["sgd", "momentum", "adam", "adamw"]),
    ("data", {"type": "imagenet"}, ["digits", "csv:PATH", "npy:PATH", "text:PATH", "synthetic"]),
])
def test_unknown_names_list_the_valid_ones(section: str, value: object, valid: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        load_config({section: value})
    msg = str(info.value)
    assert f"  {section}" in msg
    for name in valid:
        assert name in msg, name


def test_data_path_kinds_need_a_path() -> None:
    with pytest.raises(ConfigError, match="csv:PATH"):
        load_config({"data": {"type": "csv"}})


def test_overrides_nested_lists_and_types() -> None:
    cfg = load_config(ROOT / "examples" / "digits_mlp.yaml", [
        "optimizer.lr=0.01",
        "model.hidden=[32, 16, 8]",
        "train.max_steps=7",
        "train.grad_clip=1e-3",           # YAML reads this as a string; pydantic makes it a float
        "optimizer.betas=[0.8, 0.9]",
        "checkpoint.keep_best=false",
        "loss.label_smoothing=0.1",       # loss was the string "cross_entropy"
        "data.target=label",
        "device=cpu",
    ])
    assert cfg.optimizer.lr == 0.01 and cfg.model.hidden == [32, 16, 8]
    assert cfg.train.max_steps == 7 and isinstance(cfg.train.max_steps, int)
    assert cfg.train.grad_clip == pytest.approx(1e-3)
    assert cfg.optimizer.betas == (0.8, 0.9)
    assert cfg.checkpoint.keep_best is False
    assert cfg.loss.type == "cross_entropy" and cfg.loss.label_smoothing == 0.1
    assert cfg.data.target == "label" and cfg.device == "cpu"


def test_override_switches_a_string_model_to_another_type() -> None:
    cfg = load_config({"model": "mlp"}, ["model.type=gpt", "model.n_embd=32", "model.n_head=2"])
    assert isinstance(cfg.model, GPTConfig) and cfg.model.n_embd == 32


def test_override_of_an_unknown_field_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"optimizer\.learning_rate"):
        load_config({}, ["optimizer.learning_rate=0.1"])


def test_override_that_is_not_key_value() -> None:
    with pytest.raises(LmdevError, match="KEY=VALUE"):
        load_config({}, ["optimizer.lr"])
    with pytest.raises(LmdevError, match="KEY=VALUE"):
        apply_overrides({}, ["=3"])


def test_override_does_not_touch_the_callers_dict() -> None:
    raw = {"optimizer": {"lr": 0.5}}
    load_config(raw, ["optimizer.lr=0.1"])
    assert raw == {"optimizer": {"lr": 0.5}}


def test_override_of_a_string_field_with_a_number() -> None:
    assert load_config({}, ["name=2024"]).name == "2024"


def test_yaml_toml_and_json_files(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("name: y\nmodel: {type: mlp, hidden: [16]}\noptimizer: {lr: 0.5}\n")
    (tmp_path / "c.toml").write_text('name = "t"\nloss = "mse"\n[model]\ntype = "mlp"\nhidden = [16]\n'
                                     '[optimizer]\nlr = 0.5\n')
    (tmp_path / "c.json").write_text('{"name": "j", "model": {"type": "cnn"}}')
    y, t, j = (load_config(tmp_path / f"c.{ext}") for ext in ("yaml", "toml", "json"))
    assert (y.name, y.model.hidden, y.optimizer.lr) == ("y", [16], 0.5)
    assert (t.name, t.model.hidden, t.optimizer.lr, t.loss.type) == ("t", [16], 0.5, "mse")
    assert j.name == "j" and isinstance(j.model, CNNConfig)


def test_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("optimizer: {lr: 0}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value) and "optimizer.lr" in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(LmdevError, match="does not exist") as info:
        load_config(tmp_path / "nope.yaml")
    assert str(tmp_path / "nope.yaml") in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_malformed_yaml(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("model: {type: mlp\noptimizer: [\n")
    with pytest.raises(LmdevError, match="(?i)not valid YAML") as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert info.value.__suppress_context__  # no chained YAML traceback


def test_malformed_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nmodel: {type: mlp\noptimizer: [\n")
    with pytest.raises(LmdevError, match="line [0-9]+"):
        load_config(path)


def test_malformed_toml(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[model\ntype = \n")
    with pytest.raises(LmdevError, match="(?i)not valid toml"):
        load_config(path)


def test_a_file_that_is_not_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(LmdevError, match="mapping"):
        load_config(path)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_config(empty) == TrainConfig()


def test_resolved_config_round_trips() -> None:
    cfg = load_config(ROOT / "examples" / "arithmetic_gpt.yaml")
    assert load_config(cfg.model_dump(mode="json")) == cfg


@pytest.mark.parametrize("model", ["perceptron9000", {"type": "perceptron9000", "hidden": [8]}])
def test_an_unknown_model_is_named_with_the_known_ones(model: object) -> None:
    with pytest.raises(ConfigError) as info:
        load_config({"model": model})
    assert "  model: unknown model 'perceptron9000'; known: mlp, cnn, gpt, python:" in str(info.value)


@pytest.mark.parametrize("kind", ["csv", "npy", "parquet", "text"])
def test_data_path_as_its_own_field(kind: str) -> None:
    both = load_config({"data": {"type": kind, "path": f"x.{kind}", "batch_size": 8}})
    assert both.data.type == f"{kind}:x.{kind}" and both.data.batch_size == 8
    assert both == load_config({"data": {"type": f"{kind}:x.{kind}", "batch_size": 8}})


def test_data_path_field_is_refused_where_it_means_nothing() -> None:
    with pytest.raises(ConfigError, match="data: .*path goes with a file type"):
        load_config({"data": {"type": "digits", "path": "x.csv"}})
    with pytest.raises(ConfigError, match="csv:PATH"):
        load_config({"data": {"type": "csv"}})


def test_data_path_field_can_be_set_from_the_command_line() -> None:
    cfg = load_config({"data": {"type": "csv"}}, ["data.path=train.csv"])
    assert cfg.data.type == "csv:train.csv"


TOML = 'name = "t"\n[model]\ntype = "mlp"\nhidden = [16]\n'


def test_toml_without_tomllib_uses_tomli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Python 3.10 has no tomllib: the tomli package reads the config."""
    import sys
    import tomllib

    monkeypatch.setitem(sys.modules, "tomllib", None)  # import tomllib now fails, as on 3.10
    monkeypatch.setitem(sys.modules, "tomli", tomllib)  # tomli has the same API
    (tmp_path / "c.toml").write_text(TOML)
    assert load_config(tmp_path / "c.toml").model.hidden == [16]


def test_toml_without_any_reader_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "tomllib", None)
    monkeypatch.setitem(sys.modules, "tomli", None)
    (tmp_path / "c.toml").write_text(TOML)
    with pytest.raises(LmdevError) as info:
        load_config(tmp_path / "c.toml")
    assert "needs the tomli package" in str(info.value) and "not valid" not in str(info.value)
    assert "tomli" in (info.value.hint or "")
