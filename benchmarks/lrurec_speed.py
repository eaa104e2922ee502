"""LRURec vs RecBole's SASRec on CPU: full-sort inference, a training step, and step() vs forward.

Both models: hidden 64, 2 layers (SASRec: 2 heads, inner 256), dropout 0.2, CE loss over all
items, ~3,000 items, right-padded batches of random lengths with one row spanning the whole
window (so LRURec cannot cut padding columns). For every sequence length the two models are
timed interleaved (alternating which goes first), and the median over the repetitions is
reported after one untimed warm-up each.

- inference: ``full_sort_predict`` in eval mode under ``torch.no_grad()``;
- training step: ``calculate_loss`` (forward + CE) + ``backward`` + ``Adam.step`` in train mode;
- incremental: LRURec ``step()`` (one new item per user, state carried) vs ``forward`` over the
  whole history of 200 items, and ``step() + scores_from_output`` vs ``full_sort_predict``.

Run from the repository root (writes benchmarks/results/lrurec_speed.md):

    python benchmarks/lrurec_speed.py
"""
import os
import platform
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import speed_harness as harness  # noqa: E402  (repository root on sys.path, anomaly mode off)
from common import inference_step, train_step  # noqa: E402

from recbole.model.sequential_recommender.sasrec import SASRec  # noqa: E402

from recbole_linear.model.lrurec import LRURec  # noqa: E402
from tests.helpers import ITEM_SEQ, ITEM_SEQ_LEN, build_model  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "lrurec_speed.md")
SASREC_CONFIG = dict(
    n_layers=2, n_heads=2, hidden_size=64, inner_size=256, hidden_dropout_prob=0.2, attn_dropout_prob=0.2,
    hidden_act="gelu", layer_norm_eps=1e-12, initializer_range=0.02, loss_type="CE",
)
LRUREC_CONFIG = dict(hidden_size=64, n_layers=2, dropout_prob=0.2, lru_dropout_prob=0.2, loss_type="CE")


def parse_args():
    parser = harness.argument_parser(__doc__, lengths=[50, 200, 1000], batch_size=64)
    parser.add_argument("--n-items", type=int, default=3000)
    parser.add_argument("--reps", type=int, default=5, help="timed repetitions (L <= 200)")
    parser.add_argument("--long-reps", type=int, default=3, help="timed repetitions for L > 200")
    parser.add_argument("--step-history", type=int, default=200)
    parser.add_argument("--output", default=RESULTS)
    return parser.parse_args()


def full_window_batch(n_items, batch_size, length, seed):
    batch = harness.right_padded_batch(n_items, batch_size, length, generator=torch.Generator().manual_seed(seed))
    batch[ITEM_SEQ_LEN][0] = length  # one row spans the window: no padding column can be cut
    batch[ITEM_SEQ][0] = torch.randint(1, n_items, (length,), generator=torch.Generator().manual_seed(seed + 1))
    return batch


def interleaved_medians(jobs, reps):
    """{name: median seconds}: one warm-up each, then ``reps`` rounds alternating the order."""
    return harness.medians(harness.interleaved_times(jobs, reps, warmup_rounds=1, alternate=True))


def compare_with_sasrec(length, args):
    reps = args.reps if length <= 200 else args.long_reps
    torch.manual_seed(0)
    lrurec = build_model(LRURec, n_items=args.n_items, max_len=length, **LRUREC_CONFIG)
    sasrec = build_model(SASRec, n_items=args.n_items, max_len=length, **SASREC_CONFIG)
    batch = full_window_batch(args.n_items, args.batch_size, length, seed=length)
    infer = interleaved_medians(
        {"LRURec": lambda: inference_step(lrurec, batch), "SASRec": lambda: inference_step(sasrec, batch)}, reps
    )
    lrurec_adam = torch.optim.Adam(lrurec.parameters(), lr=1e-3)
    sasrec_adam = torch.optim.Adam(sasrec.parameters(), lr=1e-3)
    train = interleaved_medians(
        {
            "LRURec": lambda: train_step(lrurec, lrurec_adam, batch, set_to_none=True),
            "SASRec": lambda: train_step(sasrec, sasrec_adam, batch, set_to_none=True),
        },
        reps,
    )
    return dict(length=length, reps=reps, infer=infer, train=train)


def step_vs_forward(args, reps=20):
    """Times of one ``step`` after ``history - 1`` items vs ``forward`` over ``history`` items."""
    history = args.step_history
    torch.manual_seed(0)
    model = build_model(LRURec, n_items=args.n_items, max_len=history, **LRUREC_CONFIG).eval()
    item_seq = torch.randint(1, args.n_items, (args.batch_size, history), generator=torch.Generator().manual_seed(7))
    item_seq_len = torch.full((args.batch_size,), history)
    batch = {ITEM_SEQ: item_seq, ITEM_SEQ_LEN: item_seq_len}
    with torch.no_grad():
        state = model.init_state(args.batch_size)
        for t in range(history - 1):
            _, state = model.step(item_seq[:, t], state)
        last_item = item_seq[:, -1]
        step_output, _ = model.step(last_item, state)
        max_error = (step_output - model.forward(item_seq, item_seq_len)).abs().max().item()
        jobs = {
            "forward": lambda: model.forward(item_seq, item_seq_len),
            "step": lambda: model.step(last_item, state),
            "full_sort_predict": lambda: model.full_sort_predict(batch),
            "step + scores": lambda: model.scores_from_output(model.step(last_item, state)[0]),
        }
        medians = interleaved_medians(jobs, reps)
    return dict(history=history, reps=reps, medians=medians, max_error=max_error)


def render(rows, step, args, clock):
    ms = lambda s: f"{1000 * s:.1f}"  # noqa: E731
    lines = [
        "# LRURec vs SASRec: CPU speed",
        "",
        f"- Machine: {harness.machine_line()}; **shared with other engineers' jobs while measured** "
        f"(load average {clock.load_before:.2f} before, {clock.load_after:.2f} after; 1-min), so absolute times "
        "are noisy; the two models were timed interleaved (alternating order) and ratios are the number to read.",
        f"- torch {torch.__version__}, {torch.get_num_threads()} intra-op threads; Python {platform.python_version()}.",
        f"- Setup: batch {args.batch_size}, {args.n_items} items, hidden 64, 2 layers, dropout 0.2, CE over all "
        "items; SASRec = RecBole 1.2.1's own (2 heads, inner 256). Right-padded random-length rows, one row "
        "spanning the full window L. Medians of the timed repetitions after one warm-up per model.",
        "- Inference: `full_sort_predict`, eval mode, `torch.no_grad()`. Training step: `calculate_loss` + "
        "`backward` + `torch.optim.Adam.step`, train mode (dropout on).",
        f"- Command: `python benchmarks/lrurec_speed.py` (whole script: {clock.seconds:.0f} s).",
        "",
        "## Full-sort inference and one training step (ms per batch, median)",
        "",
    ]
    columns = [
        "L", "reps", "LRURec infer", "SASRec infer", "infer ratio LRURec/SASRec", "LRURec train step",
        "SASRec train step", "train ratio LRURec/SASRec",
    ]
    cells = []
    for row in rows:
        li, si = row["infer"]["LRURec"], row["infer"]["SASRec"]
        lt, st = row["train"]["LRURec"], row["train"]["SASRec"]
        cells.append([row["length"], row["reps"], ms(li), ms(si), f"{li / si:.2f}", ms(lt), ms(st), f"{lt / st:.2f}"])
    lines += harness.markdown_table(columns, cells)
    m, history = step["medians"], step["history"]
    lines += [
        "",
        f"## Incremental inference: `step()` vs the parallel forward (history {history}, batch "
        f"{args.batch_size}, eval, no_grad; median of {step['reps']})",
        "",
    ]
    lines += harness.markdown_table(
        ["what", "ms per batch", "speed-up of step"],
        [
            [f"`forward` over {history} items (user vectors)", ms(m["forward"]), ""],
            ["`step` (one new item, state carried)", ms(m["step"]), f"{m['forward'] / m['step']:.1f}x"],
            [f"`full_sort_predict` over {history} items", ms(m["full_sort_predict"]), ""],
            ["`step` + `scores_from_output`", ms(m["step + scores"]),
             f"{m['full_sort_predict'] / m['step + scores']:.1f}x"],
        ],
    )
    lines += ["", f"Max |step output - forward output| after {history} steps: {step['max_error']:.2e}.", ""]
    return lines


def main():
    args = parse_args()
    clock = harness.RunClock()
    rows = []
    for length in args.lengths:
        rows.append(compare_with_sasrec(length, args))
        row = rows[-1]
        print(f"L={length}: infer {row['infer']}, train {row['train']}", flush=True)
    step = step_vs_forward(args)
    print(f"step vs forward: {step['medians']}", flush=True)
    harness.write_report(args.output, render(rows, step, args, clock.stop()))


if __name__ == "__main__":
    main()
