"""benchmarks/paper_table.py: a paper's table beside finished runs, from runs.csv files alone."""
import csv
import importlib.util
import os

import numpy as np
import pytest
import yaml
from scipy.stats import ttest_ind, wilcoxon

from tests.conftest import ROOT

_spec = importlib.util.spec_from_file_location("paper_table", os.path.join(ROOT, "benchmarks", "paper_table.py"))
paper_table = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(paper_table)

METRICS = ["recall@10", "ndcg@10"]


def _write_runs(folder, model, per_seed, users=40, status="ok"):
    """A compare-like folder: runs.csv and per_user/<run_id>.npz, one run per seed; returns the
    per-user arrays {seed: values}."""
    os.makedirs(folder / "per_user", exist_ok=True)
    rng = np.random.default_rng(len(model) + len(per_seed))
    rows, arrays = [], {}
    for seed, level in per_seed.items():
        values = np.clip(rng.random(users) * 2 * level, 0, 1)
        arrays[seed] = values
        run_id = f"{model}-seed{seed}-abcd1234"
        np.savez(folder / "per_user" / f"{run_id}.npz", user=np.arange(users).astype(str), **{"ndcg@10": values})
        rows.append({"run_id": run_id, "model": model, "seed": str(seed), "status": status,
                     "test_recall@10": f"{2 * values.mean():.6f}", "test_ndcg@10": f"{values.mean():.6f}",
                     "per_user_file": f"per_user/{run_id}.npz"})
    path = folder / "runs.csv"
    existing = list(csv.DictReader(open(path))) if path.exists() else []
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(existing + rows)
    return arrays


def _spec_file(tmp_path, rows, leads=()):
    spec = {"title": "Toy table", "metrics": METRICS, "rows": rows, "leads": list(leads),
            "not_run": ["Dataset Z: no files."]}
    path = tmp_path / "table.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_table_means_gaps_and_both_tests(tmp_path):
    ours = _write_runs(tmp_path / "toy", "Ours", {1: 0.30, 2: 0.32, 3: 0.31})
    base = _write_runs(tmp_path / "toy", "Base", {1: 0.20, 2: 0.21, 3: 0.19})
    spec_path = _spec_file(tmp_path, [
        {"id": "ours", "dataset": "Toy", "model": "Ours", "trained": "lr 1e-3", "runs": "toy/runs.csv",
         "run_ids": [f"Ours-seed{s}-abcd1234" for s in (1, 2, 3)], "paper": [0.5, 0.3]},
        {"id": "base", "dataset": "Toy", "model": "Base", "trained": "defaults", "runs": "toy/runs.csv",
         "run_ids": ["Base-seed1-abcd1234"], "paper": [0.4, 0.2]},
        {"id": "base3", "dataset": "Toy", "model": "Base", "trained": "3 seeds", "runs": "toy/runs.csv",
         "run_ids": [f"Base-seed{s}-abcd1234" for s in (1, 2, 3)], "paper": [0.4, 0.2]},
    ], leads=[{"model": "ours", "over": "base"},
              {"model": "ours", "over": "base3", "label": "Ours over Base (3 seeds)"}])
    output = tmp_path / "out" / "table"
    os.makedirs(output.parent)
    paper_table.main([str(spec_path), "--output", str(output)])

    per_seed = [float(f"{v.mean():.6f}") for v in ours.values()]
    mean, std = np.mean(per_seed), np.std(per_seed, ddof=1)
    md = (tmp_path / "out" / "table.md").read_text()
    assert md.startswith("# Toy table")
    gap = 100 * (mean / 0.3 - 1)
    assert f"| Toy | Ours: lr 1e-3 | 3 (1, 2, 3) | " in md
    assert f"{mean:.4f} ± {std:.4f} / .30000 ({gap:+.1f}%)".replace("-", "−") in md
    base_one = float(f"{base[1].mean():.6f}")
    assert f"{base_one:.4f} / .20000 (" in md  # one seed: no ± part
    assert "- Dataset Z: no files." in md
    assert "| Toy | Ours over Base, NDCG@10 | " in md  # no label: the two rows' model names
    assert "| Toy | Ours over Base (3 seeds), NDCG@10 | " in md  # the spec's label

    table = paper_table.build(paper_table.load_spec(spec_path), str(tmp_path))
    lead_one, lead_three = table["leads"]
    assert lead_one["ours"] == pytest.approx(mean / base_one - 1)
    assert lead_one["paper"] == pytest.approx(0.3 / 0.2 - 1)
    assert lead_one["p_seeds"] is None and "n/a (needs 2 seeds each)" in md  # Base has one seed there
    seed_averaged = np.mean(list(ours.values()), axis=0)
    assert lead_one["p_users"] == pytest.approx(wilcoxon(seed_averaged, base[1]).pvalue)
    assert lead_three["p_users"] == pytest.approx(wilcoxon(seed_averaged, np.mean(list(base.values()), axis=0)).pvalue)
    base_seeds = [float(f"{v.mean():.6f}") for v in base.values()]
    assert lead_three["p_seeds"] == pytest.approx(ttest_ind(per_seed, base_seeds, equal_var=False).pvalue)
    assert lead_three["users"] == 40

    rows = list(csv.DictReader(open(tmp_path / "out" / "table.csv")))
    assert [r["model"] for r in rows] == ["Ours", "Base", "Base"]
    assert float(rows[0]["ndcg@10_mean"]) == pytest.approx(mean, abs=1e-6)
    assert float(rows[0]["ndcg@10_std"]) == pytest.approx(std, abs=1e-6) and rows[1]["ndcg@10_std"] == ""
    # the regenerate command in the file names the paths relative to where it ran, never absolute
    assert f"python benchmarks/paper_table.py {os.path.relpath(spec_path)} --output {os.path.relpath(output)}" in md


def test_missing_or_unfinished_runs_stop_with_one_line(tmp_path):
    _write_runs(tmp_path / "toy", "Ours", {1: 0.3})
    _write_runs(tmp_path / "toy", "Broken", {1: 0.3}, status="failed")
    row = {"id": "ours", "dataset": "Toy", "model": "Ours", "runs": "toy/runs.csv", "paper": [0.5, 0.3]}
    for run_ids, message in ((["Ours-seed9-abcd1234"], "is not in"), (["Broken-seed1-abcd1234"], "did not finish")):
        spec = _spec_file(tmp_path, [dict(row, run_ids=run_ids)])
        with pytest.raises(SystemExit, match=message):
            paper_table.build(paper_table.load_spec(spec), str(tmp_path))
    spec = _spec_file(tmp_path, [dict(row, run_ids=["Ours-seed1-abcd1234"], paper=[0.5])])
    with pytest.raises(SystemExit, match="1 paper values for 2 metrics"):
        paper_table.load_spec(spec)
    spec = _spec_file(tmp_path, [dict(row, run_ids=["Ours-seed1-abcd1234"])], leads=[{"model": "ours", "over": "nope"}])
    with pytest.raises(SystemExit, match="row 'nope'"):
        paper_table.build(paper_table.load_spec(spec), str(tmp_path))


def test_committed_table3_is_what_its_runs_give(tmp_path):
    """results/lru-paper-table3.md and the reproduction's summary hold exactly the table that the
    committed spec and runs.csv files render."""
    spec_path = os.path.join(ROOT, "results", "lru-paper-table3.yaml")
    spec = paper_table.load_spec(spec_path)
    rendered = paper_table.to_markdown(spec, paper_table.build(spec, os.path.dirname(spec_path)))
    table_lines = [line for line in rendered.splitlines() if line.startswith("| ")]
    assert len(table_lines) >= 2 + len(spec["rows"])
    for name in ("lru-paper-table3.md", "lru-paper-reproduction.md"):
        committed = open(os.path.join(ROOT, "results", name), encoding="utf-8").read()
        missing = [line for line in table_lines if line not in committed]
        assert not missing, f"results/{name} differs from the render of lru-paper-table3.yaml: {missing[0]}"


def test_committed_dropout_search_table_is_what_its_trials_give():
    """results/video-lru-dropout-search.md lists every finished trial of its two trials.csv files,
    each with the CSV's validation, best epoch (epochs − 1 − 11 validations × 4) and test metrics;
    no row is called finished without a CSV row behind it."""
    folder = os.path.join(ROOT, "results", "video-lru-dropout-search")
    text = open(folder + ".md", encoding="utf-8").read()
    table = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if line.startswith("| SASRec |") or line.startswith("| LRURec |"):
            table[cells[0], cells[1]] = cells
    dropout_key = {"SASRec": "hidden_dropout_prob", "LRURec": "dropout_prob"}
    finished = set()
    for model, key in dropout_key.items():
        for trial in csv.DictReader(open(os.path.join(folder, f"{model}-trials.csv"))):
            cells = table.get((model, trial[key]))
            assert cells is not None, f"{model} at dropout {trial[key]} finished but is not in the table"
            best_epoch = int(trial["epochs_trained"]) - 1 - 11 * 4
            expected = ["finished", f"{float(trial['valid_score']):.4f} ({best_epoch})"] + [
                f"{float(trial[f'test_{m}']):.4f}" for m in ("ndcg@10", "recall@10", "ndcg@20", "recall@20")
            ] + [trial["epochs_trained"]]
            assert cells[2:] == expected, f"{model} at dropout {trial[key]}: table {cells[2:]}, CSV {expected}"
            finished.add((model, trial[key]))
    called_finished = {name for name, cells in table.items() if cells[2] == "finished"}
    assert called_finished == finished
    done = len(finished)
    status = "all 8 points" if done == 8 else f"{done} of 8 points"
    assert f"**Status: {status} finished.**" in text
