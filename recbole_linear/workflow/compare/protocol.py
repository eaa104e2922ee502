"""One table, one training regime and one evaluation protocol: ``compare``'s check and columns.

A comparison's runs must train the same way (``train_all_positions``: RecBole's one target per
prefix, or every position of each window) and be evaluated the same way (``eval_mask_history``:
RecBole's full ranking, or the official LRURec protocol without the input window); numbers under
two regimes or protocols in one table would compare the settings, not the models. Each run's row
records both keys from its final config (the file the worker dumps); before anything trains,
:func:`check_one_protocol` refuses a plan whose runs would differ, or that differs from the
finished runs already in its output folder.
"""
import os

from recbole_linear.config import create_config, read_yaml
from recbole_linear.errors import ConfigError, RecBoleLinearError
from recbole_linear.workflow.common.run_table import resolve_path

PROTOCOL_KEYS = ("train_all_positions", "eval_mask_history")


def protocol_of_config(config_file):
    """{key: 'True'/'False'} of :data:`PROTOCOL_KEYS` from a run's final config ('' where unknown)."""
    try:
        config = read_yaml(config_file) if config_file and os.path.isfile(config_file) else {}
    except RecBoleLinearError:
        config = {}
    return {key: str(bool(config[key])) if key in config else "" for key in PROTOCOL_KEYS}


def protocol_of_row(row, output_dir):
    """A stored run's protocol: its columns, else its config file; a key the run's config did not
    have yet (older versions) had only RecBole's behaviour, the key's default False."""
    from_config = None
    protocol = {}
    for key in PROTOCOL_KEYS:
        value = row.get(key)
        if value in (None, ""):
            if from_config is None:
                from_config = protocol_of_config(resolve_path(row.get("config_file"), output_dir))
            value = from_config[key] or "False"
        protocol[key] = value
    return protocol


def _planned_config(run):
    """The config the run's worker will build, without keeping RecBole's CUDA_VISIBLE_DEVICES here."""
    saved = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        return create_config(run.model, run.dataset, run.config_files, None, run.cmd_args)
    finally:
        if saved is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = saved


def planned_protocols(runs):
    """{run_id: {key: 'True'/'False'}} for each run whose config builds (the others fail on their own)."""
    protocols, by_settings = {}, {}
    for run in runs:
        if run.error:
            continue
        settings = (run.model, run.overrides_hash)  # seeds share everything else
        if settings not in by_settings:
            try:
                config = _planned_config(run)
                by_settings[settings] = {key: str(bool(config[key])) for key in PROTOCOL_KEYS}
            except RecBoleLinearError:
                by_settings[settings] = None
        if by_settings[settings] is not None:
            protocols[run.run_id] = by_settings[settings]
    return protocols


def _describe(protocol):
    return ", ".join(f"{key}={value}" for key, value in protocol.items())


def check_one_protocol(protocols, runs, stored_rows, output_dir):
    """ConfigError unless the planned runs and the folder's finished runs share one regime and protocol."""
    by_protocol = {}
    for run in runs:
        if run.run_id in protocols:
            models = by_protocol.setdefault(tuple(protocols[run.run_id].items()), [])
            if run.model not in models:
                models.append(run.model)
    if len(by_protocol) > 1:
        shown = "; ".join(f"{_describe(dict(p))} for {', '.join(m)}" for p, m in by_protocol.items())
        raise ConfigError(
            f"one comparison trains and evaluates every model the same way, but this one has {shown}; "
            f"set {' and '.join(PROTOCOL_KEYS)} alike for all models"
        )
    if not by_protocol:
        return
    planned = dict(next(iter(by_protocol)))
    for row in stored_rows:
        if row.get("status") != "ok":
            continue
        stored = protocol_of_row(row, output_dir)
        if stored != planned:
            raise ConfigError(
                f"output folder '{output_dir}' holds runs with {_describe(stored)} (e.g. {row['run_id']}), "
                f"this comparison has {_describe(planned)}: one table holds one regime and protocol; "
                "use another --output_dir"
            )
