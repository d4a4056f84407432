"""Baselines without a user model, scored on the same splits as the fine-tuned models.

* :class:`PopularityBaseline` (label-free): an item's score is the number of users whose history holds it.
* :class:`ItemMeanBaseline` (uses the training labels, so it follows the label fraction): a candidate's smoothed
  mean training label.
* :class:`MatrixFactorization` (label-free): BPR matrix factorisation (Rendle et al., 2009) of the user x item
  matrix of histories, the same behaviours a pre-training run may see; a user scores a candidate with
  ``<user, item> + item bias``.

:func:`evaluate_baseline` scores a test split of a registered task with one of them: CTR rows (``candidate``,
``label``) get AUC / AP (and log loss where the scores are probabilities), next-item rows full-ranking
HR / NDCG / MRR with the histories excluded, as the fine-tuned models are.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..finetuning.metrics import compute_ranks, ctr_metrics, metrics_from_ranks
from ..finetuning.splits import column_values

BASELINES = ("popularity", "item_mean", "mf")


class PopularityBaseline:
    """Scores items by how many distinct users have them in their history (no labels).

    Example:
        >>> PopularityBaseline().fit([[1, 2], [2, 3, 2]], num_items=5).scores.tolist()
        [0.0, 1.0, 2.0, 1.0, 0.0]
    """

    def fit(self, histories: Iterable[Sequence[int]], num_items: int) -> PopularityBaseline:
        counts = np.zeros(num_items, dtype=np.float64)
        for history in histories:
            counts[np.unique(np.asarray(history, dtype=np.int64))] += 1
        self.scores = counts  # (V,)
        return self

    def score(self, users: Sequence[int] | None, items: np.ndarray) -> np.ndarray:
        return self.scores[np.asarray(items, dtype=np.int64)]


class ItemMeanBaseline:
    """Scores a candidate by its mean training label, shrunk towards the global mean with ``prior_weight``
    pseudo-observations: ``(sum of labels + prior_weight * global mean) / (count + prior_weight)``.

    Example:
        >>> model = ItemMeanBaseline(prior_weight=1.0).fit([1, 1, 2], [1.0, 0.0, 1.0], num_items=4)
        >>> [round(x, 4) for x in model.scores.tolist()]  # global mean 2/3
        [0.6667, 0.5556, 0.8333, 0.6667]
    """

    def __init__(self, prior_weight: float = 1.0):
        self.prior_weight = prior_weight

    def fit(self, items: Sequence[int], labels: Sequence[float], num_items: int) -> ItemMeanBaseline:
        items, labels = np.asarray(items, dtype=np.int64), np.asarray(labels, dtype=np.float64)
        prior = float(labels.mean()) if labels.size else 0.5
        sums = np.bincount(items, weights=labels, minlength=num_items)
        counts = np.bincount(items, minlength=num_items).astype(np.float64)
        with np.errstate(invalid="ignore"):  # prior_weight 0: unseen items get the global mean below
            self.scores = (sums + self.prior_weight * prior) / (counts + self.prior_weight)  # (V,)
        self.scores[counts == 0] = prior
        return self

    def score(self, users: Sequence[int] | None, items: np.ndarray) -> np.ndarray:
        return self.scores[np.asarray(items, dtype=np.int64)]


@dataclass
class MatrixFactorization:
    """BPR matrix factorisation of implicit user x item interactions, trained with Adam on full-batch epochs
    of (user, positive, uniformly drawn negative) triples.

    Args:
        factors: size of the user and item vectors.
        epochs: passes over the interactions (one negative per interaction per pass).
        learning_rate: Adam learning rate.
        weight_decay: L2 on the factors of each triple (as in BPR's regularisation).
        batch_size: triples per step.
        seed: seeds the initialisation and the negative draws.

    Example:
        >>> mf = MatrixFactorization(factors=4, epochs=30, seed=0).fit([[1, 2], [1, 2], [3, 4]], num_items=5)
        >>> bool(mf.losses[-1] < mf.losses[0]), bool(mf.score([0], [2])[0] > mf.score([0], [4])[0])
        (True, True)
    """

    factors: int = 32
    epochs: int = 20
    learning_rate: float = 0.01
    weight_decay: float = 1e-4
    batch_size: int = 4096
    seed: int = 0

    def fit(self, histories: Sequence[Sequence[int]], num_items: int) -> MatrixFactorization:
        """Fit on one history per user (user index = position in ``histories``); records ``losses`` per epoch."""
        generator = torch.Generator().manual_seed(self.seed)
        pairs = [(u, int(i)) for u, history in enumerate(histories) for i in dict.fromkeys(history) if i > 0]
        users = torch.tensor([p[0] for p in pairs], dtype=torch.long)  # (N,)
        items = torch.tensor([p[1] for p in pairs], dtype=torch.long)  # (N,)
        self.user_factors = torch.nn.Parameter(torch.randn(len(histories), self.factors, generator=generator) * 0.1)
        self.item_factors = torch.nn.Parameter(torch.randn(num_items, self.factors, generator=generator) * 0.1)
        self.item_bias = torch.nn.Parameter(torch.zeros(num_items))
        optimizer = torch.optim.Adam([self.user_factors, self.item_factors, self.item_bias], lr=self.learning_rate)
        self.losses = []
        for _ in range(self.epochs):
            order = torch.randperm(len(pairs), generator=generator)
            negatives = torch.randint(1, num_items, (len(pairs),), generator=generator)  # (N,), 0 is padding
            total = 0.0
            for start in range(0, len(pairs), self.batch_size):
                index = order[start : start + self.batch_size]
                u, i, j = self.user_factors[users[index]], items[index], negatives[index]
                vi, vj = self.item_factors[i], self.item_factors[j]  # (b, F)
                margin = (u * (vi - vj)).sum(-1) + self.item_bias[i] - self.item_bias[j]  # (b,)
                loss = -torch.nn.functional.logsigmoid(margin).mean()
                penalty = self.weight_decay * (u.pow(2).sum(-1) + vi.pow(2).sum(-1) + vj.pow(2).sum(-1)).mean()
                optimizer.zero_grad()
                (loss + penalty).backward()
                optimizer.step()
                total += loss.item() * len(index)
            self.losses.append(total / max(len(pairs), 1))
        return self

    @torch.no_grad()
    def score(self, users: Sequence[int], items) -> np.ndarray:
        """Scores of ``items`` for ``users``: (n,) for (n,) items, (n, V) for ``items=None`` (every item)."""
        u = self.user_factors[torch.as_tensor(users, dtype=torch.long)]  # (n, F)
        if items is None:
            return (u @ self.item_factors.T + self.item_bias).numpy()  # (n, V)
        i = torch.as_tensor(np.asarray(items), dtype=torch.long)  # (n,)
        return ((u * self.item_factors[i]).sum(-1) + self.item_bias[i]).numpy()


def _user_histories(splits) -> tuple[dict[str, int], list[list[int]]]:
    """The longest history of each user over every split (next-item users have one row per prefix: the test row's
    history holds the others); users indexed in first-seen order."""
    index, histories = {}, []
    for split in ("train", "validation", "test"):
        for user, history in zip(column_values(splits[split], "user_id"), column_values(splits[split], "history")):
            if user not in index:
                index[user] = len(histories)
                histories.append(list(history))
            elif len(history) > len(histories[index[user]]):
                histories[index[user]] = list(history)
    return index, histories


def evaluate_baseline(name: str, splits, num_items: int, *, train_rows=None, mf_args: dict | None = None,
                      seed: int = 0, split: str = "test") -> dict[str, float]:
    """Metrics of baseline ``name`` on the ``split`` ("test", or "validation" in development runs) of a task's
    ``splits`` (``DatasetDict`` of CTR or next-item rows).

    ``train_rows`` are the labelled training rows ``item_mean`` learns from (the label-fraction subsample;
    default: the whole training split). Label-free baselines see the histories of every split (inputs the
    fine-tuned models see too), never a candidate label or an evaluation target.
    """
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; choose one of {BASELINES}")
    test = splits[split]
    next_item = "target" in test.column_names
    if next_item and name == "item_mean":
        raise ValueError("item_mean scores labelled candidates; the next-item task ranks every item")
    user_index, histories = _user_histories(splits)
    if name == "popularity":
        model = PopularityBaseline().fit(histories, num_items)
    elif name == "item_mean":
        rows = train_rows if train_rows is not None else splits["train"]
        model = ItemMeanBaseline().fit(column_values(rows, "candidate"), column_values(rows, "label"), num_items)
    else:
        model = MatrixFactorization(**{"seed": seed, **(mf_args or {})}).fit(histories, num_items)
    users = [user_index[u] for u in column_values(test, "user_id")]
    if next_item:
        targets = np.asarray(column_values(test, "target"))
        exclude, ranks = [list(x) for x in column_values(test, "exclude")], []
        for start in range(0, len(users), 1024):  # (1024, V) score blocks, never the (n, V) matrix
            block = users[start : start + 1024]
            if name == "popularity":
                scores = np.broadcast_to(model.scores, (len(block), num_items))  # (b, V)
            else:
                scores = model.score(block, None)  # (b, V)
            ranks.append(compute_ranks(scores, targets[start : start + 1024], exclude[start : start + 1024]))
        metrics = metrics_from_ranks(np.concatenate(ranks))
    else:
        scores = model.score(users, np.asarray(column_values(test, "candidate")))  # (n,)
        probabilities = name == "item_mean"  # popularity counts and MF margins are scores, not probabilities
        metrics = ctr_metrics(column_values(test, "label"), scores, from_logits=not probabilities)
        if not probabilities:
            metrics.pop("logloss", None)
    if name == "mf":
        metrics["train_loss_first"], metrics["train_loss_last"] = model.losses[0], model.losses[-1]
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


__all__ = ["BASELINES", "PopularityBaseline", "ItemMeanBaseline", "MatrixFactorization", "evaluate_baseline"]
