"""Synthetic interaction logs in RecBole's atomic format, for benchmarks at any scale.

``write_synthetic_dataset(folder, name, n_users, n_items, n_interactions, seed)`` writes
``folder/name/name.inter`` (``user_id:token``, ``item_id:token``, ``timestamp:float``) with:

- **lengths** with a heavy tail: each user's share of the interactions is log-normal
  (``length_sigma``, default 1.2, about ML-20M's spread: median ~0.5x the mean, the longest users
  tens of times the mean), plus ``min_length`` (default 5) interactions each, so that RecBole's
  leave-one-out split leaves every user at least 3 training items;
- **popularity** that follows Zipf's law: the item of popularity rank ``k`` is drawn with
  probability proportional to ``1 / k ** zipf_exponent`` (default 1.0), the ranks shuffled over
  the item ids;
- **time** as the position in the user's sequence (0, 1, 2, ...), as in the LRURec paper's splits;
- with ``every_item=True`` (the large-catalogue shapes), each item id appears at least once: a
  random ``n_items`` of the interactions are replaced by a permutation of all ids, so RecBole's
  catalogue has exactly ``n_items`` items (a Zipf draw alone leaves most of a million ids unseen).

Everything is drawn from ``numpy.random.default_rng(seed)``: the same arguments write the same file.

    python benchmarks/synthetic_data.py --folder=benchmarks/synthetic --name=syn-2m --users=14000 --items=27000 --interactions=2000000
"""
import argparse
import os

import numpy as np

HEADER = "user_id:token\titem_id:token\ttimestamp:float\n"
# named shapes used by the benchmarks: (users, items, interactions)
SHAPES = {
    "syn-2m": (14_000, 27_000, 2_000_000),  # the 2 M-interaction case of the data-scale issue
    "syn-5m": (35_000, 27_000, 5_000_000),
    "syn-ml20m": (138_493, 26_744, 20_000_263),  # MovieLens-20M's users, items and interactions
    "syn-2m-1m-items": (14_000, 1_000_000, 2_000_000),  # a million-item catalogue (every item seen once at least)
}
EVERY_ITEM = {"syn-2m-1m-items"}  # shapes written with every_item=True


def user_lengths(rng, n_users, n_interactions, min_length=5, length_sigma=1.2):
    """Per-user sequence lengths summing to ``n_interactions``, each at least ``min_length``."""
    if n_interactions < n_users * min_length:
        raise ValueError(f"{n_interactions} interactions cannot give {n_users} users {min_length} each")
    shares = rng.lognormal(0.0, length_sigma, n_users)
    free = n_interactions - n_users * min_length
    lengths = np.floor(shares / shares.sum() * free).astype(np.int64) + min_length
    remainder = n_interactions - int(lengths.sum())
    lengths[rng.choice(n_users, size=remainder, replace=False)] += 1
    return lengths


def zipf_items(rng, n_items, size, zipf_exponent=1.0):
    """``size`` item ids in 1..n_items, drawn with Zipf popularity over a random ranking of the ids."""
    weights = 1.0 / np.arange(1, n_items + 1) ** zipf_exponent
    ranked = rng.choice(n_items, size=size, p=weights / weights.sum())
    return rng.permutation(n_items)[ranked] + 1


def write_synthetic_dataset(
    folder, name, n_users, n_items, n_interactions, seed=0, min_length=5, length_sigma=1.2, zipf_exponent=1.0,
    every_item=None,
):
    """Write ``folder/name/name.inter``; returns its path. Skips the work if the file exists."""
    path = os.path.join(folder, name, f"{name}.inter")
    if os.path.isfile(path):
        return path
    rng = np.random.default_rng(seed)
    lengths = user_lengths(rng, n_users, n_interactions, min_length, length_sigma)
    users = np.repeat(np.arange(1, n_users + 1), lengths)
    positions = np.arange(n_interactions) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    items = zipf_items(rng, n_items, n_interactions, zipf_exponent)
    if every_item if every_item is not None else name in EVERY_ITEM:
        if n_interactions < n_items:
            raise ValueError(f"{n_interactions} interactions cannot show each of {n_items} items")
        items[rng.choice(n_interactions, size=n_items, replace=False)] = rng.permutation(n_items) + 1
    os.makedirs(os.path.dirname(path), exist_ok=True)
    partial = path + ".partial"
    with open(partial, "w") as f:
        f.write(HEADER)
        chunk = 1_000_000
        for start in range(0, n_interactions, chunk):
            rows = np.stack([users[start : start + chunk], items[start : start + chunk], positions[start : start + chunk]], 1)
            f.write("\n".join(map("\t".join, rows.astype(str))) + "\n")
    os.replace(partial, path)  # a killed run leaves no half-written dataset behind
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--users", type=int)
    parser.add_argument("--items", type=int)
    parser.add_argument("--interactions", type=int)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    users, items, interactions = SHAPES.get(args.name, (args.users, args.items, args.interactions))
    print(write_synthetic_dataset(args.folder, args.name, users, items, interactions, args.seed))


if __name__ == "__main__":
    main()
