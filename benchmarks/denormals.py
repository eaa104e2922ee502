"""Subnormal floats in the loss gradient of trained models, what they cost, and what flushing changes.

For each checkpoint given (a finished run's best model, trained all-position with full CE or a
sampled loss), on its own dataset, for ``--batches`` training batches of its all-position loader:

- the share of subnormal values (0 < |x| < 2^-126 = 1.18e-38) among the softmax probabilities and
  among the full-CE gradient of the logits, ``(softmax - onehot) / N``, over all items;
- one training step's forward and backward (full CE, block-wise, fp32), with
  ``torch.set_flush_denormal`` off and on, timed in turn (the fastest of the rounds);
- the largest difference between the parameter gradients of the two modes;
- the checkpoint's validation metrics evaluated with flushing off and on.

    python benchmarks/denormals.py --data_path ../shared/datasets CHECKPOINT.pth [...]

The rows go to ``benchmarks/results/denormals.csv``, replacing the rows of the same checkpoint file
name and keeping the others (their checkpoints need not exist any more), and a table to
``denormals.md`` (``--report``: the table from the CSV only).
"""
import argparse
import csv
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import common  # noqa: E402,F401  (the repository on sys.path, anomaly mode off)
import torch  # noqa: E402

from recbole_linear.all_positions import AllPositionTrainDataLoader, all_position_loss, full_scores, sequence_output  # noqa: E402
from recbole_linear.quick_start import load_data_and_model  # noqa: E402
from recbole_linear.trainer import get_trainer  # noqa: E402

RESULTS = os.path.join(HERE, "results")
CSV_FILE = os.path.join(RESULTS, "denormals.csv")
COLUMNS = ["checkpoint", "model", "dataset", "loss_type", "epoch", "batches", "targets", "max_logit_spread",
           "subnormal_probabilities", "subnormal_gradient", "step_ms_flush_off", "step_ms_flush_on",
           "max_grad_difference", "valid_flush_off", "valid_flush_on"]
SMALLEST_NORMAL = torch.finfo(torch.float32).tiny


def subnormal_share(tensor):
    magnitude = tensor.abs()
    return float(((magnitude > 0) & (magnitude < SMALLEST_NORMAL)).float().mean())


def batch_facts(model, interaction, target_field):
    """(targets, largest max-min logit spread of a row, subnormal shares of softmax and gradient)."""
    with torch.no_grad():
        output = sequence_output(model, interaction[model.ITEM_SEQ], interaction[model.ITEM_SEQ_LEN])
        targets = interaction[target_field][:, : output.size(1)]
        real = torch.arange(output.size(1)).unsqueeze(0) < interaction[model.ITEM_SEQ_LEN].unsqueeze(1)
        trained = real & (targets != 0)
        logits = full_scores(model, output[trained])
        probabilities = torch.softmax(logits, dim=1)
        gradient = probabilities.clone()
        gradient[torch.arange(len(gradient)), targets[trained]] -= 1.0
        gradient /= len(gradient)
        spread = float((logits.amax(dim=1) - logits.amin(dim=1)).max())
        return len(gradient), spread, subnormal_share(probabilities), subnormal_share(gradient)


def step_seconds_and_grads(model, interaction, target_field, flush):
    torch.set_flush_denormal(flush)
    model.zero_grad()
    start = time.perf_counter()
    all_position_loss(model, interaction, target_field, ce_block_rows=128).backward()
    seconds = time.perf_counter() - start
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    torch.set_flush_denormal(False)
    return seconds, grads


def measure(checkpoint, args):
    config, model, _, train_data, valid_data, _ = load_data_and_model(checkpoint, [f"--data_path={args.data_path}"])
    train_data = AllPositionTrainDataLoader(config, train_data._dataset, shuffle=True)
    target_field = train_data._target_field
    model.train()
    torch.manual_seed(0)
    batches = [batch for _, batch in zip(range(args.batches), train_data)]
    targets = spread = probability_share = gradient_share = 0.0
    for interaction in batches:
        n, batch_spread, p_share, g_share = batch_facts(model, interaction, target_field)
        targets += n
        spread = max(spread, batch_spread)
        probability_share += p_share * n
        gradient_share += g_share * n
    times = {False: [], True: []}
    max_difference = 0.0
    for _ in range(args.rounds + 1):
        for interaction in batches[:1]:
            torch.manual_seed(1)  # the same dropout masks in both modes
            off, grads_off = step_seconds_and_grads(model, interaction, target_field, False)
            torch.manual_seed(1)
            on, grads_on = step_seconds_and_grads(model, interaction, target_field, True)
            times[False].append(off)
            times[True].append(on)
            max_difference = max(max_difference, max(float((grads_on[k] - grads_off[k]).abs().max()) for k in grads_off))
    valid = {}
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    for flush in (False, True):
        torch.set_flush_denormal(flush)
        valid[flush] = dict(trainer.evaluate(valid_data, load_best_model=False))
    torch.set_flush_denormal(False)
    return {
        "checkpoint": os.path.basename(checkpoint), "model": config["model"], "dataset": config["dataset"],
        "loss_type": config["loss_type"], "epoch": torch.load(checkpoint, map_location="cpu", weights_only=False)["epoch"],
        "batches": len(batches), "targets": int(targets),
        "max_logit_spread": round(spread, 1),
        "subnormal_probabilities": f"{probability_share / targets:.2e}", "subnormal_gradient": f"{gradient_share / targets:.2e}",
        "step_ms_flush_off": round(1000 * min(times[False][1:]), 1), "step_ms_flush_on": round(1000 * min(times[True][1:]), 1),
        "max_grad_difference": f"{max_difference:.2e}",
        "valid_flush_off": " ".join(f"{k}={v}" for k, v in valid[False].items()),
        "valid_flush_on": " ".join(f"{k}={v}" for k, v in valid[True].items()),
    }


def write_report(command):
    with open(CSV_FILE) as f:
        rows = list(csv.DictReader(f))
    lines = [
        "# Subnormal floats in the full-CE gradient of trained models",
        "",
        "Each row: a run's best checkpoint (the epoch its weights are from) on its own dataset; the full-CE softmax and its gradient",
        "`(softmax - onehot) / N` over all items, for the trained positions of the first training batches of its",
        "all-position loader (shuffled, seed 0); a subnormal is 0 < |x| < 2^-126 = 1.18e-38. One forward and",
        "backward (block-wise CE, fp32, one torch thread) timed with `torch.set_flush_denormal` off and on, in turn",
        "(the fastest of the rounds; other jobs shared the CPU), the largest difference between the two modes'",
        "parameter gradients, and whether the validation metrics are equal in both modes.",
        "",
        "| run | loss trained with | epoch | targets | largest logit spread of a row | subnormal softmax share | "
        "subnormal gradient share | step, flush off (ms) | step, flush on (ms) | largest gradient difference | "
        "validation metrics equal |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} on {r['dataset']} (`{r['checkpoint']}`) | {r['loss_type']} | {r.get('epoch') or 'not recorded'} | "
            f"{int(r['targets']):,} | "
            f"{r['max_logit_spread']} | {r['subnormal_probabilities']} | {r['subnormal_gradient']} | "
            f"{r['step_ms_flush_off']} | {r['step_ms_flush_on']} | {r['max_grad_difference']} | "
            f"{r['valid_flush_off'] == r['valid_flush_on']} |"
        )
    lines += [
        "",
        "A softmax probability is subnormal only when its logit is more than ~87 below its row's largest",
        "(exp(-87) = 1.6e-38), so the spread column says how close a model is to producing them.",
        "",
        "## Regenerate",
        "",
        "```",
        command,
        "```",
        "",
    ]
    with open(os.path.join(RESULTS, "denormals.md"), "w") as f:
        f.write("\n".join(lines))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="*")
    parser.add_argument("--data_path", help="the folder holding the checkpoints' datasets")
    parser.add_argument("--batches", type=int, default=20, help="training batches whose gradients are inspected")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds of a step in each mode, after a warm-up")
    parser.add_argument("--report", action="store_true", help="only write denormals.md from the CSV")
    parser.add_argument("--command", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    command = args.command or "python benchmarks/denormals.py --data_path ../shared/datasets --batches 10 CHECKPOINT.pth ..."
    if not args.report:
        if not args.checkpoints or not args.data_path:
            parser.error("give checkpoints and --data_path (or --report)")
        torch.set_num_threads(1)
        rows = [measure(path, args) for path in args.checkpoints]
        measured = {row["checkpoint"] for row in rows}
        if os.path.exists(CSV_FILE):
            with open(CSV_FILE) as f:
                rows = [row for row in csv.DictReader(f) if row["checkpoint"] not in measured] + rows
        os.makedirs(RESULTS, exist_ok=True)
        with open(CSV_FILE, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
    write_report(command)


if __name__ == "__main__":
    main()
