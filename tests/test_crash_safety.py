"""Faults: ``compare`` killed mid-run and rerun, two commands on one folder, a cut ``runs.csv``;
the folder lock; workers that die with their parent; checkpoint names unique per run."""
import contextlib
import csv
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import recbole_linear
from recbole_linear.workflow.compare import command as compare
from recbole_linear.workflow.compare import runner as compare_runner
from recbole_linear.workflow.compare import report
from recbole_linear.workflow.compare import summary
from recbole_linear.errors import ConfigError
from recbole_linear.workflow.common.folder_lock import LOCK_NAME, FolderLock, FolderLockedError
from recbole_linear.workflow.common.run_table import load_runs
from tests.conftest import ROOT, TINY_DATASET, tiny_cmd_args

SCRIPT = os.path.join(ROOT, "run_recbole_linear.py")
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def dead_pid():
    """The pid of a process that has exited (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def alive(pid):
    """Running (a zombie, dead but not reaped by a container's init, counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def worker_pids(spec_fragment):
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmdline = f.read().decode(errors="replace")
            except OSError:
                continue
            # compare starts recbole_linear/workflow/compare/worker_start.py; -m ...compare.worker by hand
            is_worker = "compare/worker_start.py" in cmdline or "compare.worker" in cmdline
            if is_worker and spec_fragment in cmdline and alive(int(entry)):
                pids.append(int(entry))
    return pids


def wait_for(condition, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


# --- the folder lock -------------------------------------------------------------------------
def test_second_lock_on_a_folder_is_refused_in_one_line_naming_the_holder(tmp_path):
    with FolderLock(str(tmp_path), "compare"):
        holder = json.loads((tmp_path / LOCK_NAME).read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname() and holder["started"]
        with pytest.raises(FolderLockedError) as error:
            FolderLock(str(tmp_path), "compare").acquire()
        message = str(error.value)
        assert "\n" not in message and f"pid {os.getpid()} on {socket.gethostname()}" in message
        assert str(tmp_path) in message
    assert not (tmp_path / LOCK_NAME).exists()  # released: the file goes
    FolderLock(str(tmp_path), "compare").acquire().release()  # and the folder is free again


def test_lock_of_a_live_process_is_refused(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from recbole_linear.workflow.common.folder_lock import FolderLock; "
         f"lock = FolderLock({str(tmp_path)!r}, 'tune').acquire(); print('locked', flush=True); time.sleep(60)"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(FolderLockedError, match=f"pid {holder.pid} "):
            FolderLock(str(tmp_path), "compare").acquire()
    finally:
        holder.kill()
        holder.wait()
    FolderLock(str(tmp_path), "compare", warn=lambda line: None).acquire().release()  # its death freed it


@pytest.mark.parametrize("flock", [True, False], ids=["flock", "pid-only"])
def test_stale_lock_of_a_dead_process_is_taken_over_with_a_warning(tmp_path, monkeypatch, flock):
    if not flock:  # a file system without flock: the recorded pid decides
        monkeypatch.setattr(FolderLock, "_try_flock", staticmethod(lambda lock_file: None))
    pid = dead_pid()
    stale = {"pid": pid, "host": socket.gethostname(), "started": "2026-01-01 00:00:00 +0000", "command": "compare"}
    (tmp_path / LOCK_NAME).write_text(json.dumps(stale))
    warnings = []
    lock = FolderLock(str(tmp_path), "compare", warn=warnings.append).acquire()
    assert warnings == [f"taking over the stale lock of pid {pid} on {socket.gethostname()} "
                        f"(started 2026-01-01 00:00:00 +0000: compare) on '{tmp_path}'"]
    assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    lock.release()
    if not flock:  # a live pid, or another machine's lock, is never taken over
        for holder in ({**stale, "pid": os.getppid()}, {**stale, "host": "elsewhere"}):
            (tmp_path / LOCK_NAME).write_text(json.dumps(holder))
            with pytest.raises(FolderLockedError):
                FolderLock(str(tmp_path), "compare").acquire()


# --- runs.csv validated on reading -----------------------------------------------------------
HEADER = "run_id,model,seed,status,error,valid_ndcg@10,test_ndcg@10,best_valid_score,checkpoint,finished_at"
ROW_A = "SASRec-seed1-0123abcd,SASRec,1,ok,,0.5,0.25,0.5,../ckpt/a.pth,2026-01-01 00:00:00"
ROW_B = "SASRec-seed2-0123abcd,SASRec,2,ok,,0.6,0.35,0.6,../ckpt/b.pth,2026-01-01 00:00:01"


def test_cut_and_junk_rows_are_dropped_with_one_warning_each(tmp_path):
    path = tmp_path / "runs.csv"
    cut_after_ok = ROW_B[: ROW_B.index(",ok,") + 4]
    path.write_text("\n".join([HEADER, ROW_A, cut_after_ok, "SASRec-se", ""]))
    warnings = []
    rows, dropped = load_runs(str(path), warn=warnings.append)
    assert [r["run_id"] for r in rows] == ["SASRec-seed1-0123abcd"] and dropped
    assert len(warnings) == 2
    assert "line 3 ('SASRec-seed2-0123abcd'): cut short, its metrics are missing: dropped; the run trains again" in warnings[0]
    assert "line 4 ('SASRec-se'): not a run row (cut inside its run id?): dropped" in warnings[1]


def test_ok_row_without_metrics_and_duplicates(tmp_path):
    path = tmp_path / "runs.csv"
    no_metrics = "SASRec-seed2-0123abcd,SASRec,2,ok,,,,,,2026-01-01 00:00:01"
    failed_again = "SASRec-seed1-0123abcd,SASRec,1,failed,ValueError: x,,,,,2026-01-01 00:00:02"
    path.write_text("\n".join([HEADER, ROW_A, no_metrics, failed_again, ROW_B, ""]))
    warnings = []
    rows, dropped = load_runs(str(path), warn=warnings.append)
    assert dropped and len(warnings) == 1 and "status ok without its metrics" in warnings[0]
    # a finished run stays finished when a later row of it failed; one row per run id
    assert [(r["run_id"], r["status"]) for r in rows] == [("SASRec-seed1-0123abcd", "ok"), ("SASRec-seed2-0123abcd", "ok")]
    assert load_runs(str(tmp_path / "none.csv")) == ([], False)


def test_runs_csv_without_run_columns_is_refused(tmp_path):
    (tmp_path / "runs.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ConfigError, match="is not a runs.csv of compare"):
        load_runs(str(tmp_path / "runs.csv"))


def test_summary_counts_exactly_the_seeds_it_averages(tmp_path):
    rows = [
        {"run_id": f"M-seed{s}-0123abcd", "model": "M", "seed": str(s), "status": "ok", "builtin": "False",
         "test_ndcg@10": value, "test_recall@10": recall}
        for s, value, recall in ((1, "0.2", "0.4"), (2, "0.4", "0.6"), (3, None, None), (4, "0.9", ""))
    ]
    table = report.build_table(rows, ["M"], str(tmp_path))
    (entry,) = table["entries"]
    assert entry["n"] == "2/4"  # seed 3 lost its metrics, seed 4 one of them
    assert entry["metrics"]["ndcg@10"][:2] == (pytest.approx(0.3), pytest.approx(np.std([0.2, 0.4], ddof=1)))


def test_per_user_file_found_where_compare_writes_it_when_the_cell_is_empty(tmp_path):
    (tmp_path / "per_user").mkdir()
    np.savez(tmp_path / "per_user" / "M-seed1-0123abcd.npz", user=np.array(["1"]), **{"ndcg@10": np.array([0.5])})
    row = {"run_id": "M-seed1-0123abcd", "per_user_file": ""}
    assert report.per_user_path(str(tmp_path), row) == str(tmp_path / "per_user" / "M-seed1-0123abcd.npz")
    assert report.per_user_path(str(tmp_path), {"run_id": "M-seed2-0123abcd", "per_user_file": ""}) is None


# --- workers die with their parent -----------------------------------------------------------
def test_worker_whose_parent_is_gone_exits_at_once(tmp_path):
    spec = tmp_path / "spec.json"
    result_file = tmp_path / "result.json"
    spec.write_text(json.dumps({"parent_pid": dead_pid(), "result_file": str(result_file)}))
    start = time.time()
    process = subprocess.run([sys.executable, "-m", "recbole_linear.workflow.compare.worker", str(spec)], cwd=ROOT, timeout=120)
    assert process.returncode == 128 + signal.SIGTERM and not result_file.exists()
    assert time.time() - start < 60


# the parent: writes the spec, starts the worker as compare does, prints its pid and kills itself (-9)
_PARENT = """
import json, os, signal, subprocess, sys
spec, log, command, env = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
with open(spec, "w") as f:
    json.dump({"parent_pid": os.getpid(), "result_file": spec + ".result"}, f)
worker = subprocess.Popen(command, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env, start_new_session=True)
print(worker.pid, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


@linux_only
def test_worker_whose_parent_is_killed_while_it_imports_is_gone_at_once(tmp_path):
    """compare killed -9 the moment its worker starts: the worker, still importing torch and RecBole
    (seconds; 7-9 s on a loaded machine), must not outlive it. Python's import log (-X importtime,
    written as each import completes) shows that it never finished importing torch."""
    spec, log = tmp_path / "spec.json", tmp_path / "worker.log"
    env = dict(compare_runner._worker_env(), PYTHONPROFILEIMPORTTIME="1")
    parent = subprocess.run(
        [sys.executable, "-c", _PARENT, str(spec), str(log), json.dumps(compare_runner.worker_command(str(spec))),
         json.dumps(env)], capture_output=True, text=True, timeout=120)
    assert parent.returncode == -signal.SIGKILL, parent.stderr
    worker = int(parent.stdout)
    wait_for(lambda: not alive(worker), 5, "the orphaned worker to die")
    imports = log.read_text()
    assert re.search(r"\|\s+json$", imports, re.M)  # the log is written (the start's own imports)
    assert not re.search(r"\|\s+torch$", imports, re.M), "the worker imported torch after its parent died"
    assert not os.path.exists(f"{spec}.result")


@linux_only
def test_fault_sequence_kill_rerun_two_commands_cut_csv(tiny_data_path, tmp_path):
    """The issue's sequence, with real workers: two commands at once (one refused), kill -9 of the
    running one mid-run (its worker dies too), rerun (stale lock taken over, the killed run runs
    again), a cut runs.csv, rerun: exactly one valid row per run, and a summary that agrees."""
    out = tmp_path / "out"
    overrides = tiny_cmd_args(tiny_data_path, checkpoint_dir=tmp_path / "ckpt", metric_decimal_place=10)
    argv = ["compare", "--models=SASRec", "--seeds=1,2", f"--dataset={TINY_DATASET}", f"--output_dir={out}", *overrides]
    first, second = compare.plan_runs(["SASRec"], [1, 2], TINY_DATASET, None, overrides, {})

    commands = [
        subprocess.Popen([sys.executable, SCRIPT, *argv], cwd=tmp_path, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    try:
        # one of the two gets the folder, the other exits 2 with one line
        wait_for(lambda: any(c.poll() is not None for c in commands), 120, "one command to be refused")
        (refused,) = [c for c in commands if c.poll() is not None]
        (running,) = [c for c in commands if c is not refused]
        err = refused.stderr.read().strip().splitlines()
        assert refused.returncode == 2 and len(err) == 1, err
        assert f"output folder '{out}' is in use by pid {running.pid} on {socket.gethostname()}" in err[0]

        # kill -9 while the second run trains: its worker must not survive
        # (the pool starts the next worker while the main thread records the last run: wait for both)
        wait_for(lambda: worker_pids(f"{second.run_id}.spec.json") and (out / "runs.csv").is_file(), 180,
                 "the second run's worker")
        (worker,) = worker_pids(f"{second.run_id}.spec.json")
        running.kill()
        running.wait()
        wait_for(lambda: not alive(worker), 5, "the orphaned worker to die")
        # killed, not finished: a worker that ends on its own writes its result file (no parent left to delete it)
        assert not (out / "logs" / f"{second.run_id}.result.json").exists()
    finally:
        for command in commands:
            command.kill()
            command.wait()
    assert [r["run_id"] for r in read_csv(out / "runs.csv")] == [first.run_id]

    def rerun():
        printed, warned = io.StringIO(), io.StringIO()
        with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(printed), \
                contextlib.redirect_stderr(warned):
            patch.chdir(tmp_path)
            status = compare.cli_main(argv[1:])
        return status, printed.getvalue() + warned.getvalue()

    status, output = rerun()
    assert status == 0, output
    assert f"compare: warning: taking over the stale lock of pid {running.pid}" in output
    assert "(1 done, skipped; 1 to run)" in output
    assert [r["run_id"] for r in read_csv(out / "runs.csv")] == [first.run_id, second.run_id]
    assert not worker_pids(f"{second.run_id}.spec.json") and not (out / LOCK_NAME).exists()

    # cut the file: the first row after ',ok,', the second inside its run id
    text = (out / "runs.csv").read_text()
    header, row_1, row_2 = text.splitlines()[:3]
    (out / "runs.csv").write_text("\n".join([header, row_1[: row_1.index(",ok,") + 4], row_2[:10]]))
    status, output = rerun()
    assert status == 0, output
    assert re.search(r"line 2 \('SASRec-seed1-\w+'\): cut short, its metrics are missing: dropped; the run trains again", output)
    assert "line 3 ('SASRec-see'): not a run row (cut inside its run id?): dropped" in output
    assert "(0 done, skipped; 2 to run)" in output

    rows = read_csv(out / "runs.csv")
    warnings = []
    assert load_runs(str(out / "runs.csv"), warn=warnings.append)[0] == rows and not warnings
    assert sorted(r["run_id"] for r in rows) == sorted([first.run_id, second.run_id])
    assert all(r["status"] == "ok" and float(r["test_ndcg@10"]) >= 0 for r in rows)
    summary = (out / "summary.md").read_text()
    line = next(l for l in summary.splitlines() if l.startswith("| SASRec"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    header_cells = [c.strip() for c in next(l for l in summary.splitlines() if l.startswith("| model")).strip("|").split("|")]
    ndcg = dict(zip(header_cells, cells))["ndcg@10"]
    assert cells[1] == "2/2"
    assert float(re.sub(r"\*\*|</?u>", "", ndcg).split(" ± ")[0]) == pytest.approx(
        np.mean([float(r["test_ndcg@10"]) for r in rows]), abs=5e-5)
    assert "is missing" not in summary  # both per-user files found
    assert "Training: RecBole's regime, one target per training prefix (`train_all_positions=False`)." in summary


# --- one regime and one protocol per table ---------------------------------------------------
def _refuse_training(monkeypatch):
    def never(spec_file):
        raise AssertionError("a run trained although the comparison was refused")

    monkeypatch.setattr(compare_runner, "worker_command", never)


def test_two_regimes_in_one_comparison_are_refused_before_training(tmp_path, monkeypatch):
    _refuse_training(monkeypatch)
    runs = compare.plan_runs(["LRURec", "SASRec"], [1], TINY_DATASET, None, [],
                             {"LRURec": {"train_all_positions": True}})
    with pytest.raises(ConfigError) as error:
        compare.run_comparison(runs, str(tmp_path / "out"), TINY_DATASET, ["LRURec", "SASRec"], [1], lambda line: None)
    message = str(error.value)
    assert "\n" not in message
    assert "train_all_positions=True, eval_mask_history=False for LRURec" in message
    assert "train_all_positions=False, eval_mask_history=False for SASRec" in message
    assert not (tmp_path / "out").exists()


def test_folder_of_another_protocol_is_refused_before_training(tmp_path, monkeypatch):
    _refuse_training(monkeypatch)
    out = tmp_path / "out"
    out.mkdir()
    stored = compare.plan_runs(["SASRec"], [1], TINY_DATASET, None, [], {})[0]
    row = {"run_id": stored.run_id, "model": "SASRec", "seed": "1", "status": "ok", "train_all_positions": "False",
           "eval_mask_history": "False", "test_ndcg@10": "0.1", "best_valid_score": "0.1", "finished_at": "x"}
    compare.write_runs(str(out / "runs.csv"), [row])
    runs = compare.plan_runs(["SASRec"], [2], TINY_DATASET, None, ["--eval_mask_history=True"], {})
    with pytest.raises(ConfigError, match=re.escape(
            f"holds runs with train_all_positions=False, eval_mask_history=False (e.g. {stored.run_id})")):
        compare.run_comparison(runs, str(out), TINY_DATASET, ["SASRec"], [2], lambda line: None)
    # a row from before the columns existed counts as RecBole's regime and protocol (the keys' defaults)
    compare.write_runs(str(out / "runs.csv"), [{k: v for k, v in row.items() if k not in compare.PROTOCOL_KEYS}])
    with pytest.raises(ConfigError, match="holds runs with train_all_positions=False, eval_mask_history=False"):
        compare.run_comparison(runs, str(out), TINY_DATASET, ["SASRec"], [2], lambda line: None)


# --- checkpoint names ------------------------------------------------------------------------
def test_runs_started_in_the_same_second_get_their_own_checkpoint(tiny_data_path, tmp_path, monkeypatch):
    from recbole.utils import ModelType

    from recbole_linear import trainer as trainer_module
    from recbole_linear.config import create_config
    from recbole_linear.model.lrurec import LRURec
    from tests.helpers import build_model

    monkeypatch.setattr(trainer_module, "get_local_time", lambda: "Dec-01-2026_08-00-00")  # one second
    config = create_config("LRURec", TINY_DATASET, config_dict={"data_path": tiny_data_path,
                                                                "checkpoint_dir": str(tmp_path / "saved")})
    trainer_class = trainer_module.get_trainer(ModelType.SEQUENTIAL, "LRURec")
    names = {trainer_class(config, build_model(LRURec, hidden_size=8)).saved_model_file for _ in range(3)}
    assert len(names) == 3
    for name in names:
        assert re.fullmatch(re.escape(str(tmp_path / "saved")) + rf"/LRURec-Dec-01-2026_08-00-00-{os.getpid()}-[0-9a-f]{{8}}\.pth", name)
    # a name the config sets is kept
    config["saved_model_file"] = str(tmp_path / "mine.pth")
    assert trainer_class(config, build_model(LRURec, hidden_size=8)).saved_model_file == str(tmp_path / "mine.pth")


def test_ddp_launch_names_one_unique_checkpoint_for_all_ranks(tiny_data_path, tmp_path, monkeypatch):
    from recbole_linear import quick_start
    from recbole_linear import trainer as trainer_module

    launched = []
    monkeypatch.setattr(quick_start.distributed, "spawn", lambda worker, args, nproc: launched.append(args))
    monkeypatch.setattr(trainer_module, "get_local_time", lambda: "same-second")  # both in one second
    config_dict = {"data_path": tiny_data_path, "checkpoint_dir": str(tmp_path / "saved"), "load_col":
                   {"inter": ["user_id", "item_id", "timestamp"]}}
    for _ in range(2):
        quick_start.run("SASRec", TINY_DATASET, config_dict=dict(config_dict), nproc=2)
    names = [args[3]["config_dict"]["saved_model_file"] for args in launched]
    assert len(set(names)) == 2 and all(os.path.basename(n).startswith("SASRec-same-second-") for n in names)


def test_worker_imports_this_checkout_from_any_folder():
    """The worker's PYTHONPATH starts with the folder that holds this very ``recbole_linear``
    (it pointed inside the package once the workflow modules moved one level down)."""
    first = compare_runner._worker_env()["PYTHONPATH"].split(os.pathsep)[0]
    assert os.path.samefile(os.path.join(first, "recbole_linear", "__init__.py"), recbole_linear.__file__)


def test_compare_checkpoint_name_is_per_run_and_folder(tmp_path):
    (run,) = compare.plan_runs(["SASRec"], [1], TINY_DATASET, None, [], {})
    a, b = compare_runner.checkpoint_name(run, str(tmp_path / "a")), compare_runner.checkpoint_name(run, str(tmp_path / "b"))
    assert a != b and a.startswith(run.run_id + "-") and a == compare_runner.checkpoint_name(run, str(tmp_path / "a"))


# --- tune: one command per folder too --------------------------------------------------------
def test_tune_refuses_a_folder_in_use_before_writing_anything(tiny_run_dict, tmp_path, monkeypatch):
    from recbole_linear.workflow.tune import command as tuning

    monkeypatch.chdir(tmp_path)
    space = tmp_path / "space.hyper"
    space.write_text("learning_rate choice [0.001, 0.01]\n")
    out = tmp_path / "out"

    def never(config_dict, config_file_list):
        raise AssertionError("a trial trained in a folder that another command holds")

    options = dict(params_file=str(space), config_dict=dict(tiny_run_dict, dataset=TINY_DATASET),
                   output_dir=str(out), objective=never)
    with FolderLock(str(out), "compare"):
        with pytest.raises(FolderLockedError, match=f"output folder '{out}' is in use by pid {os.getpid()}"):
            tuning.tune("SASRec", TINY_DATASET, **options)
        assert sorted(os.listdir(out)) == [LOCK_NAME]  # no fixed_config.yaml, no trials.csv
    # free again: the folder's own checkpoint names differ from another folder's for the same trial
    run_a = tuning.prepare("SASRec", TINY_DATASET, **{k: v for k, v in options.items() if k != "objective"})
    run_a.folder_lock.release()
    run_b = tuning.prepare("SASRec", TINY_DATASET, **dict(options, output_dir=str(tmp_path / "other"), objective=None))
    run_b.folder_lock.release()
    params = {"learning_rate": 0.01}
    assert run_a.checkpoint_file(params) != run_b.checkpoint_file(params)
    assert run_a.checkpoint_file(params) == run_a.checkpoint_file(params)


def test_summary_states_the_regime_and_protocol_of_its_rows():
    rows = [{"model": "M", "status": "ok", "train_all_positions": "True", "eval_mask_history": "True",
             "test_ndcg@10": "0.1"}]
    md = summary.to_markdown(report.build_table(rows, ["M"]), "toy", [1])
    assert ("Training: every position of each training window, the official LRURec/SASRec regime "
            "(`train_all_positions=True`). Evaluation: full ranking without each user's input window, "
            "the official LRURec protocol (`eval_mask_history=True`).") in md
    assert "Training:" not in summary.to_markdown(report.build_table([dict(rows[0], train_all_positions="",
                                                                          eval_mask_history="")], ["M"]), "toy", [1])


@linux_only
def test_ctrl_c_ends_compare_its_worker_and_its_lock(tiny_data_path, tmp_path):
    """Workers lead their own process groups (a terminal's Ctrl-C reaches only compare): compare
    kills them on KeyboardInterrupt and releases the folder."""
    out = tmp_path / "out"
    # a run far longer than the test: the worker is still training when Ctrl-C comes (a 1-epoch
    # run could finish between being seen and the signal on a loaded machine, and compare exit 0)
    overrides = tiny_cmd_args(tiny_data_path, checkpoint_dir=tmp_path / "ckpt", epochs=100000, stopping_step=100000)
    (run,) = compare.plan_runs(["SASRec"], [1], TINY_DATASET, None, overrides, {})
    log = out / "logs" / f"{run.run_id}.log"

    def default_sigint():
        # a test runner started in the background (nohup, '&' in a script) ignores SIGINT, and an
        # ignored signal stays ignored in its children: give compare the terminal's default, so that
        # Python turns Ctrl-C into KeyboardInterrupt there
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    command = subprocess.Popen(
        [sys.executable, SCRIPT, "compare", "--models=SASRec", "--seeds=1", f"--dataset={TINY_DATASET}",
         f"--output_dir={out}", *overrides], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=default_sigint)
    try:
        # events, not a time: the worker exists and trains (its first epoch is in its log)
        wait_for(lambda: worker_pids(f"{run.run_id}.spec.json") and log.is_file()
                 and "epoch 0 training" in log.read_text(errors="replace"), 300, "the worker to train")
        (worker,) = worker_pids(f"{run.run_id}.spec.json")
        assert os.getpgid(worker) == worker != os.getpgid(command.pid)  # its own group
        command.send_signal(signal.SIGINT)
        assert command.wait(timeout=300) == 130
        assert command.stderr.read().strip().splitlines() == ["run_recbole_linear.py: interrupted"]
        # compare killed its group before exiting: gone (or a zombie its init has not reaped) already
        wait_for(lambda: not alive(worker), 60, "the worker to die")
    finally:
        command.kill()
        command.wait()
    assert not (out / LOCK_NAME).exists() and not (out / "runs.csv").exists()
