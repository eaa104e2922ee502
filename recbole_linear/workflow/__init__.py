"""What runs on top of RecBole: tuning, comparisons, their reports, and re-scoring saved runs.

The modules one level up integrate the plugin with RecBole (config, registry, trainers, data
checks, training regimes, distributed training, resuming); the modules here only call them:
- ``tune`` (with ``hyper_space``, ``tune_run``, ``tune_store`` and ``tune_ray``): hyper-parameter
  search through RecBole's ``HyperTuning`` or Ray Tune;
- ``compare`` (with ``compare_runner``, ``compare_worker``, ``compare_protocol``, ``preflight``
  (also used by ``tune``), ``run_table``, ``report`` and ``summary``): every model x seed under
  one protocol, one process per run, and its summaries;
- ``run_log``: a run's validation curve read back from its RecBole log;
- ``evaluate``: saved checkpoints scored again;
- ``merge``: finished runs of several compare folders in one folder and summary;
- ``per_user``: each test user's NDCG@10 (compare's significance test, ``evaluate --per_user``);
- ``folder_lock``: one command per output folder.
"""
