"""How ``compare`` runs one (model, seed): a worker process per run, killed with this one.

:func:`execute` writes the run's spec file, starts :mod:`recbole_linear.workflow.compare.worker`
in its own process group (its log is the run's log file), waits, and returns the result the
worker wrote, or a failure naming the worker's exit and the last line of its log. Every live
worker is in :data:`WORKERS`, whose groups are killed on any exit of this process that runs Python;
a worker whose parent is killed outright ends by itself, even while it is still importing
(:mod:`~recbole_linear.workflow.compare.worker_start`).
"""
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time

import recbole_linear

ATTEMPT_MARK = "==== "  # starts the line each worker start adds to the run's log


def _worker_env(threads=None):
    """The worker must import this very package, even when it is not installed; ``threads`` caps its
    torch (OpenMP) threads so that parallel workers do not oversubscribe the cores."""
    env = dict(os.environ)
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(recbole_linear.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    if threads is not None and "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def threads_per_worker(jobs):
    """torch threads for each of ``jobs`` parallel workers (None: one worker, torch decides)."""
    return None if jobs <= 1 else max(1, (os.cpu_count() or 1) // jobs)


def worker_command(spec_file):
    """The worker, started by path: it arms its die-with-parent watch before importing torch and
    RecBole (``-m`` would import the package, and them, first)."""
    start = os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker_start.py")
    return [sys.executable, start, spec_file]


def checkpoint_name(run, output_dir):
    """``<run_id>-<6 hex of the output folder>.pth``: the same run compared into two folders (two
    commands at once) writes two files, and a rerun into one folder finds its own."""
    folder = hashlib.sha1(os.path.abspath(output_dir).encode("utf-8")).hexdigest()[:6]
    return f"{run.run_id}-{folder}.pth"


class _Workers:
    """The live worker processes, each the leader of its own process group: on any exit of this
    process that runs Python (an exception, Ctrl-C) their groups are killed here; when this process
    is killed outright, each worker notices by itself (``die_with_parent``)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._processes = set()

    def start(self, command, **kwargs):
        with self._lock:
            process = subprocess.Popen(command, start_new_session=True, **kwargs)
            self._processes.add(process)
        return process

    def finished(self, process):
        with self._lock:
            self._processes.discard(process)

    def kill_all(self):
        with self._lock:
            for process in self._processes:
                _kill_group(process)


def _kill_group(process):
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, AttributeError):  # gone already, or no killpg (Windows)
        try:
            process.kill()
        except OSError:
            pass


WORKERS = _Workers()


def execute(run, output_dir, threads=None):
    """Run one (model, seed) in a fresh Python process; returns its result dict (never raises)."""
    if run.error:  # the model does not even resolve: nothing to start
        return {"status": "failed", "error": run.error}
    files = run.files(output_dir)
    for path in files.values():
        os.makedirs(os.path.dirname(path), exist_ok=True)
    spec_dir = os.path.join(output_dir, "logs")
    spec_file = os.path.join(spec_dir, f"{run.run_id}.spec.json")
    result_file = os.path.join(spec_dir, f"{run.run_id}.result.json")
    spec = {
        "run_id": run.run_id, "model": run.model, "dataset": run.dataset,
        "config_files": run.config_files, "cmd_args": run.cmd_args,
        "config_file": files["config_file"], "per_user_file": files["per_user_file"], "result_file": result_file,
        "checkpoint_name": checkpoint_name(run, output_dir), "parent_pid": os.getpid(),
    }
    with open(spec_file, "w", encoding="utf-8") as f:
        json.dump(spec, f, indent=1)
    if os.path.exists(result_file):
        os.remove(result_file)
    # appended, not replaced: a run resumed after an interruption keeps the epochs it logged before
    with open(files["log_file"], "a", encoding="utf-8") as log:
        log.write(f"{ATTEMPT_MARK}{time.strftime('%Y-%m-%d %H:%M:%S')} compare worker started for {run.run_id} ====\n")
        log.flush()
        process = WORKERS.start(
            worker_command(spec_file), stdout=log, stderr=subprocess.STDOUT, env=_worker_env(threads),
        )
        try:
            process.wait()
        finally:
            WORKERS.finished(process)
    try:
        with open(result_file, "r", encoding="utf-8") as f:
            result = json.load(f)
    except (OSError, ValueError):  # the process died before it could write its result
        status = process.returncode
        reason = f"killed by signal {-status}" if status < 0 else f"exited with status {status}"
        result = {"status": "failed", "error": f"worker {reason}: {_last_line(files['log_file'])}"}
    finally:
        for path in (spec_file, result_file):
            if os.path.exists(path):
                os.remove(path)
    return result


def _last_line(path):
    try:
        with open(path, "r", encoding="utf-8", errors="replace") as f:
            lines = [line.strip() for line in f if line.strip() and not line.startswith(ATTEMPT_MARK)]
        return lines[-1] if lines else "no output"
    except OSError:
        return "no output"
