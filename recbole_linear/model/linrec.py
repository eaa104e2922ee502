"""
LinRec
################################################

Reference:
    Langming Liu et al. "LinRec: Linear Attention Mechanism for Long-term Sequential Recommender
    Systems." in SIGIR 2023.

Reference code:
    https://github.com/Applied-Machine-Learning-Lab/LinRec (a replacement ``layers.py`` for RecBole 1.1)

"""
import copy

import torch
from torch import nn

from recbole.model.abstract_recommender import SequentialRecommender
from recbole.model.layers import FeedForward
from recbole.model.loss import BPRLoss

from recbole_linear.layers.linear_attention import LinearMultiHeadAttention
from recbole_linear.config import fill_model_defaults
from recbole_linear.errors import ConfigError

# the activations RecBole's FeedForward.get_hidden_act knows
ACT2FN_NAMES = ("gelu", "relu", "swish", "tanh", "sigmoid")


class LinearTransformerLayer(nn.Module):
    """RecBole's ``TransformerLayer`` with ``LinearMultiHeadAttention`` in place of softmax attention.

    Attention block (with its own residual LayerNorm), then RecBole's unchanged ``FeedForward``.
    The submodule names are RecBole's, so the parameter names match SASRec's.
    """

    def __init__(
        self,
        n_heads,
        hidden_size,
        intermediate_size,
        hidden_dropout_prob,
        hidden_act,
        layer_norm_eps,
        causal,
        use_padding_mask,
        chunk_size,
    ):
        super().__init__()
        self.multi_head_attention = LinearMultiHeadAttention(
            n_heads,
            hidden_size,
            hidden_dropout_prob,
            layer_norm_eps,
            causal=causal,
            use_padding_mask=use_padding_mask,
            chunk_size=chunk_size,
        )
        self.feed_forward = FeedForward(
            hidden_size, intermediate_size, hidden_dropout_prob, hidden_act, layer_norm_eps
        )

    def forward(self, hidden_states, padding_mask):
        attention_output = self.multi_head_attention(hidden_states, padding_mask)
        return self.feed_forward(attention_output)


class LinearTransformerEncoder(nn.Module):
    """``n_layers`` copies of ``LinearTransformerLayer``, as RecBole's ``TransformerEncoder``."""

    def __init__(self, n_layers, **layer_kwargs):
        super().__init__()
        layer = LinearTransformerLayer(**layer_kwargs)
        self.layer = nn.ModuleList([copy.deepcopy(layer) for _ in range(n_layers)])

    def forward(self, hidden_states, padding_mask, output_all_encoded_layers=True):
        all_encoder_layers = []
        for layer_module in self.layer:
            hidden_states = layer_module(hidden_states, padding_mask)
            if output_all_encoded_layers:
                all_encoder_layers.append(hidden_states)
        if not output_all_encoded_layers:
            all_encoder_layers.append(hidden_states)
        return all_encoder_layers


class LinRec(SequentialRecommender):
    r"""LinRec: RecBole's SASRec with L2-normalised linear attention.

    Every layer computes, per head, ``Q̂ (K̂ᵀ V) / √d_h`` where Q̂ and K̂ are ELU (alpha 1, no +1)
    followed by L2 normalisation of every query and key vector over the head dimension; then
    dense -> dropout -> residual LayerNorm and RecBole's FeedForward. Time and memory are linear
    in the sequence length. Everything else (embeddings, post-LN layers, read-out at the last real
    position, CE/BPR loss, initialisation) is RecBole's SASRec, as in the official code, which
    swaps RecBole's ``MultiHeadAttention`` for this one and runs SASRec.

    Deviations from the official code:

    - A separate model class rather than a patched ``recbole/model/layers.py``: RecBole's own
      SASRec, BERT4Rec, FDSA... stay unchanged when the plugin is imported.
    - The L2 norm is clamped at 1e-12 before its reciprocal is taken: outputs are unchanged
      whenever a vector's norm exceeds 1e-12, and an all-zero vector maps to 0 instead of NaN.
    - Two options the official code does not have, both off by default so that the default
      reproduces it: ``linrec_padding_mask`` zeroes padded keys (the official code lets padded
      positions, which carry a position embedding, enter K̂ᵀV, so scores depend on
      MAX_ITEM_LIST_LENGTH minus the sequence length); ``linrec_causal`` lets position t see only
      positions <= t, computed in chunks of ``linrec_chunk_size``. The official model is
      non-causal by design; the read-out uses only the last real position, whose history is
      the whole (non-padded) input, so the target does not leak.
    - Training: RecBole's last-position loss on prefix samples by default. With
      ``linrec_causal: True`` the model is causal and can also train every position of a window at
      once (``train_all_positions: True``, see :mod:`recbole_linear.all_positions`); the official
      code trains RecBole's prefixes.
    - ``loss_type: SSM`` / ``gBCE`` (additions): sampled softmax and gBCE over negatives drawn per
      batch, computed by the plugin's trainer (:mod:`recbole_linear.sampled_loss`), in both regimes.
    - ``attn_dropout_prob`` is read but unused, exactly as in the official code, which defines an
      attention dropout and never applies it.
    - Evaluation is not part of the model: it follows the RecBole config. The official runs rank
      every item (full ranking): their ``overall.yaml`` says ``mode: pop100``, but it replaces
      RecBole's internal ``overall.yaml``, which RecBole's ``quick_start_config/sequential.yaml``
      overrides with ``mode: full`` for every sequential model (``run.py``'s pop100 line is
      commented out). ``properties/protocol/linrec-paper.yaml`` holds the official run settings.

    Where paper and code may disagree, this follows the code: every key vector is normalised over
    the head dimension (the code's "column-wise" norm of the transposed key layout), not over the
    sequence axis, and the only scale is the final 1/√d_h. The paper's Eq. (9) was not checked
    against the PDF.
    """

    def __init__(self, config, dataset):
        super(LinRec, self).__init__(config, dataset)
        # defaults for keys a config from RecBole's own Config (stock run_recbole) lacks
        fill_model_defaults(config, "LinRec")

        # load parameters info
        self.n_layers = config["n_layers"]
        self.n_heads = config["n_heads"]
        self.hidden_size = config["hidden_size"]  # same as embedding_size
        self.inner_size = config["inner_size"]  # the dimensionality in feed-forward layer
        self.hidden_dropout_prob = config["hidden_dropout_prob"]
        self.attn_dropout_prob = config["attn_dropout_prob"]  # unused, as in the official code
        self.hidden_act = config["hidden_act"]
        self.layer_norm_eps = config["layer_norm_eps"]
        self.initializer_range = config["initializer_range"]
        self.loss_type = config["loss_type"]
        self.use_padding_mask = bool(config["linrec_padding_mask"])
        self.causal = bool(config["linrec_causal"])
        self.chunk_size = config["linrec_chunk_size"]
        self.check_config(config)

        # define layers and loss
        self.item_embedding = nn.Embedding(self.n_items, self.hidden_size, padding_idx=0)
        self.position_embedding = nn.Embedding(self.max_seq_length, self.hidden_size)
        self.trm_encoder = LinearTransformerEncoder(
            n_layers=self.n_layers,
            n_heads=self.n_heads,
            hidden_size=self.hidden_size,
            intermediate_size=self.inner_size,
            hidden_dropout_prob=self.hidden_dropout_prob,
            hidden_act=self.hidden_act,
            layer_norm_eps=self.layer_norm_eps,
            causal=self.causal,
            use_padding_mask=self.use_padding_mask,
            chunk_size=self.chunk_size,
        )
        self.LayerNorm = nn.LayerNorm(self.hidden_size, eps=self.layer_norm_eps)
        self.dropout = nn.Dropout(self.hidden_dropout_prob)

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
        hidden_size, n_heads = config["hidden_size"], config["n_heads"]
        if hidden_size % n_heads != 0:
            raise ConfigError(f"LinRec needs hidden_size divisible by n_heads (got {hidden_size} and {n_heads})")
        if config["hidden_act"] not in ACT2FN_NAMES:
            raise ConfigError(
                f"LinRec needs hidden_act in {', '.join(ACT2FN_NAMES)} (got {config['hidden_act']!r})"
            )
        if config["loss_type"] not in ("BPR", "CE", "SSM", "gBCE"):
            raise ConfigError(f"LinRec needs loss_type 'BPR', 'CE', 'SSM' or 'gBCE' (got {config['loss_type']!r})")
        chunk_size = config["linrec_chunk_size"]
        if not (isinstance(chunk_size, int) and not isinstance(chunk_size, bool) and chunk_size > 0):
            raise ConfigError(f"LinRec needs a positive integer linrec_chunk_size (got {config['linrec_chunk_size']!r})")

    def _init_weights(self, module):
        """RecBole SASRec's scheme: N(0, initializer_range) weights, zero biases, unit LayerNorm."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.data.normal_(mean=0.0, std=self.initializer_range)
        elif isinstance(module, nn.LayerNorm):
            module.bias.data.zero_()
            module.weight.data.fill_(1.0)
        if isinstance(module, nn.Linear) and module.bias is not None:
            module.bias.data.zero_()

    def forward(self, item_seq, item_seq_len):
        output = self.sequence_output(item_seq, item_seq_len)
        return self.gather_indexes(output, item_seq_len - 1)  # [B H]

    def sequence_output(self, item_seq, item_seq_len):
        """Every position's representation, ``[B, L, H]`` (causal only with ``linrec_causal``)."""
        position_ids = torch.arange(item_seq.size(1), dtype=torch.long, device=item_seq.device)
        position_ids = position_ids.unsqueeze(0).expand_as(item_seq)
        position_embedding = self.position_embedding(position_ids)

        item_emb = self.item_embedding(item_seq)
        input_emb = item_emb + position_embedding
        input_emb = self.LayerNorm(input_emb)
        input_emb = self.dropout(input_emb)

        # read by the attention only when linrec_padding_mask is on (the official code has no mask)
        padding_mask = item_seq != 0

        trm_output = self.trm_encoder(input_emb, padding_mask, output_all_encoded_layers=True)
        return trm_output[-1]

    def calculate_loss(self, interaction):
        if self.loss_fct is None:
            raise ConfigError(f"loss_type {self.loss_type} is computed by recbole-linear's trainer (recbole_linear.sampled_loss)")
        item_seq = interaction[self.ITEM_SEQ]
        item_seq_len = interaction[self.ITEM_SEQ_LEN]
        seq_output = self.forward(item_seq, item_seq_len)
        pos_items = interaction[self.POS_ITEM_ID]
        if self.loss_type == "BPR":
            neg_items = interaction[self.NEG_ITEM_ID]
            pos_items_emb = self.item_embedding(pos_items)
            neg_items_emb = self.item_embedding(neg_items)
            pos_score = torch.sum(seq_output * pos_items_emb, dim=-1)  # [B]
            neg_score = torch.sum(seq_output * neg_items_emb, dim=-1)  # [B]
            return self.loss_fct(pos_score, neg_score)
        # self.loss_type == 'CE'
        test_item_emb = self.item_embedding.weight
        logits = torch.matmul(seq_output, test_item_emb.transpose(0, 1))
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
        test_items_emb = self.item_embedding.weight
        return torch.matmul(seq_output, test_items_emb.transpose(0, 1))  # [B n_items]
