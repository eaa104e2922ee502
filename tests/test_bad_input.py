"""Bad datasets and model settings end with one line naming the file, column or key, exit 2, before training."""
import logging
import os
import subprocess
import sys

import pytest

from recbole_linear.cli import main
from recbole_linear.config import create_config
from recbole_linear.data_checks import MIN_EVAL_USERS
from recbole_linear.errors import ConfigError
from tests.conftest import ROOT

GOOD_HEADER = "user_id:token\titem_id:token\ttimestamp:float\n"
TINY_RUN = ["--epochs=1", "--hidden_size=32", "--embedding_size=32", "--n_layers=1", "--n_heads=2",
            "--MAX_ITEM_LIST_LENGTH=5", "--show_progress=False"]


def good_rows(users=12, length=6):
    return "".join(f"{u}\t{(u * 7 + t) % 15 + 1}\t{t}\n" for u in range(1, users + 1) for t in range(length))


def write_inter(folder, text, name="mydata"):
    os.makedirs(folder / name, exist_ok=True)
    path = folder / name / f"{name}.inter"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return str(path)


def run_main(argv, capsys):
    status = main(argv)
    captured = capsys.readouterr()
    return status, captured.err.strip().splitlines()


def assert_one_line_error(status, lines, *fragments):
    assert status == 2
    errors = [line for line in lines if "error:" in line]
    assert len(errors) == 1, lines
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


BAD_FILES = {
    "unsupported_type": ("user_id:int\titem_id:token\ttimestamp:float\n1\t2\t3\n", ["header field 'user_id:int'"]),
    "no_type": ("user_id\titem_id:token\ttimestamp:float\n1\t2\t3\n", ["header field 'user_id'"]),
    "comma_separated": ("user_id:token,item_id:token,timestamp:float\n1,2,3\n", ["columns must be separated by"]),
    "missing_item_id": ("user_id:token\ttimestamp:float\n1\t3\n", ["no 'item_id' column", "ITEM_ID_FIELD"]),
    "item_id_as_float": ("user_id:token\titem_id:float\ttimestamp:float\n1\t2\t3\n", ["'item_id'", "item_id:token"]),
    "empty": ("", ["is empty"]),
    "header_only": (GOOD_HEADER, ["header but no interactions"]),
    "non_numeric_float": (GOOD_HEADER + "1\t2\t3\n1\t3\tlate\n", ["line 3", "'timestamp:float'", "'late'"]),
    "no_timestamp": ("user_id:token\titem_id:token\n1\t2\n1\t3\n", ["no 'timestamp' column", "TIME_FIELD", "timestamp:float"]),
    "timestamp_as_token": ("user_id:token\titem_id:token\ttimestamp:token\n1\t2\t3\n", ["timestamp:float"]),
    # what real exports hold: a column twice, another encoding, a byte-order mark, damaged rows
    "duplicate_column": ("user_id:token\titem_id:token\titem_id:token\ttimestamp:float\n1\t2\t2\t3\n",
                         ["column 'item_id' appears twice in the header"]),
    "not_utf8": ((GOOD_HEADER + "1\t2\t3\n1\tcaf\u00e9\t4\n").encode("latin-1"),
                 ["line 3", "byte 0xe9 is not utf-8", "--encoding=latin-1"]),
    "utf8_bom": ("\ufeff" + GOOD_HEADER + good_rows(), ["byte-order mark", "--encoding=utf-8-sig"]),
    "field_missing": (GOOD_HEADER + "1\t2\t3\n1\t3\n1\t4\t5\n", ["line 3", "2 fields where the header has 3"]),
    "field_too_many": (GOOD_HEADER + "1\t2\t3\n1\t4\t5\t6\n", ["line 3", "4 fields where the header has 3"]),
    "empty_time": (GOOD_HEADER + "1\t2\t3\n\n1\t3\t\n", ["line 4", "'timestamp:float' is empty"]),
    "nan_time": (GOOD_HEADER + "1\t2\t3\n1\t3\tnan\n", ["line 3", "'timestamp:float' is empty or a missing-value"]),
    "empty_user": (GOOD_HEADER + "1\t2\t3\n\t3\t4\n", ["line 3", "'user_id:token' is empty"]),
    "empty_item": (GOOD_HEADER + "1\t2\t3\n1\t\t4\n", ["line 3", "'item_id:token' is empty"]),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_interaction_file_is_one_line_before_training(case, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text, fragments = BAD_FILES[case]
    path = write_inter(tmp_path / "data", text)
    status, lines = run_main(["--model=SASRec", "--dataset=mydata", f"--data_path={tmp_path / 'data'}", *TINY_RUN], capsys)
    assert_one_line_error(status, lines, path, *fragments)
    assert not os.path.exists(tmp_path / "saved") and not os.path.exists(tmp_path / "log")  # nothing started


def test_split_without_training_samples(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_inter(tmp_path / "data", GOOD_HEADER + "1\t2\t3\n")
    status, lines = run_main(["--model=SASRec", "--dataset=mydata", f"--data_path={tmp_path / 'data'}", *TINY_RUN,
                              "--topk=1"], capsys)
    assert_one_line_error(status, lines, "dataset 'mydata'", "leaves no training samples from its 1 interactions")


def test_fewer_items_than_topk(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_inter(tmp_path / "data", GOOD_HEADER + good_rows(users=12, length=6))  # items 1..15
    status, lines = run_main(["--model=SASRec", "--dataset=mydata", f"--data_path={tmp_path / 'data'}", *TINY_RUN,
                              "--topk=[10,20]"], capsys)
    assert_one_line_error(status, lines, "has 15 items, too few for topk [10, 20]: set --topk to at most 15")
    assert not os.path.exists(tmp_path / "saved") and not os.path.exists(tmp_path / "log")  # found before RecBole's log


def test_load_col_naming_an_absent_column(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_inter(tmp_path / "data", GOOD_HEADER + good_rows())
    status, lines = run_main(
        ["--model=SASRec", "--dataset=mydata", f"--data_path={tmp_path / 'data'}",
         "--load_col={'inter': ['user_id', 'item_id', 'timestamp', 'rating']}", *TINY_RUN], capsys)
    assert_one_line_error(status, lines, "no column 'rating' that load_col lists")


@pytest.mark.parametrize(
    "model, overrides, message",
    [
        ("LinRec", ["--hidden_size=30", "--n_heads=4"], "LinRec needs hidden_size divisible by n_heads (got 30 and 4)"),
        ("GLINTRU", ["--hidden_size=32", "--embedding_size=64"], "GLINTRU needs embedding_size == hidden_size (got 64 and 32)"),
        ("GLINTRU", ["--conv_kernel_size=4"], "GLINTRU needs a positive odd conv_kernel_size"),
        ("LinRec", ["--hidden_act=elu"], "LinRec needs hidden_act in"),
        ("LRURec", ["--r_max=1.0"], "LRURec needs 0 <= r_min <= r_max < 1"),
        ("LRURec", ["--loss_type=MSE"], "'loss_type'"),
    ],
)
def test_model_settings_fail_before_the_dataset_is_read(model, overrides, message, tmp_path, capsys, monkeypatch):
    """The dataset does not even exist: the model's check comes first."""
    monkeypatch.chdir(tmp_path)
    status, lines = run_main([f"--model={model}", "--dataset=nowhere", f"--data_path={tmp_path}", *overrides], capsys)
    assert_one_line_error(status, lines, message)


def test_model_check_is_the_one_init_uses():
    from tests.helpers import build_model
    from recbole_linear import LinRec

    with pytest.raises(ConfigError, match=r"LinRec needs hidden_size divisible by n_heads \(got 30 and 4\)"):
        build_model(LinRec, hidden_size=30, n_heads=4)
    with pytest.raises(ConfigError, match="LinRec needs hidden_size divisible by n_heads"):
        create_config("LinRec", "ml-100k", config_dict={"hidden_size": 30, "n_heads": 4})


def _run_on(tmp_path, text, caplog):
    from recbole_linear.quick_start import run_recbole_linear

    write_inter(tmp_path / "data", text)
    caplog.set_level(logging.WARNING, logger="recbole_linear")
    return run_recbole_linear("SASRec", "mydata", cmd_args=[f"--data_path={tmp_path / 'data'}", *TINY_RUN,
                                                            f"--checkpoint_dir={tmp_path / 'saved'}"])


def _split_warnings(caplog):
    return [r.getMessage() for r in caplog.records if "the split of dataset" in r.getMessage()]


def test_one_user_dataset_warns_that_metrics_average_one_user(tmp_path, caplog, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = _run_on(tmp_path, GOOD_HEADER + good_rows(users=1, length=12), caplog)
    assert _split_warnings(caplog) == [
        "recbole-linear: warning: the split of dataset 'mydata' leaves 1 valid user(s): valid metrics are averages over 1 user(s)",
        "recbole-linear: warning: the split of dataset 'mydata' leaves 1 test user(s): test metrics are averages over 1 user(s)",
    ]
    test = result["test_result"]  # one user: each metric is that user's own value
    assert test["hit@10"] in (0.0, 1.0) and test["recall@10"] == test["hit@10"]
    assert test["precision@10"] == test["hit@10"] / 10


def test_enough_users_do_not_warn(tmp_path, caplog, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _run_on(tmp_path, GOOD_HEADER + good_rows(users=MIN_EVAL_USERS), caplog)
    assert _split_warnings(caplog) == []


def test_users_own_dataset_needs_no_yaml(tmp_path, monkeypatch):
    """user_id, item_id, timestamp columns and nothing else: RecBole's default load_col would drop timestamp."""
    from recbole_linear.quick_start import run_recbole_linear

    monkeypatch.chdir(tmp_path)
    write_inter(tmp_path / "data", "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                + "".join(f"{u}\t{i}\t3\t{t}\n" for u, i, t in
                          ((u, (u * 7 + t) % 15 + 1, t) for u in range(1, 13) for t in range(6))))
    result = run_recbole_linear("SASRec", "mydata", cmd_args=[f"--data_path={tmp_path / 'data'}", *TINY_RUN])
    assert 0.0 <= result["test_result"]["ndcg@10"] <= 1.0
    config = create_config("SASRec", "mydata", cmd_args=[f"--data_path={tmp_path / 'data'}"])
    assert config["load_col"] == {"inter": ["user_id", "item_id", "timestamp"]}


def test_command_line_exit_status_and_single_line(tmp_path):
    """The real process: status 2 and exactly one stderr line, no traceback."""
    write_inter(tmp_path / "data", "user_id:token\titem_id:token\n1\t2\n")
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "run_recbole_linear.py"), "--model=LRURec", "--dataset=mydata",
         f"--data_path={tmp_path / 'data'}"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "no 'timestamp' column" in result.stderr


def test_empty_lines_are_skipped_with_one_warning_naming_them(tmp_path, monkeypatch, caplog):
    """pandas (and so RecBole) skips empty lines; the check says so, once, with their numbers."""
    from recbole_linear.quick_start import check_dataset

    monkeypatch.chdir(tmp_path)
    write_inter(tmp_path / "data", GOOD_HEADER + good_rows(users=2) + "\n" + good_rows(users=1) + "\n")
    config = create_config("SASRec", "mydata", cmd_args=[f"--data_path={tmp_path / 'data'}"])
    caplog.set_level(logging.WARNING, logger="recbole_linear")
    check_dataset(config)
    check_dataset(config)  # a run checks twice: one warning
    warnings = [r.getMessage() for r in caplog.records if "empty line" in r.getMessage()]
    assert warnings == [f"recbole-linear: warning: dataset file {tmp_path / 'data' / 'mydata' / 'mydata.inter'}: "
                        "2 empty line(s) skipped, as RecBole skips them (line 14, 21)"]


def test_byte_order_mark_is_read_with_encoding_utf8_sig(tmp_path, monkeypatch):
    """The way out the BOM error names works: RecBole then reads the first column's name right."""
    from recbole.data import create_dataset

    from recbole_linear.quick_start import check_dataset

    monkeypatch.chdir(tmp_path)
    write_inter(tmp_path / "data", "\ufeff" + GOOD_HEADER + good_rows())
    config = create_config("SASRec", "mydata", cmd_args=[f"--data_path={tmp_path / 'data'}", "--encoding=utf-8-sig"])
    check_dataset(config)
    assert create_dataset(config).user_num == 12 + 1  # id 0 is padding


@pytest.mark.parametrize("case", ["duplicate_column", "not_utf8", "utf8_bom"])
def test_damaged_file_in_a_real_process_is_one_stderr_line_and_status_2(case, tmp_path):
    text, fragments = BAD_FILES[case]
    path = write_inter(tmp_path / "data", text)
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "run_recbole_linear.py"), "--model=SASRec", "--dataset=mydata",
         f"--data_path={tmp_path / 'data'}"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-3000:]
    assert all(fragment in lines[0] for fragment in [path, *fragments]), lines[0]
    assert not os.path.exists(tmp_path / "log") and not os.path.exists(tmp_path / "saved")
