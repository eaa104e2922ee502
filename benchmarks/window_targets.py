"""Which training targets each all-position regime trains: ours against the official LRURec cut.

    python benchmarks/window_targets.py --data_path ../shared/datasets \\
        --dataset ml-1m-lru=200 --dataset video-lru=50 --dataset beauty-lru=50 \\
        --output benchmarks/results/window_targets.md

A count over the atomic files, no training. Per user with at least 3 items (the users that have a
validation and a test item in both codes), the training sequence is every item but the last two.

- **ours** (``train_all_positions``): :func:`recbole_linear.all_positions.cut_windows`, every item
  after the first a target exactly once, each with at least one item of context;
- **official** (LRURec's ``dataloader/sas.py``, as described in the project's reference brief): a
  sequence shorter than ``2 L`` is one sample whose labels are its last ``L`` items (all of them if
  it has at most ``L``, the first then predicted from an empty context); a longer one is cut from
  the end into windows of ``L`` items, each with its first label predicted from an empty context,
  and the leftover head is dropped.

The table gives both totals, the official targets predicted from an empty context, and our
targets the official code never trains (the heads it drops), which are the oldest items of long
users.
"""
import argparse
import os
import sys
from collections import defaultdict

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from recbole_linear.all_positions import cut_windows  # noqa: E402


def read_sequences(path):
    """{user: items in timestamp order} from an atomic ``.inter`` file (user, item, timestamp)."""
    rows = defaultdict(list)
    with open(path) as f:
        header = f.readline().rstrip("\n").split("\t")
        columns = [name.split(":")[0] for name in header]
        u, i, t = columns.index("user_id"), columns.index("item_id"), columns.index("timestamp")
        for line in f:
            fields = line.rstrip("\n").split("\t")
            rows[fields[u]].append((float(fields[t]), fields[i]))
    return {user: [item for _, item in sorted(pairs)] for user, pairs in rows.items()}


def official_labels(length, max_len):
    """(labels trained, labels predicted from an empty context) for one training sequence."""
    if length < 2 * max_len:
        return min(length, max_len), int(length <= max_len)
    windows = length // max_len
    return windows * max_len, windows


def count(sequences, max_len):
    totals = dict(users=0, ours=0, official=0, empty_context=0, dropped=0)
    for items in sequences.values():
        if len(items) < 3:
            continue
        train = items[:-2]
        totals["users"] += 1
        ours = sum(int((targets != 0).sum()) for _, targets in cut_windows(list(range(1, len(train) + 1)), max_len))
        trained, empty = official_labels(len(train), max_len)
        totals["ours"] += ours
        totals["official"] += trained
        totals["empty_context"] += empty
        # the official labels are the last ones; the items before them are never a target there
        totals["dropped"] += len(train) - trained
    return totals


def to_markdown(results, command):
    lines = [
        "# Training targets: our all-position windows against the official LRURec cut",
        "",
        "Counted over the atomic files (users with at least 3 items; training sequence = all items but",
        "the last two). `benchmarks/window_targets.py` explains both cuts.",
        "",
        "| dataset | L | users | our targets | official targets | official, empty context "
        "| official never trains | official / ours |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, max_len, t in results:
        lines.append(
            f"| {name} | {max_len} | {t['users']:,} | {t['ours']:,} | {t['official']:,} | {t['empty_context']:,} "
            f"| {t['dropped']:,} ({t['dropped'] / t['ours']:.1%} of ours) | {t['official'] / t['ours']:.3f} |"
        )
    lines += ["", "Regenerate:", "", "```", command, "```"]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_path", required=True)
    parser.add_argument("--dataset", action="append", required=True, help="NAME=MAX_LEN, repeatable")
    parser.add_argument("--output", required=True, help="Markdown file to write")
    args = parser.parse_args(argv)
    results = []
    for item in args.dataset:
        name, sep, max_len = item.partition("=")
        if not sep or not max_len.isdigit() or int(max_len) < 1:
            raise SystemExit(f"window_targets: --dataset must be NAME=MAX_LEN, got {item!r}")
        path = os.path.join(args.data_path, name, f"{name}.inter")
        if not os.path.isfile(path):
            raise SystemExit(f"window_targets: no atomic file {path}")
        results.append((name, int(max_len), count(read_sequences(path), int(max_len))))
    command = f"python benchmarks/window_targets.py --data_path {args.data_path} " + " ".join(
        f"--dataset {item}" for item in args.dataset
    ) + f" --output {args.output}"
    text = to_markdown(results, command)
    os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
    with open(args.output, "w") as f:
        f.write(text)
    print(text, end="")


if __name__ == "__main__":
    main()
