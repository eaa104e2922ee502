"""The README's serving snippet, run as written on a tiny trained LRURec: raw item tokens in and out,
padding and the user's history ranked out, the same ranking as ``full_sort_predict``."""
import os
import re

import numpy as np
import pytest
import torch
from recbole.data.interaction import Interaction

from recbole_linear import run_recbole_linear
from tests.conftest import ROOT, TINY_DATASET, TINY_SETTINGS

HISTORY = ["242", "302", "377"]  # the snippet's raw tokens


def readme_snippet():
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    match = re.search(r"<!-- serving:example -->\n```python\n(.*?)```\n<!-- /serving:example -->", text, re.S)
    assert match, "the README lost its serving example"
    return match.group(1)


def write_dataset(folder):
    """40 users over 30 item tokens that include the snippet's three; user 1 has all three."""
    rng = np.random.default_rng(3)
    tokens = HISTORY + [str(t) for t in range(500, 527)]
    os.makedirs(folder / TINY_DATASET)
    with open(folder / TINY_DATASET / f"{TINY_DATASET}.inter", "w") as f:
        f.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for user in range(1, 41):
            items = list(rng.choice(tokens, size=rng.integers(6, 14)))
            if user == 1:
                items = HISTORY + items
            for t, item in enumerate(items):
                f.write(f"{user}\t{item}\t{t}\n")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("serving")
    write_dataset(folder)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)  # RecBole writes log/ into the cwd
        config_dict = {**TINY_SETTINGS, "data_path": str(folder), "show_progress": False,
                       "checkpoint_dir": str(folder / "saved"), "log_wandb": False}
        result = run_recbole_linear("LRURec", TINY_DATASET, config_dict=config_dict)
    return result["saved_model_file"]


def test_readme_serving_snippet_runs_and_ranks_like_full_sort_predict(checkpoint):
    code = readme_snippet()
    assert code.count('"saved/LRURec-....pth"') == 1
    namespace = {}
    exec(compile(code.replace('"saved/LRURec-....pth"', repr(checkpoint)), "README serving example", "exec"), namespace)

    dataset, model = namespace["dataset"], namespace["model"]
    recommended = list(namespace["recommended"])
    assert len(recommended) == 10 == len(set(recommended))
    known = set(dataset.field2id_token["item_id"][1:])  # every raw item token (index 0 is '[PAD]')
    assert set(recommended) <= known and not set(recommended) & set(HISTORY)
    assert list(namespace["item_ids"]) == [dataset.field2token_id["item_id"][t] for t in HISTORY]

    # the same ranking from the full forward over the padded history
    item_seq = torch.zeros(1, model.max_seq_length, dtype=torch.long)
    item_seq[0, :3] = torch.as_tensor(namespace["item_ids"])
    interaction = Interaction({"item_id_list": item_seq, "item_length": torch.tensor([3])})
    with torch.no_grad():
        scores = model.full_sort_predict(interaction).view(1, -1)
    scores[0, 0] = -torch.inf
    scores[0, item_seq[0, :3]] = -torch.inf
    expected = [dataset.id2token("item_id", i) for i in scores.topk(10).indices[0].tolist()]
    assert recommended == expected
    assert torch.allclose(namespace["scores"], scores, atol=1e-5)
