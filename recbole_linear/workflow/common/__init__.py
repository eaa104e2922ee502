"""Pieces ``compare`` and ``tune`` (and ``evaluate``) share.

- ``folder_lock``: one command per output folder;
- ``run_table``: ``runs.csv`` read back and checked, paths relative to their folder;
- ``run_log``: a run's validation curve read back from its RecBole log;
- ``preflight``: every model, key and value checked before the first run or trial.
"""
