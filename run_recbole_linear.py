"""Command line of recbole-linear, in the style of RecBole's run_recbole.py.

    python run_recbole_linear.py --model=LRURec --dataset=ml-100k --config_files="a.yaml" --epochs=10
    python run_recbole_linear.py tune --help
    python run_recbole_linear.py compare --help
    python run_recbole_linear.py evaluate --help
"""
import sys

from recbole_linear.cli import main

if __name__ == "__main__":
    sys.exit(main())
