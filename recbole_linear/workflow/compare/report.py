"""The summary of a ``compare`` run as data: per-model means, ranks and significance tests.

Input is the comparison's rows (one dict per run, as in ``runs.csv``) and the per-user test
NDCG@10 arrays the runs stored. :func:`build_table` gives, per model, the mean ± sample standard
deviation (n - 1) of every test metric over the seeds that finished, the best and second-best
mean per metric (ties share a mark; direction from RecBole's ``smaller_metrics``), the efficiency
columns, and the p-value of a two-sided Wilcoxon signed-rank test (``scipy.stats.wilcoxon``) of
the model's per-user NDCG@10 against the best RecBole baseline's. Where the model and that
baseline each finished at least two seeds, a second p-value compares their per-seed test NDCG@10
(Welch's two-sided t-test, ``scipy.stats.ttest_ind(equal_var=False)``): the per-user test pairs two
users' scores under the seed-averaged models and says nothing of how much a mean moves from one
seed to the next; the test across seeds does. :mod:`.summary` writes it as ``summary.md`` and
``summary.tex``.

A run counts as one of its model's seeds only if it finished with every test metric its model's
runs report (:func:`finished_rows`): the seeds column counts exactly the runs that the means, the
efficiency columns and the p-value use. The table also records the runs' training regime and
evaluation protocol (``train_all_positions``, ``eval_mask_history``).
"""
import os

import numpy as np
from recbole.evaluator.register import metrics_dict, smaller_metrics
from scipy.stats import ttest_ind, wilcoxon

SIGNIFICANCE_METRIC = "ndcg@10"
SIGNIFICANCE_TEST = "two-sided Wilcoxon signed-rank test (scipy.stats.wilcoxon)"
SEED_TEST = "Welch's two-sided t-test (scipy.stats.ttest_ind, equal_var=False)"
METRIC_DIGITS = 4

# efficiency columns: (row key, markdown header, LaTeX header, formatter)
_EFFICIENCY_COLUMNS = (
    ("num_parameters", "params", "Params", lambda v: human_count(v)),
    ("seconds_per_epoch", "s/epoch", "s/epoch", lambda v: f"{v:.2f}" if v < 10 else f"{v:.1f}"),
    ("epochs_trained", "epochs", "Epochs", lambda v: f"{v:.0f}" if float(v).is_integer() else f"{v:.1f}"),
    ("latency_ms_per_1k_users", "ms/1k users", "ms/1k users", lambda v: f"{v:.1f}"),
    ("peak_rss_mb", "peak RSS MB", "Peak RSS (MB)", lambda v: f"{v:.0f}"),
    ("peak_gpu_mb", "peak GPU MB", "Peak GPU (MB)", lambda v: f"{v:.0f}"),
)


# --- small pieces ----------------------------------------------------------------------------
def bigger_is_better(metric):
    """Direction of a RecBole metric key such as ``ndcg@10`` (RecBole's own ``smaller_metrics``)."""
    return metric.split("@")[0].lower() not in smaller_metrics


def rank_marks(values, bigger=True, digits=METRIC_DIGITS):
    """{index: 'best' | 'second'} for a list of means (None = missing), compared as displayed."""
    shown = sorted({round(v, digits) for v in values if v is not None}, reverse=bigger)
    marks = {}
    for i, value in enumerate(values):
        if value is None:
            continue
        place = shown.index(round(value, digits))
        if place == 0:
            marks[i] = "best"
        elif place == 1:
            marks[i] = "second"
    return marks


def mean_std(values):
    """(mean, sample std with n - 1, or None for a single value)."""
    values = np.asarray(values, dtype=float)
    return float(values.mean()), (float(values.std(ddof=1)) if len(values) > 1 else None)


def human_count(n):
    n = float(n)
    for unit, size in (("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return f"{n:.0f}"


# --- significance ----------------------------------------------------------------------------
def average_by_user(user_arrays, value_arrays):
    """Concatenate (users, values) pairs (one per seed) and average each user's values."""
    users = np.concatenate([np.asarray(u).astype(str) for u in user_arrays])
    values = np.concatenate([np.asarray(v, dtype=float) for v in value_arrays])
    unique, inverse = np.unique(users, return_inverse=True)
    sums = np.bincount(inverse, weights=values, minlength=len(unique))
    counts = np.bincount(inverse, minlength=len(unique))
    return unique, sums / counts


def paired_p_value(users_a, values_a, users_b, values_b):
    """Two-sided Wilcoxon signed-rank p-value of a vs b over the users both have (NaN if none).

    Users with equal values carry no sign and are dropped (``zero_method='wilcox'``); when every
    pair is equal the two models do not differ on these users and the p-value is 1.
    """
    common, index_a, index_b = np.intersect1d(
        np.asarray(users_a).astype(str), np.asarray(users_b).astype(str), return_indices=True
    )
    if len(common) == 0:
        return float("nan")
    a = np.asarray(values_a, dtype=float)[index_a]
    b = np.asarray(values_b, dtype=float)[index_b]
    if np.all(a == b):
        return 1.0
    return float(wilcoxon(a, b, zero_method="wilcox", alternative="two-sided").pvalue)


def seed_p_value(values_a, values_b):
    """p-value of Welch's two-sided t-test of two models' per-seed test means (unpaired: the
    same seed in two models shares no randomness that matters); None unless each has two seeds.

    Two sets of equal values cannot be told apart and give 1; two constant but different sets
    have no spread to test against and give 0.
    """
    a, b = np.asarray(values_a, dtype=float), np.asarray(values_b, dtype=float)
    if len(a) < 2 or len(b) < 2:
        return None
    if a.std() == 0 and b.std() == 0:
        return 1.0 if a[0] == b[0] else 0.0
    return float(ttest_ind(a, b, equal_var=False).pvalue)


# --- the table -------------------------------------------------------------------------------
def is_metric(name):
    """A RecBole metric key such as ``ndcg@10`` or ``auc``."""
    return name.split("@")[0].lower() in metrics_dict


def _metric_keys(rows):
    """Test metrics in the order RecBole reported them (``test_<metric>`` columns)."""
    keys = []
    for row in rows:
        for key in row:
            name = key[len("test_"):]
            if key.startswith("test_") and is_metric(name) and name not in keys and row[key] not in (None, ""):
                keys.append(name)
    return keys


def per_user_path(output_dir, row):
    """A run's per-user file: its ``per_user_file`` cell (relative to the folder), else where
    compare writes it (``per_user/<run_id>.npz``); None if neither exists."""
    candidates = [row.get("per_user_file")]
    if row.get("run_id"):
        candidates.append(os.path.join("per_user", f"{row['run_id']}.npz"))
    for stored in candidates:
        if stored:
            path = stored if os.path.isabs(stored) else os.path.join(output_dir, stored)
            if os.path.isfile(path):
                return path
    return None


def load_per_user(output_dir, rows, missing=None, metric=SIGNIFICANCE_METRIC):
    """(users, each user's ``metric`` averaged over ``rows``, one per seed), or None if a run's
    file is absent; the ids of runs without a file are appended to ``missing`` when given."""
    users, values, complete = [], [], True
    for row in rows:
        path = per_user_path(output_dir, row)
        if path is None:
            if missing is not None:
                missing.append(row.get("run_id") or f"{row['model']} seed={row['seed']}")
            complete = False
            continue
        with np.load(path) as data:
            users.append(data["user"])
            values.append(data[metric])
    return average_by_user(users, values) if complete and users else None


def build_table(rows, models, output_dir=None):
    """The summary as data: one entry per model (in ``models`` order) with formatted cells.

    ``rows`` are this comparison's runs (dicts with 'model', 'status', 'builtin', 'test_<metric>'
    and the efficiency keys); failed runs are left out of the means. Significance needs
    ``output_dir`` (where the per-user files live).
    """
    ok_rows = {m: finished_rows([r for r in rows if r["model"] == m]) for m in models}
    planned = {m: len([r for r in rows if r["model"] == m]) for m in models}
    metrics = _metric_keys([r for m in models for r in ok_rows[m]])

    stats = {}
    for model in models:
        stats[model] = {}
        for key in [f"test_{m}" for m in metrics] + [c[0] for c in _EFFICIENCY_COLUMNS]:
            values = [float(r[key]) for r in ok_rows[model] if r.get(key) not in (None, "")]
            stats[model][key] = mean_std(values) if values else None

    marks = {}
    for metric in metrics:
        means = [stats[m][f"test_{metric}"][0] if stats[m][f"test_{metric}"] else None for m in models]
        marks[metric] = rank_marks(means, bigger_is_better(metric))

    efficiency = [c for c in _EFFICIENCY_COLUMNS if any(stats[m][c[0]] for m in models)]
    baseline, p_values, missing_per_user = _significance(rows, models, ok_rows, stats, metrics, output_dir)
    seed_p_values = _seed_significance(baseline, models, ok_rows)

    entries = []
    for i, model in enumerate(models):
        entry = {"model": model, "n": f"{len(ok_rows[model])}/{planned[model]}", "metrics": {}, "efficiency": {}}
        for metric in metrics:
            ms = stats[model][f"test_{metric}"]
            entry["metrics"][metric] = None if ms is None else (ms[0], ms[1], marks[metric].get(i))
        for key, _, _, fmt in efficiency:
            entry["efficiency"][key] = "–" if stats[model][key] is None else fmt(stats[model][key][0])
        entry["p"] = p_values.get(model)
        entry["p_seeds"] = seed_p_values.get(model)
        entries.append(entry)
    return {
        "metrics": metrics,
        "efficiency": efficiency,
        "entries": entries,
        "baseline": baseline,
        "seed_test": any(p is not None for p in seed_p_values.values()),
        "missing_per_user": missing_per_user,
        "builtin": [m for m in models if any(_is_true(r.get("builtin")) for r in rows if r["model"] == m)],
        "protocol": _protocol(rows),
    }


def _number_or_none(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def finished_rows(model_rows):
    """The runs of one model that count as seeds: status ok with every test metric any of its
    finished runs reports (a row that lost its metrics counts nowhere: not in n, not in a mean)."""
    ok = [r for r in model_rows if r.get("status") == "ok"]
    with_values = [r for r in ok if any(_number_or_none(v) is not None for k, v in r.items() if k and k.startswith("test_"))]
    keys = {k for r in with_values for k, v in r.items() if k and k.startswith("test_") and v not in (None, "")}
    return [r for r in with_values if all(_number_or_none(r.get(k)) is not None for k in keys)]


def _protocol(rows):
    """{key: value shared by the rows that record it, 'mixed', or None if none records it}."""
    protocol = {}
    for key in ("train_all_positions", "eval_mask_history"):
        values = {str(r.get(key)) for r in rows if r.get("status") == "ok" and r.get(key) not in (None, "")}
        protocol[key] = values.pop() if len(values) == 1 else ("mixed" if values else None)
    return protocol


def _is_true(value):
    return value is True or str(value).lower() == "true"


def _significance(rows, models, ok_rows, stats, metrics, output_dir):
    """The best built-in model by mean test NDCG@10, each other model's p-value against it (NaN
    where a per-user file is missing) and the runs whose per-user file is missing."""
    if SIGNIFICANCE_METRIC not in metrics:
        return None, {}, []
    key = f"test_{SIGNIFICANCE_METRIC}"
    builtin = [m for m in models if ok_rows[m] and _is_true(ok_rows[m][0].get("builtin")) and stats[m][key]]
    if not builtin:
        return None, {}, []
    baseline = max(builtin, key=lambda m: stats[m][key][0])
    if output_dir is None:
        return baseline, {}, []
    missing = []
    reference = load_per_user(output_dir, ok_rows[baseline], missing)
    p_values = {}
    for model in models:
        if model == baseline or not ok_rows[model]:
            continue
        per_user = load_per_user(output_dir, ok_rows[model], missing)
        if reference is None or per_user is None:
            p_values[model] = float("nan")
        else:
            p_values[model] = paired_p_value(per_user[0], per_user[1], reference[0], reference[1])
    return baseline, p_values, missing


def _seed_significance(baseline, models, ok_rows):
    """{model: p of its per-seed test NDCG@10 against the baseline's} where both have two seeds."""
    if baseline is None:
        return {}
    key = f"test_{SIGNIFICANCE_METRIC}"
    reference = [float(r[key]) for r in ok_rows[baseline]]
    return {
        model: seed_p_value([float(r[key]) for r in ok_rows[model]], reference)
        for model in models
        if model != baseline and ok_rows[model]
    }
