"""The command line, in the style of RecBole's ``run_recbole.py``; a thin shell over importable functions.

    python run_recbole_linear.py --model=LRURec --dataset=ml-100k --config_files="a.yaml b.yaml" --epochs=10
    python run_recbole_linear.py tune --model=LRURec --params_file=properties/hyper/LRURec.hyper ...
    python run_recbole_linear.py compare --models=LRURec,SASRec --seeds=2020,2021 ...
    python run_recbole_linear.py evaluate --checkpoint=saved/LRURec-....pth --eval_mask_history=True

Every ``--key=value`` the parser does not know goes to the RecBole config (highest precedence); a
key that no property file defines is an error unless ``--allow_unknown_keys`` names it.
Bad input (unknown model or dataset, unreadable config file, invalid values) ends with one line on
stderr and exit status 2, no traceback.
"""
import argparse
import importlib
import sys

from recbole_linear.config import parse_cmd_args
from recbole_linear.errors import ConfigError, RecBoleLinearError
from recbole_linear.known_keys import allow_keys, check_command_line_keys
from recbole_linear.paths import protocol_file
from recbole_linear.quick_start import run

PROG = "run_recbole_linear.py"
# subcommand -> module exposing cli_main(argv) -> int
SUBCOMMANDS = {
    "tune": "recbole_linear.workflow.tune.command",
    "compare": "recbole_linear.workflow.compare.command",
    "evaluate": "recbole_linear.workflow.evaluate",
    "merge": "recbole_linear.workflow.compare.merge",
}


def common_parser(prog, description):
    """Arguments every subcommand shares: dataset and config files (overrides ride along as --key=value)."""
    parser = argparse.ArgumentParser(prog=prog, description=description, allow_abbrev=False)
    parser.add_argument("--dataset", "-d", default="ml-100k", help="dataset name (default: RecBole's bundled ml-100k)")
    parser.add_argument(
        "--config_files", default=None, help="space-separated YAML config files; later files win"
    )
    parser.add_argument(
        "--protocol",
        default=None,
        help="a paper's run settings shipped with the plugin (lrurec-paper, linrec-paper, glintru-paper), "
        "read before --config_files",
    )
    parser.add_argument(
        "--allow_unknown_keys",
        default="",
        help="comma-separated --key=value keys that no property file defines, passed on purpose "
        "(a custom model's); any other unknown key is an error",
    )
    return parser


def split_names(value):
    return [name.strip() for name in (value or "").split(",") if name.strip()]


def split_config_files(value):
    return value.split() if value else None


def parse_known(parser, argv):
    """Parse ``argv``; anything unknown must be a ``--key=value`` config override."""
    args, rest = parser.parse_known_args(argv)
    keys = parse_cmd_args(rest)  # raises ConfigError for anything not --key=value
    allow_keys(split_names(getattr(args, "allow_unknown_keys", "")))
    check_command_line_keys(keys)  # a typo ('--epoch=1') stops here, before anything loads
    _protocol_into_config_files(args)
    return args, rest


def _protocol_into_config_files(args):
    """``--protocol=NAME`` -> its shipped file, first in ``args.config_files`` (so the user's files win)."""
    if getattr(args, "protocol", None) is None:
        return
    path = protocol_file(args.protocol)  # ConfigError for an unknown name
    if len(path.split()) != 1:
        raise ConfigError(f"--protocol: the installed path '{path}' has spaces; pass it with --config_files")
    args.config_files = " ".join([path] + (split_config_files(args.config_files) or []))


_EPILOG = f"""\
subcommands (each has its own --help):
  tune       tune hyperparameters with RecBole's HyperTuning or Ray Tune
               {PROG} tune --model=LRURec --algo=random --max_evals=8
  compare    train every model x seed under one protocol and tabulate the results
               {PROG} compare --models=LRURec,SASRec --seeds=2020,2021
  evaluate   score saved models again, e.g. under the official masked protocol
               {PROG} evaluate --runs=DIR --eval_mask_history=True
  merge      the finished runs of several compare folders in one folder and one summary
               {PROG} merge --output_dir=DEST SRC1 SRC2

--key=value: every argument of this form that is not an option above is a RecBole config
override, above config files in precedence (--epochs=50 --hidden_size=64 --topk=[5,10]); values
are read as Python literals, as RecBole reads its command line. Write it as one word with '='
('--epochs 50' is refused). A key that no RecBole or plugin property file defines is an error
('--epoch=1': did you mean 'epochs'?); pass a custom model's key on purpose with
--allow_unknown_keys=KEY[,KEY...].
"""


def run_parser():
    parser = common_parser(PROG, "Train and test one model (plugin or RecBole built-in) on a RecBole dataset.")
    parser.usage = f"\n  {PROG} --model=MODEL [options] [--key=value ...]\n  {PROG} {{tune,compare,evaluate,merge}} [--help] ..."
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = _EPILOG
    parser.add_argument("--model", "-m", required=True, help="model name, e.g. LRURec, LinRec, GLINTRU, SASRec")
    parser.add_argument("--nproc", type=int, default=1, help="processes on this machine (DDP: gloo on CPUs, NCCL on GPUs)")
    parser.add_argument("--world_size", type=int, default=-1, help="total processes across machines")
    parser.add_argument("--ip", default="localhost", help="address of the DDP master")
    parser.add_argument("--port", default="5678", help="port of the DDP master")
    parser.add_argument("--group_offset", type=int, default=0, help="global rank offset of this machine")
    return parser


def run_main(argv):
    args, overrides = parse_known(run_parser(), argv)
    run(
        model=args.model,
        dataset=args.dataset,
        config_file_list=split_config_files(args.config_files),
        cmd_args=overrides,
        nproc=args.nproc,
        world_size=args.world_size,
        ip=args.ip,
        port=args.port,
        group_offset=args.group_offset,
    )
    return 0


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in SUBCOMMANDS:
            module = importlib.import_module(SUBCOMMANDS[argv[0]])
            return module.cli_main(argv[1:])
        return run_main(argv)
    except RecBoleLinearError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
