"""Held-out evaluation of pre-training: is the user model learning something, and are its embeddings healthy?

For users the model never trained on, :class:`PretrainingEvaluator` reports

* ``mbp_loss`` / ``mbp_accuracy`` and ``bsm_loss`` / ``bsm_accuracy``: UserBERT's two tasks on a fixed evaluation
  batch (four draws per user of masking, period split and *uniformly random* negatives, drawn once from a seeded
  stream; negative sequences cropped from other held-out users), so values compare across steps, runs, samplers
  and objectives;
* representation health of the held-out users' embeddings (:func:`embedding_health`): mean pairwise cosine,
  participation ratio (inverse Simpson of the centred covariance eigenvalues: 1 when every user lies on one
  line, at most the embedding size) and the top principal component's share of the variance;
* a label-free usefulness probe, ``knn_recall_at_20`` (:func:`knn_future_recall`): each held-out user's earlier
  80% of behaviours is embedded, its k nearest training users by cosine vote for items (weighted by similarity),
  and the probe is the recall@20 of the user's own later 20% among items not in its history. Embeddings that
  place users with similar interests together score high; collapsed embeddings give arbitrary neighbours.
  ``popularity_recall_at_20`` (rank by count among the training users) is the label-free reference.

Each health and probe figure comes with the same architecture at initialisation (``init_*``), computed once.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F

from ..collation import BehaviorCatalog, UserBertCollator, UserBertPretrainingCollator
from .masking import RandomStream
from .objectives import ObjectiveSettings, UserBertObjective
from .samplers import RandomNegativeSampler

_ALL_TASKS = SimpleNamespace(mbp_loss_weight=1.0, bsm_loss_weight=1.0)


def embedding_health(embeddings: torch.Tensor | np.ndarray) -> dict[str, float]:
    """Collapse diagnostics of user embeddings (N, H); users with an all-zero embedding are left out.

    Example:

    ```python
    >>> health = embedding_health(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]]))
    >>> health["embedding_participation_ratio"], health["embedding_mean_cosine"]
    (2.0, -0.3333)
    ```
    """
    x = torch.as_tensor(np.asarray(embeddings), dtype=torch.float64)
    x = x[x.norm(dim=1) > 0]
    if len(x) < 2:
        raise ValueError("embedding_health needs at least two non-zero embeddings")
    unit = F.normalize(x, dim=1)
    cosine = unit @ unit.T  # (N, N)
    off_diagonal = cosine[~torch.eye(len(x), dtype=torch.bool)]
    eigen = torch.linalg.svdvals(x - x.mean(0)) ** 2  # centred covariance eigenvalues (up to 1/N)
    share = eigen / eigen.sum().clamp(min=1e-300)
    return {
        "embedding_mean_cosine": round(float(off_diagonal.mean()), 4),
        "embedding_participation_ratio": round(float(1.0 / (share**2).sum()), 3),
        "embedding_top_component_share": round(float(share[0]), 4),
    }


def split_history_future(sequence: list, history_share: float = 0.8) -> tuple[list, list]:
    """Earlier ``history_share`` of a time-ordered sequence (at least one behaviour) and the rest."""
    cut = max(1, int(len(sequence) * history_share))
    return list(sequence[:cut]), list(sequence[cut:])


SCORE_BUDGET = 1 << 24  # floats of one chunk of (queries, catalogue) scores: 64 MB, whatever the catalogue


def item_incidence(sequences: list[list[int]], num_items: int) -> torch.Tensor:
    """(N, V) sparse 0/1 incidence of each sequence's behaviours: memory grows with the behaviours, not V."""
    rows, cols = [], []
    for i, seq in enumerate(sequences):
        distinct = sorted(set(int(b) for b in seq))
        rows += [i] * len(distinct)
        cols += distinct
    indices = torch.tensor([rows, cols], dtype=torch.long).reshape(2, -1)
    return torch.sparse_coo_tensor(indices, torch.ones(indices.shape[1]), (len(sequences), num_items)).coalesce()


def knn_future_recall(
    query_embeddings: torch.Tensor,
    histories: list[list[int]],
    futures: list[list[int]],
    base_embeddings: torch.Tensor | None,
    base_items: torch.Tensor,
    k: int = 20,
    cutoff: int = 20,
) -> float:
    """Mean recall@``cutoff`` of each query user's future behaviours, ranked by its ``k`` nearest base users.
    Scores are computed for a chunk of query users at a time (at most :data:`SCORE_BUDGET` floats), so memory stays
    bounded whatever the size of the catalogue.

    Args:
        query_embeddings: (Q, H) embeddings of the query users' histories.
        histories / futures: behaviour ids per query user (history items are never recommended).
        base_embeddings: (N, H) embeddings of the base users; ``None`` ranks by popularity among them instead.
        base_items: (N, V) 0/1 float incidence of the base users' behaviours (V = vocabulary size), dense or sparse
            (:func:`item_incidence`).

    Example:

    ```python
    >>> items = torch.tensor([[0, 1, 1, 0], [0, 0, 0, 1.0]])
    >>> knn_future_recall(torch.tensor([[1.0, 0.0]]), [[1]], [[2]], torch.tensor([[1.0, 0.0], [0.0, 1.0]]), items, k=1, cutoff=1)
    1.0
    ```
    """
    items_t = (base_items if base_items.is_sparse else base_items.to_sparse()).t().coalesce().float()  # (V, N)
    num_items = items_t.shape[0]
    popularity = torch.sparse.sum(items_t, dim=1).to_dense() if base_embeddings is None else None  # (V,)
    if base_embeddings is not None:
        base = F.normalize(base_embeddings.float(), dim=-1)  # (N, H)
    step = max(1, SCORE_BUDGET // max(num_items, 1))
    recalls = []
    for start in range(0, len(histories), step):
        stop = min(start + step, len(histories))
        if base_embeddings is None:
            scores = popularity.unsqueeze(0).expand(stop - start, -1).clone()  # (q, V)
        else:
            sim = F.normalize(query_embeddings[start:stop].float(), dim=-1) @ base.T  # (q, N)
            values, indices = sim.topk(min(k, sim.shape[1]), dim=-1)  # (q, k)
            weights = torch.zeros_like(sim).scatter_(1, indices, values.clamp(min=0) + 1e-6)  # (q, N)
            scores = torch.sparse.mm(items_t, weights.T).T.contiguous()  # (q, V)
        scores[:, 0] = float("-inf")  # padding id
        for q in range(stop - start):
            history, future = histories[start + q], futures[start + q]
            if not future:
                continue
            row = scores[q]
            row[torch.as_tensor(history, dtype=torch.long)] = float("-inf")
            top = set(row.topk(min(cutoff, len(row))).indices.tolist())
            targets = set(future)
            recalls.append(len(top & targets) / min(len(targets), cutoff))
    return round(float(np.mean(recalls)), 4) if recalls else 0.0


class PretrainingEvaluator:
    """Held-out pre-training metrics for a ``UserBertForPreTraining`` (see the module docstring).

    Args:
        config: the user model's ``UserBertConfig`` (for the initialisation reference).
        catalog: the ``BehaviorCatalog``.
        eval_users: held-out users (``behavior_ids``, ``timestamps``); at most ``args.eval_max_users`` are used.
        train_users: the training users (neighbour base of the probe; at most 5,000, a fixed sample).
        args: ``UserBertTrainingArguments`` (mask ratio, K, P, period settings, seed).

    Example:

    ```python
    >>> evaluator = PretrainingEvaluator(model.config, catalog, held_out_users, train_users, args)
    >>> metrics = evaluator.evaluate(model)  # {"mbp_loss": ..., "embedding_participation_ratio": ..., ...}
    ```
    """

    chunk_size = 128
    draws = 4  # evaluation examples drawn per held-out user (masking, period split, negatives)

    def __init__(self, config, catalog: BehaviorCatalog, eval_users, train_users, args):
        seed = int(np.random.SeedSequence([args.seed & 0xFFFFFFFF, RandomStream.EVALUATION]).generate_state(1)[0])
        if len(eval_users) > args.eval_max_users:
            eval_users = eval_users.select(range(args.eval_max_users))
        if len(eval_users) <= args.num_sequence_negatives:
            raise ValueError(
                f"held-out evaluation needs more than --num_sequence_negatives={args.num_sequence_negatives} held-out "
                f"users, got {len(eval_users)} (raise --eval_fraction)"
            )
        eval_users = eval_users.remove_columns([c for c in eval_users.column_names if c == "user_index"])
        eval_users = eval_users.add_column("user_index", list(range(len(eval_users))))
        self.config, self.catalog, self.max_behaviors = config, catalog, config.max_behaviors
        self.knn_neighbors = args.eval_knn_neighbors
        sampler = RandomNegativeSampler(
            catalog, eval_users, sequence_pool_size=len(eval_users), sequence_pool_interval=1,
            num_behavior_negatives=args.num_behavior_negatives, num_sequence_negatives=args.num_sequence_negatives,
            min_crop_behaviors=args.bsm_min_behaviors, max_crop_behaviors=config.max_behaviors, seed=seed,
        )
        settings = ObjectiveSettings(
            mask_ratio=args.mask_ratio, bsm_min_behaviors=args.bsm_min_behaviors, bsm_gap=args.bsm_gap,
            bsm_positive=args.bsm_positive, seed=seed, first_maskable=int(config.mbp_query == "previous"),
        )
        objective = UserBertObjective(settings, catalog, sampler)
        collate = UserBertPretrainingCollator(config.max_behaviors)
        rows = [eval_users[i] for i in range(len(eval_users))]
        self.task_inputs = []  # fixed inputs of the evaluation batch, in chunks
        for draw in range(self.draws):  # several masks, splits and negative sets per user: less noisy figures
            for start in range(0, len(rows), self.chunk_size):
                prepared = objective.prepare(collate(rows[start : start + self.chunk_size]), step=draw)
                self.task_inputs.append(objective.model_inputs(prepared, None, draw, _ALL_TASKS))
        # Health: whole held-out sequences. Probe: earlier 80% vs later 20%.
        cut = (lambda s: list(s)[-self.max_behaviors :])
        self.sequences = [cut(r["behavior_ids"]) for r in rows]
        splits = [split_history_future(list(r["behavior_ids"])) for r in rows]
        self.histories = [cut(h) for h, _ in splits]
        self.futures = [f for _, f in splits]
        base = train_users
        if base is not None and len(base) > 5000:
            base = base.select(np.sort(np.random.default_rng(seed).choice(len(base), 5000, replace=False)).tolist())
        self.base_sequences = [cut(r) for r in base["behavior_ids"]] if base is not None else []
        self.base_items = item_incidence(self.base_sequences, catalog.num_behaviors)  # (N, V) sparse
        self.reference = {}
        if self.base_sequences:
            self.reference["popularity_recall_at_20"] = knn_future_recall(
                None, self.histories, self.futures, None, self.base_items, cutoff=20
            )
        self.reference.update(self._initial_reference(config, args.seed))

    def _initial_reference(self, config, seed: int) -> dict[str, float]:
        """Health and probe of the same architecture at initialisation (global random state left untouched)."""
        from ..modeling_userbert import UserBertModel

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            fresh = UserBertModel(config)
        return {f"init_{k}": v for k, v in self._representation_metrics(fresh).items()}

    @torch.no_grad()
    def _embed(self, user_model, sequences: list[list[int]]) -> torch.Tensor:
        device = next(user_model.parameters()).device
        collate = UserBertCollator(self.catalog, self.max_behaviors)
        out = []
        for start in range(0, len(sequences), self.chunk_size):
            batch = collate([{"behavior_ids": s} for s in sequences[start : start + self.chunk_size]])
            batch = {k: v.to(device) for k, v in batch.items()}
            out.append(user_model(**batch).user_embedding.float().cpu())
        return torch.cat(out)

    def _representation_metrics(self, user_model) -> dict[str, float]:
        was_training = user_model.training
        user_model.eval()
        try:
            metrics = embedding_health(self._embed(user_model, self.sequences))
            if self.base_sequences:
                metrics["knn_recall_at_20"] = knn_future_recall(
                    self._embed(user_model, self.histories), self.histories, self.futures,
                    self._embed(user_model, self.base_sequences), self.base_items, k=self.knn_neighbors,
                )
        finally:
            user_model.train(was_training)
        return metrics

    @torch.no_grad()
    def task_metrics(self, model) -> dict[str, float]:
        """Held-out MBP and BSM loss and accuracy on the fixed evaluation batch."""
        device = next(model.parameters()).device
        sums: dict[str, float] = {}
        for inputs, counts in self.task_inputs:
            outputs = model(**{k: v.to(device) if torch.is_tensor(v) else v for k, v in inputs.items()})
            for task in ("mbp", "bsm"):
                loss = getattr(outputs, f"{task}_loss")
                if loss is not None and counts[task]:
                    sums[f"{task}_loss"] = sums.get(f"{task}_loss", 0.0) + float(loss) * counts[task]
                    sums[f"{task}_accuracy"] = sums.get(f"{task}_accuracy", 0.0) + float(getattr(outputs, f"{task}_accuracy")) * counts[task]
                    sums[f"{task}_rows"] = sums.get(f"{task}_rows", 0.0) + counts[task]
        metrics = {}
        for task in ("mbp", "bsm"):
            rows = sums.get(f"{task}_rows", 0.0)
            if rows:
                metrics[f"{task}_loss"] = round(sums[f"{task}_loss"] / rows, 4)
                metrics[f"{task}_accuracy"] = round(sums[f"{task}_accuracy"] / rows, 4)
        return metrics

    def evaluate(self, model) -> dict[str, float]:
        """All held-out metrics of a ``UserBertForPreTraining`` (its ``userbert`` user model for health/probe)."""
        was_training = model.training
        model.eval()
        try:
            metrics = self.task_metrics(model)
        finally:
            model.train(was_training)
        metrics.update(self._representation_metrics(model.userbert))
        metrics.update(self.reference)
        return metrics


__all__ = ["PretrainingEvaluator", "embedding_health", "knn_future_recall", "split_history_future"]
