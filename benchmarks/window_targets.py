"""Which training targets each all-position regime trains: ours against the official LRURec cut.

    python benchmarks/window_targets.py --data_path ../shared/datasets \\
        --dataset ml-1m-lru=200 --dataset video-lru=50 --dataset beauty-lru=50 \\
        --output benchmarks/results/window_targets.md

A count over the atomic files, no training; positions are indices into each user's sequence.

- **ours** (``train_all_positions``): RecBole's leave-one-out split of the prefix rows (a user with
  n items has the targets 1 .. n-1; the last two go to validation and test, only one when n = 3,
  none when n = 2), then :func:`recbole_linear.all_positions.cut_windows` over the training part:
  every training target exactly once, each with at least one item of context;
- **official** (LRURec's ``dataloader/sas.py``): the training sequence is every item but the last
  two (all items of a user with fewer than 3); one shorter than ``2 L`` is one sample whose labels
  are its last ``L`` items (all of them if it has at most ``L``, the first then predicted from an
  empty context); a longer one is cut from the end into windows of ``L`` items, each with its
  first label predicted from an empty context, and the leftover head (fewer than ``L`` items) is
  dropped.

The first table gives both totals, the official labels predicted from an empty context, and our
targets the official code never trains (the oldest items of long users, before its last
sample or in its dropped head).

The second counts, per epoch, what trains the read-out position a test user's full window uses
(position ``L - 1``: the test input, every item but the last, has at least ``L`` items), which
matters for a model with absolute position embeddings (SASRec): with RecBole's right padding it
is trained by our full windows (their last target) and by RecBole's prefix rows whose input is
cut to ``L`` items; with the official left padding, by the last label of every official sample.
Our windows are counted without overlap (``train_window_overlap: 0``, the default).
"""
import argparse
import os
import sys
from collections import defaultdict

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

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


def our_training_length(n_items):
    """Items in a user's training part under RecBole's leave-one-out of its ``n - 1`` prefix rows:
    the rows keep ``min(2, rows - 1)`` back for validation and test (``_split_index_by_leave_one_out``)."""
    rows = n_items - 1
    if rows < 1:
        return 0
    return rows - min(2, rows - 1) + 1  # the training rows' targets and the first item


def our_windows(n_items, max_len):
    """Our windows of one user: :func:`cut_windows` over RecBole's training part (positions)."""
    return cut_windows(np.arange(our_training_length(n_items)), max_len)


def trained_positions(windows):
    """Positions a user's windows train (position 0, the first item, is never a target)."""
    return {int(p) for _, targets in windows for p in targets if p != 0}


def our_targets(n_items, max_len):
    return trained_positions(our_windows(n_items, max_len))


def official_labels(length, max_len):
    """(positions labelled, positions labelled from an empty context) in one official training
    sequence of ``length`` items."""
    if length < 2 * max_len:
        kept = min(length, max_len)
        return set(range(length - kept, length)), ({0} if length <= max_len and length else set())
    start = length - (length // max_len) * max_len  # the head before it is dropped
    return set(range(start, length)), set(range(start, length, max_len))


def official_samples(length, max_len):
    """Samples of one official training sequence of ``length`` items (see :func:`official_labels`)."""
    if length < 2 * max_len:
        return 1 if length else 0
    return length // max_len


def count(sequences, max_len):
    totals = dict(tested_users=0, windows=0, ours=0, official=0, empty_context=0, never_official=0,
                  test_full=0, ours_last=0, prefix_last=0, official_last=0)
    for items in sequences.values():
        n = len(items)
        totals["tested_users"] += n >= 3
        windows = our_windows(n, max_len)  # cut once: counted, then their targets
        ours = trained_positions(windows)
        totals["windows"] += len(windows)
        labels, empty = official_labels(n - 2 if n >= 3 else n, max_len)
        totals["ours"] += len(ours)
        totals["official"] += len(labels)
        totals["empty_context"] += len(empty)
        totals["never_official"] += len(ours - labels)
        totals["test_full"] += n >= 3 and n - 1 >= max_len
        totals["ours_last"] += sum(len(inputs) == max_len for inputs, _ in windows)
        totals["prefix_last"] += max(0, our_training_length(n) - max_len)  # targets t >= L: input cut to L
        totals["official_last"] += official_samples(n - 2 if n >= 3 else n, max_len)
    return totals


def to_markdown(results, command):
    lines = [
        "# Training targets: our all-position windows against the official LRURec cut",
        "",
        "Counted over the atomic files; `benchmarks/window_targets.py` explains both cuts. Tested users:",
        "those with at least 3 items, the same in both codes.",
        "",
        "| dataset | L | tested users | our windows | our targets | official labels | official, from an empty context "
        "| ours the official never trains | official / ours |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, max_len, t in results:
        lines.append(
            f"| {name} | {max_len} | {t['tested_users']:,} | {t['windows']:,} | {t['ours']:,} | {t['official']:,} | {t['empty_context']:,} "
            f"| {t['never_official']:,} ({t['never_official'] / t['ours']:.1%}) | {t['official'] / t['ours']:.3f} |"
        )
    lines += [
        "",
        "Read-out position `L − 1` (0-based), per epoch: test users whose input fills the window, and the",
        "training targets read out at that position: our full windows' last targets and RecBole's prefix rows",
        "with at least `L` items of input (both right-padded), the official samples' last labels (left-padded).",
        "",
        "| dataset | L | test users with a full window | ours | RecBole prefixes | official samples |",
        "|---|---|---|---|---|---|",
    ]
    for name, max_len, t in results:
        lines.append(
            f"| {name} | {max_len} | {t['test_full']:,} ({t['test_full'] / t['tested_users']:.1%}) "
            f"| {t['ours_last']:,} ({t['ours_last'] / t['ours']:.2%}) | {t['prefix_last']:,} ({t['prefix_last'] / t['ours']:.2%}) "
            f"| {t['official_last']:,} ({t['official_last'] / t['official']:.2%}) |"
        )
    lines += ["", "Shares are of the tested users, of our targets (ours and RecBole's prefixes, which train the same", "targets) and of the official labels.", "", "Regenerate:", "", "```", command, "```"]
    return "\n".join(lines) + "\n"


def dataset_argument(data_path, item, prog):
    """``(name, max_len, atomic file)`` of a ``--dataset NAME=MAX_LEN`` argument; one-line exit if bad."""
    name, sep, max_len = item.partition("=")
    if not sep or not max_len.isdigit() or int(max_len) < 1:
        raise SystemExit(f"{prog}: --dataset must be NAME=MAX_LEN, got {item!r}")
    path = os.path.join(data_path, name, f"{name}.inter")
    if not os.path.isfile(path):
        raise SystemExit(f"{prog}: no atomic file {path}")
    return name, int(max_len), path


def write_table(output, text):
    """Write the Markdown ``text`` to ``output`` (creating its folder) and print it."""
    os.makedirs(os.path.dirname(output) or ".", exist_ok=True)
    with open(output, "w") as f:
        f.write(text)
    print(text, end="")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_path", required=True)
    parser.add_argument("--dataset", action="append", required=True, help="NAME=MAX_LEN, repeatable")
    parser.add_argument("--output", required=True, help="Markdown file to write")
    args = parser.parse_args(argv)
    results = []
    for item in args.dataset:
        name, max_len, path = dataset_argument(args.data_path, item, "window_targets")
        results.append((name, max_len, count(read_sequences(path), max_len)))
    command = f"python benchmarks/window_targets.py --data_path {args.data_path} " + " ".join(
        f"--dataset {item}" for item in args.dataset
    ) + f" --output {args.output}"
    write_table(args.output, to_markdown(results, command))


if __name__ == "__main__":
    main()
