"""The papers' protocol files (``properties/protocol/*.yaml``): values, keys, comments, shipping, CLI."""
import configparser
import fnmatch
import os
import re

import pytest
import recbole
import yaml

from recbole_linear import cli, paths
from recbole_linear.config import create_config, read_yaml
from recbole_linear.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LEAVE_ONE_OUT = {"LS": "valid_and_test"}

# protocol -> the final config values it must give (RecBole normalises eval_args' mode per phase)
EXPECTED = {
    "lrurec-paper": {
        "train_all_positions": True,
        "train_batch_size": 128,
        "eval_batch_size": 256,
        "eval_mask_history": True,
        "metrics": ["Recall", "NDCG"],
        "topk": [10, 20],
        "valid_metric": "Recall@10",
        "epochs": 500,
        "stopping_step": 10,
        "seed": 42,
        "eval_args": {"split": LEAVE_ONE_OUT, "order": "TO", "group_by": "user",
                      "mode": {"valid": "full", "test": "full"}},
    },
    "linrec-paper": {
        "train_batch_size": 2048,
        "eval_batch_size": 2048,
        "metrics": ["Recall", "MRR", "NDCG"],
        "topk": [10],
        "valid_metric": "NDCG@10",
        "epochs": 100,
        "seed": 2000,
        "eval_args": {"split": LEAVE_ONE_OUT, "order": "TO", "group_by": "user",
                      "mode": {"valid": "full", "test": "full"}},
    },
    "glintru-paper": {
        "train_batch_size": 2048,
        "eval_batch_size": 2048,
        "metrics": ["Recall", "MRR", "NDCG"],
        "topk": [10],
        "valid_metric": "NDCG@10",
        "epochs": 200,
        "seed": 666,
        "eval_args": {"split": LEAVE_ONE_OUT, "order": "TO", "group_by": "user",
                      "mode": {"valid": "pop100", "test": "pop100"}},
    },
}
# each protocol with its paper's model and the baseline it is compared with
MODELS = {"lrurec-paper": ("LRURec", "SASRec"), "linrec-paper": ("LinRec", "SASRec"), "glintru-paper": ("GLINTRU", "SASRec")}
CASES = [(protocol, model) for protocol, models in MODELS.items() for model in models]


def known_keys():
    """Every key RecBole's overall.yaml or the plugin's overall.yaml defines."""
    recbole_overall = os.path.join(os.path.dirname(recbole.__file__), "properties", "overall.yaml")
    return set(read_yaml(recbole_overall)) | set(read_yaml(paths.overall_property_file()))


def test_the_three_papers_are_shipped():
    assert paths.protocol_names() == ["glintru-paper", "linrec-paper", "lrurec-paper"]
    assert paths.protocol_file("lrurec-paper") == os.path.join(paths.properties_dir(), "protocol", "lrurec-paper.yaml")


def test_unknown_protocol_is_a_one_line_config_error():
    with pytest.raises(ConfigError, match=r"^unknown protocol 'lrurec' \(shipped: glintru-paper, linrec-paper, lrurec-paper\)$"):
        paths.protocol_file("lrurec")


@pytest.mark.parametrize("protocol, model", CASES)
def test_protocol_gives_its_stated_values(protocol, model):
    config = create_config(model, "ml-100k", [paths.protocol_file(protocol)])
    for key, value in EXPECTED[protocol].items():
        assert config[key] == value, key


@pytest.mark.parametrize("protocol", sorted(EXPECTED))
def test_protocol_holds_exactly_the_stated_keys_and_each_is_known(protocol):
    keys = set(read_yaml(paths.protocol_file(protocol)))
    assert keys == set(EXPECTED[protocol])
    assert keys <= known_keys(), sorted(keys - known_keys())


@pytest.mark.parametrize("protocol", sorted(EXPECTED))
def test_every_key_has_a_type_and_meaning_comment(protocol):
    with open(paths.protocol_file(protocol), encoding="utf-8") as f:
        top_level = [line for line in f if re.match(r"^[A-Za-z_]\w*:", line)]
    assert len(top_level) == len(EXPECTED[protocol])
    for line in top_level:
        assert re.search(r"# \((int|float|bool|str|list|dict)\) \S.*\(", line), line


def test_protocol_beats_dataset_and_model_files_and_loses_to_later_files_and_command_line(tmp_path):
    later = tmp_path / "later.yaml"
    later.write_text("epochs: 7\n")
    config = create_config(
        "LRURec", "ml-100k", [paths.protocol_file("lrurec-paper"), str(later)], cmd_args=["--train_batch_size=64"]
    )
    assert (config["epochs"], config["train_batch_size"], config["eval_batch_size"]) == (7, 64, 256)


def test_repository_relative_path_works_from_the_root(monkeypatch):
    monkeypatch.chdir(ROOT)
    config = create_config("LRURec", "ml-100k", ["properties/protocol/lrurec-paper.yaml"])
    assert (config["valid_metric"], config["eval_mask_history"]) == ("Recall@10", True)


def test_package_data_ships_every_protocol_file():
    parser = configparser.ConfigParser()
    parser.read(os.path.join(ROOT, "setup.cfg"))
    patterns = [p.strip() for p in parser["options.package_data"]["recbole_linear.properties"].split(",")]
    for name in paths.protocol_names():
        relative = f"protocol/{name}.yaml"
        assert any(fnmatch.fnmatch(relative, pattern) for pattern in patterns), relative


def test_cli_protocol_comes_first_in_config_files():
    args, overrides = cli.parse_known(
        cli.run_parser(), ["--model=LRURec", "--protocol=glintru-paper", "--config_files=a.yaml b.yaml", "--epochs=3"]
    )
    assert cli.split_config_files(args.config_files) == [paths.protocol_file("glintru-paper"), "a.yaml", "b.yaml"]
    assert overrides == ["--epochs=3"]
    args, _ = cli.parse_known(cli.run_parser(), ["--model=LRURec", "--protocol=linrec-paper"])
    assert cli.split_config_files(args.config_files) == [paths.protocol_file("linrec-paper")]


@pytest.mark.parametrize("subcommand", ["tune", "compare"])
def test_tune_and_compare_take_protocol_too(subcommand):
    from recbole_linear.workflow.compare import command as compare
    from recbole_linear.workflow.tune import command as tune

    parser = {"tune": tune.tune_parser, "compare": compare.build_parser}[subcommand]()
    models = {"tune": "--model=LRURec", "compare": "--models=LRURec"}[subcommand]  # the other is an unknown key
    args, _ = cli.parse_known(parser, [models, "--protocol=lrurec-paper"])
    assert cli.split_config_files(args.config_files) == [paths.protocol_file("lrurec-paper")]


def test_cli_unknown_protocol_exits_2_with_one_line(capsys):
    status = cli.main(["--model=LRURec", "--protocol=nope", "--epochs=0"])
    err = capsys.readouterr().err
    assert status == 2
    assert err.splitlines() == [
        "run_recbole_linear.py: error: unknown protocol 'nope' (shipped: glintru-paper, linrec-paper, lrurec-paper)"
    ]


def test_protocol_files_are_plain_yaml_mappings():
    for name in paths.protocol_names():
        with open(paths.protocol_file(name), encoding="utf-8") as f:
            assert isinstance(yaml.safe_load(f), dict)
