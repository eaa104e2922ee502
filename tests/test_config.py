"""Config precedence and value checks."""
import pytest
import yaml

from recbole_linear.config import create_config, parse_cmd_args
from recbole_linear.errors import ConfigError

# weight_decay: RecBole default 0.0, LRURec's property file 0.01
LEVELS = ("file", "dict", "cmd")


def _config(tmp_path, levels, model="LRURec", key="weight_decay"):
    values = {"file": 0.02, "dict": 0.03, "cmd": 0.04}
    files, config_dict, cmd_args = None, None, None
    if "file" in levels:
        path = tmp_path / "user.yaml"
        path.write_text(yaml.safe_dump({key: values["file"]}))
        files = [str(path)]
    if "dict" in levels:
        config_dict = {key: values["dict"]}
    if "cmd" in levels:
        cmd_args = [f"--{key}={values['cmd']}"]
    return create_config(model, "ml-100k", files, config_dict, cmd_args)


def test_plugin_model_yaml_beats_recbole_default(tmp_path):
    assert create_config("SASRec", "ml-100k")["weight_decay"] == 0.0
    assert _config(tmp_path, ())["weight_decay"] == 0.01


@pytest.mark.parametrize(
    "levels, expected",
    [
        (("file",), 0.02),
        (("dict",), 0.03),
        (("cmd",), 0.04),
        (("file", "dict"), 0.03),
        (("file", "cmd"), 0.04),
        (("dict", "cmd"), 0.04),
        (("file", "dict", "cmd"), 0.04),
    ],
)
def test_each_level_wins_over_the_levels_below(tmp_path, levels, expected):
    assert _config(tmp_path, levels)["weight_decay"] == expected


def test_later_config_file_wins(tmp_path):
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text("learning_rate: 0.5\nepochs: 3\n")
    second.write_text("learning_rate: 0.25\n")
    config = create_config("SASRec", "ml-100k", [str(first), str(second)])
    assert config["learning_rate"] == 0.25 and config["epochs"] == 3


def test_plugin_dataset_yaml_beats_recbole_default():
    config = create_config("SASRec", "ml-1m-lru", config_dict={"data_path": "/nonexistent"})
    assert config["MAX_ITEM_LIST_LENGTH"] == 200
    assert create_config("SASRec", "video-lru")["MAX_ITEM_LIST_LENGTH"] == 50


def test_sys_argv_is_not_read(monkeypatch):
    monkeypatch.setattr("sys.argv", ["prog", "--learning_rate=0.9"])
    assert create_config("SASRec", "ml-100k")["learning_rate"] == 0.001


def test_ce_models_need_no_negative_sampling_setting():
    config = create_config("SASRec", "ml-100k")
    assert config["train_neg_sample_args"]["distribution"] == "none"
    bpr = create_config("SASRec", "ml-100k", config_dict={"loss_type": "BPR"})
    assert bpr["train_neg_sample_args"]["distribution"] == "uniform"


def test_cmd_values_are_typed():
    config = create_config("SASRec", "ml-100k", cmd_args=["--epochs=3", "--learning_rate=1e-4", "--topk=[5,10]"])
    assert config["epochs"] == 3 and config["learning_rate"] == 1e-4 and config["topk"] == [5, 10]


@pytest.mark.parametrize(
    "override, message",
    [
        ({"MAX_ITEM_LIST_LENGTH": 0}, "MAX_ITEM_LIST_LENGTH"),
        ({"MAX_ITEM_LIST_LENGTH": -5}, "MAX_ITEM_LIST_LENGTH"),
        ({"train_batch_size": 0}, "train_batch_size"),
        ({"learning_rate": -0.1}, "learning_rate"),
        ({"hidden_dropout_prob": 1.5}, "hidden_dropout_prob"),
        ({"epochs": "many"}, "epochs"),
        ({"topk": [0]}, "topk"),
        ({"detect_anomaly": "yes"}, "detect_anomaly"),
    ],
)
def test_invalid_values_raise_one_line_config_error(override, message):
    with pytest.raises(ConfigError) as excinfo:
        create_config("SASRec", "ml-100k", config_dict=override)
    assert message in str(excinfo.value) and "\n" not in str(excinfo.value)


def test_unreadable_and_malformed_config_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        create_config("SASRec", "ml-100k", [str(tmp_path / "missing.yaml")])
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        create_config("SASRec", "ml-100k", [str(bad)])
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just a string\n")
    with pytest.raises(ConfigError, match="mapping"):
        create_config("SASRec", "ml-100k", [str(scalar)])


def test_parse_cmd_args_rejects_other_forms():
    assert parse_cmd_args(["--a=1", "--b=x=y"]) == {"a": "1", "b": "x=y"}
    with pytest.raises(ConfigError, match="--key=value"):
        parse_cmd_args(["--epochs", "3"])
    with pytest.raises(ConfigError, match="twice"):
        parse_cmd_args(["--a=1", "--a=2"])
