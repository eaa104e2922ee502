"""Hyper-parameter search: the ``tune`` command and what it is made of.

- ``command``: the command line, option checks and the search through RecBole's ``HyperTuning``;
- ``space``: search spaces (RecBole's ``.hyper`` files), linked keys, trial keys;
- ``run``: one search over its points, resumable from ``trials.csv``;
- ``store``: the trials of a folder and one trial's execution;
- ``ray_tune``: the same points on Ray Tune.
"""
