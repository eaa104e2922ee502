"""Read a run's validation curve back from its RecBole log.

RecBole logs each validation as two lines::

    01 Dec 10:44    INFO  epoch 3 evaluating [time: 15.40s, valid_score: 0.085200]
    01 Dec 10:44    INFO  valid result:
    recall@10 : 0.0852    recall@20 : 0.1276    ndcg@10 : 0.046    ndcg@20 : 0.0566

(the metrics line may carry colour codes). :func:`validation_curve` returns one entry per
validation, in log order, so the curve of a long run that resumed (its log appended at every
start, see :mod:`recbole_linear.workflow.compare.runner`) is complete; an epoch validated twice (the
run was cut after validating it and resumed from an earlier save) keeps its last entry.
"""
import re

_EVALUATING = re.compile(r"epoch (\d+) evaluating \[time: ([\d.]+)s, valid_score: ([-\d.einf]+)\]")
_COLOUR = re.compile(r"\x1b\[[0-9;]*m")
_METRIC = re.compile(r"([A-Za-z]+@\d+|[A-Za-z_]+)\s*:\s*([-\d.e]+|nan|inf)")


def validation_curve(log_path):
    """``[{"epoch": int, "valid_score": float, "seconds": float, <metric>: float, ...}]``."""
    with open(log_path, encoding="utf-8", errors="replace") as f:
        lines = [_COLOUR.sub("", line) for line in f]
    by_epoch = {}
    for index, line in enumerate(lines):
        match = _EVALUATING.search(line)
        if not match:
            continue
        entry = {"epoch": int(match.group(1)), "seconds": float(match.group(2)), "valid_score": float(match.group(3))}
        if index + 2 < len(lines) and "valid result" in lines[index + 1]:
            entry.update({name: float(value) for name, value in _METRIC.findall(lines[index + 2])})
        by_epoch.pop(entry["epoch"], None)  # a repeat moves to the end
        by_epoch[entry["epoch"]] = entry
    return sorted(by_epoch.values(), key=lambda e: e["epoch"])
