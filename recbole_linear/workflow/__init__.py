"""What runs on top of RecBole: tuning, comparisons, their reports, and re-scoring saved runs.

The modules one level up integrate the plugin with RecBole (config, registry, trainers, data,
training regimes, distributed training, resuming); the modules here only call them:

- ``compare/``: every model x seed under one protocol, one process per run, its summaries, and
  merging the runs of several folders;
- ``tune/``: hyper-parameter search through RecBole's ``HyperTuning`` or Ray Tune;
- ``common/``: what both use (folder lock, run table, run log, preflight checks);
- ``evaluate``: saved checkpoints scored again.
"""
