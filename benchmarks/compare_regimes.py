"""Final test accuracy of two finished ``compare`` folders, model by model: are they within noise?

For every model both folders ran, this prints the test NDCG@10 (mean ± sample std over seeds),
epochs and seconds per epoch of each folder, and the two-sided Wilcoxon signed-rank p-value of the
per-user test NDCG@10 (each user averaged over seeds, paired by user) between the two folders:
the same test the summaries use against the best baseline (``recbole_linear.workflow.compare.report``).

Usage (from the repository root):
    python benchmarks/compare_regimes.py results/ml-100k results/ml-100k-all-positions-b128 [more folders...]
prints one Markdown table: the first folder is the reference for every other.
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from recbole_linear.workflow.compare.report import average_by_user, paired_p_value, per_user_path  # noqa: E402
from recbole_linear.workflow.common.run_table import load_runs  # noqa: E402

METRIC = "ndcg@10"


def finished(folder):
    """model -> its ok rows in the folder's runs.csv."""
    rows = {}
    for row in load_runs(os.path.join(folder, "runs.csv"))[0]:
        if row.get("status") == "ok":
            rows.setdefault(row["model"], []).append(row)
    return rows


def per_user(folder, rows):
    """(users, NDCG@10 averaged over the seeds) from the runs' per-user files."""
    arrays = [np.load(per_user_path(folder, row)) for row in rows]
    return average_by_user([a["user"] for a in arrays], [a[METRIC] for a in arrays])


def describe(rows):
    values = [float(r[f"test_{METRIC}"]) for r in rows]
    std = np.std(values, ddof=1) if len(values) > 1 else float("nan")
    epochs = np.mean([float(r["epochs_trained"]) for r in rows])
    seconds = np.mean([float(r["seconds_per_epoch"]) for r in rows])
    return f"{np.mean(values):.4f} ± {std:.4f} ({len(values)} seeds, {epochs:.1f} epochs, {seconds:.1f} s/epoch)"


def main(folders):
    reference, others = folders[0], folders[1:]
    base = finished(reference)
    print(f"| model | {reference} | folder | test {METRIC} | difference | p (Wilcoxon, per user) |")
    print("|---|---|---|---|---|---|")
    for folder in others:
        for model, rows in finished(folder).items():
            if model not in base:
                continue
            users_a, values_a = per_user(reference, base[model])
            users_b, values_b = per_user(folder, rows)
            difference = values_b.mean() - values_a.mean()
            p = paired_p_value(users_a, values_a, users_b, values_b)
            print(f"| {model} | {describe(base[model])} | {folder} | {describe(rows)} | {difference:+.4f} | {p:.3f} |")
    return 0


if __name__ == "__main__":
    if len(sys.argv) < 3:
        print(__doc__)
        sys.exit(2)
    sys.exit(main(sys.argv[1:]))
