"""fp32 beside bf16: training steps, evaluation batches, and how far each is from the machine's peak.

One process, one torch thread, every configuration of a model timed in turn (a warm-up round,
then ``--rounds`` rounds; the fastest round, the one least slowed by other processes on a shared
machine), so load from other processes hits each alike:

- **peak**: the measured matrix-product peak of this machine in fp32 and in bf16 (the best of a
  few square and model-shaped products, ``torch.mm``), the ceiling of the roofline column.
- **step**: one training step (forward, loss, backward, AdamW step), hidden 64, 2 layers,
  L = 200, full-length windows, for LRURec, causal LinRec, SASRec and GRU4Rec in the
  all-position regime (32 windows, 6,400 targets) and GLINT-RU in RecBole's prefix regime (its
  only one; 128 sequences, loss at the last position), at ``ml-1m-lru``'s 3,416 items and at
  27,000 items. Configurations: ``fp32-whole`` (the loss over the whole ``[targets, items]``
  logit matrix, as before ``ce_block_rows``), ``fp32`` and ``bf16`` (the block-wise loss,
  ``ce_block_rows: 128``, the default).
- **eval**: one full-ranking evaluation batch (``full_sort_predict`` of 256 users), fp32 and bf16.
- **profile**: where the time of LRURec's all-position step at 3,416 items goes (torch profiler,
  self time of each operator, grouped).

Useful FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` over one step: every
matrix product (mm, addmm, bmm, linear, convolution) of forward and backward at 2·m·n·k; the
LRU's scan, softmax, normalisations, dropout, activations and the optimizer count zero (their
work is linear in the tensor sizes, not a product). GRU4Rec's and GLINT-RU's GRU kernels are not
seen by the counter, so their FLOPs are under-counted (said in the table).

    python benchmarks/precision.py            # measure, then write precision.{csv,md,png}
    python benchmarks/precision.py --report   # the table and plot from the CSV only
"""
import argparse
import csv
import os
import statistics
import sys
import time
from collections import defaultdict

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

RESULTS = os.path.join(HERE, "results")
CSV_FILE = os.path.join(RESULTS, "precision.csv")
COLUMNS = ["kind", "items", "model", "regime", "config", "batch", "targets", "ms", "gflop", "gflops",
           "peak_gflops", "pct_of_peak", "detail"]
CATALOGUES = [3_416, 27_000]
MODELS = [("LRURec", "all", {}), ("LinRec", "all", {"linrec_causal": True}), ("SASRec", "all", {}),
          ("GRU4Rec", "all", {}), ("GLINTRU", "prefix", {})]
STEP_CONFIGS = [("fp32-whole", "fp32", 0), ("fp32", "fp32", 128), ("bf16", "bf16", 128)]
MAX_LEN, HIDDEN, WINDOWS, PREFIX_BATCH, EVAL_BATCH = 200, 64, 32, 128, 256
FLOPS_UNSEEN = {"GRU4Rec", "GLINTRU"}  # their GRU kernels are invisible to FlopCounterMode


# --- measuring ----------------------------------------------------------------------------------
def dtype_of(name):
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16}[name]


def matmul_peaks(rounds):
    """Best GFLOPS of ``torch.mm`` in fp32 and bf16 over square and model-shaped products."""
    import torch

    shapes = [(2048, 2048, 2048), (4096, 256, 4096), (6400, 64, 3417), (6400, 256, 64), (6400, 64, 256)]
    rows = []
    for precision in ("fp32", "bf16"):
        best = 0.0
        for m, k, n in shapes:
            a = torch.randn(m, k).to(dtype_of(precision))
            b = torch.randn(k, n).to(dtype_of(precision))
            seconds = []
            for _ in range(3 * rounds + 1):
                start = time.perf_counter()
                torch.mm(a, b)
                seconds.append(time.perf_counter() - start)
            gflops = 2 * m * n * k / min(seconds[1:]) / 1e9
            rows.append({"kind": "peak", "config": precision, "detail": f"{m}x{k} @ {k}x{n}", "gflops": round(gflops, 1)})
            best = max(best, gflops)
        rows.append({"kind": "peak", "config": precision, "detail": "best", "gflops": round(best, 1)})
    return rows


def build(model_name, regime, extra, n_items):
    import torch

    from common import build_model

    torch.manual_seed(0)
    overrides = {"hidden_size": HIDDEN, "embedding_size": HIDDEN, "inner_size": 4 * HIDDEN, "n_layers": 2, "n_heads": 2,
                 "num_layers": 2, **extra}
    model = build_model(model_name, MAX_LEN, n_items + 1, overrides)
    generator = torch.Generator().manual_seed(0)
    rows = WINDOWS if regime == "all" else PREFIX_BATCH
    sequences = torch.randint(1, n_items + 1, (rows, MAX_LEN + 1), generator=generator)
    batch = {model.ITEM_SEQ: sequences[:, :-1], model.ITEM_SEQ_LEN: torch.full((rows,), MAX_LEN)}
    if regime == "all":
        batch["targets"] = sequences[:, 1:]
    else:
        batch[model.POS_ITEM_ID] = sequences[:, -1]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    eval_batch = {model.ITEM_SEQ: torch.randint(1, n_items + 1, (EVAL_BATCH, MAX_LEN), generator=generator),
                  model.ITEM_SEQ_LEN: torch.full((EVAL_BATCH,), MAX_LEN)}
    return model, optimizer, batch, eval_batch


def step_fn(model, optimizer, batch, regime, precision, block_rows):
    from recbole.data.interaction import Interaction

    from recbole_linear import precision as amp
    from recbole_linear.all_positions import all_position_loss

    interaction = Interaction(batch)
    dtype = dtype_of(precision)

    def step():
        model.train()
        optimizer.zero_grad()
        with amp.autocast("cpu", dtype):
            if regime == "all":
                loss = all_position_loss(model, interaction, "targets", ce_block_rows=block_rows)
            else:
                loss = model.calculate_loss(interaction)
        loss.backward()
        optimizer.step()

    return step


def eval_fn(model, eval_batch, precision):
    import torch
    from recbole.data.interaction import Interaction

    from recbole_linear import precision as amp

    interaction = Interaction(eval_batch)
    dtype = dtype_of(precision)

    def evaluate():
        model.eval()
        with torch.no_grad(), amp.autocast("cpu", dtype):
            model.full_sort_predict(interaction).float()

    return evaluate


def counted_flops(fn):
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops()


def interleaved(jobs, rounds):
    """Fastest seconds of each job, timed in turn: a warm-up round, then ``rounds`` rounds."""
    seconds = defaultdict(list)
    for _ in range(rounds + 1):
        for name, fn in jobs.items():
            start = time.perf_counter()
            fn()
            seconds[name].append(time.perf_counter() - start)
    return {name: min(values[1:]) for name, values in seconds.items()}


def measure_model(model_name, regime, extra, n_items, rounds, peaks):
    model, optimizer, batch, eval_batch = build(model_name, regime, extra, n_items)
    configs = STEP_CONFIGS if regime == "all" else [c for c in STEP_CONFIGS if c[0] != "fp32-whole"]
    jobs = {("step", name): step_fn(model, optimizer, batch, regime, precision, block) for name, precision, block in configs}
    jobs.update({("eval", precision): eval_fn(model, eval_batch, precision) for precision in ("fp32", "bf16")})
    flops = {key: counted_flops(fn) for key, fn in jobs.items()}
    times = interleaved(jobs, rounds)
    precision_of = {name: precision for name, precision, _ in configs}
    rows = []
    for (kind, name), seconds in times.items():
        precision = precision_of.get(name, name)
        gflops = flops[(kind, name)] / seconds / 1e9
        peak = peaks[precision]
        targets = WINDOWS * MAX_LEN if regime == "all" else PREFIX_BATCH
        rows.append({
            "kind": kind, "items": n_items, "model": model_name, "regime": regime, "config": name,
            "batch": (WINDOWS if regime == "all" else PREFIX_BATCH) if kind == "step" else EVAL_BATCH,
            "targets": targets if kind == "step" else "", "ms": round(1000 * seconds, 1),
            "gflop": round(flops[(kind, name)] / 1e9, 2), "gflops": round(gflops, 1), "peak_gflops": round(peak, 1),
            "pct_of_peak": round(100 * gflops / peak, 1),
            "detail": "GRU FLOPs not counted" if model_name in FLOPS_UNSEEN else "",
        })
    return rows


PROFILE_GROUPS = [
    ("matrix products", ("aten::mm", "aten::addmm", "aten::bmm", "aten::linear", "aten::matmul", "aten::_convolution", "aten::mkldnn")),
    ("dtype casts and copies", ("aten::copy_", "aten::_to_copy", "aten::to", "aten::clone", "aten::contiguous")),
    ("softmax / exp / log-sum-exp", ("aten::exp", "aten::_log_softmax", "aten::logsumexp", "aten::_softmax", "aten::amax", "aten::log")),
    ("dropout (random masks)", ("aten::bernoulli", "aten::native_dropout", "aten::dropout")),
    ("optimizer (AdamW)", ("aten::addcmul", "aten::addcdiv", "aten::lerp", "aten::_foreach", "aten::sqrt")),
    ("LayerNorm and GELU", ("aten::native_layer_norm", "aten::gelu", "aten::layer_norm")),
    ("zeroing and filling", ("aten::fill_", "aten::zero_", "aten::zeros", "aten::empty")),
]


def profile_rows(n_items, rounds):
    """Self time per operator group of LRURec's all-position step, fp32 and bf16 (block-wise loss)."""
    import torch

    model, optimizer, batch, _ = build("LRURec", "all", {}, n_items)
    rows = []
    for name, precision, block in STEP_CONFIGS[1:]:
        step = step_fn(model, optimizer, batch, "all", precision, block)
        step()
        wall = []
        totals = defaultdict(float)
        for _ in range(rounds):
            with torch.autograd.profiler.profile() as prof:
                start = time.perf_counter()
                step()
                wall.append(time.perf_counter() - start)
            for event in prof.key_averages():
                group = next((g for g, prefixes in PROFILE_GROUPS if event.key.startswith(prefixes)), "other operators")
                totals[group] += event.self_cpu_time_total / 1e3 / rounds
        wall_ms = 1000 * statistics.mean(wall)
        totals["outside operators (Python, autograd, profiler)"] = max(0.0, wall_ms - sum(totals.values()))
        for group, ms in sorted(totals.items(), key=lambda kv: -kv[1]):
            rows.append({"kind": "profile", "items": n_items, "model": "LRURec", "regime": "all", "config": name,
                         "ms": round(ms, 1), "detail": group, "pct_of_peak": round(100 * ms / wall_ms, 1)})
    return rows


def measure(args):
    import torch

    torch.set_num_threads(1)
    rows = matmul_peaks(args.rounds)
    peaks = {r["config"]: r["gflops"] for r in rows if r["detail"] == "best"}
    for n_items in args.catalogues:
        for model_name, regime, extra in MODELS:
            if args.models and model_name not in args.models:
                continue
            rows += measure_model(model_name, regime, extra, n_items, args.rounds, peaks)
            print(f"measured {model_name} at {n_items} items", flush=True)
    rows += profile_rows(CATALOGUES[0], args.rounds)
    os.makedirs(RESULTS, exist_ok=True)
    with open(CSV_FILE, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({key: row.get(key, "") for key in COLUMNS})


# --- the report ---------------------------------------------------------------------------------
def read_rows():
    with open(CSV_FILE) as f:
        return list(csv.DictReader(f))


def peak_shapes(rows):
    """(shape, fp32 GFLOPS, bf16 GFLOPS) of every product measured for the peak."""
    by_shape = defaultdict(dict)
    for r in rows:
        if r["kind"] == "peak" and r["detail"] != "best":
            by_shape[r["detail"]][r["config"]] = r["gflops"]
    return [(shape, values.get("fp32", "–"), values.get("bf16", "–")) for shape, values in by_shape.items()]


def write_report(machine, command):
    rows = read_rows()
    peaks = {r["config"]: float(r["gflops"]) for r in rows if r["kind"] == "peak" and r["detail"] == "best"}
    steps = {(r["items"], r["model"], r["config"]): r for r in rows if r["kind"] == "step"}
    evals = {(r["items"], r["model"], r["config"]): r for r in rows if r["kind"] == "eval"}
    lines = [
        "# fp32 and bf16: training steps, evaluation batches, roofline",
        "",
        f"Machine: {machine}. One torch thread; other jobs may share the cores, so each model's",
        "configurations are timed in turn in one process (the fastest of the rounds) and compared with each other.",
        "",
        f"Measured matrix-product peak (best `torch.mm` of the shapes in the CSV): fp32 {peaks['fp32']:.0f} GFLOPS, "
        f"bf16 {peaks['bf16']:.0f} GFLOPS ({peaks['bf16'] / peaks['fp32']:.1f}x).",
        "",
        "The products measured for the peak, GFLOPS (the fastest of the rounds); the thin ones are this model's own",
        "shapes (6,400 positions, hidden 64, FFN 256, 3,417 items), and how far below the best shape they run is",
        "a ceiling no step made of them can pass:",
        "",
        "| product | fp32 | bf16 |",
        "|---|---|---|",
        *[f"| {shape} | {fp32} | {bf16} |" for shape, fp32, bf16 in peak_shapes(rows)],
        "",
        "Useful FLOPs: `torch.utils.flop_counter.FlopCounterMode` over one step or batch, every matrix product",
        "of forward and backward at 2mnk; elementwise work (the LRU scan, softmax, dropout, norms, optimizer)",
        "counts zero. % of peak = useful FLOPs / time / that precision's measured peak.",
        "",
        "## Training steps",
        "",
        "`fp32-whole`: full CE over the whole `[targets, items]` logit matrix (before `ce_block_rows`); `fp32`, `bf16`:",
        "the block-wise CE (`ce_block_rows: 128`, the default). GLINT-RU trains in the prefix regime (loss at the last",
        "position), where the logits are only `[batch, items]` and the block-wise loss does not apply.",
        "",
        "| items | model | regime | fp32-whole ms | fp32 ms | bf16 ms | bf16 / fp32-whole | bf16 / fp32 | fp32 % of peak | bf16 % of peak |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (items, model, config), row in steps.items():
        if config != "fp32":
            continue
        whole = steps.get((items, model, "fp32-whole"))
        bf16 = steps[(items, model, "bf16")]
        note = " (GRU uncounted)" if row["detail"] else ""
        whole_ms = f"{float(whole['ms']):.0f}" if whole else "–"
        ratio_whole = f"{float(bf16['ms']) / float(whole['ms']):.2f}" if whole else "–"
        lines.append(
            f"| {int(items):,} | {model} | {row['regime']} | {whole_ms} | {float(row['ms']):.0f} | "
            f"{float(bf16['ms']):.0f} | {ratio_whole} | {float(bf16['ms']) / float(row['ms']):.2f} | "
            f"{row['pct_of_peak']}%{note} | {bf16['pct_of_peak']}%{note} |"
        )
    lines += [
        "",
        "## Evaluation batches (256 users, full ranking)",
        "",
        "| items | model | fp32 ms | bf16 ms | bf16 / fp32 | fp32 % of peak | bf16 % of peak |",
        "|---|---|---|---|---|---|---|",
    ]
    for (items, model, config), row in evals.items():
        if config != "fp32":
            continue
        bf16 = evals[(items, model, "bf16")]
        lines.append(
            f"| {int(items):,} | {model} | {float(row['ms']):.0f} | {float(bf16['ms']):.0f} | "
            f"{float(bf16['ms']) / float(row['ms']):.2f} | {row['pct_of_peak']}% | {bf16['pct_of_peak']}% |"
        )
    profile = [r for r in rows if r["kind"] == "profile"]
    lines += ["", f"## Where LRURec's all-position step spends its time ({int(profile[0]['items']):,} items)", "",
              "Self time of the operators, grouped (torch profiler; mean of the rounds), and the time outside them.", "",
              "| group | fp32 ms | fp32 share | bf16 ms | bf16 share |", "|---|---|---|---|---|"]
    by_group = defaultdict(dict)
    for r in profile:
        by_group[r["detail"]][r["config"]] = r
    for group, configs in sorted(by_group.items(), key=lambda kv: -float(kv[1].get("fp32", {}).get("ms", 0))):
        cells = []
        for config in ("fp32", "bf16"):
            r = configs.get(config)
            cells += [f"{float(r['ms']):.0f}", f"{r['pct_of_peak']}%"] if r else ["–", "–"]
        lines.append(f"| {group} | " + " | ".join(cells) + " |")
    lines += ["", "## Targets", ""] + targets(steps) + ["", "## Regenerate", "", "```", command, "```", ""]
    with open(os.path.join(RESULTS, "precision.md"), "w") as f:
        f.write("\n".join(lines))
    plot(steps, os.path.join(RESULTS, "precision.png"))


def targets(steps):
    out = []
    for items in sorted({k[0] for k in steps}, key=int):
        whole = steps.get((items, "LRURec", "fp32-whole"))
        fp32 = steps.get((items, "LRURec", "fp32"))
        bf16 = steps.get((items, "LRURec", "bf16"))
        if not (whole and fp32 and bf16):
            continue
        to_whole = float(bf16["ms"]) / float(whole["ms"])
        to_fp32 = float(bf16["ms"]) / float(fp32["ms"])
        out.append(
            f"- {int(items):,} items, all-position LRURec step in bf16 ≤ 0.5× its fp32 time: {to_whole:.2f}× the fp32 step "
            f"as it was (whole logit matrix): {'met' if to_whole <= 0.5 else 'not met'}; {to_fp32:.2f}× the fp32 step with "
            f"the block-wise loss: {'met' if to_fp32 <= 0.5 else 'not met'}."
        )
        out.append(
            f"- {int(items):,} items, the fp32 step at ≥ 50% of the measured fp32 matmul peak: {fp32['pct_of_peak']}% "
            f"(block-wise), {whole['pct_of_peak']}% (whole matrix): {'met' if float(fp32['pct_of_peak']) >= 50 else 'not met'}; "
            "where the rest goes: the profile above."
        )
    return out


def plot(steps, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot")
        return
    catalogues = sorted({k[0] for k in steps}, key=int)
    fig, axes = plt.subplots(1, len(catalogues), figsize=(6 * len(catalogues), 4), squeeze=False)
    for ax, items in zip(axes[0], catalogues):
        models = [m for (i, m, c) in steps if i == items and c == "fp32"]
        width = 0.27
        for offset, config in enumerate(("fp32-whole", "fp32", "bf16")):
            values = [float(steps[(items, m, config)]["ms"]) if (items, m, config) in steps else 0 for m in models]
            ax.bar([x + (offset - 1) * width for x in range(len(models))], values, width, label=config)
        ax.set_xticks(range(len(models)))
        ax.set_xticklabels(models)
        ax.set_ylabel("training step (ms)")
        ax.set_title(f"{int(items):,} items")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds after one warm-up round")
    parser.add_argument("--catalogues", default=",".join(map(str, CATALOGUES)), type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--models", default="", type=lambda s: [m for m in s.split(",") if m])
    parser.add_argument("--report", action="store_true", help="only write the table and plot from the CSV")
    args = parser.parse_args()
    if not args.report:
        measure(args)
    import torch

    from common import cpu_name

    write_report(f"{cpu_name()}, {os.cpu_count()} cores; torch {torch.__version__}", "python benchmarks/precision.py")


if __name__ == "__main__":
    main()
