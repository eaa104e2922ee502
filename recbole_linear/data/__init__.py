"""Data storage for sequential runs: RecBole's dataset with each interaction stored once."""
from recbole_linear.data.lean_dataset import SEQUENCE_END_FIELD, LeanSequentialDataset  # noqa: F401
from recbole_linear.data.storage import create_dataset, register_dataset, storage_for  # noqa: F401
