"""Everything about a run that can be checked before training, for commands that start many runs.

``compare`` trains each run in its own process; without this, a misspelt model name or key, or a
model setting the model refuses, surfaced only when that run's turn came, after the runs before it
had trained. :func:`check_runs` builds each distinct run's config up front (model name, every key
against the known keys, values, the model's own ``check_config``) and checks the dataset's files.
:func:`require_validation` (``compare`` and ``tune``) refuses settings under which a run never
validates, since both keep each run's best validated checkpoint.
"""
import os

from recbole_linear.config import create_config
from recbole_linear.errors import ConfigError, RecBoleLinearError
from recbole_linear.quick_start import check_dataset


def check_run(model, dataset, config_file_list=None, config_dict=None, cmd_args=None):
    """The config of one run, or the run's one-line error (RecBoleLinearError)."""
    # RecBole's Config sets CUDA_VISIBLE_DEVICES from gpu_id; a check must leave the process as it was
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        config = create_config(model, dataset, config_file_list, config_dict, cmd_args)
    finally:
        if visible is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = visible
    check_dataset(config)
    return config


def require_validation(config, command):
    """ConfigError unless training validates at least once: ``compare`` and ``tune`` keep the best
    validated checkpoint and report its validation result (``run`` follows RecBole: no validation
    with ``eval_step: 0``, the last epoch tested)."""
    epochs, eval_step = config["epochs"], config["eval_step"]
    if not 1 <= eval_step <= epochs:
        raise ConfigError(
            f"{command} selects each run's checkpoint by validation: it needs 1 <= eval_step <= epochs "
            f"(got eval_step={eval_step}, epochs={epochs})"
        )


def check_runs(runs):
    """Check each distinct (model, settings) of a ``compare`` plan once; seeds change nothing checked."""
    checked = set()
    for run in runs:
        key = (run.model, tuple(sorted(run.overrides.items())))
        if key in checked:
            continue
        checked.add(key)
        cmd_args = [f"--{k}={v}" for k, v in run.overrides.items()]
        try:
            require_validation(check_run(run.model, run.dataset, run.config_files, cmd_args=cmd_args), "compare")
        except RecBoleLinearError as e:
            if run.model in str(e):
                raise
            raise type(e)(f"{run.model}: {e}") from e
