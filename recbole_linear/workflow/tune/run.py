"""One tuning run: its trials, its files and the hyperopt driver (RecBole's ``HyperTuning``).

:class:`TuningRun` is a validated search (built by :func:`recbole_linear.workflow.tune.prepare`):
it serves stored trials from ``trials.csv``, trains the others through the objective, and writes
``trials.md``, ``best_params.yaml`` and the HTML display after every trial.
:class:`PluginHyperTuning` is RecBole's ``HyperTuning`` with the differences listed in
:mod:`recbole_linear.workflow.tune.command`. The command line, option checks and :func:`tune` live there.
"""
import hashlib
import logging
import math
import os
import re
import warnings
from functools import partial

import numpy as np
import yaml
from recbole.trainer.hyper_tuning import HyperTuning, exhaustive_search
from recbole.utils import set_color

from recbole_linear.resume import resume_file_for
from recbole_linear.workflow.tune.space import CSV_NAME, params_str, plain, tied_keys, trial_key
from recbole_linear.workflow.tune.store import TrialStore, execute_trial, quiet_import

MD_NAME, BEST_NAME = "trials.md", "best_params.yaml"
FIXED_NAME, LOG_NAME, HTML_NAME = "fixed_config.yaml", "tune.log", "tuning.html"
LOGGER_NAME = "recbole_linear.workflow.tune"


# --- one tuning run -----------------------------------------------------------------------
def yaml_dump(data, header=""):
    body = yaml.safe_dump(plain(data), sort_keys=False, default_flow_style=False, allow_unicode=True)
    return "".join(f"# {line}\n" for line in header.splitlines()) + body


def yaml_round_trip(data):
    return yaml.safe_load(yaml.safe_dump(plain(data)))


def format_value(value, digits=4):
    if isinstance(value, float):
        return f"{value:.{digits}f}" if digits is not None else repr(value)
    return str(value)


class TuningRun:
    """A validated search: the space, the fixed settings, the output folder and the trial store."""

    def __init__(self, model, dataset, specs, params_file, algo, max_evals, early_stop, search_seed,
                 output_dir, display_file, tool, fixed, base_config, objective):
        self.model = model
        self.dataset = dataset
        self.specs = specs
        self.params_file = params_file
        self.algo = algo
        self.requested_evals = max_evals
        self.early_stop = early_stop
        self.search_seed = search_seed
        self.output_dir = output_dir
        self.display_file = display_file
        self.tool = tool
        self.fixed = fixed
        self.fixed_file = os.path.join(output_dir, FIXED_NAME)
        self.metric = base_config["valid_metric"].lower()
        self.bigger = bool(base_config["valid_metric_bigger"])
        self.checkpoint_dir = base_config["checkpoint_dir"]
        self.ties = tied_keys(model, specs)
        self.objective = objective
        self.store = TrialStore(os.path.join(output_dir, CSV_NAME))
        self.logger = logging.getLogger(LOGGER_NAME)
        self.trained = self.skipped = self.proposed = 0
        self.best = None
        self._space = None

    # --- parameters of a trial
    @property
    def space(self):
        if self._space is None:
            quiet_import("hyperopt")
            self._space = {spec.name: spec.hyperopt() for spec in self.specs}
        return self._space

    @property
    def grid_size(self):
        if all(spec.kind == "choice" for spec in self.specs):
            return math.prod(len(spec.args) for spec in self.specs)
        return None

    @property
    def max_evals(self):
        """Trials hyperopt is asked for: the grid for exhaustive, at most the grid for random."""
        if self.algo == "exhaustive":
            return self.grid_size
        if self.algo == "random" and self.grid_size is not None:
            return min(self.requested_evals, self.grid_size)
        return self.requested_evals

    def effective_params(self, raw):
        """hyperopt's point -> the trial's parameters (spec order, normalized, then tied keys)."""
        params = {spec.name: spec.normalize(raw[spec.name]) for spec in self.specs}
        for tied, source in self.ties.items():
            params[tied] = params[source]
        return params

    def checkpoint_file(self, params):
        # the folder is part of the name: the same trial tuned into two folders writes two files
        identity = os.path.abspath(self.output_dir) + trial_key(self.fixed) + trial_key(params)
        digest = hashlib.sha1(identity.encode("utf-8")).hexdigest()[:12]
        return os.path.join(self.checkpoint_dir, f"{self.model}-{self.dataset}-tune-{digest}.pth")

    def trial_files(self, params):
        """The trial's checkpoint and its resume file: a trial cut off mid-training continues from
        its last finished epoch on a rerun (a DDP trial starts afresh: ddp_objective_function)."""
        checkpoint = self.checkpoint_file(params)
        return {"saved_model_file": checkpoint, "resume_file": resume_file_for(checkpoint)}

    def hyperopt_algo(self):
        """The suggest function fmin uses (``max_evals`` says how many points)."""
        if self.algo == "bayes":
            return quiet_import("hyperopt.tpe").suggest
        # exhaustive: the whole grid; random: the same sampler, without replacement, capped
        return partial(exhaustive_search, nbMaxSucessiveFailures=1000)

    def rstate(self):
        """hyperopt's random state for fmin: RandomState up to 0.2.5, a Generator from 0.2.7."""
        hyperopt = quiet_import("hyperopt")
        version = tuple(int(p) for p in re.findall(r"\d+", hyperopt.__version__)[:3])
        return np.random.default_rng(self.search_seed) if version >= (0, 2, 7) else np.random.RandomState(self.search_seed)

    def proposed_points(self):
        """The points hyperopt proposes, without training (for Ray): the local search's points."""
        hyperopt = quiet_import("hyperopt")
        points = []

        def record(raw):
            points.append(self.effective_params(raw))
            return {"loss": 0.0, "status": hyperopt.STATUS_OK}

        hyperopt.fmin(record, self.space, algo=self.hyperopt_algo(), max_evals=self.max_evals,
                      rstate=self.rstate(), show_progressbar=False, return_argmin=False)
        unique = {}
        for params in points:
            unique.setdefault(trial_key(params), params)
        return list(unique.values())

    # --- trials
    def stored(self, params):
        return self.store.get(trial_key(params))

    def accept(self, params, record, number, total, skipped):
        """Book a finished (or stored) trial: append it, log one line, track the best."""
        if not skipped:
            record = self.store.add(record)
            self.trained += 1
            self._write_reports()
        else:
            self.skipped += 1
        if self.best is None or self._better(record, self.best):
            self.best = record
        self._log_trial(params, record, number, total, skipped)
        return record

    def _better(self, a, b):
        if math.isnan(b["valid_score"]):
            return not math.isnan(a["valid_score"])
        return a["valid_score"] > b["valid_score"] if self.bigger else a["valid_score"] < b["valid_score"]

    def loss(self, record):
        score = record["valid_score"]
        return -score if self.bigger else score

    def _log_trial(self, params, record, number, total, skipped):
        test = record["test_result"].get(self.metric)
        line = (
            set_color(f"trial {number}/{total}", "green")
            + f" [{params_str(params)}] "
            + set_color(f"valid {self.metric}", "blue") + f": {format_value(record['valid_score'])}"
            + f" (best {format_value(self.best['valid_score'])})"
            + (f", test {self.metric}: {format_value(test)}" if test is not None else "")
        )
        if skipped:
            line += ", " + set_color(f"skipped (stored as trial {record['trial']} in {CSV_NAME})", "yellow")
        else:
            line += ", " + set_color("time", "blue") + f": {record['seconds']:.2f}s"
        self.logger.info(line)

    # --- output files
    def sorted_records(self):
        def key(record):
            score = record["valid_score"]
            if math.isnan(score):
                return (1, 0.0, record["trial"])
            return (0, -score if self.bigger else score, record["trial"])

        return sorted(self.store.records, key=key)

    def _write_reports(self):
        records = self.sorted_records()
        if not records:
            return
        self._write_markdown(records)
        self._write_best(records[0])

    def write_outputs(self):
        self._write_reports()
        if self.display_file and self.store.records:
            write_display(self.store.records, self.display_file, self.model, self.dataset, self.metric, self.bigger)

    def _write_markdown(self, records):
        names = []
        for record in records:
            names += [n for n in record["params"] if n not in names]
        tests = []
        for record in records:
            tests += [m for m in record["test_result"] if m not in tests]
        order = "higher" if self.bigger else "lower"
        lines = [
            f"# {self.model} on {self.dataset}: {len(records)} trials",
            "",
            f"Sorted by the validation metric, valid {self.metric} ({order} is better); test metrics of the "
            f"best-validation checkpoint. Last search: {self.algo} over `{self.params_file}` "
            f"({self.tool}, seed {self.search_seed}). Fixed settings: `{FIXED_NAME}`; best parameters: "
            f"`{BEST_NAME}`; every column: `{CSV_NAME}`.",
            "",
            "| rank | trial | " + " | ".join(names) + f" | valid {self.metric} | "
            + " | ".join(f"test {m}" for m in tests) + " | weights | epochs | seconds | train seconds |",
            "|" + "---:|" * (2 + len(names) + 1 + len(tests) + 4),
        ]
        for rank, record in enumerate(records, 1):
            cells = [str(rank), str(record["trial"])]
            cells += [format_value(record["params"].get(n, ""), None) for n in names]
            cells.append(format_value(record["valid_score"]))
            cells += [format_value(record["test_result"].get(m, "")) for m in tests]
            cells += [
                f"{record['num_parameters']:,}" if record.get("num_parameters") is not None else "",
                str(record.get("epochs_trained") or ""),
                f"{record['seconds']:.1f}" if record.get("seconds") is not None else "",
                f"{record['train_seconds']:.1f}" if record.get("train_seconds") is not None else "",
            ]
            lines.append("| " + " | ".join(cells) + " |")
        atomic_write(os.path.join(self.output_dir, MD_NAME), "\n".join(lines) + "\n")

    def _write_best(self, best):
        test = ", ".join(f"{m} {format_value(v)}" for m, v in best["test_result"].items())
        header = (
            f"Best of {len(self.store)} trials for {self.model} on {self.dataset}: trial {best['trial']}, "
            f"valid {self.metric} {format_value(best['valid_score'])}; test {test}.\n"
            f"Use: python run_recbole_linear.py --model={self.model} --dataset={self.dataset} "
            f"--config_files=\"{os.path.join(self.output_dir, FIXED_NAME)} {os.path.join(self.output_dir, BEST_NAME)}\""
        )
        atomic_write(os.path.join(self.output_dir, BEST_NAME), yaml_dump(best["params"], header))

    # --- the local search
    def run_hyperopt(self):
        tuner = PluginHyperTuning(self)
        tuner.run()
        return tuner

    def summary(self):
        best = self.best
        if self.store.records:
            best = self.sorted_records()[0]
        return {
            "model": self.model,
            "dataset": self.dataset,
            "output_dir": self.output_dir,
            "best_params": best["params"] if best else None,
            "best_valid_score": best["valid_score"] if best else None,
            "best_valid_result": best["best_valid_result"] if best else None,
            "best_test_result": best["test_result"] if best else None,
            "best_trial": best["trial"] if best else None,
            "valid_metric": self.metric,
            "trials": list(self.store.records),
            "trained": self.trained,
            "skipped": self.skipped,
            "files": {
                "trials_csv": self.store.path,
                "trials_md": os.path.join(self.output_dir, MD_NAME),
                "best_params": os.path.join(self.output_dir, BEST_NAME),
                "fixed_config": self.fixed_file,
                "display": self.display_file,
                "log": os.path.join(self.output_dir, LOG_NAME),
            },
        }


def atomic_write(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def write_display(records, path, model, dataset, metric, bigger):
    """RecBole's display file: the valid score of every trial in finishing order (plotly HTML).

    RecBole's ``plot_hyper`` calls ``plotly.offline.plot``, which also opens a browser; this writes
    the same chart (plus the best score so far) with ``write_html`` (plotly.js from its CDN: a small file). Without
    plotly it writes a plain HTML table of the same data.
    """
    records = sorted(records, key=lambda r: r["trial"])
    numbers_ = [r["trial"] for r in records]
    scores = [r["valid_score"] for r in records]
    best, best_so_far = None, []
    for score in scores:
        if best is None or (score > best if bigger else score < best):
            best = score
        best_so_far.append(best)
    labels = [params_str(r["params"]) for r in records]
    title = f"{model} on {dataset}: hyperparameter tuning (valid {metric})"
    try:
        import plotly.graph_objs as go
    except ImportError:
        rows = "".join(
            f"<tr><td>{n}</td><td>{label}</td><td>{score:.4f}</td></tr>"
            for n, label, score in zip(numbers_, labels, scores)
        )
        atomic_write(path, f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title></head><body>"
                            f"<h1>{title}</h1><table><tr><th>trial</th><th>parameters</th><th>valid {metric}</th></tr>"
                            f"{rows}</table></body></html>\n")
        return
    fig = go.Figure(
        data=[
            go.Scatter(x=[str(n) for n in numbers_], y=scores, text=labels, mode="lines+markers",
                       marker=dict(color="green"), name=f"{model} tuning process"),
            go.Scatter(x=[str(n) for n in numbers_], y=best_so_far, mode="lines", line=dict(dash="dot"),
                       name="best so far"),
        ],
        layout=go.Layout(title=title, xaxis=dict(title="trials"), yaxis=dict(title=f"valid {metric}")),
    )
    tmp = path + ".tmp.html"
    fig.write_html(tmp, include_plotlyjs="cdn", full_html=True, auto_open=False)
    os.replace(tmp, path)


class PluginHyperTuning(HyperTuning):
    """RecBole's ``HyperTuning`` with a seeded ``fmin``, trials served from disk, one log line each."""

    def __init__(self, run):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
            super().__init__(
                run.objective,
                space=run.space,
                fixed_config_file_list=[run.fixed_file],
                display_file=run.display_file,
                algo=run.hyperopt_algo(),
                max_evals=run.max_evals,
                early_stop=max(run.early_stop, 1),
            )
        if run.early_stop <= 0:
            self.early_stop_fn = None
        self.tuning_run = run
        self.model = run.model

    def trial(self, params):
        import hyperopt

        run = self.tuning_run
        run.proposed += 1
        effective = run.effective_params(params)
        record = run.stored(effective)
        skipped = record is not None
        if not skipped:
            record = execute_trial(
                self.objective_function, effective, self.fixed_config_file_list,
                extra=run.trial_files(effective),
            )
        record = run.accept(effective, record, run.proposed, run.max_evals, skipped)
        # RecBole's bookkeeping, for callers that read it
        key = self.params2str(effective)
        self.params_list.append(key)
        self.score_list.append(record["valid_score"])
        self.params2result[key] = {
            "model": run.model, "best_valid_score": record["valid_score"], "valid_score_bigger": run.bigger,
            "best_valid_result": record["best_valid_result"], "test_result": record["test_result"],
        }
        if run.best is record:
            self.best_score, self.best_params, self.best_test_result = (
                record["valid_score"], effective, record["test_result"])
        return {"loss": run.loss(record), "status": hyperopt.STATUS_OK}

    def plot_hyper(self):
        run = self.tuning_run
        write_display(run.store.records, self.display_file, run.model, run.dataset, run.metric, run.bigger)

    def run(self):
        from hyperopt import fmin

        fmin(self.trial, self.space, algo=self.algo, max_evals=self.max_evals, early_stop_fn=self.early_stop_fn,
             rstate=self.tuning_run.rstate(), show_progressbar=False, return_argmin=False)


