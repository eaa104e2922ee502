"""Each test user's NDCG@10, from the very scores RecBole's evaluator ranks.

``compare`` stores it per run (``per_user/<run_id>.npz``) for the paired significance test of its
summary; ``evaluate --per_user`` stores it per checkpoint. Both use :class:`PerUserNDCG`:
attach it to the trainer before the test evaluation, then :meth:`PerUserNDCG.save`.
"""
import os
import time

import numpy as np
import torch

NDCG_K = 10


class PerUserNDCG:
    """Wraps a trainer's batch-eval function and keeps each evaluated user's NDCG@k.

    It ranks the very score matrix the trainer hands to RecBole's collector, with the same
    ``torch.topk(scores, max(topk))`` call, so ties fall the same way and the mean over users
    equals RecBole's ``ndcg@k``. NDCG of a user: sum over the top-k of 1/log2(rank + 2) at the
    positive items, divided by the ideal DCG of min(#positives, k) hits (one target: 1/log2(rank+2)
    if rank < k else 0). ``seconds`` is the time spent here, subtracted from the latency.
    """

    def __init__(self, config, k=NDCG_K):
        self.k = k
        self.depth = max(max(config["topk"] or [k]), k)
        self.uid_field = config["USER_ID_FIELD"]
        self.cuda = torch.device(config["device"]).type == "cuda"
        self.discounts = 1.0 / torch.log2(torch.arange(k, dtype=torch.float64) + 2.0)
        self.users, self.values = [], []
        self.seconds = 0.0

    def attach(self, trainer):
        """Shadow the trainer's batch-eval methods on this instance only (the class is untouched)."""
        trainer._full_sort_batch_eval = self._wrap(trainer._full_sort_batch_eval, sampled=False)
        trainer._neg_sample_batch_eval = self._wrap(trainer._neg_sample_batch_eval, sampled=True)

    def _wrap(self, batch_eval, sampled):
        def recording_batch_eval(batched_data):
            output = batch_eval(batched_data)
            self._sync()
            start = time.perf_counter()
            interaction, scores, positive_u, positive_i = output
            if sampled:  # one score row per user; rows of the interaction map to them by row_idx
                row_users = scores.new_zeros(scores.shape[0], dtype=interaction[self.uid_field].dtype)
                row_users[batched_data[1]] = interaction[self.uid_field].to(scores.device)
            else:
                row_users = interaction[self.uid_field]
            self._record(row_users, scores, positive_u, positive_i)
            self.seconds += time.perf_counter() - start
            return output

        return recording_batch_eval

    def _sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def _record(self, row_users, scores, positive_u, positive_i):
        topk_index = torch.topk(scores, self.depth, dim=-1).indices[:, : self.k]
        positives = torch.zeros_like(scores, dtype=torch.int)
        positives[positive_u, positive_i] = 1
        n_positives = positives.sum(dim=1).cpu()
        hits = torch.gather(positives, 1, topk_index).cpu().double()
        dcg = (hits * self.discounts[: hits.shape[1]]).sum(dim=1)
        ideal = torch.cumsum(self.discounts, 0)[n_positives.clamp(1, self.k) - 1]
        ndcg = torch.where(n_positives > 0, dcg / ideal, torch.zeros_like(dcg))
        self.users.append(row_users.cpu().numpy())
        self.values.append(ndcg.numpy())

    @property
    def n_users(self):
        return sum(len(v) for v in self.values)

    def result(self, dataset):
        """(external user tokens, NDCG@k per evaluated user row)."""
        ids = np.concatenate(self.users) if self.users else np.zeros(0, dtype=np.int64)
        values = np.concatenate(self.values) if self.values else np.zeros(0)
        return np.asarray(dataset.id2token(self.uid_field, ids)).astype(str), values

    def save(self, path, dataset, config, test_result, logger):
        """Write ``path`` (.npz: ``user`` tokens, ``ndcg@10``) and warn in ``logger`` if the mean is
        not RecBole's ``ndcg@10`` up to its rounding; returns (users, values)."""
        users, values = self.result(dataset)
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        np.savez(path, user=users, **{f"ndcg@{self.k}": values})
        key = f"ndcg@{self.k}"
        if key in test_result and len(values):
            tolerance = 0.5 * 10 ** -config["metric_decimal_place"] + 1e-9
            if abs(float(np.mean(values)) - float(test_result[key])) > tolerance:
                logger.warning(f"per-user {key} mean {np.mean(values):.6f} differs from RecBole's {test_result[key]}")
        return users, values
