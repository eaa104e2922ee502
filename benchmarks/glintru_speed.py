"""GLINT-RU vs RecBole SASRec and GRU4Rec: inference latency and training-step time on CPU.

Measures, at sequence lengths L (default 50 and 200), batch B, n_items items:

- inference: ``full_sort_predict`` in eval mode under ``torch.no_grad()``;
- training step: ``zero_grad`` + ``calculate_loss`` (CE over the full table) + ``backward`` +
  ``Adam.step``.

Every repetition times each model once, in turn (interleaved), so that a burst of load from other
processes hits all models alike; the table reports medians and ratios to SASRec. A fourth row,
"GLINT-RU, tail at all N", runs the same model with the position-wise mixing block and gated MLP
computed at every position and read out afterwards (the official code's order), to show what
running them only at the read-out position saves.

Usage (writes benchmarks/results/glintru_speed.md)::

    python benchmarks/glintru_speed.py [--threads 1 2] [--lengths 50 200] [--reps 5] [--batch-size 128]
                                       [--n-items 3000] [--hidden 64]
"""
import os
import platform
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import speed_harness as harness  # noqa: E402  (repository root on sys.path, anomaly mode off)
from common import cpu_name, inference_step, train_step  # noqa: E402

from recbole.model.sequential_recommender.gru4rec import GRU4Rec  # noqa: E402
from recbole.model.sequential_recommender.sasrec import SASRec  # noqa: E402

from recbole_linear.model.glintru import GLINTRU  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "glintru_speed.md")
MODES = ("inference", "training")


class GLINTRUFullTail(GLINTRU):
    """GLINT-RU with the mixing block and gated MLP at all N positions, then read out (official order)."""

    def forward(self, item_seq, item_seq_len):
        item_seq_emb = self.emb_dropout(self.item_embedding(item_seq))
        attention_output = self.linearattention(item_seq_emb)
        gru_output = self._gru_expert(item_seq_emb)
        output = self._mix_and_mlp(gru_output, attention_output, item_seq_emb)
        return self.gather_indexes(output, item_seq_len - 1)


def model_configs(hidden):
    """name -> (class, config keys). Dropouts are each model's defaults (they do not change the cost)."""
    sasrec = dict(
        n_layers=2, n_heads=2, hidden_size=hidden, inner_size=4 * hidden, hidden_dropout_prob=0.5,
        attn_dropout_prob=0.5, hidden_act="gelu", layer_norm_eps=1e-12, initializer_range=0.02, loss_type="CE",
    )
    gru4rec = dict(embedding_size=hidden, hidden_size=hidden, num_layers=1, dropout_prob=0.3, loss_type="CE")
    glintru = dict(
        embedding_size=hidden, hidden_size=hidden, n_heads=max(1, hidden // 16), num_layers=1, conv_kernel_size=3,
        dropout_prob=0.3, hidden_dropout_prob=0.2, mixing_dropout_prob=0.3, layer_norm_eps=1e-12, loss_type="CE",
    )
    return {
        "SASRec": (SASRec, sasrec),
        "GRU4Rec": (GRU4Rec, gru4rec),
        "GLINT-RU": (GLINTRU, glintru),
        "GLINT-RU, tail at all N": (GLINTRUFullTail, glintru),
    }


def step_job(mode, model, optimizer, interaction):
    """The timed call for ``mode``; the model's train/eval mode is set here, outside the timed call."""
    model.train(mode == "training")
    if mode == "inference":
        return lambda: inference_step(model, interaction, set_mode=False)
    return lambda: train_step(model, optimizer, interaction, set_to_none=True, set_mode=False)


def bench_length(max_len, args):
    """{(model name, mode): median ms} and {model name: parameter count} at one sequence length."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(max_len)
    interaction = harness.right_padded_batch(args.n_items, args.batch_size, max_len, generator)
    models = {}
    for name, (model_class, keys) in model_configs(args.hidden).items():
        torch.manual_seed(0)
        model = harness.build(model_class, keys, args.n_items, max_len)
        models[name] = (model, torch.optim.Adam(model.parameters(), lr=1e-3))

    results = {}
    for mode in MODES:
        jobs = {name: step_job(mode, model, optimizer, interaction) for name, (model, optimizer) in models.items()}
        times = harness.interleaved_times(jobs, args.reps, warmup_rounds=args.warmup)
        for name, seconds in times.items():
            values = [s * 1000.0 for s in seconds]
            results[(name, mode)] = statistics.median(values)
            print(f"threads={torch.get_num_threads()} L={max_len:4d} {mode:9s} {name:24s} "
                  f"median {results[(name, mode)]:8.2f} ms (min {min(values):.2f}, max {max(values):.2f})", flush=True)
    parameters = {name: sum(p.numel() for p in model.parameters()) for name, (model, _) in models.items()}
    return results, parameters


def report_lines(all_results, all_parameters, args, command, clock):
    names = list(model_configs(args.hidden))
    lines = [
        "# GLINT-RU speed on CPU vs RecBole SASRec and GRU4Rec",
        "",
        f"Command: `{command}` (from the repository root; {clock.seconds:.0f} s).",
        "",
        f"- Machine: {cpu_name()}, {os.cpu_count()} logical CPUs, {platform.platform()}; "
        f"torch {torch.__version__}; torch threads as in the table (`torch.set_num_threads`).",
        "- With 2 threads on a loaded 2-CPU machine, every parallel op can wait for a descheduled OpenMP "
        "thread: a GRU's ~1,000 tiny per-step ops suffer most (while this benchmark was written, an isolated "
        "`nn.GRU(64, 64)` over 128×200 took ~35 ms with 1 thread and 125–1,000 ms with 2). The 2-thread rows "
        "are dominated by that noise (min–max spreads of several ×); the 1-thread rows are the fair comparison.",
        f"- **The CPU was shared with other engineers' jobs while this ran** (1-min load average "
        f"{clock.load_before:.2f} before, {clock.load_after:.2f} after, on {os.cpu_count()} CPUs): absolute times "
        "are noisy; the ratios come from interleaved repetitions and are the more reliable numbers.",
        f"- Batch {args.batch_size}, {args.n_items} items, hidden size {args.hidden} for every model; "
        f"median of {args.reps} interleaved repetitions after {args.warmup} warm-up round(s).",
        "- Inference: `full_sort_predict` (scores for all items), eval mode, `torch.no_grad()`.",
        "- Training step: `zero_grad` + `calculate_loss` (CE over all items) + `backward` + `Adam.step`.",
        "",
        "Configurations:",
        "",
        f"- SASRec (RecBole 1.2.1): 2 layers, 2 heads, hidden {args.hidden}, inner {4 * args.hidden}, "
        "learned positions, causal softmax attention.",
        f"- GRU4Rec (RecBole 1.2.1): embedding {args.hidden}, hidden {args.hidden}, 1 GRU layer.",
        f"- GLINT-RU (this plugin): hidden {args.hidden}, {max(1, args.hidden // 16)} heads (d_h 16, as the "
        "official 128/8), 1 GRU layer, kernel 3.",
        "- GLINT-RU, tail at all N: the same model, but the position-wise mixing block and gated MLP run at "
        "all N positions before the read-out, as in the official code (same output; shows the saving).",
        "",
    ]
    rows = []
    for (threads, max_len), results in all_results.items():
        base_inf = results[("SASRec", "inference")]
        base_train = results[("SASRec", "training")]
        for name in names:
            inf, train = results[(name, "inference")], results[(name, "training")]
            rows.append([threads, max_len, name, f"{all_parameters[max_len][name]:,}",
                         f"{inf:.1f}", f"{inf / base_inf:.2f}", f"{train:.1f}", f"{train / base_train:.2f}"])
    lines += harness.markdown_table(
        ["threads", "L", "model", "params", "inference ms", "× SASRec", "train step ms", "× SASRec"], rows,
        align="rrlrrrrr",
    )
    longest = max(max_len for _, max_len in all_results)
    lines.append("")
    for (threads, max_len), results in all_results.items():
        if max_len != longest:
            continue
        ratio = results[("GLINT-RU", "inference")] / results[("SASRec", "inference")]
        verdict = "met" if ratio <= 1.0 else "NOT met"
        lines.append(f"- Target (GLINT-RU inference ≤ 1.0× SASRec at L={longest}), {threads} thread(s): "
                     f"**{verdict}** ({ratio:.2f}× in this run).")
    for (threads, max_len), results in all_results.items():
        ratio = {mode: results[("GLINT-RU", mode)] / results[("GLINT-RU, tail at all N", mode)] for mode in MODES}
        lines.append(f"- Tail at the read-out position only, as a fraction of the tail at all N, {threads} thread(s), "
                     f"L={max_len}: inference {ratio['inference']:.2f}×, training step {ratio['training']:.2f}×.")
    lines.append("")
    return lines


def main():
    parser = harness.argument_parser(__doc__, lengths=[50, 200], batch_size=128)
    parser.add_argument("--n-items", type=int, default=3000)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args()

    command = "python " + " ".join(["benchmarks/glintru_speed.py", *sys.argv[1:]])
    clock = harness.RunClock()
    all_results, all_parameters = {}, {}
    for threads in args.threads:
        torch.set_num_threads(threads)
        for max_len in args.lengths:
            all_results[(threads, max_len)], all_parameters[max_len] = bench_length(max_len, args)
    harness.write_report(args.out, report_lines(all_results, all_parameters, args, command, clock.stop()))


if __name__ == "__main__":
    main()
