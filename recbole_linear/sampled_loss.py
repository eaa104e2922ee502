"""Sampled softmax (``loss_type: SSM``) and gBCE (``loss_type: gBCE``): losses whose cost does not grow with the catalogue.

Full cross-entropy scores every item at every trained position (``N x n_items x hidden``
multiply-adds and an ``[N, n_items]`` logit matrix); both losses here score each position's target
and ``k`` negatives drawn once per batch and shared by all its positions (``[N, k]``):

- **SSM**, sampled softmax: cross-entropy over ``[target, negative_1 .. negative_k]``. With
  ``ssm_log_q: True`` (the log-Q correction) each sampled negative's logit is lowered by
  ``log(k q(j))``, ``q(j)`` its probability of being drawn; then ``sum_j exp(s_j) / (k q(j))``
  estimates the sum over all other items without bias, and the loss tends to full cross-entropy
  as ``k`` grows, for uniform and popularity negatives alike (Bengio and Senecal 2008; Rawat et al.,
  NeurIPS 2019). The target's logit is not corrected. A negative equal to a position's target (an
  accidental hit) is removed from that position's softmax. ``ssm_in_batch_negatives: True`` adds
  the batch's distinct targets as negatives, each counted exactly once (uncorrected), and removes
  the sampled negatives that are among them, so the corrected samples estimate only the rest.
- **gBCE**, generalised binary cross-entropy (Petrov and Macdonald, gSASRec, RecSys 2023): per
  position, ``(beta * softplus(-s_target) + sum_j softplus(s_j)) / (1 + k)`` over the non-hit
  negatives, i.e. binary cross-entropy in which the positive's probability ``sigmoid(s)`` is
  raised to the power ``beta = alpha * (t * (1 - 1 / alpha) + 1 / alpha)``, with the sampling rate
  ``alpha = k / (number of items)`` and the calibration ``t = gbce_t``. gSASRec draws negatives
  per position and clamps probabilities at 1e-10 in float64; here the negatives are shared by the
  batch's positions, accidental hits are removed, and the same value is computed in closed form
  (``-log sigmoid(s)^beta = beta * softplus(-s)``), stable without clamps.

The negatives come from RecBole's ``train_neg_sample_args`` (``distribution: uniform |
popularity``, ``sample_num: k``, ``alpha``: the popularity exponent), or from
``sampled_loss_negatives`` when it is not given (RecBole's default, one uniform negative, is BPR's).
The plugin's config moves them aside and gives RecBole's dataloaders no sampling: the loss draws
them, from its own generator (seeded by ``seed``, the same on every DDP rank, so that a DDP step is
one process's step on the union of the ranks' batches; saved by the resume file). Popularity is
each item's count among the training targets, raised to ``alpha``; the padding item 0 is never
drawn.

The trainer applies the loss (:mod:`recbole_linear.trainer`): in RecBole's prefix regime to
``model.forward``'s last-position output, and in the all-position regime to every trained
position. The models it can score: the plugin's models and RecBole's SASRec and GRU4Rec (item
scores ``h . E[i]`` plus the plugin model's output bias where it has one, as their
``full_sort_predict``).
"""
import contextlib
import math
import numbers

import numpy as np
import torch
import torch.nn.functional as F

from recbole_linear.errors import ConfigError
from recbole_linear.layers.mixed_precision import at_least_fp32_dtype
from recbole_linear.model_names import PLUGIN_MODELS

SAMPLED_LOSSES = ("SSM", "gBCE")
RECBOLE_SCORED_MODELS = ("SASRec", "GRU4Rec")  # RecBole models whose scores are h . E[i] from forward()
NEGATIVES_KEY = "sampled_loss_negatives"
# the key under which the config keeps the negatives it took out of train_neg_sample_args
RESOLVED_NEGATIVES_KEY = "sampled_loss_negatives_resolved"


def is_sampled(loss_type):
    return loss_type in SAMPLED_LOSSES


def check_config(config, user_negatives=None):
    """One-line ConfigError for a sampled-loss setting no run could use; returns the negatives
    ``{'distribution', 'sample_num', 'alpha'}``. ``user_negatives``: the user's own
    ``train_neg_sample_args`` (None = not given)."""
    loss_type, model = config["loss_type"], config["model"]
    if not scored_by_output_weights(model):
        supported = ", ".join((*PLUGIN_MODELS, *RECBOLE_SCORED_MODELS))
        raise ConfigError(f"loss_type {loss_type} is implemented for {supported} (not {model})")
    negatives = dict(user_negatives if user_negatives is not None else config[NEGATIVES_KEY] or {})
    distribution = negatives.get("distribution")
    if distribution not in ("uniform", "popularity"):
        raise ConfigError(f"loss_type {loss_type} needs negatives: train_neg_sample_args distribution "
                          f"'uniform' or 'popularity' (got {distribution!r})")
    k = negatives.get("sample_num")
    if not (isinstance(k, numbers.Integral) and not isinstance(k, bool) and k > 0):
        raise ConfigError(f"loss_type {loss_type} needs train_neg_sample_args sample_num, a positive integer (got {k!r})")
    if negatives.get("dynamic"):
        raise ConfigError(f"loss_type {loss_type} draws its negatives itself: dynamic negative sampling is not supported")
    alpha = negatives.get("alpha", 1.0)
    alpha = 1.0 if alpha in (None, "none") else alpha
    if not (isinstance(alpha, numbers.Real) and not isinstance(alpha, bool) and alpha >= 0):
        raise ConfigError(f"train_neg_sample_args alpha must be a non-negative number (got {alpha!r})")
    if loss_type == "gBCE":
        if distribution != "uniform":
            raise ConfigError("gBCE's calibration assumes uniform negatives (train_neg_sample_args distribution: uniform)")
        if config["ssm_in_batch_negatives"]:
            raise ConfigError("ssm_in_batch_negatives applies to loss_type SSM; gBCE's calibration assumes uniform negatives")
        t = config["gbce_t"]
        if not (isinstance(t, numbers.Real) and not isinstance(t, bool) and 0 <= t <= 1):
            raise ConfigError(f"invalid value for 'gbce_t': {t!r} (expected a number in [0, 1])")
    for key in ("ssm_log_q", "ssm_in_batch_negatives"):
        if not isinstance(config[key], bool):
            raise ConfigError(f"invalid value for '{key}': {config[key]!r} (expected True or False)")
    return {"distribution": distribution, "sample_num": int(k), "alpha": float(alpha)}


@contextlib.contextmanager
def recbole_model_loss(config):
    """While a RecBole model is built, show it ``loss_type: CE``: its ``__init__`` knows CE and BPR
    only, and with a sampled loss the trainer computes the loss (the model's CE is never called)."""
    loss_type = config["loss_type"]
    if not is_sampled(loss_type) or config["model"] in PLUGIN_MODELS:
        yield
        return
    config["loss_type"] = "CE"
    try:
        yield
    finally:
        config["loss_type"] = loss_type


# --- scoring ------------------------------------------------------------------------------
def scored_by_output_weights(model_name):
    """Whether the model of that name scores item ``i`` as ``h . E[i] + b[i]`` (:func:`output_weights`)."""
    return model_name in PLUGIN_MODELS or model_name in RECBOLE_SCORED_MODELS


def output_weights(model):
    """``(E [n_items, H], b [n_items] or None)``: the model scores item ``i`` as ``h . E[i] + b[i]``."""
    return model.item_embedding.weight, getattr(model, "output_bias", None)


def candidate_scores(model, hidden, items):
    """Scores ``[N, k]`` of the items ``[k]`` for each row of ``hidden`` ``[N, H]``."""
    weight, bias = output_weights(model)
    scores = hidden @ weight[items].t()
    return scores if bias is None else scores + bias[items]


def target_scores(model, hidden, targets):
    """Score ``[N]`` of one item per row."""
    weight, bias = output_weights(model)
    scores = (hidden * weight[targets]).sum(dim=-1)
    return scores if bias is None else scores + bias[targets]


# --- the losses, on given scores ------------------------------------------------------------
def sampled_softmax(positive_scores, negative_scores, hits, negative_log_correction=None):
    """Mean over rows of ``-log softmax([s+, s-_1 .. s-_k])[0]`` with the ``hits`` ``[N, k]`` left
    out and, when given, ``negative_log_correction`` ``[k]`` (``log(k q(j))``) taken from each
    negative's score."""
    if negative_log_correction is not None:
        negative_scores = negative_scores - negative_log_correction
    negative_scores = negative_scores.masked_fill(hits, float("-inf"))
    logits = torch.cat([positive_scores.unsqueeze(1), negative_scores], dim=1)
    return -(positive_scores - torch.logsumexp(logits, dim=1)).mean()


def gbce(positive_scores, negative_scores, hits, beta):
    """Mean over rows of ``(beta softplus(-s+) + sum of softplus(s-) over non-hits) / (1 + k)``."""
    negative_terms = F.softplus(negative_scores).masked_fill(hits, 0.0).sum(dim=1)
    per_row = (beta * F.softplus(-positive_scores) + negative_terms) / (1 + negative_scores.size(1))
    return per_row.mean()


def gbce_beta(sample_num, n_real_items, t):
    """gSASRec's ``beta = alpha (t (1 - 1/alpha) + 1/alpha)`` with ``alpha = k / n_real_items``."""
    alpha = sample_num / n_real_items
    return alpha * (t * (1 - 1 / alpha) + 1 / alpha)


def check_catalogue(config, n_items):
    """One-line ConfigError when ``k`` negatives are not fewer than the ``n_items - 1`` real items
    (known once the data has loaded)."""
    k = config[RESOLVED_NEGATIVES_KEY]["sample_num"]
    if k >= n_items - 1:
        raise ConfigError(
            f"train_neg_sample_args sample_num ({k}) must be smaller than the number of items ({n_items - 1}); "
            "with that many, use loss_type CE"
        )


# --- the loss the trainer calls ----------------------------------------------------------------
class SampledLoss:
    """SSM or gBCE for one run: draws the batch's negatives and computes the loss from the hidden
    states of the trained positions. ``item_counts[i]``: item ``i``'s count among the training
    targets (``[n_items]``, the padding item 0 included)."""

    def __init__(self, config, item_counts):
        self.loss_type = config["loss_type"]
        negatives = config[RESOLVED_NEGATIVES_KEY]
        self.sample_num = negatives["sample_num"]
        self.distribution = negatives["distribution"]
        self.log_q_correction = bool(config["ssm_log_q"])
        self.in_batch = bool(config["ssm_in_batch_negatives"])
        self.n_items = len(item_counts)
        n_real_items = self.n_items - 1
        counts = torch.as_tensor(np.asarray(item_counts, dtype=np.float64))
        counts[0] = 0.0
        if self.distribution == "popularity":
            weights = counts ** negatives["alpha"]
            weights[counts == 0] = 0.0
        else:
            weights = torch.ones(self.n_items, dtype=torch.float64)
            weights[0] = 0.0
        self.probabilities = weights / weights.sum()  # float64 [n_items]: q(i), 0 for the padding item
        # log(k q(j)): a sampled negative's correction (-inf where q is 0: never drawn)
        self.log_correction = (self.probabilities * self.sample_num).log()  # float64; cast to the loss's dtype
        self.beta = gbce_beta(self.sample_num, n_real_items, config["gbce_t"]) if self.loss_type == "gBCE" else None
        self.generator = torch.Generator()
        self.generator.manual_seed(int(config["seed"]))

    def draw(self):
        """The batch's ``k`` negatives (with replacement), from this loss's generator."""
        if self.distribution == "uniform":
            return torch.randint(1, self.n_items, (self.sample_num,), generator=self.generator)
        return torch.multinomial(self.probabilities, self.sample_num, replacement=True, generator=self.generator)

    def __call__(self, model, hidden, targets):
        """The loss of the rows ``hidden`` ``[N, H]`` with targets ``[N]`` (every row a trained position)."""
        device = hidden.device
        score_dtype = at_least_fp32_dtype(hidden.dtype)  # bf16/fp16 hidden: fp32 loss
        negatives = self.draw().to(device)
        hits = negatives.unsqueeze(0) == targets.unsqueeze(1)
        correction = self.log_correction.to(device=device, dtype=score_dtype)[negatives] if self.log_q_correction else None
        if self.in_batch:
            # the batch's targets count once each, exactly; the samples estimate the other items
            batch_items = torch.unique(targets)
            sampled_hits = hits | torch.isin(negatives, batch_items).unsqueeze(0)
            hits = torch.cat([sampled_hits, batch_items.unsqueeze(0) == targets.unsqueeze(1)], dim=1)
            negatives = torch.cat([negatives, batch_items])
            if correction is not None:
                correction = torch.cat([correction, torch.zeros(len(batch_items), device=device, dtype=score_dtype)])
        # the scores may come from bf16/fp16 products (precision); the softmax and sums are fp32
        positive = target_scores(model, hidden, targets).to(score_dtype)
        negative = candidate_scores(model, hidden, negatives).to(score_dtype)
        if self.loss_type == "gBCE":
            return gbce(positive, negative, hits, self.beta)
        return sampled_softmax(positive, negative, hits, correction)


def last_position_loss(model, loss):
    """RecBole's prefix regime: the loss at each sample's last position (``model.forward``)."""

    def loss_func(interaction):
        hidden = model.forward(interaction[model.ITEM_SEQ], interaction[model.ITEM_SEQ_LEN])
        return loss(model, hidden, interaction[model.POS_ITEM_ID])

    return loss_func


def training_item_counts(dataset):
    """``[n_items]``: how often each item is a training target (RecBole's training rows' items)."""
    items = dataset.inter_feat[dataset.iid_field].numpy()
    return np.bincount(items, minlength=dataset.item_num)


def expected_cost_note(loss):
    """A line for the log: what the loss scores per trained position."""
    extra = " + the batch's distinct targets" if loss.in_batch else ""
    correction = ", log-Q corrected" if loss.loss_type == "SSM" and loss.log_q_correction else ""
    beta = f", beta {loss.beta:.4g}" if loss.beta is not None else ""
    return (f"{loss.loss_type}: {loss.sample_num} {loss.distribution} negatives per batch{extra}{correction}{beta} "
            f"(instead of {loss.n_items - 1} items; {math.ceil((loss.n_items - 1) / loss.sample_num)}x fewer scores)")
