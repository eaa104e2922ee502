"""What runs on top of RecBole: tuning, comparisons, their reports, and re-scoring saved runs.

The modules one level up integrate the plugin with RecBole (config, registry, trainers, data
checks, training regimes, distributed training, resuming); the modules here only call them:
- ``tune`` (with ``hyper_space``, ``tune_store`` and ``tune_ray``): hyper-parameter search through
  RecBole's ``HyperTuning`` or Ray Tune;
- ``compare`` (with ``compare_worker``, ``compare_protocol``, ``preflight``, ``run_table`` and
  ``report``): every model x seed under one protocol, one process per run, and its summaries;
- ``evaluate``: saved checkpoints scored again;
- ``folder_lock``: one command per output folder.
"""
