"""Small builders shared by the unit tests.

Models are built on a fake dataset (only ``num(field)`` is read by
``SequentialRecommender``) so that layer-level tests need no data on disk.
"""
import torch

from recbole.data.interaction import Interaction

ITEM_SEQ = "item_id_list"
ITEM_SEQ_LEN = "item_length"
POS_ITEM_ID = "item_id"


class FakeDataset:
    """Stands in for a RecBole dataset: answers ``num('item_id')``."""

    def __init__(self, n_items):
        self.n_items = n_items

    def num(self, field):
        return self.n_items


def base_config(max_len=20, **overrides):
    """The keys ``SequentialRecommender.__init__`` reads, plus ``overrides``."""
    config = {
        "USER_ID_FIELD": "user_id",
        "ITEM_ID_FIELD": "item_id",
        "LIST_SUFFIX": "_list",
        "ITEM_LIST_LENGTH_FIELD": ITEM_SEQ_LEN,
        "NEG_PREFIX": "neg_",
        "MAX_ITEM_LIST_LENGTH": max_len,
        "device": torch.device("cpu"),
    }
    config.update(overrides)
    return config


def load_model_defaults(model_name):
    """The model's property file from ``properties/model/<model_name>.yaml`` as a dict."""
    from recbole_linear.config import load_model_properties

    return load_model_properties(model_name)


def build_model(model_cls, n_items=50, max_len=20, **overrides):
    """A plugin model with its property-file defaults, overridden by ``overrides``."""
    config = load_model_defaults(model_cls.__name__)
    config.update(base_config(max_len=max_len))
    config.update(overrides)
    return model_cls(config, FakeDataset(n_items))


def random_batch(n_items, batch_size, max_len, min_len=1, generator=None):
    """Right-padded item sequences as RecBole builds them, with random lengths."""
    lengths = torch.randint(min_len, max_len + 1, (batch_size,), generator=generator)
    seq = torch.randint(1, n_items, (batch_size, max_len), generator=generator)
    positions = torch.arange(max_len).unsqueeze(0)
    seq = seq.masked_fill(positions >= lengths.unsqueeze(1), 0)
    target = torch.randint(1, n_items, (batch_size,), generator=generator)
    return Interaction({ITEM_SEQ: seq, ITEM_SEQ_LEN: lengths, POS_ITEM_ID: target})
