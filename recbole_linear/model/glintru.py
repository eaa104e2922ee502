r"""
GLINTRU
################################################

Reference:
    Sheng Zhang et al. "GLINT-RU: Gated Lightweight Intelligent Recurrent Units for Sequential
    Recommender Systems." in KDD 2025 (arXiv 2406.10244).

Reference code:
    https://github.com/szhang-cityu/GLINT-RU (``GLINT-RU.py``, HEAD ``4f7b0a5``)

One block: two experts read the dropped-out item embeddings X, a dense selective GRU and a
linear attention; a learned softmax mixes them, a data-aware gate and a residual LayerNorm
follow, then a gated MLP with a second residual through the same LayerNorm. The last
position of the sequence is scored against the item embedding table.
"""

import torch
from torch import nn
import torch.nn.functional as F
from torch.nn.init import xavier_normal_, xavier_uniform_

from recbole.model.abstract_recommender import SequentialRecommender
from recbole.model.loss import BPRLoss

from recbole_linear.errors import ConfigError
from recbole_linear.layers.linear_attention import LinearMultiHeadAttention
from recbole_linear.config import fill_model_defaults


class GLINTRU(SequentialRecommender):
    r"""GLINT-RU computed exactly as the official code computes it.

    With A the linear-attention expert and X = Dropout(E[item_seq])::

        A  = LN_a(Dropout_h(W_o · LinAttn(X)) + X)                     (expert 1)
        C  = Conv_k(W_1 X + b_1)
        Y  = Conv_k(Gate(C) ⊙ (W_p · GRU(C) + b_p))                     (expert 2)
        M  = softmax(θ)[0] · Y + softmax(θ)[1] · A
        H1 = LN(X + Dropout_m(W_d · (M ⊙ GELU(W_2 X + b_2)) + b_d))
        O  = LN(H1 + Dropout_m(W_out · ((W_3 H1 + b_3) ⊙ GELU(W_4 H1 + b_4)) + b_out))
        scores = O[len - 1] · Eᵀ

    with Gate(C) = Dropout_m(Linear_{d/2→d}(SiLU(Linear_{d→d/2}(C)))).

    Where the official code differs from the paper (we follow the code):

    - the selective gate is a d/2 bottleneck (Linear d→d/2, SiLU, Linear d/2→d) followed by a
      dropout, with no sigmoid; the paper has one SiLU'd linear map and no dropout;
    - an extra Linear d→d (``dense``) follows the data-aware gate M ⊙ GELU(δ₂(X)); the paper
      has none;
    - the attention expert carries its own dense, dropout and residual LayerNorm (LN_a);
    - the GRU has no bias terms;
    - both residual sites of the block use the same LayerNorm module (one γ, one β);
    - three dropouts are hard-coded to 0.3 (gate, after ``dense``, after ``denseout``);
    - the attention feature map is ELU without "+1" (features can be negative), with per-vector
      L2 normalisation of queries and keys over the head dimension, and no denominator;
    - the two convolutions use symmetric "same" padding (non-causal), and the attention has no
      mask: both see the right padding (position len-1 reads position len). No target leaks,
      since RecBole never puts the target in ``item_seq``; the official behaviour is kept;
    - there is no positional embedding (the paper says the GRU supplies the order);
    - the official evaluation is RecBole ``mode: pop100`` (100 popularity-sampled negatives),
      not full ranking; this class scores the full table, as every RecBole model does.

    Where this implementation differs from the official code:

    - the three hard-coded 0.3 dropouts read ``mixing_dropout_prob`` (default 0.3) and the
      kernel of both convolutions reads ``conv_kernel_size`` (default 3, padding k // 2); an even
      kernel would change the sequence length under "same" padding, so it is a ConfigError;
    - the official code builds its own copy of the linear attention; here it is the shared
      :class:`LinearMultiHeadAttention` (same submodules, names and computation, non-causal,
      no padding mask). ``attn_dropout_prob``, defined but never applied by the official code,
      is not read. The shared layer clamps the query/key norms at 1e-12 before taking their
      reciprocal: identical for every non-zero ELU'd vector, while an all-zero one gives zeros
      where the official code gives NaN;
    - the softmax of the mixing logits θ is recomputed each forward into a local tensor (the
      official commit 7832958 does the same; earlier versions reassigned the Parameter and crash);
    - the mixing block and the gated MLP are position-wise, so they run only at the read-out
      position (len-1) instead of at all N positions and then discarding N-1 of them. The
      output and gradients are the same; in training the dropout masks there are drawn from
      the same distribution, but fewer random numbers are consumed than in the official code;
    - bad configurations raise :class:`~recbole_linear.errors.ConfigError` at construction:
      hidden_size not divisible by n_heads, embedding_size ≠ hidden_size, hidden_size < 2
      (the gate's d/2 bottleneck would be empty), an even or non-positive conv_kernel_size,
      a loss_type other than BPR/CE/SSM/gBCE (the official code knows BPR and CE, and raises
      NotImplementedError for anything else);
    - ``loss_type: SSM`` / ``gBCE`` (additions): sampled softmax and gBCE over negatives drawn per
      batch, computed by the plugin's trainer (:mod:`recbole_linear.sampled_loss`).

    Odd hidden sizes: the bottleneck width is ``hidden_size // 2`` (rounded down), as in the
    official code; with the default even sizes it is exactly d/2.

    Initialisation (as the official code): xavier-normal item embedding (this also overwrites
    the zero padding row, as RecBole's GRU4Rec does); xavier-uniform weight and zero bias for
    every ``nn.Linear``, those inside the attention expert included; xavier-uniform for the
    first GRU layer's ``weight_ih_l0`` and ``weight_hh_l0`` only; with ``num_layers > 1`` the
    deeper layers' ``weight_ih_l{i}`` / ``weight_hh_l{i}`` keep PyTorch's default
    U(-1/√d, 1/√d). Conv1d and LayerNorm keep PyTorch defaults. Layers are created in the
    official order, so one seed gives the official initial weights, and the attribute names
    are the official ones, so official state dicts load as they are.
    """

    def __init__(self, config, dataset):
        super(GLINTRU, self).__init__(config, dataset)
        # defaults for keys a config from RecBole's own Config (stock run_recbole) lacks
        fill_model_defaults(config, "GLINTRU")

        # load parameters info
        self.embedding_size = config["embedding_size"]
        self.hidden_size = config["hidden_size"]
        self.n_heads = config["n_heads"]
        self.num_layers = config["num_layers"]
        self.conv_kernel_size = config["conv_kernel_size"]
        self.dropout_prob = config["dropout_prob"]
        self.hidden_dropout_prob = config["hidden_dropout_prob"]
        self.mixing_dropout_prob = config["mixing_dropout_prob"]
        self.layer_norm_eps = config["layer_norm_eps"]
        self.loss_type = config["loss_type"]
        self.check_config(config)

        # define layers and loss
        # (official names and creation order: official checkpoints load, one seed gives one init)
        self.item_embedding = nn.Embedding(self.n_items, self.embedding_size, padding_idx=0)
        self.emb_dropout = nn.Dropout(self.dropout_prob)
        self.dense1 = nn.Linear(self.embedding_size, self.hidden_size)  # GRU expert input, W_1
        self.dense2 = nn.Linear(self.embedding_size, self.hidden_size)  # data-aware gate, W_2
        self.conv1d = self._same_conv()  # temporal conv before the GRU
        self.gru_layers = nn.GRU(
            input_size=self.hidden_size,
            hidden_size=self.hidden_size,
            num_layers=self.num_layers,
            bias=False,
            batch_first=True,
        )
        self.projection = nn.Linear(self.hidden_size, self.hidden_size)  # channel mixing Φ(H)
        self.selective_gate = nn.Sequential(
            nn.Linear(self.hidden_size, self.hidden_size // 2),
            nn.SiLU(),
            nn.Linear(self.hidden_size // 2, self.hidden_size),
            nn.Dropout(self.mixing_dropout_prob),
        )
        self.conv1dforgru = self._same_conv()  # temporal conv after the gated GRU output
        self.linearattention = LinearMultiHeadAttention(
            n_heads=self.n_heads,
            hidden_size=self.hidden_size,
            hidden_dropout_prob=self.hidden_dropout_prob,
            layer_norm_eps=self.layer_norm_eps,
            causal=False,
            use_padding_mask=False,
        )
        # expert-mixing logits θ: softmax(θ)[0] weighs the GRU expert, [1] the attention expert
        self.weights = nn.Parameter(torch.tensor([0.5, 0.5], dtype=torch.float32))
        self.dense = nn.Linear(self.hidden_size, self.hidden_size)  # after the data-aware gate
        self.dense3 = nn.Linear(self.hidden_size, self.hidden_size)  # gated MLP, linear branch
        self.dense4 = nn.Linear(self.hidden_size, self.hidden_size)  # gated MLP, GELU branch
        self.denseout = nn.Linear(self.hidden_size, self.embedding_size)
        self.dropdense = nn.Dropout(self.mixing_dropout_prob)
        self.dropmix = nn.Dropout(self.mixing_dropout_prob)
        self.LayerNorm = nn.LayerNorm(self.hidden_size, eps=self.layer_norm_eps)  # both residuals
        self.gelu = nn.GELU()

        if self.loss_type == "BPR":
            self.loss_fct = BPRLoss()
        elif self.loss_type == "CE":
            self.loss_fct = nn.CrossEntropyLoss()
        else:  # SSM or gBCE (checked above): the plugin's trainer draws the negatives and computes it
            self.loss_fct = None

        # parameters initialization
        self.apply(self._init_weights)

    @staticmethod
    def check_config(config):
        """ConfigError (one line) for settings the model cannot be built with; the plugin's config
        calls it before any data loads, ``__init__`` again for configs built elsewhere."""
        embedding_size, hidden_size, n_heads = config["embedding_size"], config["hidden_size"], config["n_heads"]
        if embedding_size != hidden_size:
            raise ConfigError(
                f"GLINTRU needs embedding_size == hidden_size (got {embedding_size} and {hidden_size})"
            )
        if hidden_size % n_heads != 0:
            raise ConfigError(
                f"GLINTRU needs hidden_size divisible by n_heads (got {hidden_size} and {n_heads})"
            )
        if hidden_size < 2:
            raise ConfigError(f"GLINTRU needs hidden_size >= 2 for the d/2 gate (got {hidden_size})")
        kernel = config["conv_kernel_size"]
        if not isinstance(kernel, int) or isinstance(kernel, bool) or kernel < 1 or kernel % 2 == 0:
            raise ConfigError(f"GLINTRU needs a positive odd conv_kernel_size for 'same' padding (got {kernel!r})")
        if config["loss_type"] not in ("BPR", "CE", "SSM", "gBCE"):
            raise ConfigError(f"GLINTRU needs loss_type 'BPR', 'CE', 'SSM' or 'gBCE' (got {config['loss_type']!r})")

    def _same_conv(self):
        """Conv1d over the sequence axis, symmetric padding: output length = input length."""
        return nn.Conv1d(
            self.hidden_size,
            self.hidden_size,
            kernel_size=self.conv_kernel_size,
            padding=self.conv_kernel_size // 2,
        )

    def _init_weights(self, module):
        if isinstance(module, nn.Embedding):
            xavier_normal_(module.weight)
        elif isinstance(module, nn.GRU):
            # only the first layer, as the official code; deeper layers keep PyTorch's default
            xavier_uniform_(module.weight_hh_l0)
            xavier_uniform_(module.weight_ih_l0)
        elif isinstance(module, nn.Linear):
            xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.constant_(module.bias, 0)

    def _temporal_conv(self, conv, seq):
        """Apply a Conv1d to a [B, N, d] sequence (channels last in and out)."""
        return conv(seq.transpose(1, 2)).transpose(1, 2)

    def _gru_expert(self, item_seq_emb):
        """Dense selective GRU: Conv_k(Gate(C) ⊙ Φ(GRU(C))) with C = Conv_k(W_1 X)."""
        conv_output = self._temporal_conv(self.conv1d, self.dense1(item_seq_emb))
        gru_output, _ = self.gru_layers(conv_output)
        gated = self.selective_gate(conv_output) * self.projection(gru_output)
        return self._temporal_conv(self.conv1dforgru, gated)

    def _mix_and_mlp(self, gru_output, attention_output, item_seq_emb):
        """Expert mixing, data-aware gate and gated MLP; position-wise ([..., d] in, [..., d] out)."""
        expert_weights = F.softmax(self.weights, dim=0)
        expert_output = expert_weights[0] * gru_output + expert_weights[1] * attention_output
        mixed = self.dense(expert_output * self.gelu(self.dense2(item_seq_emb)))
        mixed = self.LayerNorm(self.dropmix(mixed) + item_seq_emb)

        gated_mlp = self.dense3(mixed) * self.gelu(self.dense4(mixed))
        gated_mlp = self.dropdense(self.denseout(gated_mlp))
        return self.LayerNorm(gated_mlp + mixed)

    def forward(self, item_seq, item_seq_len):
        self.gru_layers.flatten_parameters()  # no-op on CPU; keeps cuDNN weights contiguous
        item_seq_emb = self.emb_dropout(self.item_embedding(item_seq))

        attention_output = self.linearattention(item_seq_emb)
        gru_output = self._gru_expert(item_seq_emb)

        # everything after the experts is position-wise: compute it only where it is read
        last = item_seq_len - 1
        return self._mix_and_mlp(
            self.gather_indexes(gru_output, last),
            self.gather_indexes(attention_output, last),
            self.gather_indexes(item_seq_emb, last),
        )

    def calculate_loss(self, interaction):
        if self.loss_fct is None:
            raise ConfigError(f"loss_type {self.loss_type} is computed by recbole-linear's trainer (recbole_linear.sampled_loss)")
        item_seq = interaction[self.ITEM_SEQ]
        item_seq_len = interaction[self.ITEM_SEQ_LEN]
        seq_output = self.forward(item_seq, item_seq_len)
        pos_items = interaction[self.POS_ITEM_ID]
        if self.loss_type == "BPR":
            neg_items = interaction[self.NEG_ITEM_ID]
            pos_score = torch.sum(seq_output * self.item_embedding(pos_items), dim=-1)  # [B]
            neg_score = torch.sum(seq_output * self.item_embedding(neg_items), dim=-1)  # [B]
            return self.loss_fct(pos_score, neg_score)
        logits = torch.matmul(seq_output, self.item_embedding.weight.transpose(0, 1))
        return self.loss_fct(logits, pos_items)

    def predict(self, interaction):
        item_seq = interaction[self.ITEM_SEQ]
        item_seq_len = interaction[self.ITEM_SEQ_LEN]
        test_item = interaction[self.ITEM_ID]
        seq_output = self.forward(item_seq, item_seq_len)
        test_item_emb = self.item_embedding(test_item)
        return torch.mul(seq_output, test_item_emb).sum(dim=1)  # [B]

    def full_sort_predict(self, interaction):
        item_seq = interaction[self.ITEM_SEQ]
        item_seq_len = interaction[self.ITEM_SEQ_LEN]
        seq_output = self.forward(item_seq, item_seq_len)
        return torch.matmul(seq_output, self.item_embedding.weight.transpose(0, 1))  # [B, n_items]
