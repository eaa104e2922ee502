"""Summary tables and significance tests for ``compare``: ``summary.md`` and ``summary.tex``.

Input is the comparison's rows (one dict per run, as in ``runs.csv``) and the per-user test
NDCG@10 arrays the runs stored. Output: per model, the mean ± sample standard deviation (n - 1)
of every test metric over the seeds that finished, the best mean per metric in bold and the
second underlined (ties share a mark; direction from RecBole's ``smaller_metrics``), the
efficiency columns, and the p-value of a two-sided Wilcoxon signed-rank test
(``scipy.stats.wilcoxon``) of the model's per-user NDCG@10 against the best RecBole baseline's.

A run counts as one of its model's seeds only if it finished with every test metric its model's
runs report (:func:`finished_rows`): the seeds column counts exactly the runs that the means, the
efficiency columns and the p-value use. ``summary.md`` also states the runs' training regime and
evaluation protocol (``train_all_positions``, ``eval_mask_history``).
"""
import math
import os

import numpy as np

SIGNIFICANCE_METRIC = "ndcg@10"
SIGNIFICANCE_TEST = "two-sided Wilcoxon signed-rank test (scipy.stats.wilcoxon)"
METRIC_DIGITS = 4

# RecBole metric name (before '@') -> the name papers print
_PRETTY_METRICS = {
    "recall": "Recall",
    "mrr": "MRR",
    "ndcg": "NDCG",
    "hit": "HR",
    "precision": "Precision",
    "map": "MAP",
    "auc": "AUC",
    "gauc": "GAUC",
    "logloss": "LogLoss",
    "rmse": "RMSE",
    "mae": "MAE",
}

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
    from recbole.evaluator.register import smaller_metrics

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


def format_p(p):
    if p is None or math.isnan(p):
        return "n/a"
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def pretty_metric(metric):
    name, _, k = metric.partition("@")
    pretty = _PRETTY_METRICS.get(name.lower(), name)
    return f"{pretty}@{k}" if k else pretty


def latex_escape(text):
    replacements = {
        "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
        "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    }
    return "".join(replacements.get(c, c) for c in str(text))


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
    from scipy.stats import wilcoxon

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


# --- the table -------------------------------------------------------------------------------
def is_metric(name):
    """A RecBole metric key such as ``ndcg@10`` or ``auc``."""
    from recbole.evaluator.register import metrics_dict

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


def _load_per_user(output_dir, rows, missing):
    """Each user's NDCG@10 averaged over ``rows`` (one per seed), or None if a run's file is
    absent; the ids of runs without a file are appended to ``missing``."""
    users, values, complete = [], [], True
    for row in rows:
        path = per_user_path(output_dir, row)
        if path is None:
            missing.append(row.get("run_id") or f"{row['model']} seed={row['seed']}")
            complete = False
            continue
        with np.load(path) as data:
            users.append(data["user"])
            values.append(data[SIGNIFICANCE_METRIC])
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

    entries = []
    for i, model in enumerate(models):
        entry = {"model": model, "n": f"{len(ok_rows[model])}/{planned[model]}", "metrics": {}, "efficiency": {}}
        for metric in metrics:
            ms = stats[model][f"test_{metric}"]
            entry["metrics"][metric] = None if ms is None else (ms[0], ms[1], marks[metric].get(i))
        for key, _, _, fmt in efficiency:
            entry["efficiency"][key] = "–" if stats[model][key] is None else fmt(stats[model][key][0])
        entry["p"] = p_values.get(model)
        entries.append(entry)
    return {
        "metrics": metrics,
        "efficiency": efficiency,
        "entries": entries,
        "baseline": baseline,
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


# how a run trained and was evaluated (compare refuses to mix them in one table)
_PROTOCOL_TEXT = {
    ("train_all_positions", "False"): "RecBole's regime, one target per training prefix",
    ("train_all_positions", "True"): "every position of each training window, the official LRURec/SASRec regime",
    ("eval_mask_history", "False"): "RecBole's full ranking over all items",
    ("eval_mask_history", "True"): "full ranking without each user's input window, the official LRURec protocol",
}


def _protocol(rows):
    """{key: value shared by the rows that record it, 'mixed', or None if none records it}."""
    protocol = {}
    for key in ("train_all_positions", "eval_mask_history"):
        values = {str(r.get(key)) for r in rows if r.get("status") == "ok" and r.get(key) not in (None, "")}
        protocol[key] = values.pop() if len(values) == 1 else ("mixed" if values else None)
    return protocol


def protocol_line(protocol):
    """'Training: ... Evaluation: ...' for summary.md ('' when the rows record neither)."""
    parts = []
    for label, key in (("Training", "train_all_positions"), ("Evaluation", "eval_mask_history")):
        value = (protocol or {}).get(key)
        if value is None:
            continue
        text = _PROTOCOL_TEXT.get((key, value), "differs between runs")
        parts.append(f"{label}: {text} (`{key}={value}`).")
    return " ".join(parts)


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
    reference = _load_per_user(output_dir, ok_rows[baseline], missing)
    p_values = {}
    for model in models:
        if model == baseline or not ok_rows[model]:
            continue
        per_user = _load_per_user(output_dir, ok_rows[model], missing)
        if reference is None or per_user is None:
            p_values[model] = float("nan")
        else:
            p_values[model] = paired_p_value(per_user[0], per_user[1], reference[0], reference[1])
    return baseline, p_values, missing


# --- Markdown and LaTeX ----------------------------------------------------------------------
def _number(value, digits=METRIC_DIGITS):
    return f"{value:.{digits}f}"


def _metric_cell(cell, dash, best, second, plus_minus):
    """``mean ± std`` of one table cell, the best mean in ``best`` and the runner-up in ``second``
    (format strings around ``{}``), ``dash`` where the model has no finished run."""
    if cell is None:
        return dash
    mean, std, mark = cell
    shown = {"best": best, "second": second}.get(mark, "{}").format(_number(mean))
    return shown if std is None else f"{shown}{plus_minus}{_number(std)}"


def _md_metric(cell):
    return _metric_cell(cell, "–", "**{}**", "<u>{}</u>", " ± ")


def _tex_metric(cell):
    return _metric_cell(cell, "--", r"\textbf{{{}}}", r"\underline{{{}}}", r" $\pm$ ")


def _p_cell(table, entry, dash):
    if table["baseline"] is None:
        return None
    if entry["model"] == table["baseline"]:
        return dash
    return format_p(entry["p"]) if entry["p"] is not None else dash


def _short(text, limit=160):
    return text if len(text) <= limit else text[: limit - 1] + "…"


def to_markdown(table, dataset, seeds, failed_rows=()):
    metrics, efficiency = table["metrics"], table["efficiency"]
    header = ["model", "seeds"] + metrics + [c[1] for c in efficiency]
    if table["baseline"]:
        header.append(f"p vs {table['baseline']}")
    lines = [
        f"# Comparison on {dataset}",
        "",
        f"{len(table['entries'])} models × {len(seeds)} seeds ({', '.join(str(s) for s in seeds)}). "
        "Test metrics: mean ± sample std (n − 1) over the seeds that finished; per metric the best mean "
        "in **bold**, the second <u>underlined</u>. Efficiency columns are means over seeds: trainable "
        "parameters, training seconds per epoch, epochs trained, full-sort test evaluation in ms per "
        "1,000 users, peak memory of the process that ran the run.",
    ]
    if protocol_line(table.get("protocol")):
        lines += ["", protocol_line(table.get("protocol"))]
    if table["builtin"]:
        lines += ["", f"RecBole built-in baselines: {', '.join(table['builtin'])}."]
    if table["baseline"]:
        lines += [
            "",
            f"p: {SIGNIFICANCE_TEST} of each model's per-user test NDCG@10 (averaged over seeds) "
            f"against the best RecBole baseline by mean test NDCG@10, {table['baseline']}, paired by user.",
        ]
    if table.get("missing_per_user"):
        missing = table["missing_per_user"]
        lines += [
            "",
            f"n/a: the per-user file of {len(missing)} run(s) is missing ({_short(', '.join(missing), 400)}); "
            "a p-value needs every seed of both models.",
        ]
    lines += ["", "| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    for entry in table["entries"]:
        cells = [entry["model"], entry["n"]]
        cells += [_md_metric(entry["metrics"].get(m)) for m in metrics]
        cells += [entry["efficiency"][c[0]] for c in efficiency]
        p = _p_cell(table, entry, "—")
        if p is not None:
            cells.append(p)
        lines.append("| " + " | ".join(cells) + " |")
    if failed_rows:
        lines += ["", "Failed runs (rerun the same command to retry them):", ""]
        lines += [f"- {r['model']} seed={r['seed']}: {_short(r.get('error') or 'unknown error')}" for r in failed_rows]
    return "\n".join(lines) + "\n"


def to_latex(table, dataset, seeds):
    metrics, efficiency = table["metrics"], table["efficiency"]
    header = ["Model"] + [pretty_metric(m) for m in metrics] + [c[2] for c in efficiency]
    align = "l" + "c" * len(metrics) + "r" * len(efficiency)
    if table["baseline"]:
        header.append("$p$")
        align += "r"
    caption = (
        f"Test results on {latex_escape(dataset)}: mean $\\pm$ standard deviation over {len(seeds)} seeds. "
        "Best in bold, second underlined."
    )
    if table["baseline"]:
        caption += (
            f" $p$: two-sided Wilcoxon signed-rank test on per-user NDCG@10 against the best RecBole "
            f"baseline, {latex_escape(table['baseline'])}."
        )
    lines = [
        "% requires \\usepackage{booktabs}",
        "\\begin{table*}[t]",
        "\\centering",
        f"\\caption{{{caption}}}",
        f"\\label{{tab:compare-{latex_escape(dataset)}}}",
        f"\\begin{{tabular}}{{{align}}}",
        "\\toprule",
        " & ".join(latex_escape(h) if not h.startswith("$") else h for h in header) + " \\\\",
        "\\midrule",
    ]
    for entry in table["entries"]:
        cells = [latex_escape(entry["model"])]
        cells += [_tex_metric(entry["metrics"].get(m)) for m in metrics]
        cells += [latex_escape(entry["efficiency"][c[0]]).replace("–", "--") for c in efficiency]
        p = _p_cell(table, entry, "--")
        if p is not None:
            cells.append(p)
        lines.append(" & ".join(cells) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table*}"]
    return "\n".join(lines) + "\n"


def write_summary(output_dir, rows, models, dataset, seeds):
    """Write ``summary.md`` and ``summary.tex`` for this comparison's rows; returns the table."""
    table = build_table(rows, models, output_dir)
    failed = [r for r in rows if r["status"] != "ok"]
    with open(os.path.join(output_dir, "summary.md"), "w", encoding="utf-8") as f:
        f.write(to_markdown(table, dataset, seeds, failed))
    with open(os.path.join(output_dir, "summary.tex"), "w", encoding="utf-8") as f:
        f.write(to_latex(table, dataset, seeds))
    return table
