"""Training regimes side by side: RecBole's prefix samples against every position at once.

For each dataset and model, in one process, with the same data, split, initial weights, optimizer
(the plugin's trainer: LRURec's AdamW, no-decay groups and clipping) and evaluator:

1. **Seconds per epoch.** Training steps of the two regimes alternate (one RecBole step, one
   all-position step, ...) after a warm-up step each, so both see the same machine load; the
   median step time times the number of steps of an epoch is the epoch estimate. RecBole's
   batch is ``train_batch_size`` samples (one target each), the all-position batch
   ``--windows`` windows (up to ``MAX_ITEM_LIST_LENGTH`` targets each).
2. **Validation NDCG@10 against training time.** From the same initial weights, each regime trains
   for ``--budget`` seconds of training time (the clock stops while validating) and is validated
   (RecBole's full-ranking evaluator on the validation split) at ``--points`` evenly spaced times.

Usage (from the repository root):
    python benchmarks/all_positions.py [--datasets ml-100k ml-1m-lru] [--models LRURec SASRec]
        [--data_path ../shared/datasets] [--windows 128] [--timing-steps 6] [--budget 180 300]
        [--points 6] [--threads 1]
writes benchmarks/results/all_positions.{md,csv,png} (the plot needs matplotlib).
"""
import argparse
import csv
import itertools
import os
import shlex
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from torch.nn.utils import clip_grad_norm_  # noqa: E402

from common import RESULTS_DIR, machine_description  # noqa: E402

import recbole_linear  # noqa: E402,F401  (registers the plugin models; imports RecBole's models)
from recbole.data import create_dataset, data_preparation  # noqa: E402
from recbole.utils import init_logger, init_seed  # noqa: E402

from recbole_linear.all_positions import AllPositionTrainDataLoader  # noqa: E402
from recbole_linear.config import create_config  # noqa: E402
from recbole_linear.registry import get_model  # noqa: E402
from recbole_linear.trainer import get_trainer  # noqa: E402

REGIMES = ("RecBole prefixes", "all positions")
METRIC = "ndcg@10"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["ml-100k", "ml-1m-lru"])
    parser.add_argument("--models", nargs="+", default=["LRURec", "SASRec"])
    parser.add_argument("--data_path", default=os.path.join("..", "shared", "datasets"),
                        help="folder holding the paper datasets (ml-100k is RecBole's bundled copy)")
    parser.add_argument("--windows", type=int, default=128, help="all-position batch, in windows (official: 128)")
    parser.add_argument("--timing-steps", type=int, default=6, help="timed steps per regime (after 1 warm-up)")
    parser.add_argument("--budget", type=float, nargs="+", default=[180, 300],
                        help="training seconds per curve, one per dataset (the last repeats)")
    parser.add_argument("--points", type=int, default=6, help="validations per curve (besides the start)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--output", default=os.path.join(RESULTS_DIR, "all_positions"))
    return parser.parse_args(argv)


def make_configs(model, dataset, args):
    shared = {
        "seed": args.seed,
        "detect_anomaly": False,
        "show_progress": False,
        "log_wandb": False,
        "state": "WARNING",
        "checkpoint_dir": os.path.join("saved", "bench-all-positions"),
    }
    if dataset != "ml-100k":
        shared["data_path"] = args.data_path
    prefixes = create_config(model, dataset, config_dict=shared)
    windows = create_config(model, dataset, config_dict={**shared, "train_all_positions": True,
                                                         "train_batch_size": args.windows})
    return prefixes, windows


class Run:
    """One model in one regime: its trainer (optimizer, clipping) and loss over its loader."""

    def __init__(self, config, train_data):
        init_seed(config["seed"], config["reproducibility"])  # the same initial weights in both regimes
        self.model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
        self.trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, self.model)
        self.train_data = train_data
        self.loss = (train_data.loss_function(self.model) if isinstance(train_data, AllPositionTrainDataLoader)
                     else self.model.calculate_loss)
        self.batches = self._batches()
        self.targets = 0

    def _batches(self):
        for _ in itertools.count():
            yield from self.train_data

    def step(self):
        """One optimizer step on the next batch; returns its seconds."""
        interaction = next(self.batches).to(self.trainer.device)
        start = time.perf_counter()
        self.model.train()
        self.trainer.optimizer.zero_grad()
        loss = self.loss(interaction)
        loss.backward()
        if self.trainer.clip_grad_norm:
            clip_grad_norm_(self.model.parameters(), **self.trainer.clip_grad_norm)
        self.trainer.optimizer.step()
        seconds = time.perf_counter() - start
        key = self.model.ITEM_SEQ_LEN
        self.targets += int(interaction[key].sum()) if isinstance(self.train_data, AllPositionTrainDataLoader) else len(interaction)
        return seconds

    def validate(self, valid_data):
        result = self.trainer.evaluate(valid_data, load_best_model=False, show_progress=False)
        return float(result[METRIC])


def epoch_targets(train_data):
    return train_data.n_targets if isinstance(train_data, AllPositionTrainDataLoader) else train_data.sample_size


def time_epochs(runs, steps):
    """Alternate the regimes' steps; median step seconds and the epoch estimate per regime."""
    for run in runs:
        run.step()  # warm-up
    times = [[] for _ in runs]
    for _ in range(steps):
        for run, bucket in zip(runs, times):
            bucket.append(run.step())
    rows = []
    for regime, run, bucket in zip(REGIMES, runs, times):
        step_s = statistics.median(bucket)
        rows.append({"regime": regime, "batch": run.train_data.step, "steps_per_epoch": len(run.train_data),
                     "targets_per_epoch": epoch_targets(run.train_data), "step_s": step_s,
                     "epoch_s": step_s * len(run.train_data)})
    return rows


def curve(run, valid_data, budget, points):
    """Validation NDCG@10 at evenly spaced training times; the clock stops while validating."""
    rows = [{"train_s": 0.0, "epochs": 0.0, METRIC: run.validate(valid_data)}]
    trained, steps = 0.0, 0
    for k in range(1, points + 1):
        while trained < budget * k / points:
            trained += run.step()
            steps += 1
        rows.append({"train_s": trained, "epochs": steps / len(run.train_data), METRIC: run.validate(valid_data)})
    return rows


def benchmark(dataset, model, budget, args):
    config, config_windows = make_configs(model, dataset, args)
    init_logger(config)
    data = create_dataset(config)
    train_data, valid_data, _ = data_preparation(config, data)
    windows = AllPositionTrainDataLoader(config_windows, train_data._dataset, shuffle=True)
    torch.autograd.set_detect_anomaly(False)
    configs = {"L": config["MAX_ITEM_LIST_LENGTH"], "users": data.user_num - 1, "items": data.item_num - 1,
               "windows": windows.sample_size}

    runs = [Run(config, train_data), Run(config_windows, windows)]
    timing = time_epochs(runs, args.timing_steps)
    print(f"{dataset} {model}: epoch {timing[0]['epoch_s']:.1f} s vs {timing[1]['epoch_s']:.1f} s", flush=True)
    curves = {}
    for regime, run_config, loader in zip(REGIMES, (config, config_windows), (train_data, windows)):
        curves[regime] = curve(Run(run_config, loader), valid_data, budget, args.points)
        print(f"  {regime}: {[round(r[METRIC], 4) for r in curves[regime]]}", flush=True)
    return configs, timing, curves


def write_outputs(results, args, argv):
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output + ".csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["dataset", "model", "regime", "kind", "train_s", "epochs", METRIC, "step_s", "epoch_s"])
        for (dataset, model), (_, timing, curves) in results.items():
            for row in timing:
                writer.writerow([dataset, model, row["regime"], "epoch", "", "", "", f"{row['step_s']:.4f}", f"{row['epoch_s']:.2f}"])
            for regime, rows in curves.items():
                for row in rows:
                    writer.writerow([dataset, model, regime, "curve", f"{row['train_s']:.1f}", f"{row['epochs']:.3f}", f"{row[METRIC]:.4f}", "", ""])

    command = "python benchmarks/all_positions.py " + " ".join(shlex.quote(a) for a in argv)
    lines = [
        "# Training every position at once against RecBole's prefix samples",
        "",
        f"Machine: {machine_description()}; autograd anomaly mode off. Regenerate with `{command.strip()}`.",
        "",
        "Same process, data, split, initial weights, optimizer and evaluator for both regimes; each model at",
        "its default settings (RecBole's property file for SASRec, the plugin's for LRURec; each dataset's",
        "MAX_ITEM_LIST_LENGTH). RecBole's batch is `train_batch_size` samples of one target; the",
        f"all-position batch is {args.windows} windows of up to L targets. Step times alternate between the",
        "regimes (median of the timed steps); an epoch is the median step time x the steps of an epoch.",
        "",
        "## Seconds per epoch",
        "",
        "| dataset | L | model | regime | batch | steps/epoch | targets/epoch | s/step | s/epoch | ratio |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (dataset, model), (configs, timing, _) in results.items():
        base = timing[0]["epoch_s"]
        for row in timing:
            lines.append(
                f"| {dataset} | {configs['L']} | {model} | {row['regime']} | {row['batch']} | {row['steps_per_epoch']} | "
                f"{row['targets_per_epoch']:,} | {row['step_s']:.3f} | {row['epoch_s']:.1f} | {row['epoch_s'] / base:.3f}x |"
            )
    lines += ["", f"## Validation {METRIC} against training seconds", "",
              "Training time only (validation excluded); `epochs` is how many epochs of its own regime a run had trained.", ""]
    for (dataset, model), (configs, _, curves) in results.items():
        lines += [f"**{dataset}, {model}** ({configs['users']:,} users, {configs['items']:,} items, "
                  f"{configs['windows']:,} windows)", "", "| regime | " + " | ".join(
                      f"{r['train_s']:.0f} s" for r in curves[REGIMES[0]]) + " |",
                  "|---|" + "---|" * len(curves[REGIMES[0]])]
        for regime, rows in curves.items():
            lines.append(f"| {regime} | " + " | ".join(f"{r[METRIC]:.4f} ({r['epochs']:.2f} ep)" for r in rows) + " |")
        lines.append("")
    with open(args.output + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    plot(results, args.output + ".png")


def plot(results, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no plot (pip install -e '.[plot]')")
        return
    datasets = sorted({d for d, _ in results}, key=[d for d, _ in results].index)
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 4), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        for (d, model), (_, _, curves) in results.items():
            if d != dataset:
                continue
            for regime, style in zip(REGIMES, ("--", "-")):
                rows = curves[regime]
                ax.plot([r["train_s"] for r in rows], [r[METRIC] for r in rows], style, marker="o", label=f"{model}, {regime}")
        ax.set_title(dataset)
        ax.set_xlabel("training seconds")
        ax.set_ylabel(f"validation {METRIC}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    results = {}
    for i, dataset in enumerate(args.datasets):
        budget = args.budget[min(i, len(args.budget) - 1)]
        for model in args.models:
            results[(dataset, model)] = benchmark(dataset, model, budget, args)
            write_outputs(results, args, argv)  # partial tables survive an interruption
    return 0


if __name__ == "__main__":
    sys.exit(main())
