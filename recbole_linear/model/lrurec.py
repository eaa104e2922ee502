"""
LRURec
################################################

Reference:
    Zhenrui Yue, Yueqi Wang, Zhankui He, Huimin Zeng, Julian McAuley, Dong Wang.
    "Linear Recurrent Units for Sequential Recommendation." in WSDM 2024 (arXiv 2310.02367).

Reference code:
    https://github.com/yueqirex/LRURec (``model/lru.py``, commit 15c1723)
"""
import torch
from torch import nn

from recbole.model.abstract_recommender import SequentialRecommender
from recbole.model.loss import BPRLoss

from recbole_linear.layers.lru import LRUBlock, truncated_normal_
from recbole_linear.config import fill_model_defaults
from recbole_linear.errors import ConfigError


class LRURec(SequentialRecommender):
    r"""LRURec: item embedding -> stacked (LRU layer + position-wise FFN) blocks -> ``h E^T + b_o``.

    In eval mode the computation is the official one: no positional embedding;
    ``LayerNorm(Dropout(E[x]))`` with a trainable padding row 0; per block an LRU layer with a
    ``2 * hidden_size`` complex state (ring init ``r_min``, ``r_max``, ``max_phase``; ``nu``,
    ``theta``, ``gamma`` as log-parameters, ``gamma`` free and initialised to
    ``sqrt(1 - |lambda|^2)``; complex B and C with biases; ``gamma`` applied after ``B x + b``;
    ``LayerNorm(Dropout(Re(C h + b_C)) + x)``) and the FFN ``LayerNorm(x + Dropout(W2
    Dropout(GELU(W1 x))))``; truncated-normal init (std ``initializer_range``, cut at 2 std) of
    every parameter except LayerNorms and the log-parameters, imaginary parts included; scores
    ``h E^T + b_o`` with a learned per-item bias, in training and evaluation alike.

    Beyond the official code: :meth:`init_state` / :meth:`step` advance every user by one
    item at a cost independent of history length (the recurrent form of the same model).

    NOTE (deviations from the official code):
        1. Parameters are real: the real and imaginary parts of B, b_B and C are separate real
           tensors, and ``nu_log``, ``theta_log``, ``gamma_log`` are three tensors instead of
           one ``params_log`` (RecBole's DDP path needs real parameters). Complex numbers exist
           only inside ``forward``/``step``; the computation is unchanged.
        2. Im(b_C) is dropped: the output ``Re(C h + b_C)`` does not depend on it (its gradient
           is identically zero officially), so every remaining parameter gets a gradient.
        3. Training: by default RecBole's last-position loss on prefix-augmented samples (one
           target per prefix). ``train_all_positions: True`` trains every position of
           non-overlapping windows at once, as officially, except that the official code also
           trains the first item of a window from padding and drops the heads of long
           sequences (see :mod:`recbole_linear.all_positions`).
        4. Padding: RecBole pads on the right and this model reads position
           ``item_length - 1``; the official code pads on the left (to ``max_len``, then to
           a power of two) and reads the last position. The scan here pads on the right to a
           power of two; it is causal, so real positions equal the recurrence from a zero
           state at the first item, as officially (the official mask gate is not needed).
           Columns after the longest sequence in the batch are cut before the scan.
        5. Evaluation does not mask the user's history items by default (RecBole's full-sort
           protocol for sequential models); the official evaluation sets the items of the input
           window (and id 0) to -1e9. ``eval_mask_history: True`` (the plugin's trainer, any
           model) ranks them out as officially.
        6. The optimizer: the official no-decay rule (no weight decay on names containing
           ``bias`` or ``layer_norm``) comes from :meth:`optimizer_param_groups` and the official
           AdamW eps 1e-9 from ``optimizer_eps``; both need the plugin's Trainer (RecBole's own
           decays every parameter and uses eps 1e-8). The XLong sampled-softmax branch (100
           training / 10,000 evaluation negatives) is not ported; ``loss_type='BPR'`` (RecBole's
           sampled BPR, with ``b_o``) is an addition, and so are ``loss_type: SSM`` / ``gBCE``
           (sampled softmax with log-Q correction, gSASRec's gBCE; negatives drawn per batch by
           the plugin's trainer, :mod:`recbole_linear.sampled_loss`).
        7. Same function, different floating-point order: gamma is folded into B and b_B
           (``(gamma B) x + gamma b_B``); the scan runs in place with a hand-written backward;
           the last block's output projection and FFN (position-wise) run only at the read
           position, so its dropout masks are drawn for that position alone.
    """

    def __init__(self, config, dataset):
        super(LRURec, self).__init__(config, dataset)
        # defaults for keys a config from RecBole's own Config (stock run_recbole) lacks
        fill_model_defaults(config, "LRURec")

        # load parameters info
        self.hidden_size = config["hidden_size"]
        self.n_layers = config["n_layers"]
        self.dropout_prob = config["dropout_prob"]
        self.lru_dropout_prob = config["lru_dropout_prob"]
        self.r_min = config["r_min"]
        self.r_max = config["r_max"]
        self.max_phase = config["max_phase"]
        self.layer_norm_eps = config["layer_norm_eps"]
        self.initializer_range = config["initializer_range"]
        self.loss_type = config["loss_type"]
        self.check_config(config)

        # define layers and loss
        # no padding_idx: row 0 is trainable, as officially
        self.item_embedding = nn.Embedding(self.n_items, self.hidden_size)
        self.embedding_dropout = nn.Dropout(self.dropout_prob)
        self.embedding_layer_norm = nn.LayerNorm(self.hidden_size, eps=self.layer_norm_eps)
        self.lru_blocks = nn.ModuleList(
            [
                LRUBlock(
                    self.hidden_size,
                    dropout_prob=self.dropout_prob,
                    lru_dropout_prob=self.lru_dropout_prob,
                    r_min=self.r_min,
                    r_max=self.r_max,
                    max_phase=self.max_phase,
                    layer_norm_eps=self.layer_norm_eps,
                )
                for _ in range(self.n_layers)
            ]
        )
        self.output_bias = nn.Parameter(torch.zeros(self.n_items))

        if self.loss_type == "BPR":
            self.loss_fct = BPRLoss()
        elif self.loss_type == "CE":
            self.loss_fct = nn.CrossEntropyLoss()
        else:  # SSM or gBCE (checked above): the plugin's trainer draws the negatives and computes it
            self.loss_fct = None

        # parameters initialization
        self._truncated_normal_init()

    @staticmethod
    def check_config(config):
        """ConfigError (one line) for settings the model cannot be built with; the plugin's config
        calls it before any data loads, ``__init__`` again for configs built elsewhere."""
        r_min, r_max = config["r_min"], config["r_max"]
        numbers = all(isinstance(r, (int, float)) and not isinstance(r, bool) for r in (r_min, r_max))
        if not (numbers and 0 <= r_min <= r_max < 1):  # |lambda| = 1 would make log(-log|lambda|) infinite
            raise ConfigError(f"LRURec needs 0 <= r_min <= r_max < 1 for the ring init (got r_min={r_min!r}, r_max={r_max!r})")
        if config["loss_type"] not in ("BPR", "CE", "SSM", "gBCE"):
            raise ConfigError(f"LRURec needs loss_type 'BPR', 'CE', 'SSM' or 'gBCE' (got {config['loss_type']!r})")

    def _truncated_normal_init(self):
        """Official init: truncated normal for all but LayerNorms and LRU log-params.

        It overwrites the zero-initialised output bias, all Linear biases and embedding row 0
        too, as the official code does.
        """
        with torch.no_grad():
            for name, param in self.named_parameters():
                if "layer_norm" not in name and not name.endswith("_log"):
                    truncated_normal_(param, std=self.initializer_range)

    def optimizer_param_groups(self, weight_decay):
        """Param groups with the official rule: no decay where the name has ``bias`` or ``layer_norm``.

        The LRU log-parameters and the (real and imaginary) B/C weights are decayed.
        """
        decay, no_decay = [], []
        for name, param in self.named_parameters():
            if not param.requires_grad:
                continue
            (no_decay if "bias" in name or "layer_norm" in name else decay).append(param)
        return [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]

    def embed(self, item_ids):
        """``LayerNorm(Dropout(E[ids]))`` (dropout before LN, as officially)."""
        return self.embedding_layer_norm(self.embedding_dropout(self.item_embedding(item_ids)))

    def forward(self, item_seq, item_seq_len):
        # columns after the longest sequence are padding for every row; the scan is causal,
        # so cutting them changes no real position
        longest = int(item_seq_len.max())
        hidden = self.embed(item_seq[:, :longest])
        for lru_block in self.lru_blocks[:-1]:
            hidden = lru_block(hidden)
        # only the last real position is read: the last block's output projection and FFN
        # (position-wise) run there alone
        return self.lru_blocks[-1](hidden, output_index=item_seq_len - 1)  # [B H]

    def sequence_output(self, item_seq, item_seq_len):
        """Every position's representation, ``[B, longest, H]`` (the all-position training regime)."""
        longest = int(item_seq_len.max())
        hidden = self.embed(item_seq[:, :longest])
        for lru_block in self.lru_blocks:
            hidden = lru_block(hidden)
        return hidden

    def scores_from_output(self, seq_output):
        """Scores of every item from user representations: ``h E^T + b_o``, ``[B n_items]``."""
        return torch.addmm(self.output_bias, seq_output, self.item_embedding.weight.t())

    def calculate_loss(self, interaction):
        if self.loss_fct is None:
            raise ConfigError(f"loss_type {self.loss_type} is computed by recbole-linear's trainer (recbole_linear.sampled_loss)")
        item_seq = interaction[self.ITEM_SEQ]
        item_seq_len = interaction[self.ITEM_SEQ_LEN]
        seq_output = self.forward(item_seq, item_seq_len)
        pos_items = interaction[self.POS_ITEM_ID]
        if self.loss_type == "BPR":
            neg_items = interaction[self.NEG_ITEM_ID]
            pos_score = self.item_scores(seq_output, pos_items)
            neg_score = self.item_scores(seq_output, neg_items)
            return self.loss_fct(pos_score, neg_score)
        # self.loss_type == 'CE'
        return self.loss_fct(self.scores_from_output(seq_output), pos_items)

    def item_scores(self, seq_output, items):
        """Score of one item per user, ``[B]``."""
        return (seq_output * self.item_embedding(items)).sum(dim=-1) + self.output_bias[items]

    def predict(self, interaction):
        item_seq = interaction[self.ITEM_SEQ]
        item_seq_len = interaction[self.ITEM_SEQ_LEN]
        test_item = interaction[self.ITEM_ID]
        seq_output = self.forward(item_seq, item_seq_len)
        return self.item_scores(seq_output, test_item)

    def full_sort_predict(self, interaction):
        item_seq = interaction[self.ITEM_SEQ]
        item_seq_len = interaction[self.ITEM_SEQ_LEN]
        seq_output = self.forward(item_seq, item_seq_len)
        return self.scores_from_output(seq_output)  # [B n_items]

    # ---- incremental inference ------------------------------------------------------
    def init_state(self, batch_size):
        """The empty history: a zero complex state ``[n_layers, batch_size, 2 * hidden_size]``."""
        weight = self.item_embedding.weight
        complex_dtype = torch.complex128 if weight.dtype == torch.float64 else torch.complex64
        return torch.zeros(self.n_layers, batch_size, 2 * self.hidden_size, dtype=complex_dtype, device=weight.device)

    def step(self, item_ids, state):
        """Append one item per user: ``item_ids`` ``[B]`` -> (``seq_output`` ``[B H]``, new state).

        Costs O(1) in the history length. Meant for eval mode (in train mode dropout applies,
        as in ``forward``). After feeding a history item by item from :meth:`init_state`,
        ``seq_output`` equals ``forward`` at the last position, and
        ``scores_from_output(seq_output)`` equals ``full_sort_predict``.
        """
        hidden = self.embed(item_ids)
        new_states = []
        for lru_block, lru_state in zip(self.lru_blocks, state):
            hidden, lru_state = lru_block.step(hidden, lru_state)
            new_states.append(lru_state)
        return hidden, torch.stack(new_states)
