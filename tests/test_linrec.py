"""LinRec (recbole_linear/model/linrec.py): SASRec with L2-normalised linear attention."""
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from recbole.data.interaction import Interaction
from recbole.model.sequential_recommender.sasrec import SASRec

from helpers import ITEM_SEQ, ITEM_SEQ_LEN, POS_ITEM_ID, FakeDataset, base_config, build_model, load_model_defaults, random_batch
from recbole_linear.model.linrec import LinRec

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_ITEMS = 40
TINY = dict(hidden_size=32, inner_size=64, n_heads=4, n_layers=2)


def tiny_linrec(max_len=20, seed=0, **overrides):
    torch.manual_seed(seed)
    model = build_model(LinRec, n_items=N_ITEMS, max_len=max_len, **{**TINY, **overrides})
    return model.double().eval()


def batch(item_lists, max_len):
    """Right-padded batch holding ``item_lists`` (one list of item ids per row)."""
    seq = torch.zeros(len(item_lists), max_len, dtype=torch.long)
    for row, items in enumerate(item_lists):
        seq[row, : len(items)] = torch.tensor(items)
    lengths = torch.tensor([len(items) for items in item_lists])
    return Interaction({ITEM_SEQ: seq, ITEM_SEQ_LEN: lengths, POS_ITEM_ID: torch.ones(len(item_lists), dtype=torch.long)})


def same_weights_longer_positions(model, max_len, **overrides):
    """A LinRec with ``max_len`` positions whose weights equal ``model``'s (position table truncated)."""
    other = tiny_linrec(max_len=max_len, **overrides)
    state = dict(model.state_dict())
    state["position_embedding.weight"] = state["position_embedding.weight"][:max_len]
    other.load_state_dict(state)
    return other


HISTORIES = [[3, 7, 1, 9], [5], [2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24]]


# ---------------------------------------------------------------- padding


@pytest.mark.parametrize("causal", [False, True])
def test_padding_mask_makes_scores_independent_of_max_length(causal):
    long_model = tiny_linrec(max_len=30, linrec_padding_mask=True, linrec_causal=causal, linrec_chunk_size=7)
    short_model = same_weights_longer_positions(long_model, 20, linrec_padding_mask=True, linrec_causal=causal, linrec_chunk_size=7)
    with torch.no_grad():
        scores_30 = long_model.full_sort_predict(batch(HISTORIES, 30))
        scores_20 = short_model.full_sort_predict(batch(HISTORIES, 20))
    torch.testing.assert_close(scores_30, scores_20, rtol=1e-10, atol=1e-12)


def test_without_padding_mask_scores_depend_on_max_length_as_in_official_code():
    long_model = tiny_linrec(max_len=30)
    short_model = same_weights_longer_positions(long_model, 20)
    with torch.no_grad():
        scores_30 = long_model.full_sort_predict(batch(HISTORIES, 30))
        scores_20 = short_model.full_sort_predict(batch(HISTORIES, 20))
    assert (scores_30 - scores_20).abs().max() > 1e-3


def test_padding_mask_changes_nothing_on_a_full_sequence():
    unmasked = tiny_linrec(max_len=12)
    masked = same_weights_longer_positions(unmasked, 12, linrec_padding_mask=True)
    full = batch([HISTORIES[2]], 12)
    with torch.no_grad():
        torch.testing.assert_close(masked.full_sort_predict(full), unmasked.full_sort_predict(full), rtol=0, atol=0)


@pytest.mark.parametrize("padding_mask", [False, True])
@pytest.mark.parametrize("causal", [False, True])
def test_all_padding_row_gives_finite_scores(padding_mask, causal):
    model = tiny_linrec(linrec_padding_mask=padding_mask, linrec_causal=causal, linrec_chunk_size=6).float()
    interaction = batch([[], [4, 5, 6]], 20)
    interaction[ITEM_SEQ_LEN][0] = 1  # RecBole never has length 0; the row holds no item at all
    model.train()
    loss = model.calculate_loss(interaction)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model.full_sort_predict(interaction)).all()


# ---------------------------------------------------------------- causality


def outputs_at_every_position(model, items):
    """The model's output read at positions 0..n-1 of one sequence, [n, hidden]."""
    n = len(items)
    seq = torch.tensor(items).unsqueeze(0).expand(n, -1)
    with torch.no_grad():
        return model(seq, torch.arange(1, n + 1))


def test_causal_later_item_does_not_change_earlier_outputs():
    model = tiny_linrec(linrec_causal=True, linrec_chunk_size=6)
    items = [(3 * i) % (N_ITEMS - 1) + 1 for i in range(20)]
    changed = list(items)
    changed[13] = 17 if items[13] != 17 else 18
    before, after = outputs_at_every_position(model, items), outputs_at_every_position(model, changed)
    torch.testing.assert_close(after[:13], before[:13], rtol=0, atol=1e-12)
    assert (after[13:] - before[13:]).abs().amax(dim=1).min() > 1e-4


def test_non_causal_later_item_changes_earlier_outputs_as_in_official_code():
    model = tiny_linrec()
    items = [(3 * i) % (N_ITEMS - 1) + 1 for i in range(20)]
    changed = list(items)
    changed[13] = 17 if items[13] != 17 else 18
    before, after = outputs_at_every_position(model, items), outputs_at_every_position(model, changed)
    assert (after[:13] - before[:13]).abs().amax(dim=1).min() > 1e-4


# ---------------------------------------------------------------- architecture = SASRec


def sasrec_config(max_len=20):
    config = load_model_defaults("LinRec")
    config.update(base_config(max_len=max_len))
    config.update(TINY)
    return config


def test_parameters_equal_sasrecs_at_the_same_config_and_seed():
    torch.manual_seed(3)
    sasrec = SASRec(sasrec_config(), FakeDataset(N_ITEMS))
    torch.manual_seed(3)
    linrec = build_model(LinRec, n_items=N_ITEMS, max_len=20, **TINY)
    sasrec_state, linrec_state = sasrec.state_dict(), linrec.state_dict()
    assert list(linrec_state) == list(sasrec_state)
    for name in sasrec_state:  # same names, shapes and (same seed, same init order) values
        assert torch.equal(linrec_state[name], sasrec_state[name]), name


def test_forward_is_sasrec_pipeline_with_the_official_attention():
    """Embedding -> LayerNorm -> per layer [official linear attention block, RecBole FeedForward]
    -> read-out at item_length - 1, recomputed by hand (eval mode, so dropout is off)."""
    model = tiny_linrec()
    interaction = random_batch(N_ITEMS, 5, 20, generator=torch.Generator().manual_seed(0))
    seq, lengths = interaction[ITEM_SEQ], interaction[ITEM_SEQ_LEN]
    heads, head_size = TINY["n_heads"], TINY["hidden_size"] // TINY["n_heads"]

    def split(t):
        return t.view(5, 20, heads, head_size).transpose(1, 2)

    def l2_elu(t):
        t = F.elu(t)
        return t / t.norm(dim=-1, keepdim=True)

    with torch.no_grad():
        hidden = model.LayerNorm(model.item_embedding(seq) + model.position_embedding.weight[:20])
        for layer in model.trm_encoder.layer:
            attention = layer.multi_head_attention
            q, k, v = split(attention.query(hidden)), split(attention.key(hidden)), split(attention.value(hidden))
            context = l2_elu(q) @ (l2_elu(k).transpose(-2, -1) @ v) / math.sqrt(head_size)
            hidden = attention.LayerNorm(attention.dense(context.transpose(1, 2).reshape(5, 20, -1)) + hidden)
            hidden = layer.feed_forward(hidden)
        expected = hidden[torch.arange(5), lengths - 1] @ model.item_embedding.weight.T
        torch.testing.assert_close(model.full_sort_predict(interaction), expected, rtol=1e-10, atol=1e-12)
        expected_pointwise = expected[torch.arange(5), interaction[POS_ITEM_ID]]
        torch.testing.assert_close(model.predict(interaction), expected_pointwise, rtol=1e-10, atol=1e-12)


def test_attn_dropout_prob_has_no_effect():
    interaction = random_batch(N_ITEMS, 4, 20, generator=torch.Generator().manual_seed(1))
    losses = []
    for attn_dropout in (0.0, 0.9):
        model = tiny_linrec(attn_dropout_prob=attn_dropout, hidden_dropout_prob=0.0)
        model.train()
        losses.append(model.calculate_loss(interaction))
    assert torch.equal(losses[0], losses[1])


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({}, id="default"),
        pytest.param({"linrec_padding_mask": True}, id="padding"),
        pytest.param({"linrec_causal": True, "linrec_chunk_size": 6}, id="causal"),
        pytest.param({"loss_type": "BPR"}, id="bpr"),
    ],
)
def test_every_parameter_gets_a_gradient(overrides):
    model = tiny_linrec(**overrides).float()
    model.train()
    interaction = random_batch(N_ITEMS, 8, 20, generator=torch.Generator().manual_seed(2))
    interaction.update(Interaction({"neg_item_id": torch.randint(1, N_ITEMS, (8,), generator=torch.Generator().manual_seed(3))}))
    model.calculate_loss(interaction).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert parameter.grad.abs().sum() > 0, name


def test_rejects_hidden_size_not_divisible_by_heads():
    with pytest.raises(ValueError):
        tiny_linrec(hidden_size=30, n_heads=4)


# ---------------------------------------------------------------- RecBole's own models stay unchanged

_RECBOLE_MODELS_SCRIPT = textwrap.dedent(
    """
    import hashlib, sys, torch, yaml, recbole
    if sys.argv[1] == "with_plugin":
        import recbole_linear
        assert "LinRec" in dir(recbole_linear)
    from recbole.model.sequential_recommender.sasrec import SASRec
    from recbole.model.sequential_recommender.bert4rec import BERT4Rec
    from helpers import FakeDataset, base_config, random_batch

    def digest(*tensors):
        h = hashlib.sha256()
        for t in tensors:
            h.update(t.detach().contiguous().numpy().tobytes())
        return h.hexdigest()

    properties = recbole.__path__[0] + "/properties/model/"
    for cls, extra in ((SASRec, {}), (BERT4Rec, {"MASK_ITEM_SEQ": "m", "POS_ITEMS": "p", "NEG_ITEMS": "n", "MASK_INDEX": "i"})):
        config = yaml.safe_load(open(properties + cls.__name__ + ".yaml"))
        config["layer_norm_eps"] = float(config["layer_norm_eps"])  # safe_load reads "1e-12" as a string
        config.update(base_config(max_len=20), **extra)
        torch.manual_seed(0)
        model = cls(config, FakeDataset(40))
        interaction = random_batch(40, 6, 20, generator=torch.Generator().manual_seed(1))
        model.train()  # dropout on: the RNG stream must be consumed identically too
        torch.manual_seed(2)
        if cls is SASRec:
            output = model(interaction["item_id_list"], interaction["item_length"])
        else:
            output = model(interaction["item_id_list"])
        output.sum().backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]  # BERT4Rec: output_bias is unused in forward
        print(cls.__name__, digest(*model.state_dict().values()), digest(output), digest(*grads))
    """
)


def _run_recbole_models(mode):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO_ROOT, os.path.join(REPO_ROOT, "tests")]))
    result = subprocess.run(
        [sys.executable, "-c", _RECBOLE_MODELS_SCRIPT, mode], capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=300
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()


def test_importing_plugin_leaves_sasrec_and_bert4rec_bit_identical():
    without_plugin = _run_recbole_models("without_plugin")
    with_plugin = _run_recbole_models("with_plugin")
    assert [line.split()[0] for line in without_plugin] == ["SASRec", "BERT4Rec"]
    assert with_plugin == without_plugin


def test_dropouts_sit_before_each_residual_layer_norm_in_train_mode():
    """Train mode, hidden dropout 0.5: every attention and feed-forward sub-layer output is still
    LayerNorm-normalised (LN weights 1, biases 0 at init), so its dropout acts before the residual
    LayerNorm, as in the official code (and RecBole's SASRec); the embedding's dropout acts after
    its LayerNorm, as there, so the encoder input is not normalised."""
    model = tiny_linrec(hidden_dropout_prob=0.5, layer_norm_eps=1e-12).train()
    outputs = []
    for layer in model.trm_encoder.layer:
        for sub_layer in (layer.multi_head_attention, layer.feed_forward):
            sub_layer.register_forward_hook(lambda m, args, out: outputs.append(out))
    encoder_input = []
    model.trm_encoder.register_forward_hook(lambda m, args, out: encoder_input.append(args[0]))
    interaction = batch([[3, 5, 7, 9], [2, 4], list(range(1, 21))], 20)
    model(interaction[ITEM_SEQ], interaction[ITEM_SEQ_LEN])
    assert len(outputs) == 2 * len(model.trm_encoder.layer)
    for value in outputs:
        torch.testing.assert_close(value.mean(-1), torch.zeros(value.shape[:-1], dtype=value.dtype), rtol=0, atol=1e-8)
        torch.testing.assert_close(value.var(-1, unbiased=False), torch.ones(value.shape[:-1], dtype=value.dtype),
                                   rtol=0, atol=1e-6)
    assert (encoder_input[0].var(-1, unbiased=False) - 1).abs().max() > 0.1  # dropout after the embedding's LN
