"""Validation curves of long runs, read from their RecBole logs, as a CSV and a plot.

    python benchmarks/validation_curves.py --output results/lru-paper-curves --metric recall@10 \\
        --curve "video-lru LRURec=results/video-lru-paper/logs/LRURec-seed2020-e96b5ebe.log" \\
        --curve "video-lru SASRec=results/video-lru-paper/logs/SASRec-seed2020-e96b5ebe.log" \\
        --target "video-lru LRURec=0.11337" --target "video-lru SASRec=0.10910"

Each ``--curve LABEL=LOG`` is one run (its log: ``compare`` keeps them in ``<output_dir>/logs/``);
the label's first word is the panel (one per dataset). ``--target LABEL=VALUE`` draws the paper's
*test* value of that run as a dotted line (validation and test differ; the line is a reference).
Writes ``<output>.csv`` (label, epoch, every logged metric) and ``<output>.png``. Logs are not
committed; the CSV is, and ``--from_csv <output>.csv`` redraws the plot from it alone.
"""
import argparse
import csv
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from recbole_linear.workflow.common.run_log import validation_curve  # noqa: E402


def _pairs(items, what):
    pairs = {}
    for item in items or ():
        label, sep, value = item.rpartition("=")
        if not sep or not label:
            raise SystemExit(f"validation_curves: {what} must be LABEL=VALUE, got {item!r}")
        pairs[label] = value
    return pairs


def read_logs(curves):
    rows = []
    for label, log in curves.items():
        for entry in validation_curve(log):
            rows.append({"label": label, **entry})
    return rows


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return [{k: (v if k == "label" else float(v)) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


def write_csv(rows, path):
    columns = ["label", "epoch"] + sorted({k for row in rows for k in row} - {"label", "epoch"})
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)


def plot(rows, targets, metric, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(dict.fromkeys(row["label"] for row in rows))
    panels = list(dict.fromkeys(label.split()[0] for label in labels))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        for index, label in enumerate(l for l in labels if l.split()[0] == panel):
            points = [(row["epoch"], row[metric]) for row in rows if row["label"] == label and metric in row]
            colour = f"C{index}"
            ax.plot([p[0] for p in points], [p[1] for p in points], "-o", ms=3, color=colour, label=f"{label} (valid)")
            if label in targets:
                ax.axhline(float(targets[label]), color=colour, ls=":", label=f"{label}: paper test")
        ax.set_title(panel)
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"validation {metric}")
        ax.grid(alpha=0.3)
        # below the axes: long labels over the curves hide them
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2))
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--curve", action="append", help="LABEL=LOG (repeat)")
    parser.add_argument("--target", action="append", help="LABEL=VALUE, the paper's test value (repeat)")
    parser.add_argument("--metric", default="recall@10")
    parser.add_argument("--output", required=True, help="path without extension")
    parser.add_argument("--from_csv", help="redraw from this CSV instead of reading logs")
    args = parser.parse_args(argv)
    rows = read_csv(args.from_csv) if args.from_csv else read_logs(_pairs(args.curve, "--curve"))
    if not rows:
        raise SystemExit("validation_curves: no validation found in the logs")
    if not args.from_csv:
        write_csv(rows, args.output + ".csv")
    plot(rows, _pairs(args.target, "--target"), args.metric, args.output + ".png")
    print(f"wrote {args.output}.csv and {args.output}.png ({len(rows)} validations)")


if __name__ == "__main__":
    main()
