"""Multi-process training on CPU (gloo): the same optimisation step and the same metrics as one process.

Every launch gets a free port picked at test time and runs in its own process group, which is
checked to be empty afterwards (no process left behind) and killed in any case.
"""
import ast
import csv
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from recbole_linear.distributed import free_port
from tests.conftest import ROOT, TINY_DATASET, TINY_SETTINGS, write_tiny_dataset

SCRIPT = os.path.join(ROOT, "run_recbole_linear.py")
WORLD_SIZE = 2
N_USERS = 37  # odd: the DistributedSampler pads the evaluation ranks with a repeated user
DATA_SEED = 3  # gives 251 training samples (odd too: the training ranks are padded as well)
NO_DROPOUT = {
    "dropout_prob": 0.0, "lru_dropout_prob": 0.0, "hidden_dropout_prob": 0.0,
    "attn_dropout_prob": 0.0, "mixing_dropout_prob": 0.0,
}
# (model, all-position regime, extra settings)
STEP_CASES = [
    ("LRURec", False, {}),
    ("LinRec", False, {}),
    ("GLINTRU", False, {}),
    ("SASRec", False, {}),
    ("LRURec", True, {}),
    ("LinRec", True, {"linrec_causal": True}),
    ("SASRec", True, {}),
    # sampled losses: the ranks draw the batch's negatives from generators seeded alike, in step
    ("LRURec", True, {"loss_type": "SSM", "train_neg_sample_args": {"distribution": "popularity", "sample_num": 8}}),
    ("SASRec", False, {"loss_type": "gBCE", "train_neg_sample_args": {"distribution": "uniform", "sample_num": 8}}),
    # bf16 autocast inside each rank's loss: the same epoch up to bf16 rounding (see the test)
    ("LRURec", True, {"precision": "bf16"}),
    ("SASRec", False, {"precision": "bf16"}),
]


@pytest.fixture(scope="module")
def data_path(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("ddp_data"))
    write_tiny_dataset(folder, n_users=N_USERS, seed=DATA_SEED)
    return folder


def tiny_flags(data_path, **extra):
    settings = dict(TINY_SETTINGS, data_path=data_path, show_progress=False, log_wandb=False, **extra)
    return [f"--dataset={TINY_DATASET}"] + [f"--{key}={value}" for key, value in settings.items()]


def run_in_own_group(args, cwd, timeout=300):
    """Run the command line in a new process group; return the result after checking the group is empty."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    process = subprocess.Popen(
        [sys.executable, SCRIPT, *args], cwd=cwd, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
        left_behind = _wait_for_group_to_end(process.pid)
    finally:
        _kill_group(process.pid)
    assert not left_behind, f"processes of the run were left behind: {left_behind}"
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def _live_group_members(pgid):
    """Processes of group ``pgid`` that still run (from /proc; zombies have ended, they wait to be reaped)."""
    members = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        state, process_group = fields[0], int(fields[2])
        if process_group == pgid and state != "Z":
            members.append(int(pid))
    return members


def _wait_for_group_to_end(pgid, seconds=5.0):
    """The group's live processes left after ``seconds`` (multiprocessing's helper exits just after its parent)."""
    deadline = time.monotonic() + seconds
    while True:
        members = _live_group_members(pgid)
        if not members or time.monotonic() > deadline:
            return members
        time.sleep(0.1)


def _kill_group(pgid):
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def printed_metrics(output, label):
    """The last ``<label>: OrderedDict([...])`` line of a run's log, as a dict."""
    plain = re.sub(r"\x1b\[[0-9;]*m", "", output)
    found = re.findall(label + r"\s*: OrderedDict\((\[.*?\])\)", plain)
    assert found, plain[-3000:]
    return dict(ast.literal_eval(found[-1]))


# --- the command line: a 2-process run and its checkpoint evaluated in one process -----------
def test_two_process_run_reports_the_metrics_of_its_checkpoint_in_one_process(data_path, tmp_path):
    run = run_in_own_group(
        ["--model=LRURec", f"--nproc={WORLD_SIZE}", f"--port={free_port()}", *tiny_flags(data_path)], cwd=tmp_path
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-3000:]
    assert "DDP: 2 processes (gloo)" in output
    ddp_valid, ddp_test = printed_metrics(output, "best valid"), printed_metrics(output, "test result")
    (checkpoint,) = os.listdir(tmp_path / "saved")

    evaluate = run_in_own_group(
        ["evaluate", f"--checkpoint={tmp_path / 'saved' / checkpoint}", f"--output={tmp_path / 'eval.csv'}"],
        cwd=tmp_path,
    )
    assert evaluate.returncode == 0, (evaluate.stdout + evaluate.stderr)[-3000:]
    with open(tmp_path / "eval.csv") as f:
        (row,) = list(csv.DictReader(f))
    assert set(ddp_test) == {"recall@10", "mrr@10", "ndcg@10", "hit@10", "precision@10"}
    # equal to the printed precision (metric_decimal_place 4), every metric, validation and test
    assert {k: float(row[f"test_{k}"]) for k in ddp_test} == ddp_test
    assert {k: float(row[f"valid_{k}"]) for k in ddp_valid} == ddp_valid
    # and a count of users: recall@10 of one target per user is hits / users, with N_USERS users
    assert round(round(ddp_test["recall@10"] * N_USERS) / N_USERS, 4) == ddp_test["recall@10"]


def test_two_machines_each_with_one_process(data_path, tmp_path):
    """Two launches on this machine stand for two machines: ranks 0 and 1 of a world of 2."""
    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    machines, logs = [], [tmp_path / f"machine{offset}.log" for offset in (0, 1)]
    for offset in (0, 1):
        args = ["--model=LRURec", "--nproc=1", "--world_size=2", "--ip=127.0.0.1", f"--port={port}",
                f"--group_offset={offset}", *tiny_flags(data_path, checkpoint_dir=tmp_path / f"saved{offset}")]
        with open(logs[offset], "w") as log:  # files, not pipes: neither machine may block on its output
            machines.append(subprocess.Popen(
                [sys.executable, SCRIPT, *args], cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            ))
    try:
        for machine in machines:
            machine.wait(timeout=300)
        left_behind = [_wait_for_group_to_end(machine.pid) for machine in machines]
    finally:
        for machine in machines:
            _kill_group(machine.pid)
    outputs = [log.read_text() for log in logs]
    assert [machine.returncode for machine in machines] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    assert left_behind == [[], []]
    # each machine's first process writes the checkpoint on its own disk; the weights are the same
    (first,), (second,) = os.listdir(tmp_path / "saved0"), os.listdir(tmp_path / "saved1")
    weights = [torch.load(tmp_path / f"saved{i}" / name, weights_only=False)["state_dict"] for i, name in ((0, first), (1, second))]
    for key in weights[0]:
        torch.testing.assert_close(weights[1][key], weights[0][key], rtol=0, atol=0)
    assert printed_metrics(outputs[0], "test result") == printed_metrics(outputs[1], "test result")


# --- bad input: one line, exit 2, nothing left running ---------------------------------------
def _assert_one_line_error(result, fragment):
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert fragment in lines[0], lines[0]


def test_nproc_zero(data_path, tmp_path):
    result = run_in_own_group(["--model=LRURec", "--nproc=0", *tiny_flags(data_path)], cwd=tmp_path)
    _assert_one_line_error(result, "--nproc must be a positive integer")


def test_world_size_smaller_than_nproc(data_path, tmp_path):
    result = run_in_own_group(
        ["--model=LRURec", "--nproc=2", "--world_size=1", f"--port={free_port()}", *tiny_flags(data_path)], cwd=tmp_path
    )
    _assert_one_line_error(result, "--world_size (1) is smaller than --nproc (2)")


def test_port_in_use(data_path, tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_in_own_group(["--model=LRURec", "--nproc=2", f"--port={port}", *tiny_flags(data_path)], cwd=tmp_path)
    _assert_one_line_error(result, f"--port {port} is in use")
    assert not os.path.exists(tmp_path / "saved") or not os.listdir(tmp_path / "saved")


def test_nccl_without_gpus(data_path, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has GPUs")
    result = run_in_own_group(
        ["--model=LRURec", "--nproc=2", f"--port={free_port()}", "--ddp_backend=nccl", *tiny_flags(data_path)],
        cwd=tmp_path,
    )
    _assert_one_line_error(result, "ddp_backend nccl needs 2 GPUs")


def test_an_input_error_in_the_processes_ends_the_run_with_one_line(data_path, tmp_path):
    # found only when each process builds its trainer (after RecBole's log started on stderr)
    result = run_in_own_group(
        ["--model=BPR", "--nproc=2", f"--port={free_port()}", "--eval_mask_history=True", *tiny_flags(data_path)],
        cwd=tmp_path,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("run_recbole_linear.py: error: rank ") and "eval_mask_history applies to sequential" in last_line


def test_unknown_backend(data_path, tmp_path):
    result = run_in_own_group(["--model=LRURec", "--ddp_backend=mpi", *tiny_flags(data_path)], cwd=tmp_path)
    _assert_one_line_error(result, "invalid value for 'ddp_backend'")


@pytest.mark.parametrize(
    "cuda, gpus, settings, nproc, expected",
    [
        (False, 0, {"gpu_id": "0,1"}, 2, ("gloo", False)),  # this machine: no CUDA
        (True, 2, {"gpu_id": "0,1"}, 2, ("nccl", True)),  # one GPU per process
        (True, 2, {"gpu_id": "0"}, 2, ("gloo", False)),  # fewer gpu_ids than processes
        (True, 1, {"gpu_id": "0,1"}, 2, ("gloo", False)),  # fewer devices than processes
        (True, 2, {"gpu_id": "0,1", "use_gpu": False}, 2, ("gloo", False)),
        (True, 2, {"gpu_id": "0,1", "ddp_backend": "gloo"}, 2, ("gloo", True)),  # gloo forced on GPUs
        (True, 4, {"gpu_id": "0,1,2,3", "ddp_backend": "nccl"}, 4, ("nccl", True)),
    ],
)
def test_backend_follows_the_gpus_each_process_gets(monkeypatch, cuda, gpus, settings, nproc, expected):
    """The GPU branch of the backend choice, with CUDA's answers simulated (no GPU here)."""
    from recbole_linear.distributed import resolve_backend

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    assert resolve_backend(dict(settings), nproc) == expected


def test_nccl_is_refused_when_a_process_would_have_no_gpu(monkeypatch):
    from recbole_linear.distributed import resolve_backend
    from recbole_linear.errors import ConfigError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ConfigError, match="ddp_backend nccl needs 2 GPUs"):
        resolve_backend({"gpu_id": "0,1", "ddp_backend": "nccl"}, 2)


def test_every_rank_creates_the_shared_folders_itself(tmp_path, monkeypatch):
    """A rank that did not come through our launcher (torchrun, a caller's own spawn) still finds
    its checkpoint and log folders made with ``exist_ok``: RecBole's check-then-create
    ``ensure_dir`` races between ranks otherwise (FileExistsError seen in CI)."""
    import torch.distributed as dist

    from recbole_linear.distributed import init_process_group

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)  # the group "exists": no rendezvous
    monkeypatch.setattr(dist, "get_backend", lambda: "gloo")
    config_dict = {"local_rank": 1, "nproc": 2, "world_size": 2, "gpu_id": "", "ddp_backend": "gloo",
                   "model": "LRURec", "checkpoint_dir": str(tmp_path / "new" / "saved")}
    init_process_group(config_dict)
    assert (tmp_path / "new" / "saved").is_dir()
    assert (tmp_path / "log" / "LRURec").is_dir()
    assert config_dict["state"] == "error"  # a non-zero rank logs errors only
    init_process_group(config_dict)  # the folders already there: no error


# --- one step (one epoch) on 2 processes = the same step in one process ----------------------
def step_config_dict(data_path, checkpoint_dir, all_positions, extra):
    # SGD (its step is proportional to the gradient, unlike Adam's first step), no shuffling: the
    # ranks' k-th batches are then, together, the one-process k-th batch of train_batch_size
    return dict(
        TINY_SETTINGS, **NO_DROPOUT, **extra, data_path=data_path, checkpoint_dir=checkpoint_dir,
        show_progress=False, log_wandb=False, shuffle=False, learner="sgd", learning_rate=0.5,
        weight_decay=0.0, train_batch_size=16 if all_positions else 64, train_all_positions=all_positions,
    )


def train_one_epoch(model_name, config_dict):
    """(initial and trained parameters, valid metrics, training samples per epoch) of one epoch."""
    from recbole_linear.config import create_config
    from recbole_linear.quick_start import prepare

    config = create_config(model_name, TINY_DATASET, None, config_dict)
    _, (train_data, valid_data, _), model, trainer = prepare(config)
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}  # after DDP's broadcast
    trainer._train_epoch(train_data, 0)
    valid_result = trainer.evaluate(valid_data, load_best_model=False)
    trained = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return initial, trained, dict(valid_result), train_data.sample_size


def _step_worker(rank, data_path, out_dir, port):
    torch.set_num_threads(1)
    launch = {"local_rank": rank, "world_size": WORLD_SIZE, "nproc": WORLD_SIZE, "offset": 0,
              "ip": "localhost", "port": port}
    results = {}
    for model_name, all_positions, extra in STEP_CASES:
        config_dict = dict(step_config_dict(data_path, os.path.join(out_dir, "saved"), all_positions, extra), **launch)
        results[case_key(model_name, all_positions, extra)] = train_one_epoch(model_name, config_dict)
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))


@pytest.fixture(scope="module")
def ddp_steps(data_path, tmp_path_factory):
    import torch.multiprocessing as mp

    out_dir = str(tmp_path_factory.mktemp("ddp_steps"))
    mp.spawn(_step_worker, args=(data_path, out_dir, free_port()), nprocs=WORLD_SIZE, join=True)
    return [torch.load(os.path.join(out_dir, f"rank{r}.pt"), weights_only=False) for r in range(WORLD_SIZE)]


def case_key(model_name, all_positions, extra):
    return model_name, all_positions, extra.get("loss_type", "CE"), extra.get("precision", "fp32")


@pytest.mark.parametrize("model_name, all_positions, extra", STEP_CASES, ids=[
    f"{m}-{'all_positions' if a else 'recbole'}-{e.get('loss_type', 'CE')}-{e.get('precision', 'fp32')}" for m, a, e in STEP_CASES
])
def test_two_process_epoch_moves_the_parameters_as_one_process(ddp_steps, data_path, tmp_path, model_name, all_positions, extra):
    torch.set_num_threads(1)
    config_dict = step_config_dict(data_path, str(tmp_path / "saved"), all_positions, extra)
    initial, trained, valid_result, n_samples = train_one_epoch(model_name, config_dict)
    ddp_initial, ddp_trained, ddp_valid, ddp_samples = ddp_steps[0][case_key(model_name, all_positions, extra)]
    batch = config_dict["train_batch_size"]
    # several steps, the last one short, and a number of samples (prefixes or windows) that the
    # world size does not divide: one rank's last batch ends with the sampler's repeat
    assert ddp_samples == n_samples and n_samples > 2 * batch
    assert n_samples % batch != 0 and n_samples % WORLD_SIZE == 1
    # the same start (rank 0's initialisation, broadcast by DDP) and a step that moves the weights
    for key in initial:
        torch.testing.assert_close(ddp_initial[key], initial[key], rtol=0, atol=0)
    moved = max(float((trained[k] - initial[k]).abs().max()) for k in initial if initial[k].is_floating_point() or initial[k].is_complex())
    assert moved > 1e-3
    # bf16: each rank rounds its half-batch's products, one process the whole batch's, so the
    # SGD steps differ by bf16 rounding: within 3% of the largest move
    exact = extra.get("precision", "fp32") == "fp32"
    rtol, atol = (1e-4, 1e-6) if exact else (0.0, 0.03 * moved)
    for key in initial:
        torch.testing.assert_close(ddp_trained[key], trained[key], rtol=rtol, atol=atol, msg=lambda m: f"{key}: {m}")
        # every rank holds the same weights
        torch.testing.assert_close(ddp_steps[1][case_key(model_name, all_positions, extra)][1][key], ddp_trained[key], rtol=0, atol=0)
    if exact:  # the valid metrics the 2 processes computed together are those of one process
        assert ddp_valid == valid_result


# --- tune: each trial on 2 processes ---------------------------------------------------------
def test_tune_trial_on_two_processes_reports_the_metrics_of_its_checkpoint(data_path, tmp_path, monkeypatch):
    import functools

    from recbole_linear.workflow.tune import command as tuning
    from recbole_linear.quick_start import ddp_objective_function, evaluate_checkpoint

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    space = tmp_path / "space.hyper"
    space.write_text("learning_rate choice [0.01]\n")
    fixed = dict(TINY_SETTINGS, data_path=data_path, dataset=TINY_DATASET, show_progress=False, log_wandb=False,
                 checkpoint_dir=str(tmp_path / "saved"))
    objective = functools.partial(ddp_objective_function, nproc=WORLD_SIZE, port=free_port())
    tuning.tune("LRURec", TINY_DATASET, params_file=str(space), config_dict=fixed, algo="exhaustive",
                output_dir=str(tmp_path / "out"), objective=objective)
    with open(tmp_path / "out" / "trials.csv") as f:
        (row,) = list(csv.DictReader(f))
    checkpoint = os.path.join(tmp_path / "out", row["checkpoint"])  # stored relative to the folder
    _, valid_result, test_result = evaluate_checkpoint(checkpoint)
    assert float(row["valid_score"]) == valid_result["mrr@10"]  # RecBole's default valid_metric
    assert {k: float(row[f"test_{k}"]) for k in test_result} == test_result


def test_tune_nproc_with_ray_is_refused():
    from recbole_linear.errors import ConfigError
    from recbole_linear.workflow.tune.command import trial_objective

    assert trial_objective(1, "5678", "ray") is None
    with pytest.raises(ConfigError, match="Ray trials run one process each"):
        trial_objective(2, "5678", "ray")
    with pytest.raises(ConfigError, match="--nproc must be a positive integer"):
        trial_objective(0, "5678", "hyperopt")


# --- compare: each run trained on 2 processes -------------------------------------------------
def test_compare_with_nproc_trains_on_two_processes_and_records_the_runs_own_metrics(data_path, tmp_path):
    import numpy as np

    from recbole_linear.quick_start import evaluate_checkpoint

    result = run_in_own_group(
        ["compare", "--models=LRURec", "--seeds=2020", "--nproc=2", f"--output_dir={tmp_path / 'out'}",
         *tiny_flags(data_path, checkpoint_dir=tmp_path / "saved")],
        cwd=tmp_path,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    with open(tmp_path / "out" / "runs.csv") as f:
        (row,) = list(csv.DictReader(f))
    assert row["status"] == "ok", row["error"]
    log = (tmp_path / "out" / row["log_file"]).read_text()
    assert "DDP: 2 processes (gloo)" in log and "differs from the DDP run" not in log
    checkpoint = os.path.join(tmp_path / "out", row["checkpoint"])  # stored relative to the folder
    _, valid_result, test_result = evaluate_checkpoint(checkpoint)
    assert {k: float(row[f"test_{k}"]) for k in test_result} == test_result
    assert float(row["valid_mrr@10"]) == valid_result["mrr@10"]
    assert float(row["peak_rss_training_mb"]) > 100  # a training process: Python, torch, RecBole and the data
    per_user = np.load(tmp_path / "out" / row["per_user_file"])
    assert len(per_user["ndcg@10"]) == N_USERS
    assert round(float(per_user["ndcg@10"].mean()), 4) == test_result["ndcg@10"]
