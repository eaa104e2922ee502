"""How ``compare`` starts a worker: ``python <this file> SPEC.json``, by path, not with ``-m``.

A worker must die with the ``compare`` that started it, including while it is still importing
torch and RecBole (seconds, 7-9 s on a loaded machine): an orphan would train on and hold the
folder's lock. ``python -m recbole_linear.workflow.compare_worker`` imports the package (and with
it torch and RecBole) before the module's first line runs, so the watch could only be armed after
them. Run by path, this file imports the standard library alone, arms the watch
(:func:`die_with_parent`), and only then imports the worker.

The watch: the kernel's parent-death signal (Linux ``prctl(PR_SET_PDEATHSIG)``), a check that the
parent has not died already, and a thread that polls the parent pid (other systems). Until the
worker has imported its modules, ``SIGTERM`` keeps its default action (the kernel ends the process
at once, even inside a long C-level import); from then on the worker's handler ends its process
group too (:func:`end_own_group`), as the processes it starts (DDP ranks) are in it.
"""
import json
import os
import signal
import sys
import threading
import time

_PR_SET_PDEATHSIG = 1  # linux/prctl.h
PARENT_POLL_SECONDS = 0.5


def end_own_group(*_):
    """Kill this worker and everything it started: its process group (compare makes each worker
    the leader of a new session); a plain exit where it leads no group."""
    try:
        if os.getpgrp() == os.getpid():
            os.killpg(os.getpid(), signal.SIGKILL)
    finally:
        os._exit(128 + signal.SIGTERM)


def _ask_kernel_for_death_signal():
    """Linux: SIGTERM to this process when its parent dies (prctl PR_SET_PDEATHSIG)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def die_with_parent(parent_pid, on_sigterm=end_own_group):
    """End this process (and its group) as soon as ``parent_pid`` is no longer its parent.

    ``on_sigterm``: the SIGTERM handler (``signal.SIG_DFL`` while nothing else runs in the group).
    The check after arming the kernel's signal covers a parent that died before.
    """
    signal.signal(signal.SIGTERM, on_sigterm)
    _ask_kernel_for_death_signal()

    def watch():
        while os.getppid() == parent_pid:
            time.sleep(PARENT_POLL_SECONDS)
        end_own_group()

    if os.getppid() != parent_pid:
        end_own_group()
    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()


def main(argv):
    if len(argv) == 1:
        try:
            with open(argv[0], "r", encoding="utf-8") as f:
                parent_pid = json.load(f).get("parent_pid")
        except (OSError, ValueError):
            parent_pid = None  # the worker reports the bad spec
        if parent_pid:
            die_with_parent(int(parent_pid), on_sigterm=signal.SIG_DFL)
    from recbole_linear.workflow.compare_worker import main as worker_main

    return worker_main(argv, watched=True)


if __name__ == "__main__":
    # run by path, sys.path[0] is this folder: its modules (compare, tune, summary...) must not
    # shadow top-level ones; the package itself comes from PYTHONPATH (compare_runner._worker_env)
    if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
        del sys.path[0]
    sys.exit(main(sys.argv[1:]))
