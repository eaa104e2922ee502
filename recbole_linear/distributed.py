"""Multi-process and multi-machine runs on ``torch.distributed``: gloo on CPUs, NCCL on GPUs.

RecBole 1.2.1 has a DDP path (``--nproc``, ``--world_size``, ``--ip``, ``--port``,
``--group_offset``), but it is hard-wired to NCCL and CUDA (``Config._init_device`` calls
``init_process_group(backend="nccl")`` and ``torch.cuda.set_device``). This module replaces the
launch and the process group from the plugin's side, without editing RecBole:

- :func:`check_launch` and :func:`spawn`: the checks made before any process starts, and the
  processes, with a child's input error reported as one line;
- :func:`init_process_group` (called by ``PluginConfig._init_device`` for a DDP rank): the device
  (``cuda:<local_rank>`` when GPUs are usable, else the CPU) and the backend (``ddp_backend``:
  ``auto`` = NCCL on GPUs, gloo on CPUs; ``gloo`` or ``nccl`` forces one);
- :func:`as_single_process`: a DDP run's saved config, made fit to be evaluated in one process.

The trainer's side (model wrap, exact evaluation, the training step) is
:mod:`recbole_linear.distributed_trainer`.
"""
import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from recbole_linear.errors import ConfigError, RecBoleLinearError

DDP_BACKENDS = ("auto", "gloo", "nccl")


class DistributedRunError(RecBoleLinearError):
    """A process of a DDP run stopped on bad input (its message, one line)."""


# --- before any process starts ---------------------------------------------------------------
def _gpu_ids(config_dict):
    gpu_id = str(config_dict["gpu_id"] if config_dict.get("gpu_id") is not None else "")
    return [g for g in gpu_id.split(",") if g.strip()]


def gpus_usable(config_dict, nproc):
    """Whether this machine's ``nproc`` processes train on GPUs: ``use_gpu``, CUDA and enough ``gpu_id``s."""
    if not config_dict.get("use_gpu", True) or not _gpu_ids(config_dict):
        return False
    return torch.cuda.is_available() and min(len(_gpu_ids(config_dict)), torch.cuda.device_count()) >= nproc


def resolve_backend(config_dict, nproc):
    """``(backend, on_gpu)`` for a DDP run; ConfigError for a backend this machine cannot run."""
    requested = config_dict.get("ddp_backend") or "auto"
    if requested not in DDP_BACKENDS:
        raise ConfigError(f"invalid value for 'ddp_backend': {requested!r} (expected one of {', '.join(DDP_BACKENDS)})")
    on_gpu = gpus_usable(config_dict, nproc)
    if requested == "nccl" and not on_gpu:
        raise ConfigError(
            f"ddp_backend nccl needs {nproc} GPUs on this machine (gpu_id '{config_dict.get('gpu_id')}', "
            f"CUDA available: {torch.cuda.is_available()}); use ddp_backend auto or gloo on CPUs"
        )
    backend = ("nccl" if on_gpu else "gloo") if requested == "auto" else requested
    return backend, on_gpu


def check_port_free(port):
    """ConfigError if ``port`` cannot be listened on here (rank 0's rendezvous listens on it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a port in TIME_WAIT is free to reuse
        try:
            probe.bind(("", port))
        except OSError as e:
            raise ConfigError(f"--port {port} is in use on this machine ({e.strerror}); pick a free port") from None


def free_port():
    """A TCP port free on this machine now (the system's pick), for a run that needs one of its own."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("", 0))
        return probe.getsockname()[1]


def check_launch(config, nproc, world_size, port, group_offset):
    """Validate a DDP launch before any process starts; returns the config keys every rank gets.

    ``world_size=-1`` means ``nproc`` (one machine). The machine with ``group_offset`` 0 hosts
    global rank 0, whose rendezvous listens on ``port``: that port must be free there.
    """
    if not isinstance(nproc, int) or nproc < 1:
        raise ConfigError(f"--nproc must be a positive integer (processes on this machine), got {nproc}")
    world_size = nproc if world_size == -1 else world_size
    if not isinstance(world_size, int) or world_size < nproc:
        raise ConfigError(f"--world_size ({world_size}) is smaller than --nproc ({nproc}) (it counts every machine's processes)")
    if not isinstance(group_offset, int) or group_offset < 0 or group_offset + nproc > world_size:
        raise ConfigError(
            f"--group_offset {group_offset} with --nproc {nproc} does not fit --world_size {world_size} "
            "(this machine's ranks are group_offset .. group_offset + nproc - 1)"
        )
    try:
        port = int(port)
    except (TypeError, ValueError):
        raise ConfigError(f"--port must be an integer, got {port!r}") from None
    if not 0 < port < 65536:
        raise ConfigError(f"--port must be in 1..65535, got {port}")
    resolve_backend(config.final_config_dict, nproc)
    if group_offset == 0:
        check_port_free(port)
    return {"nproc": nproc, "world_size": world_size, "port": port, "offset": group_offset}


def make_shared_folders(config):
    """Create the folders every rank writes into: RecBole's ``ensure_dir`` checks then creates,
    so two ranks racing on a new folder crash with ``FileExistsError``. The launcher calls this
    before the ranks start and every rank calls it again in :func:`init_process_group` (a rank
    started by ``torchrun`` or a caller's own ``spawn`` never passes through our launcher);
    ``exist_ok`` makes the repeat harmless."""
    for folder in (config["checkpoint_dir"], os.path.join("log", config["model"]), "log_tensorboard"):
        os.makedirs(folder, exist_ok=True)


# --- in each process: PluginConfig._init_device ---------------------------------------------
def init_process_group(config_dict):
    """Device, backend and process group of one DDP rank (``config_dict`` has ``local_rank``).

    Mirrors RecBole's DDP branch (``CUDA_VISIBLE_DEVICES`` from ``gpu_id``, global rank
    ``local_rank + offset``, TCP rendezvous at ``ip:port``, non-zero local ranks log errors only)
    but uses the CPU and gloo where there are no GPUs, and makes no CUDA call then. A process group
    that already exists (``torchrun``, a caller's own) is used as it is.
    """
    gpu_id = config_dict.get("gpu_id")
    config_dict["gpu_id"] = ",".join(map(str, gpu_id)) if isinstance(gpu_id, (tuple, list)) else str(gpu_id)
    os.environ["CUDA_VISIBLE_DEVICES"] = config_dict["gpu_id"]
    local_rank, nproc = config_dict["local_rank"], config_dict.get("nproc", 1)
    backend, on_gpu = resolve_backend(config_dict, nproc)
    if not dist.is_initialized():
        dist.init_process_group(
            backend=backend,
            rank=local_rank + config_dict.get("offset", 0),
            world_size=config_dict["world_size"],
            init_method=f"tcp://{config_dict['ip']}:{config_dict['port']}",
        )
    if on_gpu:
        config_dict["device"] = torch.device("cuda", local_rank)
        torch.cuda.set_device(local_rank)
    else:
        config_dict["device"] = torch.device("cpu")
    config_dict["ddp_backend_used"] = dist.get_backend()
    make_shared_folders(config_dict)
    config_dict["single_spec"] = False
    if local_rank != 0:
        config_dict["state"] = "error"
        config_dict["show_progress"] = False
        config_dict["verbose"] = False


def as_single_process(config):
    """Turn the config a DDP rank saved in its checkpoint into a one-process config (in place).

    Loading a DDP run's checkpoint again (``evaluate``, ``load_data_and_model``) builds one
    process's dataloaders and trainer: without this they would ask for a process group. The
    device is the one a one-process run would get here.
    """
    if config["single_spec"] is False:
        config_dict = config.final_config_dict
        config_dict["single_spec"] = True
        config_dict["local_rank"] = 0
        on_gpu = bool(config_dict.get("use_gpu", True)) and bool(_gpu_ids(config_dict)) and torch.cuda.is_available()
        config_dict["device"] = torch.device("cuda") if on_gpu else torch.device("cpu")
    return config


# --- the processes ---------------------------------------------------------------------------
class WorkerError:
    """A child's input error, sent to the parent through the result queue."""

    def __init__(self, rank, message):
        self.rank = rank
        self.message = message


def threads_per_process(nproc):
    """torch threads of each of ``nproc`` processes: ``OMP_NUM_THREADS`` if set, else an equal share of the cores."""
    if os.environ.get("OMP_NUM_THREADS"):
        return None
    return max(1, (os.cpu_count() or 1) // nproc)


def spawn(worker, args, nproc):
    """Run ``worker(rank, *args, queue)`` in ``nproc`` processes; return what rank 0 put in the queue.

    When a process fails, torch ends the others; a child's input error (a :class:`WorkerError`
    in the queue) is raised here as :class:`DistributedRunError`, one line.
    """
    queue = mp.get_context("spawn").SimpleQueue()
    threads = threads_per_process(nproc)
    if threads is not None:  # the children read it when torch starts; this process keeps its own
        os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        mp.spawn(worker, args=(*args, queue), nprocs=nproc, join=True)
    except (mp.ProcessRaisedException, mp.ProcessExitedException):
        errors = [item for item in _drain(queue) if isinstance(item, WorkerError)]
        if errors:
            raise DistributedRunError(f"rank {errors[0].rank}: {errors[0].message}") from None
        raise
    finally:
        if threads is not None:
            os.environ.pop("OMP_NUM_THREADS", None)
    results = [item for item in _drain(queue) if not isinstance(item, WorkerError)]
    return results[0] if results else None


def _drain(queue):
    items = []
    while not queue.empty():
        items.append(queue.get())
    return items


def report_worker_error(queue, rank, error):
    """In a child: put its input error (or a rendezvous failure) in the queue, for :func:`spawn`."""
    message = (str(error).strip().splitlines() or [type(error).__name__])[0]
    queue.put(WorkerError(rank, message))
