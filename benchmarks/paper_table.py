"""A paper's results table beside our finished runs, from committed ``runs.csv`` files alone.

    python benchmarks/paper_table.py results/lru-paper-table3.yaml --output results/lru-paper-table3

The spec (YAML) names, per row, a dataset, a model as it was trained, the ``runs.csv`` that holds
its runs (a path relative to the spec) and their run ids (one per seed), and the paper's values of
``metrics``. Each cell is ours / paper (ours ÷ paper − 1): our value is the mean over the row's
seeds, with the sample standard deviation (n − 1) when there are two or more. ``leads`` name pairs
of rows (``model`` over ``over``, by ``id``; an optional ``label`` names the pair in the table where
the two model names alone would not tell two leads apart) whose relative difference in
``lead_metric`` is shown for us and for the paper, with two tests of ours: the two-sided Wilcoxon
signed-rank test of the per-user values (each user averaged over seeds; the runs' per-user files)
and Welch's two-sided t-test of the per-seed means (only where both rows have two seeds or more).
The per-user test measures how consistently one model beats the other across users, not how far a
mean moves between seeds; the test across seeds does. ``not_run`` lines are listed under the table.

Writes ``<output>.md`` and ``<output>.csv``. A run that is missing, failed or lacks a metric stops
the script with a one-line error: every number must come from a finished run.
"""
import argparse
import csv
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import yaml  # noqa: E402

from recbole_linear.workflow.compare.report import load_per_user, mean_std, paired_p_value, seed_p_value  # noqa: E402
from recbole_linear.workflow.compare.summary import format_p, pretty_metric  # noqa: E402


def load_spec(path):
    with open(path, encoding="utf-8") as f:
        spec = yaml.safe_load(f)
    for key in ("metrics", "rows"):
        if not spec.get(key):
            raise SystemExit(f"paper_table: {path} has no '{key}'")
    if spec.get("leads") and spec.get("lead_metric", "ndcg@10") not in spec["metrics"]:
        raise SystemExit(f"paper_table: lead_metric {spec.get('lead_metric', 'ndcg@10')} is not one of {path}'s metrics")
    ids = [row.get("id") for row in spec["rows"]]
    if len(set(ids)) != len(ids) or None in ids:
        raise SystemExit(f"paper_table: every row of {path} needs an 'id' of its own")
    for row in spec["rows"]:
        if len(row.get("paper", [])) != len(spec["metrics"]):
            raise SystemExit(f"paper_table: row '{row['id']}' gives {len(row.get('paper', []))} paper values for {len(spec['metrics'])} metrics")
    return spec


def read_runs(spec_dir, row, metrics):
    """The rows of ``runs.csv`` named by the spec row's ``run_ids``, each finished with every metric."""
    runs_csv = os.path.join(spec_dir, row["runs"])
    if not os.path.isfile(runs_csv):
        raise SystemExit(f"paper_table: row '{row['id']}': no file {runs_csv}")
    with open(runs_csv, newline="", encoding="utf-8") as f:
        by_id = {r["run_id"]: r for r in csv.DictReader(f)}
    runs = []
    for run_id in row["run_ids"]:
        run = by_id.get(run_id)
        if run is None:
            raise SystemExit(f"paper_table: row '{row['id']}': run {run_id} is not in {runs_csv}")
        if run.get("status") != "ok" or any(run.get(f"test_{m}") in (None, "") for m in metrics):
            raise SystemExit(f"paper_table: row '{row['id']}': run {run_id} did not finish with every metric ({run.get('status')})")
        runs.append(run)
    return os.path.dirname(runs_csv), runs


def build(spec, spec_dir):
    """{'rows': [...], 'leads': [...]} with every figure of the table as numbers."""
    by_id = {}
    for row in spec["rows"]:
        by_id[row["id"]] = _row_entry(row, spec_dir, spec["metrics"])
    leads = [_lead(by_id, lead, spec.get("lead_metric", "ndcg@10")) for lead in spec.get("leads", [])]
    return {"rows": list(by_id.values()), "leads": leads}


def _row_entry(row, spec_dir, metrics):
    folder, runs = read_runs(spec_dir, row, metrics)
    cells = {}
    for metric, paper in zip(metrics, row["paper"]):
        mean, std = mean_std([float(r[f"test_{metric}"]) for r in runs])
        cells[metric] = {"mean": mean, "std": std, "paper": float(paper), "gap": mean / float(paper) - 1}
    return {
        "id": row["id"], "dataset": row["dataset"], "model": row["model"], "trained": row.get("trained", ""),
        "seeds": [int(r["seed"]) for r in runs], "runs": row["runs"], "run_ids": list(row["run_ids"]),
        "cells": cells, "folder": folder, "run_rows": runs,
    }


def _lead(by_id, lead, metric):
    """Row ``lead['model']`` over row ``lead['over']`` in ``metric``: ours, the paper's, both tests."""
    unknown = [name for name in (lead["model"], lead["over"]) if name not in by_id]
    if unknown:
        raise SystemExit(f"paper_table: a lead names row '{unknown[0]}', which the spec does not have")
    a, b = by_id[lead["model"]], by_id[lead["over"]]
    users_a = load_per_user(a["folder"], a["run_rows"], metric=metric)
    users_b = load_per_user(b["folder"], b["run_rows"], metric=metric)
    have_users = users_a is not None and users_b is not None
    return {
        "dataset": a["dataset"], "model": a["id"], "over": b["id"],
        "label": lead.get("label") or f"{a['model']} over {b['model']}",
        "metric": metric,
        "ours": a["cells"][metric]["mean"] / b["cells"][metric]["mean"] - 1,
        "paper": a["cells"][metric]["paper"] / b["cells"][metric]["paper"] - 1,
        "p_users": paired_p_value(*users_a, *users_b) if have_users else None,
        "users": len(np.intersect1d(users_a[0], users_b[0])) if have_users else None,
        "p_seeds": seed_p_value([float(r[f"test_{metric}"]) for r in a["run_rows"]],
                                [float(r[f"test_{metric}"]) for r in b["run_rows"]]),
    }


def _paper_value(value):
    return f"{value:.5f}".lstrip("0")


def _percent(fraction):
    """+2.7% / −2.7% (a minus sign, as the results files print it)."""
    return f"{100 * fraction:+.1f}%".replace("-", "−")


def _seeds(seeds):
    return f"{len(seeds)} ({', '.join(str(s) for s in seeds)})"


def to_markdown(spec, table, command=None):
    """The table in Markdown; with the spec's ``title`` and ``intro`` and ``command`` (how to
    regenerate it) above it when they are given."""
    metrics = spec["metrics"]
    lines = []
    if spec.get("title"):
        lines += [f"# {spec['title']}", ""]
    if spec.get("intro"):
        lines += [spec["intro"].strip(), ""]
    if command:
        lines += ["Regenerate (from the committed `runs.csv` and per-user files alone):", "", "```", command, "```", ""]
    lines += [
        "| data | model, as trained | seeds | " + " | ".join(pretty_metric(m) for m in metrics) + " | runs |",
        "|---|---|---|" + "---|" * len(metrics) + "---|",
    ]
    for row in table["rows"]:
        cells = []
        for metric in metrics:
            cell = row["cells"][metric]
            ours = f"{cell['mean']:.4f}" + ("" if cell["std"] is None else f" ± {cell['std']:.4f}")
            cells.append(f"{ours} / {_paper_value(cell['paper'])} ({_percent(cell['gap'])})")
        runs = f"[`{os.path.dirname(row['runs'])}`]({row['runs']}) " + ", ".join(f"`{r}`" for r in row["run_ids"])
        lines.append(f"| {row['dataset']} | {row['model']}: {row['trained']} | {_seeds(row['seeds'])} | "
                     + " | ".join(cells) + f" | {runs} |")
    if table["leads"]:
        lines += [
            "",
            "| data | lead | ours | paper | p per user (Wilcoxon, users) | p across seeds (Welch) |",
            "|---|---|---|---|---|---|",
        ]
        for lead in table["leads"]:
            users = "" if lead["users"] is None else f" ({lead['users']:,})"
            seeds = "n/a (needs 2 seeds each)" if lead["p_seeds"] is None else format_p(lead["p_seeds"])
            lines.append(
                f"| {lead['dataset']} | {lead['label']}, {pretty_metric(lead['metric'])} | "
                f"{_percent(lead['ours'])} | {_percent(lead['paper'])} | {format_p(lead['p_users'])}{users} | {seeds} |"
            )
    if spec.get("not_run"):
        lines += ["", "Not run:", ""] + [f"- {line}" for line in spec["not_run"]]
    return "\n".join(lines) + "\n"


def to_csv(spec, table, path):
    metrics = spec["metrics"]
    fields = ["dataset", "model", "trained", "seeds", "run_ids"]
    for metric in metrics:
        fields += [f"{metric}_mean", f"{metric}_std", f"{metric}_paper", f"{metric}_gap"]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for row in table["rows"]:
            out = {"dataset": row["dataset"], "model": row["model"], "trained": row["trained"],
                   "seeds": " ".join(str(s) for s in row["seeds"]), "run_ids": " ".join(row["run_ids"])}
            for metric in metrics:
                c = row["cells"][metric]
                out.update({f"{metric}_mean": f"{c['mean']:.6f}", f"{metric}_std": "" if c["std"] is None else f"{c['std']:.6f}",
                            f"{metric}_paper": c["paper"], f"{metric}_gap": f"{c['gap']:.6f}"})
            writer.writerow(out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", help="the table's YAML spec")
    parser.add_argument("--output", required=True, help="path without extension (.md and .csv are written)")
    args = parser.parse_args(argv)
    spec = load_spec(args.spec)
    table = build(spec, os.path.dirname(os.path.abspath(args.spec)))
    # relative paths in the file: it is committed and must read the same in any checkout
    command = f"python benchmarks/paper_table.py {os.path.relpath(args.spec)} --output {os.path.relpath(args.output)}"
    with open(args.output + ".md", "w", encoding="utf-8") as f:
        f.write(to_markdown(spec, table, command))
    to_csv(spec, table, args.output + ".csv")
    print(f"wrote {args.output}.md and {args.output}.csv ({len(table['rows'])} rows, {len(table['leads'])} leads)")


if __name__ == "__main__":
    main()
