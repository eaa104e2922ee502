"""How ``compare`` starts a worker: ``python <this file> SPEC.json``, by path, not with ``-m``.

A worker must die with the ``compare`` that started it, including while it is still importing
torch and RecBole (seconds, 7-9 s on a loaded machine): an orphan would train on and hold the
folder's lock. ``python -m recbole_linear.workflow.compare.worker`` imports the package (and with
it torch and RecBole) before the module's first line runs, so the watch could only be armed after
them. Run by path, this file imports the standard library alone, arms the watch
(:func:`die_with_parent`), and only then imports the worker.

The watch is :mod:`~recbole_linear.workflow.compare.parent_watch`, loaded here by its file under its
package name (standard library only), so that the worker's later ``import`` of it finds this very
module, armed, instead of importing the package first.
"""
import importlib.util
import json
import os
import signal
import sys

WATCH_MODULE = "recbole_linear.workflow.compare.parent_watch"


def _load_parent_watch():
    """:mod:`~recbole_linear.workflow.compare.parent_watch` without importing ``recbole_linear``
    (whose ``__init__`` imports torch and RecBole): by its path, registered under its own name."""
    if WATCH_MODULE in sys.modules:
        return sys.modules[WATCH_MODULE]
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "parent_watch.py")
    spec = importlib.util.spec_from_file_location(WATCH_MODULE, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[WATCH_MODULE] = module
    spec.loader.exec_module(module)
    return module


def main(argv):
    if len(argv) == 1:
        try:
            with open(argv[0], "r", encoding="utf-8") as f:
                parent_pid = json.load(f).get("parent_pid")
        except (OSError, ValueError):
            parent_pid = None  # the worker reports the bad spec
        if parent_pid:
            _load_parent_watch().die_with_parent(int(parent_pid), on_sigterm=signal.SIG_DFL)
    # deferred on purpose: the worker imports torch and RecBole, which must come after the watch
    from recbole_linear.workflow.compare.worker import main as worker_main

    return worker_main(argv, watched=True)


if __name__ == "__main__":
    # run by path, sys.path[0] is this folder: its modules (compare, tune, summary...) must not
    # shadow top-level ones; the package itself comes from PYTHONPATH (compare_runner._worker_env)
    if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
        del sys.path[0]
    sys.exit(main(sys.argv[1:]))
