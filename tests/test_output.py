"""What a run writes where: no warnings from RecBole's own code; RecBole's log on stdout, and an
error found after it started as the last (and only) line on stderr."""
import os
import subprocess
import sys
import warnings

from recbole_linear.quick_start import run
from recbole_linear.recbole_compat import recbole_warnings_filtered
from tests.conftest import ROOT, TINY_DATASET

CHAINED = "A value is trying to be set on a copy of a DataFrame or Series through chained assignment using an inplace method."


def test_a_run_shows_none_of_recboles_known_future_warnings(tiny_run_dict, tmp_path, monkeypatch):
    """pandas' chained-assignment and torch's GradScaler FutureWarnings come from RecBole's lines on every run."""
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run("SASRec", TINY_DATASET, config_dict=tiny_run_dict)
    from_recbole = [f"{w.filename}:{w.lineno}: {w.message}" for w in caught
                    if issubclass(w.category, FutureWarning) and f"{os.sep}recbole{os.sep}" in w.filename]
    assert from_recbole == []


def test_the_filters_are_narrow():
    """The same message from another module, or another message from RecBole's module, still shows."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with recbole_warnings_filtered():
            warnings.warn_explicit(CHAINED, FutureWarning, "dataset.py", 648, module="recbole.data.dataset.dataset")
            warnings.warn_explicit(CHAINED, FutureWarning, "mine.py", 1, module="mine")
            warnings.warn_explicit("something else", FutureWarning, "dataset.py", 1, module="recbole.data.dataset.dataset")
            warnings.warn_explicit(CHAINED, UserWarning, "dataset.py", 648, module="recbole.data.dataset.dataset")
    assert [(str(w.message), w.category, w.filename) for w in caught] == [
        (CHAINED, FutureWarning, "mine.py"), ("something else", FutureWarning, "dataset.py"),
        (CHAINED, UserWarning, "dataset.py")]


def test_error_found_in_the_loaded_data_is_the_only_line_on_stderr(tmp_path):
    """A split without training samples shows only once RecBole has loaded and split the data (its
    log has begun): the log is on stdout, the error the one line on stderr."""
    folder = tmp_path / "data" / "mydata"
    folder.mkdir(parents=True)
    (folder / "mydata.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\n1\t2\t3\n")
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "run_recbole_linear.py"), "--model=SASRec", "--dataset=mydata",
         f"--data_path={tmp_path / 'data'}", "--topk=1"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines() == [
        "run_recbole_linear.py: error: dataset 'mydata': the split (eval_args split {'LS': 'valid_and_test'}) "
        "leaves no training samples from its 1 interactions of 1 user(s)"]
    assert "The number of users: 2" in result.stdout and "mydata" in result.stdout  # RecBole's log, on stdout
