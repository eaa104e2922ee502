"""Efficiency report: time and memory of the plugin's models and RecBole's baselines against L.

For LRURec, LinRec, GLINT-RU and RecBole's SASRec, GRU4Rec and BERT4Rec at the same width and
depth, over sequence lengths L, this measures
- inference latency: ``full_sort_predict`` of one batch (eval mode, no grad),
- training-step time: ``calculate_loss`` + backward + Adam step (train mode),
- peak memory: on CPU the process's max RSS (reported as the rise over the process's RSS once the
  model, optimizer state and batch exist, plus the absolute peak); on GPU
  ``torch.cuda.max_memory_allocated``;
and LRURec's ``step()`` latency against history length (it must stay flat).

Every (model, L) configuration runs in its own process, so one configuration's peak memory and
allocator state cannot leak into another's; the processes are started model by model in turn
(interleaved, in a rotating order) for ``--rounds`` rounds, each timing ``--repeats`` repetitions
after a warm-up; the tables report medians over all of them.

Usage (from the repository root):
    python benchmarks/efficiency.py [--lengths 50 100 200 500 1000 2000] [--batch-size 16]
        [--rounds 2] [--repeats 3] [--threads 2] [--device cpu]
writes benchmarks/results/efficiency-<device>.{md,csv,png} (the plot needs matplotlib:
``pip install -e ".[plot]"``).
"""
import argparse
import csv
import json
import os
import shlex
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (  # noqa: E402
    RESULTS_DIR,
    build_model,
    fit_exponent,
    inference_step,
    machine_description,
    make_batch,
    median_ms,
    peak_rss_mb,
    timed,
    train_step,
)

import torch  # noqa: E402

MODELS = ("LRURec", "LinRec", "GLINTRU", "SASRec", "GRU4Rec", "BERT4Rec")
PLUGIN_MODELS = ("LRURec", "LinRec", "GLINTRU")
N_ITEMS = 3000
WIDTH = 64
# Same width (64) and depth (2 layers/blocks) everywhere the architecture has them.
# GLINT-RU is one expert-mixing block + gated MLP by design (its depth knob is the GRU's layers).
OVERRIDES = {
    "LRURec": {"hidden_size": WIDTH, "n_layers": 2},
    "LinRec": {"hidden_size": WIDTH, "inner_size": 4 * WIDTH, "n_layers": 2, "n_heads": 2},
    "GLINTRU": {"hidden_size": WIDTH, "embedding_size": WIDTH, "n_heads": 2, "num_layers": 1},
    "SASRec": {"hidden_size": WIDTH, "inner_size": 4 * WIDTH, "n_layers": 2, "n_heads": 2, "loss_type": "CE"},
    "GRU4Rec": {"embedding_size": WIDTH, "hidden_size": WIDTH, "num_layers": 2, "loss_type": "CE"},
    "BERT4Rec": {"hidden_size": WIDTH, "inner_size": 4 * WIDTH, "n_layers": 2, "n_heads": 2, "loss_type": "CE"},
}


def synchronize(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def memory_mark(device):
    if device.startswith("cuda"):
        synchronize(device)
        return torch.cuda.max_memory_allocated() / 2**20
    return peak_rss_mb()


def reset_memory(device):
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def measure(model_name, seq_len, batch_size, repeats, device):
    """Worker: time and memory of one (model, L) configuration, as a dict."""
    torch.manual_seed(0)
    model = build_model(model_name, seq_len, N_ITEMS, OVERRIDES[model_name], device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    batch = make_batch(model, batch_size, seq_len, N_ITEMS, device)
    warm = make_batch(model, batch_size, min(seq_len, 8), N_ITEMS, device, seed=1)
    train_step(model, optimizer, warm)  # lazy init, .grad and Adam buffers exist from here on
    inference_step(model, warm)
    reset_memory(device)
    baseline = memory_mark(device)

    inference_step(model, batch)  # warm-up at full length
    inference_s = [timed(inference_step, model, batch, device=device) for _ in range(repeats)]
    inference_peak = memory_mark(device)
    reset_memory(device)
    train_step(model, optimizer, batch)
    train_s = [timed(train_step, model, optimizer, batch, device=device) for _ in range(repeats)]
    train_peak = memory_mark(device)
    return {
        "inference_s": inference_s,
        "train_s": train_s,
        "baseline_mb": baseline,
        "inference_peak_mb": inference_peak,
        "train_peak_mb": train_peak,
    }


def measure_step(history_lengths, batch_size, repeats, device):
    """Worker: LRURec's step() latency after histories of several lengths, against a full forward."""
    rows = []
    for history in history_lengths:
        torch.manual_seed(0)
        model = build_model("LRURec", history, N_ITEMS, OVERRIDES["LRURec"], device).eval()
        batch = make_batch(model, batch_size, history, N_ITEMS, device)
        item_seq = batch["item_id_list"]
        with torch.no_grad():
            state = model.init_state(batch_size)
            for t in range(history - 1):
                _, state = model.step(item_seq[:, t], state)
            last_item = item_seq[:, history - 1]

            def one_step():
                output, _ = model.step(last_item, state)
                model.scores_from_output(output)

            one_step()
            step_s = [timed(one_step, device=device) for _ in range(repeats * 10)]
            inference_step(model, batch)
            forward_s = [timed(inference_step, model, batch, device=device) for _ in range(repeats)]
        rows.append({"history": history, "step_ms": median_ms(step_s), "forward_ms": median_ms(forward_s)})
    return rows


def run_worker(args):
    torch.set_num_threads(args.threads)
    if torch.is_anomaly_enabled():  # common.py turns it off; training runs have it off by default
        raise RuntimeError("torch anomaly mode is on: timings would not be those of a training run")
    if args.worker == "step":
        result = measure_step(args.lengths, args.batch_size, args.repeats, args.device)
    else:
        result = measure(args.worker, args.lengths[0], args.batch_size, args.repeats, args.device)
    print("RESULT " + json.dumps(result))


def spawn(args, worker, lengths):
    command = [
        sys.executable, os.path.abspath(__file__), "--worker", worker,
        "--lengths", *map(str, lengths), "--batch-size", str(args.batch_size),
        "--repeats", str(args.repeats), "--threads", str(args.threads), "--device", args.device,
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return None, f"timeout after {args.timeout}s"
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):]), None
    last = (done.stderr.strip().splitlines() or ["no output"])[-1]
    return None, f"exit {done.returncode}: {last}"


def collect(args):
    samples = {}  # (model, L) -> list of worker results
    failures = {}
    for round_index in range(args.rounds):
        for length_index, seq_len in enumerate(args.lengths):
            shift = (round_index + length_index) % len(args.models)
            for model_name in args.models[shift:] + args.models[:shift]:
                if (model_name, seq_len) in failures:
                    continue
                result, error = spawn(args, model_name, [seq_len])
                if error:
                    failures[(model_name, seq_len)] = error
                    print(f"  {model_name:9s} L={seq_len:5d}  FAILED: {error}", flush=True)
                    continue
                samples.setdefault((model_name, seq_len), []).append(result)
                print(
                    f"  round {round_index + 1}/{args.rounds} {model_name:9s} L={seq_len:5d}  "
                    f"inference {median_ms(result['inference_s']):9.1f} ms  "
                    f"train {median_ms(result['train_s']):9.1f} ms",
                    flush=True,
                )
    rows = []
    for model_name in args.models:
        for seq_len in args.lengths:
            runs = samples.get((model_name, seq_len))
            if not runs:
                rows.append({"model": model_name, "L": seq_len, "error": failures.get((model_name, seq_len), "")})
                continue
            rows.append(
                {
                    "model": model_name,
                    "L": seq_len,
                    "inference_ms": median_ms([s for run in runs for s in run["inference_s"]]),
                    "train_ms": median_ms([s for run in runs for s in run["train_s"]]),
                    "inference_mem_mb": statistics.median(r["inference_peak_mb"] - r["baseline_mb"] for r in runs),
                    "train_mem_mb": statistics.median(r["train_peak_mb"] - r["baseline_mb"] for r in runs),
                    "peak_rss_mb": max(r["train_peak_mb"] for r in runs),
                    "error": "",
                }
            )
    return rows


# ------------------------------------------------------------------------------- reporting


def _cell(row, key, fmt):
    return fmt.format(row[key]) if row.get(key) is not None and not row.get("error") else "—"


def _table(rows, models, lengths, key, fmt, title):
    by_key = {(r["model"], r["L"]): r for r in rows}
    lines = [f"**{title}**", "", "| model | " + " | ".join(f"L={n}" for n in lengths) + " |",
             "|---|" + "---:|" * len(lengths)]
    for model_name in models:
        cells = [_cell(by_key[(model_name, n)], key, fmt) for n in lengths]
        lines.append(f"| {model_name} | " + " | ".join(cells) + " |")
    return lines


def _ratio_table(rows, models, lengths, key, title):
    by_key = {(r["model"], r["L"]): r for r in rows}
    lines = [f"**{title}**", "", "| model | " + " | ".join(f"L={n}" for n in lengths) + " |",
             "|---|" + "---:|" * len(lengths)]
    for model_name in models:
        cells = []
        for n in lengths:
            own, base = by_key[(model_name, n)].get(key), by_key[("SASRec", n)].get(key)
            cells.append(f"{own / base:.2f}×" if own and base else "—")
        lines.append(f"| {model_name} | " + " | ".join(cells) + " |")
    return lines


def _exponents(rows, models, lengths, key):
    by_key = {(r["model"], r["L"]): r for r in rows}
    fitted = {}
    long_lengths = [n for n in lengths if n >= 200]
    for model_name in models:
        points = [(n, by_key[(model_name, n)].get(key)) for n in long_lengths]
        points = [(n, t) for n, t in points if t]
        if len(points) >= 2:
            fitted[model_name] = fit_exponent([n for n, _ in points], [t for _, t in points])
    return fitted


def write_report(args, rows, step_rows, path_stem, command):
    models, lengths = args.models, args.lengths
    with open(path_stem + ".csv", "w", newline="") as f:
        writer = csv.DictWriter(
            f, fieldnames=["model", "L", "inference_ms", "train_ms", "inference_mem_mb", "train_mem_mb", "peak_rss_mb", "error"]
        )
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.3f}" if isinstance(v, float) else v) for k, v in row.items()})

    memory_note = (
        "rise of max RSS over the process's RSS with model, Adam state and batch in place (MB)"
        if args.device == "cpu"
        else "torch.cuda.max_memory_allocated (MB)"
    )
    lines = [
        f"# Efficiency on {args.device}",
        "",
        f"Machine: {machine_description(args.device)}.",
        f"Synthetic full-length histories, batch {args.batch_size}, {N_ITEMS:,} items, width {WIDTH}; "
        f"each (model, L) in its own process, {args.rounds} round(s) × {args.repeats} timed repetitions "
        "after a warm-up, processes interleaved across models; medians. torch autograd anomaly mode "
        f"{'on' if torch.is_anomaly_enabled() else 'off'} (RecBole's import turns it on; training runs "
        "turn it off, see `detect_anomaly`).",
        "",
        "Configs (everything else from each model's property file): "
        + "; ".join(f"{m}: " + ", ".join(f"{k}={v}" for k, v in OVERRIDES[m].items()) for m in models)
        + ".",
        "",
        "Regenerate with:",
        "",
        f"    {command}",
        "",
    ]
    if args.note:
        lines += [f"Note on this run: {args.note}", ""]
    if os.path.exists(path_stem + ".png"):
        lines += [f"![time and memory against L]({os.path.basename(path_stem)}.png)", ""]
    lines += _table(rows, models, lengths, "inference_ms", "{:.1f}", "Inference: full_sort_predict of one batch (ms)") + [""]
    lines += _table(rows, models, lengths, "train_ms", "{:.1f}", "Training step: loss + backward + Adam (ms)") + [""]
    lines += _table(rows, models, lengths, "train_mem_mb", "{:.0f}", f"Training-step memory: {memory_note}") + [""]
    lines += _table(rows, models, lengths, "inference_mem_mb", "{:.0f}", f"Inference memory: {memory_note}") + [""]
    lines += _ratio_table(rows, models, lengths, "inference_ms", "Inference time relative to SASRec") + [""]
    lines += _ratio_table(rows, models, lengths, "train_ms", "Training-step time relative to SASRec") + [""]
    lines += _ratio_table(rows, models, lengths, "train_mem_mb", "Training-step memory relative to SASRec") + [""]
    inference_exp = _exponents(rows, models, lengths, "inference_ms")
    train_exp = _exponents(rows, models, lengths, "train_ms")
    lines += [
        "**Fitted exponent k of time ∝ L^k** (least squares on log-log, L ≥ 200)",
        "",
        "| model | inference | training step |",
        "|---|---:|---:|",
    ]
    for model_name in models:
        lines.append(
            f"| {model_name} | {inference_exp.get(model_name, float('nan')):.2f} | {train_exp.get(model_name, float('nan')):.2f} |"
        )
    failed = [r for r in rows if r.get("error")]
    if failed:
        lines += ["", "Not measured: " + "; ".join(f"{r['model']} L={r['L']}: {r['error']}" for r in failed) + "."]
    if step_rows:
        lines += [
            "",
            "**LRURec incremental inference**: one `step()` (state update + scores over all items) after a "
            "history of h items, against `full_sort_predict` over the whole history (ms, batch "
            f"{args.batch_size})",
            "",
            "| history h | step() | full forward | speed-up |",
            "|---:|---:|---:|---:|",
        ]
        for row in step_rows:
            lines.append(
                f"| {row['history']} | {row['step_ms']:.2f} | {row['forward_ms']:.1f} | {row['forward_ms'] / row['step_ms']:.0f}× |"
            )
    with open(path_stem + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")


def read_rows(csv_path):
    """The rows of a written efficiency CSV, numbers as floats (L as int)."""
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row["L"] = int(row["L"])
        for key in ("inference_ms", "train_ms", "inference_mem_mb", "train_mem_mb", "peak_rss_mb"):
            row[key] = float(row[key]) if row.get(key) else None
    return rows


def plot(rows, models, lengths, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot (pip install -e '.[plot]')")
        return False
    by_key = {(r["model"], r["L"]): r for r in rows}
    panels = [("inference_ms", "inference (ms)"), ("train_ms", "training step (ms)"), ("train_mem_mb", "training memory (MB)")]
    figure, axes = plt.subplots(1, len(panels), figsize=(15, 4.5))
    for axis, (key, label) in zip(axes, panels):
        for model_name in models:
            points = [(n, by_key[(model_name, n)].get(key)) for n in lengths]
            points = [(n, v) for n, v in points if v and v > 0]
            if points:
                style = "-o" if model_name in PLUGIN_MODELS else "--s"
                axis.plot([n for n, _ in points], [v for _, v in points], style, label=model_name)
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("sequence length L")
        axis.set_ylabel(label)
        axis.grid(True, which="both", alpha=0.3)
    axes[0].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return True


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--lengths", nargs="+", type=int, default=[50, 100, 200, 500, 1000, 2000])
    parser.add_argument("--step-histories", nargs="+", type=int, default=[10, 50, 200, 1000, 2000])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per worker process")
    parser.add_argument("--note", default="", help="a remark on the conditions of this run, printed in the report")
    parser.add_argument(
        "--replot", action="store_true", help="only redraw the PNG from the existing efficiency-<device>.csv",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return run_worker(args)
    stem = os.path.join(RESULTS_DIR, f"efficiency-{args.device.split(':')[0]}")
    if args.replot:
        rows = read_rows(stem + ".csv")
        models = list(dict.fromkeys(r["model"] for r in rows))
        lengths = sorted({r["L"] for r in rows})
        if plot(rows, models, lengths, stem + ".png"):
            print(f"wrote {stem}.png")
        return

    torch.set_num_threads(args.threads)
    command = "python benchmarks/efficiency.py " + shlex.join(sys.argv[1:])
    print(f"efficiency: {len(args.models)} models × {len(args.lengths)} lengths × {args.rounds} rounds on {args.device}")
    rows = collect(args)
    step_rows = None
    if "LRURec" in args.models:
        step_args = argparse.Namespace(**{**vars(args), "lengths": args.step_histories})
        step_rows, error = spawn(step_args, "step", args.step_histories)
        if error:
            print(f"  LRURec step(): FAILED: {error}")
    os.makedirs(RESULTS_DIR, exist_ok=True)
    if not plot(rows, args.models, args.lengths, stem + ".png") and os.path.exists(stem + ".png"):
        os.remove(stem + ".png")  # a plot of an earlier run must not sit beside this run's tables
    write_report(args, rows, step_rows, stem, command.strip())
    print(f"wrote {stem}.md, {stem}.csv" + (f", {stem}.png" if os.path.exists(stem + ".png") else ""))


if __name__ == "__main__":
    main()
