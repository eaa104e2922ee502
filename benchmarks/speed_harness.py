"""The harness of the per-model speed scripts (``lrurec_speed``, ``linrec_speed``, ``glintru_speed``).

A speed script says what it times: its models and their settings, the lengths, the measurements
particular to it, and the report's text. This module does the rest, the same way for all of them:

- the command line's shared flags (``--lengths``, ``--batch-size``);
- models built as RecBole builds them, on a stand-in dataset (``common.SyntheticDataset``);
- synthetic batches: right-padded random lengths, or full-length histories;
- interleaved timing: every round runs every job once, so that a burst of load from other
  processes hits all of them alike; warm-up rounds are untimed;
- the 1-minute load average and wall time around the run, the machine's line;
- markdown tables and writing the report.

The step functions timed (``full_sort_predict`` under ``no_grad``; loss + backward + Adam step)
are ``common.inference_step`` and ``common.train_step``.
"""
import argparse
import os
import platform
import statistics
import time

import torch
from recbole.data.interaction import Interaction

# common puts the repository root on sys.path, registers the plugin models and turns torch's
# anomaly mode off, as training runs do
from common import SyntheticDataset, base_config, cpu_name, timed

ITEM_SEQ, ITEM_SEQ_LEN, TARGET_ITEM = "item_id_list", "item_length", "item_id"


# ---------------------------------------------------------------- command line


def argument_parser(doc, lengths, batch_size, full_doc=False):
    """A parser with the flags every speed script has; the script adds its own.

    ``doc`` is the script's docstring: its first line is the description, or all of it
    (verbatim) with ``full_doc``.
    """
    if full_doc:
        parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    else:
        parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=lengths)
    parser.add_argument("--batch-size", type=int, default=batch_size)
    return parser


# ---------------------------------------------------------------- models and batches


def build(model_class, keys, n_items, max_len):
    """``model_class(config, dataset)`` on CPU with exactly ``keys`` as the model's settings."""
    config = base_config(max_len, "cpu")
    config.update(keys)
    return model_class(config, SyntheticDataset(n_items))


def right_padded_batch(n_items, batch_size, max_len, generator, min_len=1):
    """Right-padded sequences as RecBole builds them, lengths uniform in [min_len, max_len]."""
    lengths = torch.randint(min_len, max_len + 1, (batch_size,), generator=generator)
    seq = torch.randint(1, n_items, (batch_size, max_len), generator=generator)
    seq = seq.masked_fill(torch.arange(max_len).unsqueeze(0) >= lengths.unsqueeze(1), 0)
    target = torch.randint(1, n_items, (batch_size,), generator=generator)
    return Interaction({ITEM_SEQ: seq, ITEM_SEQ_LEN: lengths, TARGET_ITEM: target})


def full_length_batch(n_items, batch_size, seq_len, seed=0):
    """Full-length histories (no padding): the long-sequence case."""
    generator = torch.Generator().manual_seed(seed)
    return Interaction(
        {
            ITEM_SEQ: torch.randint(1, n_items, (batch_size, seq_len), generator=generator),
            ITEM_SEQ_LEN: torch.full((batch_size,), seq_len, dtype=torch.long),
            TARGET_ITEM: torch.randint(1, n_items, (batch_size,), generator=generator),
        }
    )


# ---------------------------------------------------------------- timing


def interleaved_times(jobs, reps, warmup_rounds=0, alternate=False):
    """{name: [seconds of each timed round]} for ``jobs`` ({name: callable without arguments}).

    ``warmup_rounds`` untimed rounds, then ``reps`` timed ones; every round runs every job once,
    in the order of ``jobs`` (reversed on odd timed rounds with ``alternate``).
    """
    for _ in range(warmup_rounds):
        for job in jobs.values():
            job()
    names = list(jobs)
    times = {name: [] for name in names}
    for rep in range(reps):
        for name in names[::-1] if alternate and rep % 2 == 1 else names:
            times[name].append(timed(jobs[name]))
    return times


def medians(times):
    """{name: median} of ``interleaved_times``' lists."""
    return {name: statistics.median(values) for name, values in times.items()}


class RunClock:
    """Wall time and the 1-minute load average around a whole run (the machine may be shared)."""

    def __init__(self):
        self.load_before = os.getloadavg()[0]
        self.started = time.perf_counter()
        self.load_after = self.seconds = None

    def stop(self):
        self.load_after = os.getloadavg()[0]
        self.seconds = time.perf_counter() - self.started
        return self


def machine_line():
    """CPU, logical cores and the OS, e.g. ``AMD EPYC, 2 logical cores, Linux 6.1``."""
    return f"{cpu_name()}, {os.cpu_count()} logical cores, {platform.system()} {platform.release()}"


# ---------------------------------------------------------------- report


def table_row(cells):
    return "|" + "|".join(f" {cell} " if cell != "" else " " for cell in cells) + "|"


def markdown_table(columns, rows, align=None):
    """The lines of a markdown table. ``align``: one letter per column, ``r`` right-aligns it."""
    align = align or "l" * len(columns)
    separator = "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"
    return [table_row(columns), separator] + [table_row([str(cell) for cell in row]) for row in rows]


def write_report(path, lines):
    """Write ``lines`` (joined by newlines) to ``path`` and print them."""
    text = "\n".join(lines)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    print(text)
