"""Memory and time of data preparation, RecBole's expanded dataset beside the lean one, at scale.

Two measurements, each in a fresh process whose peak resident memory is read by
``/usr/bin/time -f %M`` (the whole process: Python, torch and RecBole included):

- ``prepare``: what ``run`` does before the model is built, for ``--model=LRURec
  --train_all_positions=True``: read the atomic file, build the dataset (``sequence_storage``
  ``expanded`` = RecBole's ``SequentialDataset``, or ``lean``), split it, make the dataloaders and
  the all-position training windows. Seconds are those steps, timed inside the process.
- ``epoch``: a whole run of the command line: LRURec, all positions, hidden 16, one epoch,
  full-ranking validation and test, eval batch 512, one torch thread, with ``--train_batch_size``
  windows per batch; seconds are the run's wall clock.

Datasets: ``ml-1m-lru`` (the LRURec paper's split, from ``--shared_data``) and synthetic logs from
:mod:`benchmarks.synthetic_data` (heavy-tailed lengths, Zipf popularity, seeded), up to
MovieLens-20M's shape. Rows are appended to ``benchmarks/results/data_scale.csv`` as they finish
(a rerun skips the rows it has), then the table and the plot are written from the CSV.

    python benchmarks/data_scale.py                       # everything (hours; see --only)
    python benchmarks/data_scale.py --only prepare        # the preparation grid only
    python benchmarks/data_scale.py --report              # table and plot from the CSV
"""
import argparse
import csv
import json
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from synthetic_data import SHAPES, write_synthetic_dataset  # noqa: E402

RESULTS = os.path.join(HERE, "results")
CSV_FILE = os.path.join(RESULTS, "data_scale.csv")
COLUMNS = [
    "kind", "dataset", "interactions", "users", "items", "max_len", "storage", "train_batch_size",
    "peak_rss_mb", "seconds", "train_seconds", "valid_seconds", "samples", "windows", "status",
]
LOAD_COL = "{'inter': ['user_id', 'item_id', 'timestamp']}"
# RecBole's expanded dataset is only tried where it fits: ~4.5 GB per million interactions at L = 200
EXPANDED_LIMIT_GB = 14.0


def dataset_folder(name, args):
    if name in SHAPES:
        users, items, interactions = SHAPES[name]
        write_synthetic_dataset(args.synthetic_dir, name, users, items, interactions, seed=0)
        return args.synthetic_dir
    return args.shared_data


def predicted_expanded_gb(interactions, max_len):
    """RecBole's dataset, from the issue's measurement (5.19 GB for 1 M interactions at L = 200):
    ~22 bytes per list entry (item and timestamp lists, and the copies its sort makes) plus 0.8 GB."""
    return interactions * max_len * 22 / 1e9 + 0.8


# --- the child processes ------------------------------------------------------------------------
def child_settings(args, **extra):
    """The settings every measured process shares (LRURec, all positions, the three columns), plus ``extra``."""
    return {
        "data_path": args.data_path, "MAX_ITEM_LIST_LENGTH": args.max_len, "train_all_positions": True,
        "sequence_storage": args.storage, "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "show_progress": False, **extra,
    }


def prepare_child(args):
    """Runs in the measured process: data preparation as ``run`` does it; prints one JSON line."""
    import torch

    from recbole_linear.all_positions import AllPositionTrainDataLoader
    from recbole_linear.config import create_config
    from recbole_linear.data import create_dataset
    from recbole_linear.data_checks import split_dataset

    torch.set_num_threads(1)
    config = create_config("LRURec", args.dataset, config_dict=child_settings(args))
    start = time.perf_counter()
    dataset = create_dataset(config)
    train_data, _, _ = split_dataset(config, dataset)
    windows = AllPositionTrainDataLoader(config, train_data._dataset, shuffle=True)
    seconds = time.perf_counter() - start
    print(json.dumps({
        "seconds": round(seconds, 2), "users": dataset.user_num - 1, "items": dataset.item_num - 1,
        "samples": len(train_data._dataset), "windows": windows.sample_size,
    }))


def steps_child(args):
    """Runs in the measured process: ``run``'s preparation, ``--steps`` all-position training steps
    and a full-ranking validation of every user, for a dataset whose whole epoch takes hours here."""
    import torch
    from recbole.utils import init_seed

    from recbole_linear.config import create_config
    from recbole_linear.quick_start import prepare

    torch.set_num_threads(1)
    config = create_config(
        "LRURec", args.dataset,
        config_dict=child_settings(
            args, hidden_size=16, train_batch_size=args.batch, eval_batch_size=512,
            checkpoint_dir=os.path.join(args.synthetic_dir, "saved"),
        ),
    )
    init_seed(config["seed"], config["reproducibility"])
    start = time.perf_counter()
    _, (train_data, valid_data, _), model, trainer = prepare(config)
    prepare_seconds = time.perf_counter() - start
    loss_function = train_data.loss_function(model)
    model.train()
    start = time.perf_counter()
    for step, batch in enumerate(train_data):
        if step == args.steps:
            break
        trainer.optimizer.zero_grad()
        loss = loss_function(batch)
        loss.backward()
        trainer.optimizer.step()
    step_seconds = (time.perf_counter() - start) / args.steps
    start = time.perf_counter()
    trainer.evaluate(valid_data, load_best_model=False)
    print(json.dumps({
        "prepare_seconds": round(prepare_seconds, 1), "step_seconds": round(step_seconds, 4),
        "epoch_steps": len(train_data), "valid_seconds": round(time.perf_counter() - start, 1),
        "windows": train_data.sample_size,
    }))


def run_steps(dataset, max_len, storage, batch, args, interactions):
    """A bounded stand-in for a whole epoch: the measured steps, the epoch's time extrapolated."""
    row = {"kind": f"{args.steps} steps", "dataset": dataset, "max_len": max_len, "storage": storage,
           "train_batch_size": batch, "interactions": interactions}
    command = [sys.executable, os.path.abspath(__file__), "--child_steps", "--dataset", dataset, "--data_path",
               dataset_folder(dataset, args), "--max_len", str(max_len), "--storage", storage,
               "--batch", str(batch), "--steps", str(args.steps), "--synthetic_dir", args.synthetic_dir]
    peak, seconds, result = measured(command)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        return dict(row, peak_rss_mb=round(peak), status=f"failed (exit {result.returncode}): {result.stderr.strip()[-200:]}")
    facts = json.loads(lines[-1])
    epoch = facts["step_seconds"] * facts["epoch_steps"]
    return dict(row, peak_rss_mb=round(peak), seconds=round(seconds, 1), windows=facts["windows"],
                train_seconds=f"~{epoch:.0f} ({facts['step_seconds']} s x {facts['epoch_steps']} steps; extrapolated)",
                valid_seconds=facts["valid_seconds"], status="ok")


def measured(command, env=None):
    """(peak RSS in MB, wall seconds, output) of ``command`` under /usr/bin/time."""
    start = time.perf_counter()
    result = subprocess.run(
        ["/usr/bin/time", "-f", "PEAK_RSS_KB %M", *command], capture_output=True, text=True,
        env=dict(os.environ, OMP_NUM_THREADS="1", **(env or {})), cwd=REPO_ROOT,
    )
    seconds = time.perf_counter() - start
    found = re.findall(r"PEAK_RSS_KB (\d+)", result.stderr)
    peak = int(found[-1]) / 1024 if found else float("nan")
    return peak, seconds, result


# --- the grid -----------------------------------------------------------------------------------
def read_rows(csv_file=CSV_FILE):
    """The rows measured so far (a list of dicts; none if the file does not exist)."""
    if not os.path.isfile(csv_file):
        return []
    with open(csv_file) as f:
        return list(csv.DictReader(f))


def append_row(row, csv_file=CSV_FILE, columns=COLUMNS):
    """Append one measured row (the header first if the file is new) and print it."""
    new = not os.path.isfile(csv_file)
    os.makedirs(os.path.dirname(csv_file), exist_ok=True)
    with open(csv_file, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        if new:
            writer.writeheader()
        writer.writerow({key: row.get(key, "") for key in columns})
    print(", ".join(f"{k}={row.get(k, '')}" for k in columns if row.get(k, "") != ""), flush=True)


def key_of(row):
    return (row["kind"], row["dataset"], str(row["max_len"]), row["storage"], str(row.get("train_batch_size", "")))


def run_prepare(dataset, max_len, storage, args, interactions):
    row = {"kind": "prepare", "dataset": dataset, "max_len": max_len, "storage": storage, "interactions": interactions}
    if storage == "expanded" and predicted_expanded_gb(interactions, max_len) > EXPANDED_LIMIT_GB:
        gb = predicted_expanded_gb(interactions, max_len)
        return dict(row, status=f"not run: predicted ~{gb:.0f} GB")
    command = [sys.executable, os.path.abspath(__file__), "--child", "--dataset", dataset, "--data_path",
               dataset_folder(dataset, args), "--max_len", str(max_len), "--storage", storage]
    peak, _, result = measured(command)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        return dict(row, peak_rss_mb=round(peak), status=f"failed (exit {result.returncode}): {result.stderr.strip()[-200:]}")
    facts = json.loads(lines[-1])
    return dict(row, peak_rss_mb=round(peak), seconds=facts["seconds"], users=facts["users"], items=facts["items"],
                samples=facts["samples"], windows=facts["windows"], status="ok")


def run_epoch(dataset, max_len, storage, batch, args, interactions, loss=None):
    """One epoch through the command line; ``loss``: (kind suffix, extra ``--key=value`` arguments)."""
    kind = "epoch" if loss is None else f"epoch, {loss[0]}"
    row = {"kind": kind, "dataset": dataset, "max_len": max_len, "storage": storage,
           "train_batch_size": batch, "interactions": interactions}
    command = [
        sys.executable, "run_recbole_linear.py", "--model=LRURec", f"--dataset={dataset}",
        f"--data_path={dataset_folder(dataset, args)}", f"--load_col={LOAD_COL}", "--train_all_positions=True",
        f"--MAX_ITEM_LIST_LENGTH={max_len}", "--hidden_size=16", "--epochs=1", f"--train_batch_size={batch}",
        "--eval_batch_size=512", f"--sequence_storage={storage}", "--show_progress=False",
        f"--checkpoint_dir={os.path.join(args.synthetic_dir, 'saved')}", *(loss[1] if loss else ()),
    ]
    peak, seconds, result = measured(command)
    output = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout + result.stderr)
    train = re.findall(r"training \[time: ([\d.]+)s", output)
    valid = re.findall(r"evaluating \[time: ([\d.]+)s", output)
    status = "ok" if result.returncode == 0 else f"failed (exit {result.returncode}): {output.strip()[-200:]}"
    return dict(row, peak_rss_mb=round(peak), seconds=round(seconds, 1), train_seconds=train[0] if train else "",
                valid_seconds=valid[0] if valid else "", status=status)


PREPARE_DATASETS = ["ml-1m-lru", "syn-2m", "syn-5m", "syn-ml20m"]
INTERACTIONS = {"ml-1m-lru": 999_611, **{name: shape[2] for name, shape in SHAPES.items()}}
# the sampled softmax of recbole_linear.sampled_loss: 512 popularity negatives per batch instead of every item
SSM_512 = ("SSM k=512", ["--loss_type=SSM", "--train_neg_sample_args={'distribution': 'popularity', 'sample_num': 512}"])
EPOCH_RUNS = [  # (dataset, L, storage, windows per batch, loss: None = full CE)
    ("ml-1m-lru", 200, "lean", 8, None),
    ("ml-1m-lru", 200, "expanded", 8, None),
    ("syn-2m", 200, "lean", 8, None),
    # full CE scores 26,744 items at 20 M positions (~5.5 h here, STEP_RUNS): the whole epoch runs with SSM
    ("syn-ml20m", 200, "lean", 128, SSM_512),
]
# whole epochs that take hours on this CPU: measured as STEPS steps and a full validation
STEP_RUNS = [("syn-ml20m", 200, "lean", 8)]


def run_grid(args):
    done = {key_of(row) for row in read_rows()}
    if args.only in (None, "prepare"):
        for dataset in args.datasets:
            for max_len in args.lengths:
                for storage in ("lean", "expanded"):
                    key = ("prepare", dataset, str(max_len), storage, "")
                    if key not in done:
                        append_row(run_prepare(dataset, max_len, storage, args, INTERACTIONS[dataset]))
    if args.only in (None, "epoch"):
        for dataset, max_len, storage, batch, loss in EPOCH_RUNS:
            kind = "epoch" if loss is None else f"epoch, {loss[0]}"
            if dataset in args.datasets and (kind, dataset, str(max_len), storage, str(batch)) not in done:
                append_row(run_epoch(dataset, max_len, storage, batch, args, INTERACTIONS[dataset], loss))
    if args.only in (None, "steps"):
        for dataset, max_len, storage, batch in STEP_RUNS:
            if dataset in args.datasets and (f"{args.steps} steps", dataset, str(max_len), storage, str(batch)) not in done:
                append_row(run_steps(dataset, max_len, storage, batch, args, INTERACTIONS[dataset]))


# --- the report ---------------------------------------------------------------------------------
def write_report(machine):
    rows = read_rows()
    prepare = [row for row in rows if row["kind"] == "prepare"]
    epochs = [row for row in rows if row["kind"] != "prepare"]

    def gb(row):
        return f"{float(row['peak_rss_mb']) / 1024:.2f} GiB" if row.get("peak_rss_mb") else "–"

    lines = [
        "# Data preparation at scale: RecBole's expanded sequential dataset beside the lean one",
        "",
        f"Machine: {machine}, 24 GB of memory and no swap (a run that ends ran in RAM). Peak RSS of the",
        "whole process (`/usr/bin/time -f %M`: Python, torch and RecBole included; GiB = 1024³ bytes),",
        "one torch thread. The times were taken while other jobs shared the two cores (load average 5-7):",
        "compare them within a row, not with other machines. RecBole's dataset is not run where its",
        "memory, extrapolated from the issue's 5.19 GB at 1 M interactions and L = 200 (~22 bytes per list",
        "entry + 0.8 GB), would pass 14 GB. Regenerate: `python benchmarks/data_scale.py` (rows already in",
        "`data_scale.csv` are kept; delete it to measure again), then `python benchmarks/data_scale.py --report`.",
        "",
        "## Preparation (`--model=LRURec --train_all_positions=True`)",
        "",
        "Read the atomic file, build the dataset, split it, make the dataloaders and the training windows.",
        "",
        "| dataset | interactions | L | RecBole's (expanded): peak RSS | time | lean: peak RSS | time | time ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    by_key = {(row["dataset"], row["max_len"], row["storage"]): row for row in prepare}
    for dataset in PREPARE_DATASETS:
        for max_len in ("50", "200", "1000"):
            lean, expanded = by_key.get((dataset, max_len, "lean")), by_key.get((dataset, max_len, "expanded"))
            if lean is None and expanded is None:
                continue
            cells = []
            for row in (expanded, lean):
                if row is None:
                    cells += ["–", "–"]
                elif row["status"] != "ok":
                    cells += [row["status"], "–"]
                else:
                    cells += [gb(row), f"{float(row['seconds']):.1f} s"]
            ratio = "–"
            if lean and expanded and lean["status"] == expanded["status"] == "ok":
                ratio = f"{float(lean['seconds']) / float(expanded['seconds']):.2f}×"
            interactions = int((lean or expanded)["interactions"])
            lines.append(f"| `{dataset}` | {interactions:,} | {max_len} | " + " | ".join(cells) + f" | {ratio} |")
    lines += [
        "",
        "## One all-position LRURec epoch, validation and test (the whole command line)",
        "",
        "LRURec, hidden 16, L as shown, one epoch of every position of each window, full-ranking validation and",
        "test (eval batch 512), `OMP_NUM_THREADS=1`. Where a whole epoch takes hours on this CPU, the run is",
        "bounded: its preparation, the first `--steps` training steps (the epoch's time extrapolated from them)",
        "and a full-ranking validation of every user, in one process (`kind` says which).",
        "",
        "| dataset | interactions | kind | storage | windows per batch | peak RSS | wall clock | training epoch (s) | validation (s) | status |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in epochs:
        lines.append(
            f"| `{row['dataset']}` | {int(row['interactions']):,} | {row['kind']} | {row['storage']} | {row['train_batch_size']} | {gb(row)} | "
            f"{row['seconds']} s | {row['train_seconds'] or '–'} | {row['valid_seconds'] or '–'} | {row['status']} |"
        )
    lines += ["", "## Targets", ""] + targets(prepare, epochs)
    lines += ["", "![peak RSS against interactions](data_scale.png)", ""]
    with open(os.path.join(RESULTS, "data_scale.md"), "w") as f:
        f.write("\n".join(lines))
    plot(prepare)


def targets(prepare, epochs):
    """One line per target of the data-scale issue: the figure measured and whether it is met."""
    def find(rows, **match):
        found = [row for row in rows if all(str(row[k]) == str(v) for k, v in match.items()) and row["status"] == "ok"]
        return found[0] if found else None

    def gib(row):
        return float(row["peak_rss_mb"]) / 1024

    lines = []
    lean = find(prepare, dataset="ml-1m-lru", max_len=200, storage="lean")
    expanded = find(prepare, dataset="ml-1m-lru", max_len=200, storage="expanded")
    if lean and expanded:
        ratio = float(lean["seconds"]) / float(expanded["seconds"])
        met = gib(lean) <= 1.5 and ratio <= 0.2
        lines.append(f"- `ml-1m-lru`, L = 200, preparation: {gib(lean):.2f} GiB (target ≤ 1.5 GB), "
                     f"{ratio:.3f}× RecBole's time (target ≤ 0.2×): {'met' if met else 'NOT met'}.")
    for dataset, limit in (("ml-1m-lru", 1.5), ("syn-2m", 2.0)):
        row = find(epochs, kind="epoch", dataset=dataset, storage="lean", train_batch_size=8)
        if row:
            met = gib(row) <= limit
            lines.append(f"- `{dataset}`, one all-position epoch with validation and test, 8 windows per batch: "
                         f"{gib(row):.2f} GiB (target ≤ {limit} GB): {'met' if met else 'NOT met'}.")
        else:
            lines.append(f"- `{dataset}`, one all-position epoch: not measured.")
    row = find(prepare, dataset="syn-ml20m", max_len=200, storage="lean")
    if row:
        lines.append(f"- ML-20M's shape, L = 200, preparation: {gib(row):.2f} GiB (target ≤ 4 GB): "
                     f"{'met' if gib(row) <= 4 else 'NOT met'}.")
    row = find(epochs, kind="epoch", dataset="syn-ml20m", storage="lean")
    sampled = find(epochs, kind=f"epoch, {SSM_512[0]}", dataset="syn-ml20m", storage="lean")
    bounded = [r for r in epochs if r["dataset"] == "syn-ml20m" and r["kind"].endswith("steps") and r["status"] == "ok"]
    if row:
        lines.append(f"- ML-20M's shape, one all-position epoch and full-ranking validation and test: ran in RAM, "
                     f"{gib(row):.2f} GiB, {float(row['seconds']) / 60:.0f} min wall clock.")
    if sampled:
        lines.append(f"- ML-20M's shape, one whole all-position epoch (loss {SSM_512[0]}, 128 windows per batch) and "
                     f"full-ranking validation and test of every user: ran in RAM (no swap on this machine), "
                     f"{gib(sampled):.2f} GiB peak, training {float(sampled['train_seconds']) / 60:.0f} min, "
                     f"validation {float(sampled['valid_seconds']) / 60:.1f} min, {float(sampled['seconds']) / 60:.0f} min "
                     f"wall clock in all: met. With full CE it was measured as a bounded run (next line).")
    if bounded:
        row = bounded[0]
        lines.append(f"- ML-20M's shape with full CE: a whole all-position epoch was not run (hours on this CPU); its first "
                     f"{row['kind']} and a full-ranking validation of all {int(SHAPES['syn-ml20m'][0]):,} users "
                     f"({row['valid_seconds']} s) ran in RAM at {gib(row):.2f} GiB peak; the whole epoch's training "
                     f"would take {row['train_seconds']} s here" + ("." if sampled else ". NOT met as asked (no whole epoch)."))
    if not (row or sampled or bounded):
        lines.append("- ML-20M's shape, one all-position epoch: not measured.")
    flat = {}
    for row in prepare:
        if row["storage"] == "lean" and row["status"] == "ok":
            flat.setdefault(row["dataset"], []).append(gib(row))
    spread = max((max(v) - min(v)) for v in flat.values()) if flat else float("nan")
    lines.append(f"- Peak RSS grows with interactions, not interactions × L: the lean rows of one dataset differ "
                 f"by at most {spread:.2f} GiB between L = 50 and L = 1000 (the plot).")
    return lines


def plot(prepare):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    styles = {"lean": "-", "expanded": "--"}
    colors = {"50": "tab:blue", "200": "tab:orange", "1000": "tab:green"}
    for storage in ("expanded", "lean"):
        for max_len in ("50", "200", "1000"):
            points = sorted(
                (int(row["interactions"]), float(row["peak_rss_mb"]) / 1024)
                for row in prepare
                if row["storage"] == storage and row["max_len"] == max_len and row["status"] == "ok"
            )
            if points:
                xs, ys = zip(*points)
                # the lean lines lie on top of each other (that is the result): markers of different sizes show all three
                size = {"50": 10, "200": 7, "1000": 4}[max_len]
                ax.plot(xs, ys, styles[storage], marker="o", markersize=size, color=colors[max_len],
                        label=f"{storage}, L = {max_len}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("interactions")
    ax.set_ylabel("peak RSS of data preparation (GiB)")
    ax.set_title("Data preparation: RecBole's expanded dataset vs lean")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(RESULTS, "data_scale.png"), dpi=120)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child_steps", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=8, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=200, help="training steps of the bounded runs (STEP_RUNS)")
    parser.add_argument("--dataset")
    parser.add_argument("--data_path")
    parser.add_argument("--max_len", type=int)
    parser.add_argument("--storage")
    parser.add_argument("--only", choices=["prepare", "epoch", "steps"])
    parser.add_argument("--datasets", default=",".join(PREPARE_DATASETS), type=lambda s: s.split(","))
    parser.add_argument("--lengths", default="50,200,1000", type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--shared_data", default=os.path.join(REPO_ROOT, "..", "shared", "datasets"))
    parser.add_argument("--synthetic_dir", default=os.path.join(HERE, "synthetic"))
    parser.add_argument("--report", action="store_true", help="only write the table and plot from the CSV")
    args = parser.parse_args()
    if args.child:
        return prepare_child(args)
    if args.child_steps:
        return steps_child(args)
    if not args.report:
        run_grid(args)
    import torch

    torch.set_num_threads(1)
    from common import cpu_name

    write_report(f"{cpu_name()}, {os.cpu_count()} cores; torch {torch.__version__}")


if __name__ == "__main__":
    main()
