"""Test NDCG@10 of finished runs, split by whether the user's test input fills the window.

    python benchmarks/per_user_by_length.py --data_path ../shared/datasets --dataset ml-1m-lru=200 \\
        --run LRURec=results/ml-1m-lru-paper/per_user/LRURec-seed2020-1d5b6105.npz \\
        --run SASRec=results/ml-1m-lru-paper/per_user/SASRec-seed2020-1d5b6105.npz \\
        --output results/ml-1m-lru-paper-by-length.md

Reads each run's per-user file (``per_user/<run_id>.npz``, written by ``compare``) and the
dataset's atomic file. A user of ``n`` items is tested on its last item from the ``n - 1`` before
it, cut to the last ``L``: with at least ``L`` of them the input fills the window and a model reads
its output at position ``L - 1``, the position ``benchmarks/window_targets.py`` counts the training
of. No model is run. Lengths are counted in the atomic file as it is, so this holds for datasets
that RecBole does not filter (the ``*-lru`` splits: ``user_inter_num_interval: ~``); ``MAX_LEN``
must be the runs' ``MAX_ITEM_LIST_LENGTH``. Each group's count is shown: a small group's mean is noisy.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

from window_targets import dataset_argument, read_sequences, write_table  # noqa: E402

METRIC = "ndcg@10"


def split_means(per_user, lengths, max_len):
    """``{group: (users, mean NDCG@10)}`` for ``all``, ``full`` (input of at least ``max_len``
    items) and ``shorter``; ``lengths`` maps a user token to its number of items."""
    users = [str(u) for u in per_user["user"]]
    missing = [u for u in users if u not in lengths]
    if missing:
        raise SystemExit(f"per_user_by_length: {len(missing)} users of the per-user file are not in the dataset, e.g. {missing[0]!r}")
    values = np.asarray(per_user[METRIC], dtype=float)
    full = np.array([lengths[u] - 1 >= max_len for u in users], dtype=bool)
    groups = {"all": np.ones_like(full), "full": full, "shorter": ~full}
    return {name: (int(mask.sum()), float(values[mask].mean()) if mask.any() else float("nan")) for name, mask in groups.items()}


def to_markdown(dataset, max_len, results, command):
    labels = {"all": "all tested users", "full": f"input fills the window (at least {max_len} items)",
              "shorter": f"shorter input (under {max_len} items)"}
    first = results[0][0]
    header = "| users | count | " + " | ".join(f"{name} NDCG@10" for name, _ in results)
    header += "".join(f" | {name} / {first}" for name, _ in results[1:]) + " |"
    lines = [
        f"# Test NDCG@10 by input length: {dataset}, L = {max_len}",
        "",
        "From the runs' per-user files; `benchmarks/per_user_by_length.py` explains the split.",
        "",
        header,
        "|---|---|" + "---|" * (2 * len(results) - 1),
    ]
    for group, label in labels.items():
        count = results[0][1][group][0]
        means = [split[group][1] for _, split in results]
        cells = [f"{m:.4f}" for m in means] + [f"{m / means[0]:.3f}" if means[0] else "—" for m in means[1:]]
        lines.append(f"| {label} | {count:,} | " + " | ".join(cells) + " |")
    lines += ["", "Regenerate:", "", "```", command, "```"]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_path", required=True)
    parser.add_argument("--dataset", required=True, help="NAME=MAX_LEN")
    parser.add_argument("--run", action="append", required=True, help="LABEL=PER_USER_NPZ, repeatable; the first is the reference")
    parser.add_argument("--output", required=True, help="Markdown file to write")
    args = parser.parse_args(argv)
    name, max_len, path = dataset_argument(args.data_path, args.dataset, "per_user_by_length")
    lengths = {user: len(items) for user, items in read_sequences(path).items()}
    results, user_sets = [], []
    for item in args.run:
        label, sep, npz = item.partition("=")
        if not sep or not os.path.isfile(npz):
            raise SystemExit(f"per_user_by_length: --run must be LABEL=PER_USER_NPZ of an existing file, got {item!r}")
        with np.load(npz) as per_user:
            results.append((label, split_means(per_user, lengths, max_len)))
            user_sets.append(sorted(str(u) for u in per_user["user"]))
    if any(users != user_sets[0] for users in user_sets):
        raise SystemExit("per_user_by_length: the runs did not test the same users")
    command = (f"python benchmarks/per_user_by_length.py --data_path {args.data_path} --dataset {args.dataset} "
               + " ".join(f"--run {item}" for item in args.run) + f" --output {args.output}")
    write_table(args.output, to_markdown(name, max_len, results, command))


if __name__ == "__main__":
    main()
