"""A compare worker dies with the ``compare`` process that started it (standard library only).

The watch: the kernel's parent-death signal (Linux ``prctl(PR_SET_PDEATHSIG)``), a check that the
parent has not died already, and a thread that polls the parent pid (other systems). Until the
worker has imported its modules, ``SIGTERM`` keeps its default action (the kernel ends the process
at once, even inside a long C-level import); from then on the worker's handler ends its process
group too (:func:`end_own_group`), as the processes it starts (DDP ranks) are in it.

It imports nothing but the standard library: :mod:`~recbole_linear.workflow.compare.worker_start`
loads it by its file, before torch and RecBole.
"""
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
