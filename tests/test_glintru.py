"""GLINT-RU: the official computation, initialisation, parameter count and configuration errors."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers import POS_ITEM_ID, build_model, load_model_defaults, random_batch
from recbole_linear.errors import ConfigError
from recbole_linear.model.glintru import GLINTRU

N_ITEMS = 60
MAX_LEN = 20
BATCH = 8
SMALL = dict(hidden_size=32, embedding_size=32, n_heads=4)


def small_model(seed=0, **overrides):
    torch.manual_seed(seed)
    return build_model(GLINTRU, n_items=N_ITEMS, max_len=MAX_LEN, **{**SMALL, **overrides})


def batch(seed=1, batch_size=BATCH):
    generator = torch.Generator().manual_seed(seed)
    interaction = random_batch(N_ITEMS, batch_size, MAX_LEN, generator=generator)
    negatives = torch.randint(1, N_ITEMS, (batch_size,), generator=generator)
    interaction.update(type(interaction)({"neg_item_id": negatives}))
    return interaction


def non_embedding_parameters(model):
    return sum(p.numel() for name, p in model.named_parameters() if not name.startswith("item_embedding."))


# ---------------------------------------------------------------- size, init, config
@pytest.mark.parametrize("hidden, heads, expected", [(128, 8, 395_586), (64, 4, 99_490)])
def test_parameter_count_outside_embedding_matches_official(hidden, heads, expected):
    model = build_model(GLINTRU, n_items=10, max_len=5, hidden_size=hidden, embedding_size=hidden, n_heads=heads)
    assert non_embedding_parameters(model) == expected
    assert model.item_embedding.weight.shape == (10, hidden)


def test_property_file_defaults():
    defaults = load_model_defaults("GLINTRU")
    assert defaults == {
        "embedding_size": 128,
        "hidden_size": 128,
        "n_heads": 8,
        "num_layers": 1,
        "conv_kernel_size": 3,
        "dropout_prob": 0.3,
        "hidden_dropout_prob": 0.2,
        "mixing_dropout_prob": 0.3,
        "layer_norm_eps": 1e-12,
        "loss_type": "CE",
    }


def test_state_dict_uses_official_names():
    """Official checkpoints load as they are: same keys and shapes as GLINT-RU.py."""
    model = small_model()
    d = 32
    linear = lambda n_out, n_in: {"weight": (n_out, n_in), "bias": (n_out,)}  # noqa: E731
    expected = {"weights": (2,), "item_embedding.weight": (N_ITEMS, d)}
    for name, (n_out, n_in) in {
        "dense1": (d, d), "dense2": (d, d), "projection": (d, d), "selective_gate.0": (d // 2, d),
        "selective_gate.2": (d, d // 2), "linearattention.query": (d, d), "linearattention.key": (d, d),
        "linearattention.value": (d, d), "linearattention.dense": (d, d), "dense": (d, d),
        "dense3": (d, d), "dense4": (d, d), "denseout": (d, d),
    }.items():
        expected.update({f"{name}.{k}": shape for k, shape in linear(n_out, n_in).items()})
    for conv in ("conv1d", "conv1dforgru"):
        expected.update({f"{conv}.weight": (d, d, 3), f"{conv}.bias": (d,)})
    expected.update({"gru_layers.weight_ih_l0": (3 * d, d), "gru_layers.weight_hh_l0": (3 * d, d)})
    for norm in ("LayerNorm", "linearattention.LayerNorm"):
        expected.update({f"{norm}.weight": (d,), f"{norm}.bias": (d,)})
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == expected


def test_mixing_weights_start_at_half():
    model = small_model()
    assert model.weights.tolist() == [0.5, 0.5]
    assert F.softmax(model.weights, dim=0).tolist() == [0.5, 0.5]


def test_initialisation_follows_official_code():
    d = 32
    model = small_model(num_layers=2)
    # xavier-normal embedding overwrites the padding row
    assert model.item_embedding.weight[0].abs().sum() > 0
    assert model.item_embedding.weight.std().item() == pytest.approx(math.sqrt(2.0 / (N_ITEMS + d)), rel=0.1)
    # every Linear (attention's included): xavier-uniform, zero bias
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 13
    for linear in linears:
        n_out, n_in = linear.weight.shape
        assert linear.weight.abs().max() <= math.sqrt(6.0 / (n_in + n_out))
        if linear.weight.numel() >= 512:  # enough draws to tell xavier's std from PyTorch's 1/sqrt(3 n_in)
            assert linear.weight.std().item() == pytest.approx(math.sqrt(2.0 / (n_in + n_out)), rel=0.15)
        assert torch.count_nonzero(linear.bias) == 0
    # GRU: layer 0 re-initialised xavier-uniform, bound sqrt(6 / (d + 3d)) > PyTorch's 1 / sqrt(d);
    # layer 1 keeps PyTorch's U(-1/sqrt(d), 1/sqrt(d))
    gru = model.gru_layers
    for name in ("weight_ih_l0", "weight_hh_l0"):
        weight = getattr(gru, name)
        assert 1 / math.sqrt(d) < weight.abs().max() <= math.sqrt(6.0 / (4 * d))
    for name in ("weight_ih_l1", "weight_hh_l1"):
        assert getattr(gru, name).abs().max() <= 1 / math.sqrt(d)
    # Conv1d and LayerNorm: PyTorch defaults
    for conv in (model.conv1d, model.conv1dforgru):
        assert conv.weight.abs().max() <= 1 / math.sqrt(d * 3)
    for norm in (model.LayerNorm, model.linearattention.LayerNorm):
        assert torch.equal(norm.weight, torch.ones(d)) and torch.equal(norm.bias, torch.zeros(d))


def test_hidden_not_divisible_by_heads_is_a_config_error():
    with pytest.raises(ConfigError, match=r"hidden_size divisible by n_heads \(got 30 and 4\)"):
        small_model(hidden_size=30, embedding_size=30, n_heads=4)


def test_embedding_size_must_equal_hidden_size():
    with pytest.raises(ConfigError, match=r"embedding_size == hidden_size \(got 16 and 32\)"):
        small_model(embedding_size=16)


@pytest.mark.parametrize("kernel", [2, 4, 0, -3])
def test_even_or_non_positive_kernel_is_a_config_error(kernel):
    with pytest.raises(ConfigError, match=r"positive odd conv_kernel_size"):
        small_model(conv_kernel_size=kernel)


def test_unknown_loss_type_is_a_config_error():
    with pytest.raises(ConfigError, match=r"loss_type 'BPR', 'CE', 'SSM' or 'gBCE'"):
        small_model(loss_type="BCE")


def test_config_errors_are_value_errors_with_one_line():
    with pytest.raises(ValueError) as info:
        small_model(hidden_size=30, embedding_size=30, n_heads=4)
    assert "\n" not in str(info.value)


def test_odd_hidden_size_uses_floor_half_bottleneck():
    model = small_model(hidden_size=15, embedding_size=15, n_heads=3)
    assert model.selective_gate[0].out_features == 7
    assert model.full_sort_predict(batch()).shape == (BATCH, N_ITEMS)


# ---------------------------------------------------------------- the computation
def official_equations(model, item_seq, item_seq_len):
    """The official forward written out step by step from the model's own submodules (eval mode:
    dropouts are identities), over ALL positions, read out at the end."""
    d = model.hidden_size
    attn = model.linearattention
    heads, head_size = model.n_heads, d // model.n_heads
    x = model.item_embedding.weight[item_seq]  # [B, N, d]
    batch_size, seq_len, _ = x.shape

    # expert 1: ELU (no +1), per-vector L2 norm over d_h, Q̂ (K̂ᵀ V) / sqrt(d_h), own dense + residual LN
    def heads_of(t):
        return t.view(batch_size, seq_len, heads, head_size).transpose(1, 2)  # [B, h, N, d_h]

    q = F.elu(heads_of(x @ attn.query.weight.T + attn.query.bias))
    k = F.elu(heads_of(x @ attn.key.weight.T + attn.key.bias))
    v = heads_of(x @ attn.value.weight.T + attn.value.bias)
    q = q / q.norm(dim=-1, keepdim=True)
    k = k / k.norm(dim=-1, keepdim=True)
    context = q @ (k.transpose(-1, -2) @ v) / math.sqrt(head_size)
    context = context.transpose(1, 2).reshape(batch_size, seq_len, d)
    a = F.layer_norm(
        context @ attn.dense.weight.T + attn.dense.bias + x, (d,), attn.LayerNorm.weight, attn.LayerNorm.bias,
        attn.LayerNorm.eps,
    )

    # expert 2: C = Conv(W1 X), Y = Conv(gate(C) * (Wp GRU(C) + bp))
    pad = model.conv_kernel_size // 2
    c = F.conv1d((x @ model.dense1.weight.T + model.dense1.bias).transpose(1, 2), model.conv1d.weight,
                 model.conv1d.bias, padding=pad).transpose(1, 2)
    h = c
    for layer in range(model.num_layers):  # GRU without bias, written out
        w_ih = getattr(model.gru_layers, f"weight_ih_l{layer}")
        w_hh = getattr(model.gru_layers, f"weight_hh_l{layer}")
        state = torch.zeros(batch_size, d)
        outputs = []
        for t in range(seq_len):
            r_i, z_i, n_i = (h[:, t] @ w_ih.T).chunk(3, dim=-1)
            r_h, z_h, n_h = (state @ w_hh.T).chunk(3, dim=-1)
            r, z = torch.sigmoid(r_i + r_h), torch.sigmoid(z_i + z_h)
            n = torch.tanh(n_i + r * n_h)
            state = (1 - z) * n + z * state
            outputs.append(state)
        h = torch.stack(outputs, dim=1)
    gate_in, gate_out = model.selective_gate[0], model.selective_gate[2]
    gate = F.silu(c @ gate_in.weight.T + gate_in.bias) @ gate_out.weight.T + gate_out.bias
    projected = h @ model.projection.weight.T + model.projection.bias
    y = F.conv1d((gate * projected).transpose(1, 2), model.conv1dforgru.weight, model.conv1dforgru.bias,
                 padding=pad).transpose(1, 2)

    # mixing: w0 on the GRU expert, w1 on attention; data-aware gate; extra dense; shared LN
    w = torch.exp(model.weights) / torch.exp(model.weights).sum()
    m = w[0] * y + w[1] * a
    z = m * F.gelu(x @ model.dense2.weight.T + model.dense2.bias)
    ln = model.LayerNorm
    h1 = F.layer_norm(z @ model.dense.weight.T + model.dense.bias + x, (d,), ln.weight, ln.bias, ln.eps)
    p = (h1 @ model.dense3.weight.T + model.dense3.bias) * F.gelu(h1 @ model.dense4.weight.T + model.dense4.bias)
    out = F.layer_norm(p @ model.denseout.weight.T + model.denseout.bias + h1, (d,), ln.weight, ln.bias, ln.eps)
    return out[torch.arange(batch_size), item_seq_len - 1]


@pytest.mark.parametrize("kernel, num_layers", [(3, 1), (5, 2)])
def test_forward_matches_official_equations(kernel, num_layers):
    model = small_model(conv_kernel_size=kernel, num_layers=num_layers)
    with torch.no_grad():  # move off the initial 0.5/0.5 so that the expert order matters
        model.weights.copy_(torch.tensor([0.9, -0.4]))
        for norm in (model.LayerNorm, model.linearattention.LayerNorm):
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.uniform_(-0.5, 0.5)
    model.eval()
    interaction = batch()
    with torch.no_grad():
        actual = model(interaction["item_id_list"], interaction["item_length"])
        expected = official_equations(model, interaction["item_id_list"], interaction["item_length"])
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)


def test_swapping_expert_weights_changes_the_output():
    """weights[0] is the GRU expert's: a model whose attention weight is ~0 ignores the attention."""
    model = small_model().eval()
    interaction = batch()
    seq, seq_len = interaction["item_id_list"], interaction["item_length"]
    with torch.no_grad():
        model.weights.copy_(torch.tensor([30.0, -30.0]))  # the GRU expert only
        before = model(seq, seq_len)
        model.linearattention.value.weight.mul_(3.0)
        torch.testing.assert_close(before, model(seq, seq_len))  # the attention expert is ignored
        model.gru_layers.weight_hh_l0.mul_(3.0)
        assert (model(seq, seq_len) - before).abs().max() > 1e-3  # the GRU expert is read
        model.weights.copy_(torch.tensor([-30.0, 30.0]))  # the attention expert only
        before = model(seq, seq_len)
        model.gru_layers.weight_hh_l0.mul_(0.1)
        torch.testing.assert_close(before, model(seq, seq_len))  # the GRU expert is ignored
        model.linearattention.value.weight.mul_(3.0)
        assert (model(seq, seq_len) - before).abs().max() > 1e-3  # the attention expert is read


def test_both_residual_sites_share_one_layernorm():
    model = small_model()
    layer_norms = [name for name, m in model.named_modules() if isinstance(m, nn.LayerNorm)]
    assert layer_norms == ["linearattention.LayerNorm", "LayerNorm"]
    calls = []
    model.LayerNorm.register_forward_hook(lambda module, inputs, output: calls.append(output.shape))
    model.eval()
    interaction = batch()
    with torch.no_grad():
        model(interaction["item_id_list"], interaction["item_length"])
    assert len(calls) == 2


def test_no_padding_mask_as_official():
    """Non-causal conv and attention read the padding: more padding changes the output."""
    torch.manual_seed(0)
    short = build_model(GLINTRU, n_items=N_ITEMS, max_len=10, **SMALL).eval()
    torch.manual_seed(0)
    long = build_model(GLINTRU, n_items=N_ITEMS, max_len=20, **SMALL).eval()
    seq = torch.randint(1, N_ITEMS, (4, 6), generator=torch.Generator().manual_seed(3))
    lengths = torch.full((4,), 6)
    with torch.no_grad():
        out_short = short(F.pad(seq, (0, 4)), lengths)
        out_long = long(F.pad(seq, (0, 14)), lengths)
    assert (out_short - out_long).abs().max() > 1e-3


# ---------------------------------------------------------------- RecBole interface
def test_output_shapes():
    model = small_model().eval()
    interaction = batch()
    with torch.no_grad():
        assert model(interaction["item_id_list"], interaction["item_length"]).shape == (BATCH, 32)
        assert model.predict(interaction).shape == (BATCH,)
        assert model.full_sort_predict(interaction).shape == (BATCH, N_ITEMS)


def test_predict_equals_gathered_full_sort_column():
    model = small_model().eval()
    interaction = batch()
    with torch.no_grad():
        full = model.full_sort_predict(interaction)
        single = model.predict(interaction)
    torch.testing.assert_close(single, full.gather(1, interaction[POS_ITEM_ID].unsqueeze(1)).squeeze(1))


@pytest.mark.parametrize("loss_type", ["CE", "BPR"])
def test_every_parameter_gets_a_gradient(loss_type):
    model = small_model(loss_type=loss_type).train()
    loss = model.calculate_loss(batch())
    assert torch.isfinite(loss)
    loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert parameter.grad.abs().sum() > 0, name


def test_bpr_loss_matches_its_definition():
    model = small_model(loss_type="BPR").eval()
    interaction = batch()
    with torch.no_grad():
        seq_output = model(interaction["item_id_list"], interaction["item_length"])
        pos = (seq_output * model.item_embedding(interaction[POS_ITEM_ID])).sum(-1)
        neg = (seq_output * model.item_embedding(interaction["neg_item_id"])).sum(-1)
        expected = -torch.log(1e-10 + torch.sigmoid(pos - neg)).mean()
        torch.testing.assert_close(model.calculate_loss(interaction), expected)


def test_ce_loss_is_full_table_cross_entropy():
    model = small_model().eval()
    interaction = batch()
    with torch.no_grad():
        logits = model.full_sort_predict(interaction)
        torch.testing.assert_close(model.calculate_loss(interaction), F.cross_entropy(logits, interaction[POS_ITEM_ID]))


def test_eval_is_deterministic_and_train_is_not():
    model = small_model()
    interaction = batch()
    model.eval()
    with torch.no_grad():
        first = model.full_sort_predict(interaction)
        second = model.full_sort_predict(interaction)
    assert torch.equal(first, second)
    model.train()
    torch.manual_seed(11)
    with torch.no_grad():
        noisy = model.full_sort_predict(interaction)
    assert (noisy - first).abs().max() > 1e-3


def test_dropouts_sit_where_the_official_code_puts_them_in_train_mode():
    """Train mode, every dropout at 0.5: the attention expert's output, the mixed representation
    (the gated MLP's input) and the model's output are each LayerNorm-normalised (LN weights 1,
    biases 0 at init), so each dropout acts before its residual LayerNorm, as officially; the
    gate's dropout is its last layer (it scales the gate before it multiplies the GRU branch)."""
    model = small_model(dropout_prob=0.5, hidden_dropout_prob=0.5, mixing_dropout_prob=0.5, layer_norm_eps=1e-12).train()
    seen = {}
    model.linearattention.register_forward_hook(lambda m, args, out: seen.__setitem__("attention", out))
    model.dense3.register_forward_hook(lambda m, args, out: seen.__setitem__("mixed", args[0]))
    interaction = batch()
    output = model(interaction["item_id_list"], interaction["item_length"])
    for name, value in (("attention", seen["attention"]), ("mixed", seen["mixed"]), ("output", output)):
        torch.testing.assert_close(value.mean(-1), torch.zeros(value.shape[:-1]), rtol=0, atol=1e-5, msg=name)
        torch.testing.assert_close(value.var(-1, unbiased=False), torch.ones(value.shape[:-1]), rtol=0, atol=1e-3, msg=name)
    assert isinstance(model.selective_gate[-1], nn.Dropout) and model.selective_gate[-1].p == 0.5
    # and dropout is on: a second pass draws other masks
    assert not torch.equal(model(interaction["item_id_list"], interaction["item_length"]), output)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(interaction["item_id_list"], interaction["item_length"]),
                           model(interaction["item_id_list"], interaction["item_length"]))
