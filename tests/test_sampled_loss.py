"""Sampled softmax (SSM) and gBCE: against plain float64 references, known answers, config errors,
padding, seeds, resume; full-ranking evaluation in item chunks gives RecBole's metrics."""
import math
import os

import pytest
import torch
import torch.nn.functional as F

from recbole_linear import sampled_loss
from recbole_linear.all_positions import all_position_loss
from recbole_linear.config import create_config
from recbole_linear.errors import ConfigError
from recbole_linear.model.linrec import LinRec
from recbole_linear.model.lrurec import LRURec
from recbole_linear.quick_start import prepare
from recbole_linear.sampled_loss import SampledLoss, gbce_beta
from tests.conftest import TINY_DATASET
from tests.helpers import build_model


def loss_settings(loss_type="SSM", distribution="uniform", k=8, log_q=True, in_batch=False, t=0.75, seed=0):
    return {
        "loss_type": loss_type,
        sampled_loss.RESOLVED_NEGATIVES_KEY: {"distribution": distribution, "sample_num": k, "alpha": 1.0},
        "ssm_log_q": log_q,
        "ssm_in_batch_negatives": in_batch,
        "gbce_t": t,
        "seed": seed,
    }


def skewed_counts(n_items):
    """Training-target counts 0 (padding), then 1, 2, ..., n_items - 1: a popularity skew."""
    return torch.arange(n_items, dtype=torch.float64)


def float64_model(model_class, n_items=30):
    torch.manual_seed(0)
    model = build_model(model_class, n_items=n_items, hidden_size=8, embedding_size=8, inner_size=16, n_layers=1, n_heads=2)
    return model.double()


def with_negatives(loss, negatives):
    loss.draw = lambda: torch.as_tensor(negatives)
    return loss


# --- plain references -----------------------------------------------------------------------
def score(model, h, item):
    value = h @ model.item_embedding.weight[item]
    bias = getattr(model, "output_bias", None)
    return value if bias is None else value + bias[item]


def reference_ssm(model, hidden, targets, negatives, probabilities, log_q, in_batch):
    """Row by row: -log softmax over [target, each kept negative], negatives lowered by log(k q)."""
    k = len(negatives)
    batch_items = sorted(set(targets.tolist())) if in_batch else []
    total = 0.0
    for h, t in zip(hidden, targets.tolist()):
        logits = [score(model, h, t)]
        for j in negatives:
            if j == t or j in batch_items:
                continue
            correction = math.log(k * float(probabilities[j])) if log_q else 0.0
            logits.append(score(model, h, j) - correction)
        logits += [score(model, h, j) for j in batch_items if j != t]
        total = total - logits[0] + torch.logsumexp(torch.stack(logits), dim=0)
    return total / len(targets)


def reference_gbce(model, hidden, targets, negatives, beta):
    """gSASRec's form: BCE with logits on [log(1 / (sigmoid(s+)^-beta - 1)), s-...], labels [1, 0...],
    summed over the kept entries and divided by 1 + k."""
    total = 0.0
    for h, t in zip(hidden, targets.tolist()):
        positive = score(model, h, t)
        transformed = torch.log(1.0 / (torch.sigmoid(positive) ** (-beta) - 1.0))
        row = F.binary_cross_entropy_with_logits(transformed, torch.ones((), dtype=transformed.dtype))
        for j in negatives:
            if j != t:
                s = score(model, h, j)
                row = row + F.binary_cross_entropy_with_logits(s, torch.zeros((), dtype=s.dtype))
        total = total + row / (1 + len(negatives))
    return total / len(targets)


def values_and_gradients(model, hidden, compute):
    hidden = hidden.detach().clone().requires_grad_(True)
    model.zero_grad()
    value = compute(hidden)
    value.backward()
    grads = {"hidden": hidden.grad.clone(), "E": model.item_embedding.weight.grad.clone()}
    if getattr(model, "output_bias", None) is not None:
        grads["b"] = model.output_bias.grad.clone()
    return value.detach(), grads


def assert_same(a, b):
    torch.testing.assert_close(a[0], b[0], rtol=1e-10, atol=1e-12)
    assert a[1].keys() == b[1].keys()
    for key in a[1]:
        torch.testing.assert_close(a[1][key], b[1][key], rtol=1e-10, atol=1e-12, msg=lambda m: f"{key}: {m}")


@pytest.mark.parametrize("model_class", [LRURec, LinRec])  # with and without an output bias
@pytest.mark.parametrize("distribution", ["uniform", "popularity"])
@pytest.mark.parametrize("log_q", [True, False])
@pytest.mark.parametrize("in_batch", [False, True])
def test_sampled_softmax_equals_its_plain_reference_in_value_and_gradient(model_class, distribution, log_q, in_batch):
    n_items = 30
    model = float64_model(model_class, n_items)
    generator = torch.Generator().manual_seed(1)
    hidden = torch.randn(12, 8, dtype=torch.float64, generator=generator)
    targets = torch.tensor([3, 5, 3, 7, 1, 29, 5, 8, 2, 11, 3, 4])
    negatives = [5, 9, 3, 17, 9, 26, 1, 12, 20, 3]  # hits (5, 3, 1) and repeats (9, 3)
    loss = with_negatives(SampledLoss(loss_settings("SSM", distribution, len(negatives), log_q, in_batch), skewed_counts(n_items)), negatives)
    fast = values_and_gradients(model, hidden, lambda h: loss(model, h, targets))
    probabilities = loss.probabilities
    plain = values_and_gradients(model, hidden, lambda h: reference_ssm(model, h, targets, negatives, probabilities, log_q, in_batch))
    assert_same(fast, plain)


@pytest.mark.parametrize("model_class", [LRURec, LinRec])
@pytest.mark.parametrize("t", [0.0, 0.75, 1.0])
def test_gbce_equals_gsasrec_form_in_value_and_gradient(model_class, t):
    n_items = 30
    model = float64_model(model_class, n_items)
    hidden = torch.randn(10, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    targets = torch.tensor([3, 5, 3, 7, 1, 29, 5, 8, 2, 11])
    negatives = [5, 9, 3, 17, 9, 26]
    loss = with_negatives(SampledLoss(loss_settings("gBCE", k=len(negatives), t=t), skewed_counts(n_items)), negatives)
    beta = gbce_beta(len(negatives), n_items - 1, t)
    assert loss.beta == pytest.approx(beta)
    fast = values_and_gradients(model, hidden, lambda h: loss(model, h, targets))
    plain = values_and_gradients(model, hidden, lambda h: reference_gbce(model, h, targets, negatives, beta))
    assert_same(fast, plain)


def test_gbce_beta_spans_plain_bce_to_the_sampling_rate():
    # t = 0: beta = 1 (plain BCE); t = 1: beta = alpha = k / items (fully calibrated)
    assert gbce_beta(256, 3415, 0.0) == pytest.approx(1.0)
    assert gbce_beta(256, 3415, 1.0) == pytest.approx(256 / 3415)


@pytest.mark.parametrize("distribution", ["uniform", "popularity"])
def test_log_q_correction_makes_sampled_softmax_tend_to_full_cross_entropy(distribution):
    """Known answer: with many draws, the corrected sampled softmax is the full softmax over the
    real items (padding excluded); without the correction, popularity sampling is far from it."""
    n_items = 40
    model = float64_model(LinRec, n_items)
    with torch.no_grad():
        model.item_embedding.weight.mul_(20.0)  # logits spread over several units
    hidden = torch.randn(6, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    targets = torch.tensor([1, 4, 9, 16, 25, 36])
    with torch.no_grad():
        logits = hidden @ model.item_embedding.weight[1:].t()
        full = F.cross_entropy(logits, targets - 1).item()
        corrected = SampledLoss(loss_settings("SSM", distribution, 200_000, True), skewed_counts(n_items))
        raw = SampledLoss(loss_settings("SSM", distribution, 200_000, False), skewed_counts(n_items))
        assert corrected(model, hidden, targets).item() == pytest.approx(full, abs=0.01)
        if distribution == "popularity":
            assert abs(raw(model, hidden, targets).item() - full) > 0.5


def test_accidental_hits_are_removed():
    """Every negative is the row's own target: nothing competes with it and the loss is 0."""
    model = float64_model(LRURec)
    hidden = torch.randn(3, 8, dtype=torch.float64)
    targets = torch.tensor([4, 4, 4])
    for loss_type in ("SSM", "gBCE"):
        loss = with_negatives(SampledLoss(loss_settings(loss_type, k=3, t=0.0), skewed_counts(30)), [4, 4, 4])
        value = loss(model, hidden, targets)
        if loss_type == "SSM":
            assert value.item() == 0.0
        else:  # only the positive's term is left
            expected = (F.softplus(-(hidden @ model.item_embedding.weight[4] + model.output_bias[4])) / 4).mean()
            torch.testing.assert_close(value, expected)


def test_negatives_follow_the_seed_and_never_include_padding():
    counts = skewed_counts(50)
    draws = lambda seed, distribution: SampledLoss(loss_settings("SSM", distribution, 500, seed=seed), counts).draw()
    for distribution in ("uniform", "popularity"):
        assert torch.equal(draws(5, distribution), draws(5, distribution))
        assert not torch.equal(draws(5, distribution), draws(6, distribution))
        assert int(draws(5, distribution).min()) >= 1
    # popularity: item i drawn with probability proportional to its count
    many = SampledLoss(loss_settings("SSM", "popularity", 200_000), counts).draw()
    frequency = torch.bincount(many, minlength=50).double() / len(many)
    torch.testing.assert_close(frequency, counts / counts.sum(), atol=3e-3, rtol=0)


def test_all_position_loss_trains_real_positions_only():
    """The loss sees the hidden state of every trained position and of no padding or context one."""
    model = float64_model(LRURec).eval()
    seen = []

    class Recording:
        def __call__(self, model, hidden, targets):
            seen.append((hidden.detach(), targets))
            return hidden.sum() * 0

    item_seq = torch.tensor([[3, 4, 5, 0, 0], [6, 7, 8, 9, 10]])
    lengths = torch.tensor([3, 5])
    targets = torch.tensor([[4, 5, 11, 0, 0], [0, 0, 9, 10, 12]])  # row 2: two context positions
    batch = {model.ITEM_SEQ: item_seq, model.ITEM_SEQ_LEN: lengths, "targets": targets}
    all_position_loss(model, batch, "targets", sampled_loss=Recording())
    hidden, trained_targets = seen[0]
    assert trained_targets.tolist() == [4, 5, 11, 9, 10, 12]
    output = model.sequence_output(item_seq, lengths)
    torch.testing.assert_close(hidden, torch.cat([output[0, :3], output[1, 2:5]]))


# --- config ---------------------------------------------------------------------------------
@pytest.mark.parametrize("settings, message", [
    ({"model": "BERT4Rec", "loss_type": "SSM"}, "loss_type SSM is implemented for"),
    ({"loss_type": "gBCE", "train_neg_sample_args": {"distribution": "popularity", "sample_num": 8}}, "assumes uniform"),
    ({"loss_type": "gBCE", "ssm_in_batch_negatives": True}, "ssm_in_batch_negatives applies"),
    ({"loss_type": "SSM", "train_neg_sample_args": {"distribution": "uniform", "sample_num": 0}}, "sample_num, a positive integer"),
    ({"loss_type": "SSM", "train_neg_sample_args": None}, "needs negatives"),
    ({"loss_type": "SSM", "train_neg_sample_args": {"distribution": "uniform", "sample_num": 4, "dynamic": True}}, "dynamic"),
    ({"loss_type": "gBCE", "gbce_t": 1.5}, "gbce_t"),
    ({"loss_type": "SSM", "ssm_log_q": "yes"}, "ssm_log_q"),
    ({"loss_type": "NCE"}, "expected .CE., .BPR., .SSM. or .gBCE."),
])
def test_wrong_combinations_are_one_line_errors_before_data_loads(settings, message):
    settings = dict(settings)
    model = settings.pop("model", "LRURec")
    with pytest.raises(ConfigError, match=message) as error:
        create_config(model, "no-such-dataset", config_dict=settings)
    assert "\n" not in str(error.value)


def test_negatives_default_and_leave_recbole_loaders_without_sampling():
    config = create_config("SASRec", "ml-100k", config_dict={"loss_type": "SSM"})
    assert config[sampled_loss.RESOLVED_NEGATIVES_KEY] == {"distribution": "uniform", "sample_num": 256, "alpha": 1.0}
    assert config["train_neg_sample_args"]["distribution"] == "none"
    config = create_config("LRURec", "ml-100k", cmd_args=["--loss_type=SSM", "--train_neg_sample_args={'distribution': 'popularity', 'sample_num': 64}"])
    assert config[sampled_loss.RESOLVED_NEGATIVES_KEY] == {"distribution": "popularity", "sample_num": 64, "alpha": 1.0}


def test_more_negatives_than_items_is_a_one_line_error(tiny_run_dict, tmp_path, monkeypatch):
    from recbole_linear import run_recbole_linear

    monkeypatch.chdir(tmp_path)
    settings = dict(tiny_run_dict, loss_type="SSM", train_neg_sample_args={"distribution": "uniform", "sample_num": 30})
    with pytest.raises(ConfigError, match=r"sample_num \(30\) must be smaller than the number of items \(30\)"):
        run_recbole_linear("LRURec", TINY_DATASET, config_dict=settings)


def test_plugin_model_calculate_loss_points_to_the_trainer():
    model = build_model(LRURec, loss_type="SSM")
    with pytest.raises(ConfigError, match="computed by recbole-linear's trainer"):
        model.calculate_loss({})


# --- runs -----------------------------------------------------------------------------------
FEW_NEGATIVES = {"distribution": "uniform", "sample_num": 8}  # the tiny dataset has 30 items
RUN_CASES = [
    ("LRURec", {"loss_type": "SSM"}),
    ("LRURec", {"loss_type": "gBCE", "train_all_positions": True}),
    ("SASRec", {"loss_type": "SSM", "train_all_positions": True, "ssm_in_batch_negatives": True,
                "train_neg_sample_args": {"distribution": "popularity", "sample_num": 16}}),
    ("GRU4Rec", {"loss_type": "gBCE"}),
    ("LinRec", {"loss_type": "SSM", "linrec_causal": True, "train_all_positions": True}),
    ("GLINTRU", {"loss_type": "SSM"}),
]


@pytest.mark.parametrize("model_name, extra", RUN_CASES, ids=[f"{m}-{e['loss_type']}" for m, e in RUN_CASES])
def test_runs_train_with_the_sampled_loss_and_repeat_with_the_seed(tiny_run_dict, tmp_path, monkeypatch, model_name, extra):
    from recbole_linear import run_recbole_linear

    monkeypatch.chdir(tmp_path)
    settings = dict(tiny_run_dict, epochs=2, metric_decimal_place=10, seed=4, train_neg_sample_args=FEW_NEGATIVES)
    settings.update(extra)
    calls = []
    original = SampledLoss.__call__
    monkeypatch.setattr(SampledLoss, "__call__", lambda self, *a: calls.append(1) or original(self, *a))
    first = run_recbole_linear(model_name, TINY_DATASET, config_dict=settings)
    assert calls  # the sampled loss trained the model
    second = run_recbole_linear(model_name, TINY_DATASET, config_dict=settings)
    assert dict(first["test_result"]) == dict(second["test_result"])
    assert first["best_valid_score"] > 0
    other_seed = run_recbole_linear(model_name, TINY_DATASET, config_dict=dict(settings, seed=5))
    assert dict(other_seed["test_result"]) != dict(first["test_result"])


def test_resumed_sampled_loss_run_equals_the_uninterrupted_run(tiny_run_dict, tmp_path, monkeypatch):
    """The negatives' generator is part of the resume file (without it the resumed epoch would
    draw the first epoch's negatives again)."""
    from recbole_linear import run_recbole_linear
    from tests.test_resume import crash_after_first_save

    monkeypatch.chdir(tmp_path)
    settings = dict(tiny_run_dict, epochs=2, metric_decimal_place=10, seed=11, loss_type="SSM", train_all_positions=True,
                    train_neg_sample_args=FEW_NEGATIVES, dropout_prob=0.0, lru_dropout_prob=0.0)
    reference = run_recbole_linear("LRURec", TINY_DATASET, config_dict=dict(settings, resume_file=str(tmp_path / "a.pth")))
    path = str(tmp_path / "b.pth")
    state = crash_after_first_save("LRURec", settings, path)
    assert state["rng"]["negatives"] is not None
    resumed = run_recbole_linear("LRURec", TINY_DATASET, config_dict=dict(settings, resume_file=path))
    assert dict(resumed["test_result"]) == dict(reference["test_result"])


# --- chunked full-ranking evaluation -----------------------------------------------------------
EVAL_CASES = [
    ("LRURec", {}),
    ("LRURec", {"eval_mask_history": True}),
    ("SASRec", {"metrics": ["Recall", "NDCG", "MRR", "Hit", "Precision", "MAP"]}),
    ("GLINTRU", {"topk": [1, 5, 25]}),
    ("LRURec", {"metrics": ["Recall", "GAUC"]}),  # reads every rank: scored at once, same metrics
]


@pytest.mark.parametrize("model_name, extra", EVAL_CASES)
def test_chunked_evaluation_gives_the_metrics_of_the_full_score_matrix(tiny_run_dict, tmp_path, monkeypatch, model_name, extra):
    from recbole_linear import chunked_eval

    monkeypatch.chdir(tmp_path)
    settings = dict(tiny_run_dict, metric_decimal_place=10, **extra)
    results = {}
    chunk_widths = []
    original = chunked_eval._chunk_scores
    monkeypatch.setattr(chunked_eval, "_chunk_scores", lambda *a: chunk_widths.append(a[4] - a[3]) or original(*a))
    for chunk_size in (65536, 7):
        config = create_config(model_name, TINY_DATASET, config_dict=dict(settings, eval_item_chunk_size=chunk_size))
        _, (train_data, valid_data, test_data), model, trainer = prepare(config)
        trainer._train_epoch(train_data, 0)  # a model that ranks differently from its initialisation
        trainer.eval_collector.data_collect(train_data)  # as fit does (item coverage reads the item count)
        results[chunk_size] = [dict(trainer.evaluate(data, load_best_model=False)) for data in (valid_data, test_data)]
    assert results[7] == results[65536]
    if "GAUC" in extra.get("metrics", []):
        assert chunk_widths == []
    else:  # 31 items in chunks of at most 7, for every batch
        assert chunk_widths and max(chunk_widths) <= 7 and sum(chunk_widths[:5]) == 31


def test_compact_scores_keep_positives_outside_the_top_k():
    top_scores = torch.tensor([[5.0, 4.0], [3.0, 2.0]])
    top_items = torch.tensor([[10, 11], [12, 13]])
    positive_u = torch.tensor([0, 0, 1])
    positive_i = torch.tensor([11, 20, 21])
    positive_scores = torch.tensor([4.0, 1.0, -1.0])
    from recbole_linear.chunked_eval import compact_scores

    scores, columns = compact_scores(top_scores, top_items, positive_u, positive_i, positive_scores)
    assert columns.tolist() == [1, 3, 2]
    assert scores.tolist() == [[5.0, 4.0, float("-inf"), 1.0], [3.0, 2.0, -1.0, float("-inf")]]
