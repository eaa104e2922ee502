"""``summary.md`` and ``summary.tex`` of a ``compare`` run, from :func:`.report.build_table`.

Markdown: the best mean per metric in bold, the second underlined, the protocol in words, the
significance test named, and the failed runs listed. LaTeX: the same table for a paper
(booktabs), metric names as papers print them.
"""
import math
import os

from recbole_linear.workflow.compare.report import METRIC_DIGITS, SEED_TEST, SIGNIFICANCE_TEST, build_table

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


# how a run trained and was evaluated (compare refuses to mix them in one table)
_PROTOCOL_TEXT = {
    ("train_all_positions", "False"): "RecBole's regime, one target per training prefix",
    ("train_all_positions", "True"): "every position of each training window, the official LRURec/SASRec regime",
    ("eval_mask_history", "False"): "RecBole's full ranking over all items",
    ("eval_mask_history", "True"): "full ranking without each user's input window, the official LRURec protocol",
}


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


def _p_cells(table, entry, dash):
    """The p-value cells of one row: per user, and across seeds where the table has that column."""
    if table["baseline"] is None:
        return []
    keys = ["p"] + (["p_seeds"] if table.get("seed_test") else [])
    if entry["model"] == table["baseline"]:
        return [dash] * len(keys)
    return [format_p(entry[k]) if entry.get(k) is not None else dash for k in keys]


def _short(text, limit=160):
    return text if len(text) <= limit else text[: limit - 1] + "…"


def to_markdown(table, dataset, seeds, failed_rows=()):
    metrics, efficiency = table["metrics"], table["efficiency"]
    header = ["model", "seeds"] + metrics + [c[1] for c in efficiency]
    if table["baseline"]:
        header.append(f"p vs {table['baseline']}")
        if table.get("seed_test"):
            header.append("p across seeds")
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
        if table.get("seed_test"):
            lines[-1] += (
                f" p across seeds: {SEED_TEST} of the per-seed test NDCG@10 means against "
                f"{table['baseline']}'s, where both finished at least two seeds (— otherwise)."
            )
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
        cells += _p_cells(table, entry, "—")
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
        if table.get("seed_test"):
            header.append("$p_{\\mathrm{seeds}}$")
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
        if table.get("seed_test"):
            caption += " $p_{\\mathrm{seeds}}$: Welch's two-sided $t$-test on the per-seed NDCG@10 means."
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
        cells += _p_cells(table, entry, "--")
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
