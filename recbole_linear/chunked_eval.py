"""Full-ranking evaluation in chunks of items: exact top-k metrics without a ``[users, items]`` score matrix.

RecBole's full-sort evaluation asks the model for the scores of every item (``[eval_batch_size,
n_items]``) and hands them to its collector, which takes the top-k and marks the positives. At a
million items that is 2 GB per batch of 512 users, and its copies more. Here, for catalogues of
more than ``eval_item_chunk_size`` items, the items are scored ``eval_item_chunk_size`` at a time
(the same masking: the padding item, the history RecBole masks, the input window with
``eval_mask_history``), and only a running top-k and each positive's score are kept. The collector
then receives a compact score matrix: the top-k columns, plus one column for each positive that is
not among them (holding its score), with the positives' column indices in place of their item ids.
RecBole's own code then computes exactly what it computes on the full matrix: the same top-k
items in the same order (up to exactly tied scores) and the same positives and counts, hence the
same metrics.

It applies when every metric reads only the top-k hits (``rec.topk``: Recall, NDCG, MRR, Hit,
Precision, MAP); metrics that read the recommended item ids, every rank or every score (item
coverage, AUC...) and models not scored as ``h . E[i] (+ b[i])`` score every item at once, as in
RecBole, with a note in the log.
"""
from logging import getLogger

import torch

from recbole_linear.model_names import PLUGIN_MODELS
from recbole_linear.sampled_loss import RECBOLE_SCORED_MODELS, output_weights

# collector resources the compact scores cannot feed
_FULL_MATRIX_RESOURCES = ("rec.items", "rec.meanrank", "rec.score")


def why_not_chunked(trainer):
    """None if the trainer's model and metrics can be evaluated in chunks, else the reason."""
    name = type(trainer.model).__name__
    if name not in PLUGIN_MODELS and name not in RECBOLE_SCORED_MODELS:
        return f"{name} is not scored as h . E[i]"
    needs = [key for key in _FULL_MATRIX_RESOURCES if trainer.eval_collector.register.need(key)]
    if needs:
        return f"a metric reads {needs[0]}"
    return None


def _masked_pairs(trainer, interaction, history_index):
    """(rows, items) pairs whose scores are -inf besides the padding item."""
    pairs = []
    if history_index is not None:
        rows, items = history_index
        pairs.append((rows.to(trainer.device), items.to(trainer.device)))
    if trainer.mask_history:
        item_seq = interaction[trainer.model.ITEM_SEQ]
        rows = torch.arange(item_seq.size(0), device=item_seq.device).repeat_interleave(item_seq.size(1))
        pairs.append((rows, item_seq.reshape(-1)))
    return pairs


def _chunk_scores(hidden, weight, bias, start, stop):
    if bias is None:
        return hidden @ weight[start:stop].t()
    return torch.addmm(bias[start:stop], hidden, weight[start:stop].t())


def compact_scores(top_scores, top_items, positive_u, positive_i, positive_scores):
    """The collector's input: ``[B, k + most positives of a user outside the top-k]`` scores and the
    positives' column indices (their top-k column, or a column of their own holding their score)."""
    k = top_items.size(1)
    in_top = top_items[positive_u] == positive_i.unsqueeze(1)  # [P, k]
    found = in_top.any(dim=1)
    _, counts = torch.unique_consecutive(positive_u, return_counts=True)  # positive_u is grouped by row
    first = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    rank_in_row = torch.arange(len(positive_u), device=positive_u.device) - first
    columns = torch.where(found, in_top.int().argmax(dim=1), k + rank_in_row)
    width = k + (int(rank_in_row.max()) + 1 if len(rank_in_row) else 0)
    scores = torch.full((top_scores.size(0), width), float("-inf"), device=top_scores.device, dtype=top_scores.dtype)
    scores[:, :k] = top_scores
    outside = ~found
    scores[positive_u[outside], columns[outside]] = positive_scores[outside]
    return scores, columns


@torch.no_grad()
def chunked_full_sort(trainer, batched_data, chunk_size):
    """``(interaction, compact scores, positive_u, positive columns)`` for RecBole's collector, or
    None when this evaluation must score every item at once (logged once)."""
    reason = why_not_chunked(trainer)
    if reason is not None:
        if not trainer._chunked_eval_logged:
            getLogger().info(f"full-ranking evaluation scores all {trainer.tot_item_num} items at once: {reason}")
            trainer._chunked_eval_logged = True
        return None
    interaction, history_index, positive_u, positive_i = batched_data
    model, device = trainer.model, trainer.device
    interaction = interaction.to(device)
    positive_u, positive_i = positive_u.to(device), positive_i.to(device)
    hidden = model.forward(interaction[model.ITEM_SEQ], interaction[model.ITEM_SEQ_LEN])
    weight, bias = output_weights(model)
    k = max(trainer.eval_collector.topk)
    masked = _masked_pairs(trainer, interaction, history_index)
    top_scores = torch.empty(hidden.size(0), 0, device=device)
    top_items = torch.empty(hidden.size(0), 0, dtype=torch.long, device=device)
    positive_scores = torch.empty(len(positive_i), device=device)
    for start in range(0, trainer.tot_item_num, chunk_size):
        stop = min(start + chunk_size, trainer.tot_item_num)
        scores = _chunk_scores(hidden, weight, bias, start, stop)
        if start == 0:
            scores[:, 0] = float("-inf")  # the padding item, as RecBole
        for rows, items in masked:
            inside = (items >= start) & (items < stop)
            scores[rows[inside], items[inside] - start] = float("-inf")
        inside = (positive_i >= start) & (positive_i < stop)
        positive_scores[inside] = scores[positive_u[inside], positive_i[inside] - start]
        chunk_top, chunk_index = torch.topk(scores, min(k, stop - start), dim=1)
        merged_scores = torch.cat([top_scores, chunk_top], dim=1)
        merged_items = torch.cat([top_items, chunk_index + start], dim=1)
        top_scores, index = torch.topk(merged_scores, min(k, merged_scores.size(1)), dim=1)
        top_items = merged_items.gather(1, index)
    scores, columns = compact_scores(top_scores, top_items, positive_u, positive_i, positive_scores)
    return interaction, scores, positive_u, columns
