"""Catalogues of any size: full cross-entropy beside sampled softmax and gBCE, per trained target and in peak RSS.

Two measurements, each in its own process so that its peak RSS (``/usr/bin/time -f %M``, the whole
process) is its own:

- **steps**: an all-position LRURec training step (hidden 64, 2 blocks, L = 200, AdamW; forward,
  loss over every position, backward, optimizer step) on full-length windows whose items are
  drawn with the synthetic generator's Zipf popularity, for catalogues of 3,416 (``ml-1m-lru``),
  27,000 (ML-20M's), 200,000 and 1,000,000 items; full CE beside SSM (popularity negatives,
  log-Q corrected) and gBCE (uniform negatives, t = 0.75) at k = 128, 512 and 2,048. The sampled
  losses train 32 windows per step (6,400 targets); full CE trains 32 too unless its three
  ``[targets, items]`` float matrices (logits, softmax, gradient) would pass 4 GB, then as many as
  fit (down to 1). Time per trained target = median step time / targets, from one process per
  catalogue that runs a step of each loss in turn (3 rounds after a warm-up one: ``interleaved``
  rows), so that load from other processes hits every loss alike; peak RSS from one process per
  configuration (``step`` rows).
- **epoch**: ``run_recbole_linear.py`` on a synthetic dataset of 2 M interactions, 14,000 users and
  1,000,000 items (every item seen at least once): LRURec, all positions, SSM with 512 popularity
  negatives, one epoch, full-ranking validation and test (evaluated in item chunks).

    python benchmarks/large_catalogue.py            # measure what large_catalogue.csv lacks, then report
    python benchmarks/large_catalogue.py --report   # the table and plot from the CSV only
"""
import argparse
import json
import os
import re
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import data_scale  # noqa: E402
from data_scale import measured  # noqa: E402
from synthetic_data import SHAPES, write_synthetic_dataset, zipf_items  # noqa: E402

REPO_ROOT = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results")
CSV_FILE = os.path.join(RESULTS, "large_catalogue.csv")
COLUMNS = ["kind", "items", "loss", "k", "windows", "targets", "step_ms", "us_per_target", "peak_rss_mb",
           "train_seconds", "valid_seconds", "wall_seconds", "status"]
CATALOGUES = [3_416, 27_000, 200_000, 1_000_000]
LOSSES = [("CE", 0), *[("SSM", k) for k in (128, 512, 2048)], *[("gBCE", k) for k in (128, 512, 2048)]]
MAX_LEN, HIDDEN, WINDOWS = 200, 64, 32
CE_MATRIX_BUDGET = 4e9  # bytes: logits, softmax and gradient, [targets, items] float32 each
EPOCH_DATASET = "syn-2m-1m-items"


def ce_windows(n_items):
    return max(1, min(WINDOWS, int(CE_MATRIX_BUDGET // (3 * 4 * MAX_LEN * n_items))))


# --- the measured process -----------------------------------------------------------------
def build_step(n_items, loss, k, windows, rng):
    """(model, optimizer, batch, sampled loss or None) of one all-position LRURec step."""
    import numpy as np
    import torch

    from common import build_model
    from recbole_linear.sampled_loss import RESOLVED_NEGATIVES_KEY, SampledLoss

    torch.manual_seed(0)
    model = build_model("LRURec", MAX_LEN, n_items + 1, {"hidden_size": HIDDEN, "n_layers": 2, "loss_type": loss})
    optimizer = torch.optim.AdamW(model.optimizer_param_groups(0.01), lr=1e-3, eps=1e-9)
    sampled = None
    if loss != "CE":
        counts = np.bincount(zipf_items(rng, n_items, 2_000_000), minlength=n_items + 1)
        distribution = "popularity" if loss == "SSM" else "uniform"
        settings = {"loss_type": loss, RESOLVED_NEGATIVES_KEY: {"distribution": distribution, "sample_num": k, "alpha": 1.0},
                    "ssm_log_q": True, "ssm_in_batch_negatives": False, "gbce_t": 0.75, "seed": 0}
        sampled = SampledLoss(settings, counts)
    sequences = torch.from_numpy(zipf_items(rng, n_items, windows * (MAX_LEN + 1)).reshape(windows, MAX_LEN + 1))
    batch = {model.ITEM_SEQ: sequences[:, :-1], model.ITEM_SEQ_LEN: torch.full((windows,), MAX_LEN), "targets": sequences[:, 1:]}
    model.train()
    return model, optimizer, batch, sampled


def one_step(model, optimizer, batch, sampled):
    from recbole_linear.all_positions import all_position_loss

    start = time.perf_counter()
    optimizer.zero_grad()
    all_position_loss(model, batch, "targets", sampled_loss=sampled).backward()
    optimizer.step()
    return time.perf_counter() - start


def step_child(args):
    """Runs in the measured process: one configuration's steps (its peak RSS); prints one JSON line."""
    import numpy as np
    import torch

    torch.set_num_threads(1)
    step = build_step(args.items, args.loss, args.k, args.windows, np.random.default_rng(0))
    seconds = [one_step(*step) for _ in range(args.steps + 1)]
    median = float(np.median(seconds[1:]))
    print(json.dumps({"step_ms": round(1000 * median, 1), "us_per_target": round(1e6 * median / (args.windows * MAX_LEN), 3)}))


def interleaved_child(args):
    """Runs in one process: every loss of one catalogue, a step of each in turn, ``args.steps``
    rounds after a warm-up one, so that load from other processes hits every loss alike; prints
    one JSON line per loss."""
    import numpy as np
    import torch

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    steps = {(loss, k): build_step(args.items, loss, k, ce_windows(args.items) if loss == "CE" else WINDOWS, rng)
             for loss, k in LOSSES}
    seconds = {key: [] for key in steps}
    for _ in range(args.steps + 1):
        for key, step in steps.items():
            seconds[key].append(one_step(*step))
    for (loss, k), times in seconds.items():
        targets = steps[(loss, k)][2]["targets"].numel()
        median = float(np.median(times[1:]))
        print(json.dumps({"loss": loss, "k": k, "step_ms": round(1000 * median, 1),
                          "us_per_target": round(1e6 * median / targets, 3)}))


# --- the grid -------------------------------------------------------------------------------
def read_rows():
    return data_scale.read_rows(CSV_FILE)


def append_row(row):
    data_scale.append_row(row, CSV_FILE, COLUMNS)


def run_step(n_items, loss, k, steps):
    windows = ce_windows(n_items) if loss == "CE" else WINDOWS
    row = {"kind": "step", "items": n_items, "loss": loss, "k": k, "windows": windows, "targets": windows * MAX_LEN}
    command = [sys.executable, os.path.abspath(__file__), "--child", "--items", str(n_items), "--loss", loss,
               "--k", str(k), "--windows", str(windows), "--steps", str(steps)]
    peak, seconds, result = measured(command)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        return dict(row, peak_rss_mb=round(peak), status=f"failed (exit {result.returncode}): {result.stderr.strip()[-200:]}")
    return dict(row, **json.loads(lines[-1]), peak_rss_mb=round(peak), wall_seconds=round(seconds, 1), status="ok")


def run_interleaved(n_items, steps):
    command = [sys.executable, os.path.abspath(__file__), "--child_interleaved", "--items", str(n_items), "--steps", str(steps)]
    _, _, result = measured(command)
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        return [{"kind": "interleaved", "items": n_items, "status": f"failed (exit {result.returncode}): {result.stderr.strip()[-200:]}"}]
    return [{"kind": "interleaved", "items": n_items, **line,
             "windows": ce_windows(n_items) if line["loss"] == "CE" else WINDOWS,
             "targets": (ce_windows(n_items) if line["loss"] == "CE" else WINDOWS) * MAX_LEN, "status": "ok"}
            for line in lines]


def run_epoch(args):
    users, items, interactions = SHAPES[EPOCH_DATASET]
    write_synthetic_dataset(args.synthetic_dir, EPOCH_DATASET, users, items, interactions, seed=0)
    row = {"kind": "epoch", "items": items, "loss": "SSM", "k": 512, "windows": 128}
    command = [
        sys.executable, "run_recbole_linear.py", "--model=LRURec", f"--dataset={EPOCH_DATASET}",
        f"--data_path={args.synthetic_dir}", "--load_col={'inter': ['user_id', 'item_id', 'timestamp']}",
        "--train_all_positions=True", f"--MAX_ITEM_LIST_LENGTH={MAX_LEN}", f"--hidden_size={HIDDEN}", "--epochs=1",
        "--train_batch_size=128", "--eval_batch_size=256", "--loss_type=SSM",
        "--train_neg_sample_args={'distribution': 'popularity', 'sample_num': 512}", "--show_progress=False",
        f"--checkpoint_dir={os.path.join(args.synthetic_dir, 'saved')}",
    ]
    peak, seconds, result = measured(command)
    output = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout + result.stderr)
    train = re.findall(r"training \[time: ([\d.]+)s", output)
    valid = re.findall(r"evaluating \[time: ([\d.]+)s", output)
    n_items = re.findall(r"The number of items: (\d+)", output)
    n_targets = re.findall(r"(\d+) targets", output)
    status = "ok" if result.returncode == 0 else f"failed (exit {result.returncode}): {output.strip()[-200:]}"
    return dict(row, items=int(n_items[0]) - 1 if n_items else items, targets=n_targets[0] if n_targets else "",
                peak_rss_mb=round(peak), wall_seconds=round(seconds, 1), train_seconds=train[0] if train else "",
                valid_seconds=valid[0] if valid else "", status=status)


def run_grid(args):
    done = {(row["kind"], row["items"], row["loss"], row["k"]) for row in read_rows()}
    if args.only in (None, "steps"):
        for n_items in args.catalogues:
            for loss, k in LOSSES:
                if ("step", str(n_items), loss, str(k)) not in done:
                    append_row(run_step(n_items, loss, k, args.steps))
    if args.only in (None, "interleaved"):
        for n_items in args.catalogues:
            if not any(key[:2] == ("interleaved", str(n_items)) for key in done):
                for row in run_interleaved(n_items, args.steps):
                    append_row(row)
    if args.only in (None, "epoch") and not any(key[0] == "epoch" for key in done):
        append_row(run_epoch(args))


# --- the report -------------------------------------------------------------------------------
def write_report(machine):
    rows = read_rows()
    steps = [row for row in rows if row["kind"] == "step" and row["status"] == "ok"]
    timed = {(row["items"], row["loss"], row["k"]): row for row in rows if row["kind"] == "interleaved" and row["status"] == "ok"}
    ce = {key[0]: row for key, row in timed.items() if key[1] == "CE"}
    lines = [
        "# Catalogues of any size: full cross-entropy beside sampled softmax (SSM) and gBCE",
        "",
        f"Machine: {machine}, 24 GB of memory; one torch thread (`OMP_NUM_THREADS=1`), while the two cores",
        "were shared with other jobs (training runs): compare within a catalogue, not across machines.",
        "Regenerate: `python benchmarks/large_catalogue.py` (rows already in `large_catalogue.csv` are kept),",
        "then `python benchmarks/large_catalogue.py --report`.",
        "",
        f"## One all-position LRURec training step (hidden {HIDDEN}, 2 blocks, L = {MAX_LEN}, AdamW)",
        "",
        "Forward, the loss over every position of every window, backward and the optimizer step. SSM: popularity",
        "negatives with log-Q correction; gBCE: uniform negatives, t = 0.75; k negatives shared by the step's",
        "positions. Full CE trains fewer windows where its `[targets, items]` matrices would pass 4 GB.",
        "**Times**: one process per catalogue runs a step of each loss in turn (median of 3 rounds after a",
        "warm-up one), so that the other jobs' load hits every loss alike. **Peak RSS**: a separate process per",
        "configuration (`/usr/bin/time -f %M`, the whole process: Python, torch and RecBole included).",
        "",
        "| items | loss | k | windows (targets) | step | per target | × full CE per target | peak RSS |",
        "|---|---|---|---|---|---|---|---|",
    ]
    memory = {(row["items"], row["loss"], row["k"]): row for row in steps}
    for key, row in timed.items():
        base = ce.get(row["items"])
        ratio = f"{float(row['us_per_target']) / float(base['us_per_target']):.3f}×" if base else "–"
        k = row["k"] if row["loss"] != "CE" else "–"
        peak = f"{float(memory[key]['peak_rss_mb']) / 1024:.2f} GiB" if key in memory else "–"
        lines.append(
            f"| {int(row['items']):,} | {row['loss']} | {k} | {row['windows']} ({int(row['targets']):,}) | {float(row['step_ms']):,.0f} ms | "
            f"{float(row['us_per_target']):,.1f} µs | {ratio} | {peak} |"
        )
    failed = [row for row in rows if row["status"] != "ok"]
    for row in failed:
        lines.append(f"| {int(row['items']):,} | {row['loss']} | {row['k']} | {row['windows']} | {row['status']} | | | |")
    epoch = [row for row in rows if row["kind"] == "epoch"]
    lines += [
        "",
        f"## One epoch at a million items (`{EPOCH_DATASET}`: {SHAPES[EPOCH_DATASET][0]:,} users, "
        f"{SHAPES[EPOCH_DATASET][2]:,} interactions)",
        "",
        "`run_recbole_linear.py --model=LRURec --train_all_positions=True --loss_type=SSM` with 512 popularity negatives,",
        f"hidden {HIDDEN}, L = {MAX_LEN}, 128 windows per batch, one epoch, then full-ranking validation and test of every user",
        "(eval batch 256, scored in chunks of 65,536 items).",
        "",
        "| items | peak RSS | training epoch | validation | wall clock (all, data preparation included) | status |",
        "|---|---|---|---|---|---|",
    ]
    for row in epoch:
        peak = f"{float(row['peak_rss_mb']) / 1024:.2f} GiB" if row["peak_rss_mb"] else "–"
        lines.append(f"| {int(row['items']):,} | {peak} | {row['train_seconds'] or '–'} s | {row['valid_seconds'] or '–'} s | "
                     f"{row['wall_seconds']} s | {row['status']} |")
    lines += ["", "## Targets", ""] + targets(list(timed.values()), epoch)
    lines += ["", "![time per trained target against catalogue size](large_catalogue.png)", ""]
    with open(os.path.join(RESULTS, "large_catalogue.md"), "w") as f:
        f.write("\n".join(lines))
    plot(list(timed.values()), steps)


def targets(steps, epoch):
    lines = []
    ce = [row for row in steps if row["loss"] == "CE" and row["items"] == "27000"]
    ssm = [row for row in steps if row["loss"] == "SSM" and row["k"] == "512" and row["items"] == "27000"]
    if ce and ssm:
        ratio = float(ssm[0]["us_per_target"]) / float(ce[0]["us_per_target"])
        lines.append(f"- 27,000 items, SSM with k = 512 per target ≤ 0.1× full CE: **{ratio:.3f}×, "
                     f"{'met' if ratio <= 0.1 else 'not met'}**.")
    else:
        lines.append("- 27,000 items, SSM k = 512 against full CE: not measured.")
    done = [row for row in epoch if row["status"] == "ok"]
    if done:
        gb = float(done[0]["peak_rss_mb"]) / 1e3 * 1.048576  # MiB -> GB (10^9 bytes)
        lines.append(f"- 1,000,000 items, one epoch of 2 M interactions trained and validated in ≤ 6 GB peak RSS: "
                     f"**{gb:.2f} GB, {'met' if gb <= 6 else 'not met'}**.")
    else:
        lines.append("- 1,000,000 items, one epoch: " + (epoch[0]["status"] if epoch else "not run") + ".")
    return lines


def plot(timed, steps):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, rows, value, title, unit in (
        (left, timed, lambda row: float(row["us_per_target"]), "time per trained target (interleaved)", "µs"),
        (right, steps, lambda row: float(row["peak_rss_mb"]) / 1024, "peak RSS of a step's process", "GiB"),
    ):
        series = {}
        for row in rows:
            label = "full CE" if row["loss"] == "CE" else f"{row['loss']} k={row['k']}"
            series.setdefault(label, []).append((int(row["items"]), value(row)))
        for label, points in sorted(series.items()):
            points.sort()
            style = "-o" if label == "full CE" else ("--s" if label.startswith("SSM") else ":^")
            ax.plot([p[0] for p in points], [p[1] for p in points], style, label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("items in the catalogue")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(RESULTS, "large_catalogue.png"), dpi=120)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--items", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--loss", help=argparse.SUPPRESS)
    parser.add_argument("--k", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--windows", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per measurement (after one warm-up)")
    parser.add_argument("--child_interleaved", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--only", choices=["steps", "interleaved", "epoch"])
    parser.add_argument("--catalogues", default=",".join(map(str, CATALOGUES)), type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--synthetic_dir", default=os.path.join(HERE, "synthetic"))
    parser.add_argument("--report", action="store_true", help="only write the table and plot from the CSV")
    args = parser.parse_args()
    if args.child:
        return step_child(args)
    if args.child_interleaved:
        return interleaved_child(args)
    if not args.report:
        run_grid(args)
    import torch

    from common import cpu_name

    write_report(f"{cpu_name()}, {os.cpu_count()} cores; torch {torch.__version__}")


if __name__ == "__main__":
    main()
