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
