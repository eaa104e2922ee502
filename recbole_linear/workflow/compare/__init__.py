"""Comparing models under one protocol: the ``compare`` command and what it is made of.

- ``command``: the command line and the comparison (every model x seed, one row per run in ``runs.csv``);
- ``runner``, ``worker_start``, ``worker``: each run in a process of its own, which dies with its parent;
- ``protocol``: the training regime and evaluation every run of a table must share;
- ``per_user``: each test user's NDCG@10, for the significance test;
- ``report`` and ``summary``: the table as data, and ``summary.md`` / ``summary.tex``;
- ``merge``: finished runs of several compare folders in one folder and summary.
"""
