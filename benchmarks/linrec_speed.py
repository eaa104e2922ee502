"""LinRec vs RecBole's SASRec: time and peak memory against sequence length (CPU).

Both models have the same width, depth and heads; LinRec is run in its default (official,
non-causal) form and, for reference, with ``linrec_causal: True`` (chunked causal form).

- Time: for each L all models are built in this process, warmed up (one step per mode on a
  quarter-length batch), then timed in interleaved
  repetitions (every repetition times every model and mode once, so a load spike from other
  processes hits all of them alike); the table reports medians.
  inference = ``full_sort_predict`` under ``torch.no_grad()`` (eval mode);
  train = ``calculate_loss`` + ``backward`` + Adam ``step`` (train mode, CE loss).
- Peak memory: every (model, L, mode) runs in its own subprocess: build the model, optimiser and
  batch, warm up on a 8-position batch (lazy initialisation, gradient and Adam buffers), read
  ``ru_maxrss`` as the baseline, run one full-length step, report ``ru_maxrss`` minus baseline,
  i.e. the extra resident memory the forward (and backward) needs.

Usage (from the repository root):
    python benchmarks/linrec_speed.py [--lengths 200 1000 2000] [--batch-size 16] [--repeats 3] [--threads 1]
writes benchmarks/results/linrec_speed.md.
"""
import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import speed_harness as harness  # noqa: E402  (repository root on sys.path, anomaly mode off)
from common import fit_exponent, inference_step, train_step  # noqa: E402

from recbole.model.sequential_recommender.sasrec import SASRec  # noqa: E402

from recbole_linear.model.linrec import LinRec  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "linrec_speed.md")
MODELS = ("SASRec", "LinRec", "LinRec-causal")
MODES = ("inference", "train")
N_ITEMS = 2000
SHARED_CONFIG = {  # RecBole SASRec's default width/depth/heads, used for both models
    "hidden_size": 64,
    "inner_size": 128,
    "n_layers": 2,
    "n_heads": 2,
    "hidden_dropout_prob": 0.2,
    "attn_dropout_prob": 0.2,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-12,
    "initializer_range": 0.02,
    "loss_type": "CE",
}


def build(model_name, max_len):
    keys = {
        "linrec_padding_mask": False,
        "linrec_causal": model_name == "LinRec-causal",
        "linrec_chunk_size": 64,
        **SHARED_CONFIG,
    }
    model = harness.build(SASRec if model_name == "SASRec" else LinRec, keys, N_ITEMS, max_len)
    return model, torch.optim.Adam(model.parameters(), lr=1e-3)


def make_batch(batch_size, seq_len, seed=0):
    return harness.full_length_batch(N_ITEMS, batch_size, seq_len, seed=seed)


def run_step(model, optimizer, interaction, mode):
    if mode == "inference":
        inference_step(model, interaction)
    else:
        train_step(model, optimizer, interaction, set_to_none=False)


# ---------------------------------------------------------------- time (all models in this process)


def measure_times(n, args):
    """{(model, n, mode): [seconds per repetition]} at length ``n``."""
    torch.manual_seed(0)
    built = {m: build(m, n) for m in MODELS}
    interaction = make_batch(args.batch_size, n)
    warm_up = make_batch(args.batch_size, max(8, n // 4), seed=1)  # a quarter length: cheap for SASRec
    for m in MODELS:
        for mode in MODES:
            run_step(*built[m], warm_up, mode)
    jobs = {
        (m, n, mode): (lambda m=m, mode=mode: run_step(*built[m], interaction, mode)) for mode in MODES for m in MODELS
    }
    return harness.interleaved_times(jobs, args.repeats)


# ---------------------------------------------------------------- memory (one subprocess each)


def peak_memory_worker(model_name, seq_len, mode, batch_size, threads):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model, optimizer = build(model_name, seq_len)
    interaction = make_batch(batch_size, seq_len)
    short = make_batch(batch_size, 8, seed=1)
    run_step(model, optimizer, short, "train")  # lazy init, .grad and Adam buffers
    run_step(model, optimizer, short, "inference")
    baseline_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    run_step(model, optimizer, interaction, mode)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peak_mib": (peak_kib - baseline_kib) / 1024}))


def measure_peak_memory(model_name, seq_len, mode, args):
    command = [
        sys.executable, os.path.abspath(__file__), "--memory-worker", model_name, str(seq_len), mode,
        "--batch-size", str(args.batch_size), "--threads", str(args.threads),
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])["peak_mib"]


# ---------------------------------------------------------------- report


def report_lines(args, times, memory, clock):
    lengths = args.lengths
    lines = [
        "# LinRec vs SASRec: time and peak memory against sequence length (CPU)",
        "",
        f"- Machine: {harness.machine_line()}; "
        f"Python {platform.python_version()}, torch {torch.__version__}; torch threads: {args.threads}.",
        f"- **The CPU was shared with other engineers' jobs while this ran** (1-min load average "
        f"{clock.load_before:.1f} before, {clock.load_after:.1f} after, on {os.cpu_count()} cores): absolute times "
        "are noisy; the ratios are more reliable because the models are timed interleaved.",
        f"- Command: `python benchmarks/linrec_speed.py --lengths {' '.join(map(str, lengths))} "
        f"--batch-size {args.batch_size} --repeats {args.repeats} --threads {args.threads}` (took {clock.seconds:.0f} s).",
        f"- Models: hidden_size {SHARED_CONFIG['hidden_size']}, inner_size {SHARED_CONFIG['inner_size']}, "
        f"n_layers {SHARED_CONFIG['n_layers']}, n_heads {SHARED_CONFIG['n_heads']}, dropout 0.2, CE loss over "
        f"{N_ITEMS} items; batch {args.batch_size} full-length sequences. LinRec = default (official, non-causal); "
        "LinRec-causal = `linrec_causal: True`, chunk 64.",
        "- Time: median of the interleaved repetitions (after a warm-up step per model and mode on a quarter-length batch). inference = `full_sort_predict` "
        "under `no_grad`; train = loss + backward + Adam step.",
        "- Peak memory: max RSS (`resource.getrusage`) of a fresh subprocess per cell, minus that process's "
        "max RSS after building the model, batch and optimiser and warming up on 8 positions.",
        "",
    ]
    columns = [
        "L", "SASRec ms", "LinRec ms", "LinRec-causal ms", "LinRec/SASRec time", "SASRec MiB", "LinRec MiB",
        "LinRec-causal MiB", "LinRec/SASRec memory",
    ]
    for mode in MODES:
        rows = []
        for n in lengths:
            t = {m: statistics.median(times[(m, n, mode)]) * 1e3 for m in MODELS}
            mem = {m: memory[(m, n, mode)] for m in MODELS}
            mem_ratio = mem["LinRec"] / mem["SASRec"] if mem["SASRec"] > 0 else float("nan")
            rows.append([
                n, f"{t['SASRec']:.1f}", f"{t['LinRec']:.1f}", f"{t['LinRec-causal']:.1f}",
                f"{t['LinRec'] / t['SASRec']:.3f}", f"{mem['SASRec']:.1f}", f"{mem['LinRec']:.1f}",
                f"{mem['LinRec-causal']:.1f}", f"{mem_ratio:.3f}",
            ])
        lines += [f"## {mode}", ""] + harness.markdown_table(columns, rows, align="r" * len(columns)) + [""]
    lines += ["## Growth of time with L (log-log least-squares exponent)", ""]
    rows = []
    for m in MODELS:
        exps = [fit_exponent(lengths, [statistics.median(times[(m, n, mode)]) for n in lengths]) for mode in MODES]
        rows.append([m, f"{exps[0]:.2f}", f"{exps[1]:.2f}"])
    lines += harness.markdown_table(["model", "inference", "train"], rows, align="lrr")
    lines += [
        "",
        "An exponent below 1 does not mean sub-linear attention: a per-step cost that does not grow with L "
        "(scoring all items, the CE loss, Adam on the item table) is still a large share at L=200. "
        "SASRec's exponent below 2 has the same cause.",
        "",
    ]

    targets = []
    if 1000 in lengths:
        for mode in MODES:
            ratio = statistics.median(times[("LinRec", 1000, mode)]) / statistics.median(times[("SASRec", 1000, mode)])
            targets.append(f"- time at L=1000 ({mode}): LinRec/SASRec = {ratio:.3f} (target <= 0.5): {'met' if ratio <= 0.5 else 'NOT met'}")
    if 2000 in lengths:
        for mode in MODES:
            ratio = memory[("LinRec", 2000, mode)] / memory[("SASRec", 2000, mode)]
            targets.append(f"- peak memory at L=2000 ({mode}): LinRec/SASRec = {ratio:.3f} (target <= 0.5): {'met' if ratio <= 0.5 else 'NOT met'}")
    if len(lengths) >= 2:
        for mode in MODES:
            exponent = fit_exponent(lengths, [statistics.median(times[("LinRec", n, mode)]) for n in lengths])
            verdict = "met" if exponent <= 1.15 else "NOT met"
            targets.append(f"- LinRec time growth ({mode}): exponent {exponent:.2f} (target: linear, <= 1.15): {verdict}")
    lines += ["## Targets", ""] + targets + [""]
    lines += ["Raw timings (seconds, in repetition order):", "", "```"]
    for key in sorted(times, key=lambda k: (k[2], k[1], MODELS.index(k[0]))):
        lines.append(f"{key[0]:14s} L={key[1]:<5d} {key[2]:9s} " + " ".join(f"{s:.4f}" for s in times[key]))
    lines += ["```", ""]
    return lines


def main():
    parser = harness.argument_parser(__doc__, lengths=[200, 1000, 2000], batch_size=16, full_doc=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", default=RESULTS)
    parser.add_argument("--memory-worker", nargs=3, metavar=("MODEL", "L", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_worker:
        model_name, seq_len, mode = args.memory_worker
        peak_memory_worker(model_name, int(seq_len), mode, args.batch_size, args.threads)
        return

    torch.set_num_threads(args.threads)
    clock = harness.RunClock()
    memory = {}
    for n in args.lengths:
        for model_name in MODELS:
            for mode in MODES:
                memory[(model_name, n, mode)] = measure_peak_memory(model_name, n, mode, args)
                print(f"memory {model_name} L={n} {mode}: {memory[(model_name, n, mode)]:.1f} MiB", flush=True)

    times = {}
    for n in args.lengths:
        times.update(measure_times(n, args))
        print(f"timed L={n}", flush=True)

    harness.write_report(args.output, report_lines(args, times, memory, clock.stop()))


if __name__ == "__main__":
    main()
