"""Negative samplers for masked behaviour prediction (MBP) and behaviour sequence matching (BSM).

* :class:`MediumHardNegativeSampler` (the paper, Section 3.3). Behaviour pool: at every step, ``behavior_pool_size``
  behaviours are drawn uniformly and encoded with the current behaviour encoder; each masked behaviour takes the K
  pool behaviours most cosine-similar to it, never one identical to it (same id, or same text). Sequence pool:
  every ``sequence_pool_interval`` steps, ``sequence_pool_size`` sequences are cropped from random users and
  encoded with the model of that step; each target sequence A takes the P pool candidates most cosine-similar to
  it among those of other users that do not overlap A in time.
* :class:`RandomNegativeSampler`: uniform behaviours, and a uniform choice among the same allowed pool sequences.
* :class:`HardestNegativeSampler`: top-K over the whole behaviour set (re-encoded every
  ``behavior_table_interval`` steps) and top-P over a ten times larger sequence pool.

Options for small catalogues (the paper draws m = 1,000 from millions of news; on a catalogue of 10k items the
same m makes the top-K far harder, and many of them are true positives): ``behavior_pool_fraction`` sizes the
behaviour pool as a share of the catalogue; ``exclude_own_behaviors`` keeps every behaviour of the target's user
out of its MBP negatives (random and hard ones); ``hard_negative_fraction`` makes only that share of the K (and P)
negatives hard, the rest uniformly random.

Randomness: pools come from ``step_generator(seed, step, stream)`` (the same on every rank); every per-target
draw from ``user_rng(seed, step, user, stream)``, so the negatives of a user do not depend on which micro-batch or
rank it lands in. Every collective (the sharded pool encodings) is entered by every rank on every call, whatever
its data. The sequence pool and its encodings are state saved in checkpoints.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from ..collation import BehaviorCatalog, build_behavior_table, pad_sequences
from .masking import RandomStream, step_generator, user_rng

STATE_FILE = "negative_sampler.safetensors"
STATE_META_FILE = "negative_sampler.json"


def top_k_allowed(scores: torch.Tensor, allowed: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (N, k) of the k highest-scoring allowed columns of ``scores`` (N, P) and whether each pick is
    valid (False where fewer than k columns were allowed)."""
    scores = scores.float().masked_fill(~allowed, float("-inf"))
    k_eff = min(k, scores.shape[1])
    values, indices = scores.topk(k_eff, dim=-1)  # (N, k_eff)
    if k_eff < k:
        pad = k - k_eff
        indices = torch.cat([indices, indices.new_zeros(indices.shape[0], pad)], 1)
        values = torch.cat([values, values.new_full((values.shape[0], pad), float("-inf"))], 1)
    return indices, torch.isfinite(values)


def top_k_by_cosine(
    target_embeddings: torch.Tensor, pool_embeddings: torch.Tensor, allowed: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (N, k) of the k most cosine-similar allowed pool rows for each target, and whether each pick is
    valid (False where fewer than k rows were allowed).

    Args:
        target_embeddings: (N, H). pool_embeddings: (P, H). allowed: (N, P) bool.
    """
    sim = F.normalize(target_embeddings.float(), dim=-1) @ F.normalize(pool_embeddings.float(), dim=-1).T  # (N, P)
    return top_k_allowed(sim, allowed, k)


@dataclass
class SequencePool:
    """Cropped candidate sequences and their encodings from the step they were drawn at."""

    step: int
    ids: torch.Tensor  # (u, Lc) behaviour ids, right-padded
    users: torch.Tensor  # (u,) dataset row of the user each crop came from
    windows: torch.Tensor  # (u, 2) first and last timestamp of each crop
    embeddings: torch.Tensor | None  # (u, H) user embeddings at ``step`` (None for samplers that need none)


@dataclass
class SequenceNegatives:
    """Negative sequences per target: ``ids[b]`` P behaviour-id lists, ``users[b]`` their users, ``windows[b]``
    their (first, last) timestamps, ``has_negatives[b]`` whether P valid negatives were found."""

    ids: list
    users: list
    windows: list
    has_negatives: list


# The one list of negative samplers, by name: ``--negative_sampling`` accepts exactly these (the trainer's and the
# job's choices and checks read it when they run). Add a sampler with ``@register_sampler`` on its class.
SAMPLERS: dict[str, type["NegativeSampler"]] = {}


def register_sampler(sampler: type["NegativeSampler"]) -> type["NegativeSampler"]:
    """Class decorator: make ``sampler`` available as ``--negative_sampling <sampler.name>``.

    Example:

    ```python
    >>> @register_sampler
    ... class ShuffledNegativeSampler(RandomNegativeSampler):
    ...     name = "shuffled"
    >>> "shuffled" in SAMPLERS
    True
    ```
    """
    if not sampler.name or sampler.name == NegativeSampler.name:
        raise ValueError(f"{sampler.__name__} needs its own name (a class attribute) to be registered")
    if SAMPLERS.get(sampler.name, sampler) is not sampler:
        raise ValueError(f"a negative sampler named {sampler.name!r} is already registered "
                         f"({SAMPLERS[sampler.name].__name__})")
    SAMPLERS[sampler.name] = sampler
    return sampler


class NegativeSampler:
    """Shared machinery of the samplers: pool drawing, sharded encoding, cropping, state. Subclasses choose among
    the candidates (:meth:`choose_behaviors`, :meth:`choose_sequences`).

    Args:
        catalog: how to encode any behaviour id (``BehaviorCatalog``).
        users: the pre-training ``datasets.Dataset`` (``behavior_ids``, ``timestamps`` per user), for cropping
            candidate sequences (not needed for behaviour negatives alone).
        behavior_pool_size: m, behaviours drawn per step (paper: 1,000).
        sequence_pool_size: u, sequences cropped per refresh (paper: 100).
        sequence_pool_interval: T, steps between refreshes (paper: 50).
        num_behavior_negatives: K (paper: 4). num_sequence_negatives: P (paper: 4).
        min_crop_behaviors: shortest cropped candidate sequence.
        max_crop_behaviors: longest cropped candidate sequence (the model's ``max_behaviors``).
        seed: base seed.
        encode_batch_size: behaviours / sequences encoded per forward when building pools.
        behavior_pool_fraction: when set, m = round(fraction x catalogue size) (at least K), replacing
            ``behavior_pool_size``.
        exclude_own_behaviors: MBP negatives are never one of the target user's own behaviours (needs ``users``).
        hard_negative_fraction: share of the K behaviour and P sequence negatives chosen hard (top by cosine);
            the rest are uniformly random (1.0: all hard, the paper). Only the medium-hard and hardest samplers
            choose hard negatives.
    """

    name = "base"
    needs_sequence_embeddings = True  # whether the sequence pool is encoded (for cosine choices)
    own_settings: tuple[str, ...] = ()  # constructor settings beyond the shared ones

    def __init__(
        self,
        catalog: BehaviorCatalog,
        users=None,
        behavior_pool_size: int = 1000,
        sequence_pool_size: int = 100,
        sequence_pool_interval: int = 50,
        num_behavior_negatives: int = 4,
        num_sequence_negatives: int = 4,
        min_crop_behaviors: int = 2,
        max_crop_behaviors: int | None = None,
        seed: int = 42,
        encode_batch_size: int = 1024,
        behavior_pool_fraction: float | None = None,
        exclude_own_behaviors: bool = False,
        hard_negative_fraction: float = 1.0,
    ):
        if num_behavior_negatives < 1 or num_sequence_negatives < 1:
            raise ValueError("num_behavior_negatives and num_sequence_negatives must be >= 1")
        if catalog.num_behaviors - 1 <= num_behavior_negatives:
            raise ValueError(
                f"{catalog.num_behaviors - 1} behaviours cannot give {num_behavior_negatives} negatives per target"
            )
        if sequence_pool_interval < 1 or behavior_pool_size < 1 or sequence_pool_size < 1:
            raise ValueError("pool sizes and sequence_pool_interval must be >= 1")
        if behavior_pool_fraction is not None and not 0 < behavior_pool_fraction <= 1:
            raise ValueError(f"behavior_pool_fraction must be in (0, 1], got {behavior_pool_fraction}")
        if not 0 <= hard_negative_fraction <= 1:
            raise ValueError(f"hard_negative_fraction must be in [0, 1], got {hard_negative_fraction}")
        if exclude_own_behaviors and users is None:
            raise ValueError("exclude_own_behaviors needs the users' behaviours (pass users)")
        self.catalog = catalog
        self.users = users
        if behavior_pool_fraction is not None:
            behavior_pool_size = max(num_behavior_negatives, round(behavior_pool_fraction * (catalog.num_behaviors - 1)))
        self.behavior_pool_size = min(behavior_pool_size, catalog.num_behaviors - 1)
        self.behavior_pool_fraction = behavior_pool_fraction
        self.exclude_own_behaviors = exclude_own_behaviors
        self.hard_negative_fraction = hard_negative_fraction
        self.sequence_pool_size = sequence_pool_size
        self.sequence_pool_interval = sequence_pool_interval
        self.num_behavior_negatives = num_behavior_negatives
        self.num_sequence_negatives = num_sequence_negatives
        self.min_crop_behaviors = min_crop_behaviors
        self.max_crop_behaviors = max_crop_behaviors
        self.seed = seed
        self.encode_batch_size = encode_batch_size
        self.sequence_pool: SequencePool | None = None
        self.counters = {
            "sequence_pool_refreshes": 0, "bsm_fallback_negatives": 0, "bsm_targets_without_negatives": 0,
            "mbp_own_negatives_kept": 0,
        }

    @property
    def strategy(self) -> str:
        return self.name

    # ------------------------------------------------------------------ encoding helpers
    @staticmethod
    def _world():
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def _sharded(self, n: int, encode_chunk, hidden: int, device) -> torch.Tensor:
        """Encode rows [0, n) split across ranks (each rank a contiguous shard), gathered on every rank. Every rank
        enters the gather, also with an empty shard."""
        rank, world = self._world()
        per_rank = -(-n // world)
        start, stop = min(rank * per_rank, n), min((rank + 1) * per_rank, n)
        parts = [encode_chunk(i, min(i + self.encode_batch_size, stop)) for i in range(start, stop, self.encode_batch_size)]
        local = torch.cat(parts) if parts else torch.zeros(0, hidden, device=device)
        if world == 1:
            return local
        padded = torch.zeros(per_rank, hidden, device=device)
        padded[: len(local)] = local
        gathered = [torch.empty_like(padded) for _ in range(world)]
        torch.distributed.all_gather(gathered, padded)
        return torch.cat(gathered)[:n]

    @torch.no_grad()
    def _encode_rows(self, user_model, n: int, encode_chunk, sharded: bool) -> torch.Tensor:
        """Run ``encode_chunk(i, j)`` over rows [0, n) in chunks, in eval mode without gradient (the whole set on
        this rank, or one shard per rank gathered on every rank); returns (n, H) float vectors."""
        device = next(user_model.parameters()).device
        hidden = user_model.config.hidden_size
        was_training = user_model.training
        user_model.eval()
        try:
            if sharded:
                return self._sharded(n, encode_chunk, hidden, device)
            parts = [encode_chunk(i, min(i + self.encode_batch_size, n)) for i in range(0, n, self.encode_batch_size)]
            return torch.cat(parts) if parts else torch.zeros(0, hidden, device=device)
        finally:
            user_model.train(was_training)

    def encode_behaviors(self, user_model, ids: torch.Tensor, sharded: bool = False) -> torch.Tensor:
        """Behaviour-encoder vectors (N, H) of behaviour ids (N,), without gradient, in eval mode."""
        device = next(user_model.parameters()).device

        def chunk(i, j):
            return user_model.encode_behaviors(**self.catalog.table_inputs(ids[i:j].to(device))).float()

        return self._encode_rows(user_model, len(ids), chunk, sharded)

    def encode_sequences(
        self, user_model, ids: torch.Tensor, masked_positions: torch.Tensor | None = None, sharded: bool = False
    ) -> torch.Tensor:
        """User embeddings (N, H) of padded behaviour-id sequences (N, L), without gradient, in eval mode."""
        device = next(user_model.parameters()).device

        def chunk(i, j):
            part = ids[i:j].to(device)
            table, (index,) = build_behavior_table(self.catalog, part)
            masked = masked_positions[i:j].to(device) if masked_positions is not None else None
            embeddings = user_model.encode_behaviors(**table)[index]
            return user_model.encode_sequences(embeddings, part != 0, masked).user_embedding.float()

        return self._encode_rows(user_model, len(ids), chunk, sharded)

    # ------------------------------------------------------------------ behaviour negatives (MBP, PTUM)
    def behavior_pool_ids(self, step: int) -> torch.Tensor:
        """The m behaviour ids of the pool at ``step``: uniform without replacement over ids 1..M-1."""
        g = step_generator(self.seed, step, RandomStream.BEHAVIOR_POOL)
        num = self.catalog.num_behaviors - 1
        if num <= 2_000_000:
            return torch.randperm(num, generator=g)[: self.behavior_pool_size] + 1
        return torch.randint(1, num + 1, (self.behavior_pool_size,), generator=g)

    def own_behaviors(self, user: int) -> torch.Tensor:
        """All behaviour ids (n,) of dataset row ``user``."""
        return torch.as_tensor(np.asarray(self.users[int(user)]["behavior_ids"], dtype=np.int64))

    def _own(self, candidates: torch.Tensor, target_users: torch.Tensor) -> torch.Tensor:
        """(N, C) whether candidate ``candidates[n, c]`` (or candidates (C,) shared by all rows) is a behaviour of
        the user ``target_users[n]``; all False unless ``exclude_own_behaviors``."""
        shape = (len(target_users), candidates.shape[-1])
        own = torch.zeros(shape, dtype=torch.bool)
        if not self.exclude_own_behaviors:
            return own
        candidates = candidates.cpu().expand(shape)
        for user in torch.unique(target_users.cpu()).tolist():
            rows = (target_users.cpu() == user).nonzero(as_tuple=True)[0]
            own[rows] = torch.isin(candidates[rows], self.own_behaviors(user))
        return own

    def _allowed(self, target_ids: torch.Tensor, pool_ids: torch.Tensor, target_users: torch.Tensor | None = None) -> torch.Tensor:
        """(N, C) candidates that may be negatives: not identical to the target, not the user's own (if set)."""
        allowed = ~self.catalog.identical(target_ids[:, None].cpu(), pool_ids[None, :].cpu())
        if target_users is not None:
            allowed &= ~self._own(pool_ids, target_users)
        return allowed

    @property
    def num_hard_behavior_negatives(self) -> int:
        return round(self.hard_negative_fraction * self.num_behavior_negatives)

    @property
    def num_hard_sequence_negatives(self) -> int:
        return round(self.hard_negative_fraction * self.num_sequence_negatives)

    def random_behavior_negatives(
        self, target_ids: torch.Tensor, target_users: torch.Tensor, step: int,
        stream: RandomStream = RandomStream.RANDOM_BEHAVIOR_NEGATIVES,
    ) -> torch.Tensor:
        """K uniformly random behaviour ids (N, K) per target (N,), never identical to the target. Drawn per user
        (the i-th target of a user always gets the same draws), so independent of the batch layout."""
        k, num = self.num_behavior_negatives, self.catalog.num_behaviors - 1
        target_ids, target_users = target_ids.cpu(), target_users.cpu()
        out = torch.zeros(len(target_ids), k, dtype=torch.long)
        for user in torch.unique(target_users).tolist():
            rows = (target_users == user).nonzero(as_tuple=True)[0]  # this user's targets, in order
            rng = user_rng(self.seed, step, user, stream)
            draws = torch.from_numpy(rng.integers(1, num + 1, size=(len(rows), k)))
            own = self.own_behaviors(user) if self.exclude_own_behaviors else None
            for _ in range(100):
                bad = self.catalog.identical(target_ids[rows][:, None], draws)  # (n, k)
                if own is not None:
                    bad |= torch.isin(draws, own)
                if not bad.any():
                    break
                draws[bad] = torch.from_numpy(rng.integers(1, num + 1, size=int(bad.sum())))
            else:
                if own is None or self.catalog.identical(target_ids[rows][:, None], draws).any():
                    raise RuntimeError("could not draw negatives different from their targets (is every behaviour identical?)")
                self.counters["mbp_own_negatives_kept"] += int(torch.isin(draws, own).sum())  # a user of almost every behaviour
            out[rows] = draws
        return out

    def behavior_negatives(self, user_model, target_ids: torch.Tensor, target_users: torch.Tensor, step: int) -> torch.Tensor:
        """Negative behaviour ids (N, K) for masked behaviours ``target_ids`` (N,) of users ``target_users`` (N,).
        Enters the same collectives on every rank whatever N (also N = 0)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ sequence negatives (BSM)
    def _crop(self, row: dict, rng: np.random.Generator, exclude_window=None):
        """A random contiguous crop of a user's behaviours, optionally only from behaviours outside a window."""
        ids = np.asarray(row["behavior_ids"], dtype=np.int64)
        ts = np.asarray(row.get("timestamps") or np.arange(len(ids)), dtype=np.int64)
        if exclude_window is not None:
            # Keep a contiguous run entirely before or entirely after the window.
            before, after = ts < exclude_window[0], ts > exclude_window[1]
            options = [sel for sel in (before, after) if sel.sum() >= 1]
            if not options:
                return None
            sel = options[int(rng.integers(0, len(options)))]
            ids, ts = ids[sel], ts[sel]
        n = len(ids)
        if n == 0:
            return None
        high = min(n, self.max_crop_behaviors) if self.max_crop_behaviors else n  # the model's max_behaviors
        low = min(self.min_crop_behaviors, high)
        size = int(rng.integers(low, high + 1))
        start = int(rng.integers(0, n - size + 1))
        return ids[start : start + size], ts[start : start + size]

    def _pool_user_count(self) -> int:
        return self.sequence_pool_size

    def maybe_refresh_sequence_pool(self, user_model, step: int) -> bool:
        """Re-draw and re-encode the sequence pool when ``step`` starts a new interval (exactly every T steps:
        steps 0, T, 2T, ...). Returns whether it was refreshed. Every rank must call this at every step (the
        encoding gathers across ranks); it decides from ``step`` alone, so all ranks refresh together."""
        pool_step = (step // self.sequence_pool_interval) * self.sequence_pool_interval
        if self.sequence_pool is not None and self.sequence_pool.step == pool_step:
            return False
        g = np.random.default_rng([self.seed & 0xFFFFFFFF, pool_step, RandomStream.SEQUENCE_POOL])
        num_users = len(self.users)
        chosen = g.choice(num_users, size=min(self._pool_user_count(), num_users), replace=False)
        crops, users, windows = [], [], []
        for user in sorted(chosen.tolist()):
            crop = self._crop(self.users[int(user)], g)
            if crop is None:
                continue
            ids, ts = crop
            crops.append(ids.tolist())
            users.append(int(user))
            windows.append([int(ts.min()), int(ts.max())])
        ids = pad_sequences(crops)
        embeddings = self.encode_sequences(user_model, ids, sharded=True).cpu() if self.needs_sequence_embeddings else None
        self.sequence_pool = SequencePool(
            pool_step, ids, torch.tensor(users, dtype=torch.long), torch.tensor(windows, dtype=torch.long).view(-1, 2), embeddings
        )
        self.counters["sequence_pool_refreshes"] += 1
        return True

    def target_embeddings(self, user_model, target_ids: torch.Tensor, masked_positions: torch.Tensor | None) -> torch.Tensor | None:
        """Embeddings of the targets A that the choice among candidates needs (None when it needs none)."""
        if not self.needs_sequence_embeddings or len(target_ids) == 0:
            return None
        return self.encode_sequences(user_model, target_ids, masked_positions)

    def choose_sequences(self, targets: torch.Tensor | None, target_users: torch.Tensor, allowed: torch.Tensor, step: int):
        """Pool indices (B, P) and validity for each target among its ``allowed`` (B, u) candidates."""
        raise NotImplementedError

    def sequence_negatives(
        self,
        user_model,
        target_ids: torch.Tensor,
        masked_positions: torch.Tensor | None,
        target_users: torch.Tensor,
        target_windows: torch.Tensor,
        step: int,
    ) -> SequenceNegatives:
        """P negative sequences for each target A.

        Args:
            target_ids: (B, L) the targets' (masked) sequences A; masked_positions: (B, L) or None.
            target_users: (B,) dataset rows of the targets' users. target_windows: (B, 2) time span of each A.

        Returns a ``SequenceNegatives``: for each target, P behaviour-id lists from users other than the
        target's whose crops do not overlap A in time, with their users and time spans. Refreshes the pool first,
        so it must be called by every rank at every step, also with B = 0.
        """
        self.maybe_refresh_sequence_pool(user_model, step)
        pool, p = self.sequence_pool, self.num_sequence_negatives
        result = SequenceNegatives([], [], [], [])
        if len(target_users) == 0:
            return result
        targets = self.target_embeddings(user_model, target_ids, masked_positions)
        other_user = pool.users[None, :] != target_users[:, None].cpu()  # (B, u)
        windows = target_windows.cpu()
        no_overlap = (pool.windows[None, :, 1] < windows[:, None, 0]) | (pool.windows[None, :, 0] > windows[:, None, 1])
        picks, ok = self.choose_sequences(targets, target_users.cpu(), other_user & no_overlap, step)
        for b in range(len(target_users)):
            chosen = [j for j, good in zip(picks[b].tolist(), ok[b].tolist()) if good]
            ids = [pool.ids[j][pool.ids[j] != 0].tolist() for j in chosen]
            users = [int(pool.users[j]) for j in chosen]
            spans = [pool.windows[j].tolist() for j in chosen]
            if len(ids) < p:  # not enough valid candidates in the pool: crop from other users outside A's span
                for crop_ids, crop_user, crop_span in self._fallback_crops(int(target_users[b]), windows[b].tolist(), p - len(ids), step):
                    ids.append(crop_ids)
                    users.append(crop_user)
                    spans.append(crop_span)
            has = len(ids) == p
            if not has:
                self.counters["bsm_targets_without_negatives"] += 1
            result.ids.append(ids)
            result.users.append(users)
            result.windows.append(spans)
            result.has_negatives.append(has)
        return result

    def _fallback_crops(self, user: int, window: list[int], needed: int, step: int) -> list[tuple[list[int], int, list[int]]]:
        rng = user_rng(self.seed, step, user, RandomStream.FALLBACK_CROPS)
        out, num_users = [], len(self.users)
        for candidate in rng.permutation(num_users)[: max(50, 10 * needed)].tolist():
            if candidate == user:
                continue
            crop = self._crop(self.users[int(candidate)], rng, exclude_window=window)
            if crop is not None:
                ids, ts = crop
                out.append((ids.tolist(), int(candidate), [int(ts.min()), int(ts.max())]))
                self.counters["bsm_fallback_negatives"] += 1
                if len(out) == needed:
                    break
        return out

    # ------------------------------------------------------------------ state (saved in checkpoints)
    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict]:
        tensors, meta = {}, {"strategy": self.name, "seed": self.seed, "counters": self.counters}
        if self.sequence_pool is not None:
            pool = self.sequence_pool
            meta["sequence_pool_step"] = pool.step
            tensors.update(pool_ids=pool.ids, pool_users=pool.users, pool_windows=pool.windows)
            if pool.embeddings is not None:
                tensors["pool_embeddings"] = pool.embeddings
        return tensors, meta

    def load_state_dict(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        self.counters.update(meta.get("counters", {}))
        if "sequence_pool_step" in meta:
            self.sequence_pool = SequencePool(
                int(meta["sequence_pool_step"]), tensors["pool_ids"], tensors["pool_users"],
                tensors["pool_windows"], tensors.get("pool_embeddings"),
            )

    def save(self, directory: str) -> None:
        tensors, meta = self.state_dict()
        save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(directory, STATE_FILE))
        with open(os.path.join(directory, STATE_META_FILE), "w") as f:
            json.dump(meta, f)

    def load(self, directory: str) -> bool:
        meta_path, tensor_path = os.path.join(directory, STATE_META_FILE), os.path.join(directory, STATE_FILE)
        if not os.path.exists(meta_path):
            return False
        try:
            with open(meta_path) as f:
                meta = json.load(f)
            tensors = load_file(tensor_path)
        except Exception as err:  # truncated or corrupted state: name the file
            raise ValueError(f"Could not read the negative sampler state in {directory}: {err}") from err
        self.load_state_dict(tensors, meta)
        return True


@register_sampler
class RandomNegativeSampler(NegativeSampler):
    """Uniform negatives: K random behaviours per masked behaviour and P random allowed sequences of the pool per
    target (the "random" ablation of Section 4.4, and PTUM's negatives).

    Example:

    ```python
    >>> sampler = RandomNegativeSampler(BehaviorCatalog(100), num_behavior_negatives=4, seed=0)
    >>> sampler.behavior_negatives(None, torch.tensor([5, 6]), torch.tensor([0, 0]), step=0).shape
    torch.Size([2, 4])
    ```
    """

    name = "random"
    needs_sequence_embeddings = False

    def behavior_negatives(self, user_model, target_ids, target_users, step):
        return self.random_behavior_negatives(target_ids, target_users, step)

    def choose_sequences(self, targets, target_users, allowed, step, count: int | None = None):
        scores = torch.stack([
            torch.from_numpy(user_rng(self.seed, step, int(u), RandomStream.RANDOM_SEQUENCE_NEGATIVES).random(allowed.shape[1]))
            for u in target_users.tolist()
        ])  # (B, u) uniform scores per user
        return top_k_allowed(scores, allowed, self.num_sequence_negatives if count is None else count)


@register_sampler
class MediumHardNegativeSampler(NegativeSampler):
    """The paper's medium-hard negatives: top-K cosine neighbours within a behaviour pool re-drawn every step and
    top-P cosine neighbours within a sequence pool refreshed every T steps.

    Example:

    ```python
    >>> sampler = MediumHardNegativeSampler(catalog, users_dataset, behavior_pool_size=1000)
    >>> pool_ids = sampler.behavior_pool_ids(step=0)  # the same on every rank
    ```
    """

    name = "medium_hard"

    def _behavior_candidates(self, user_model, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Candidate ids (C,) and their encodings (C, H) for ``step``."""
        pool_ids = self.behavior_pool_ids(step)
        return pool_ids, self.encode_behaviors(user_model, pool_ids, sharded=True).cpu()

    def behavior_negatives(self, user_model, target_ids, target_users, step):
        k = self.num_behavior_negatives
        pool_ids, pool_embeddings = self._behavior_candidates(user_model, step)  # collective: always entered
        if len(target_ids) == 0:
            return torch.zeros(0, k, dtype=torch.long)
        target_ids, target_users = target_ids.cpu(), target_users.cpu()
        hard = self.num_hard_behavior_negatives
        if hard == 0:
            return self.random_behavior_negatives(target_ids, target_users, step)
        target_embeddings = self.encode_behaviors(user_model, target_ids).cpu()
        allowed = self._allowed(target_ids, pool_ids, target_users)
        picks, ok = top_k_by_cosine(target_embeddings, pool_embeddings, allowed, hard)  # (N, hard)
        negatives = pool_ids[picks]
        if hard < k or not ok.all():  # the random share, and top-ups where the pool held too few allowed candidates
            random = self.random_behavior_negatives(target_ids, target_users, step)  # (N, K)
            negatives = torch.cat([torch.where(ok, negatives, random[:, :hard]), random[:, hard:]], 1)
        return negatives  # (N, K): hard first, then random

    def choose_sequences(self, targets, target_users, allowed, step):
        hard = self.num_hard_sequence_negatives
        p = self.num_sequence_negatives
        if hard == p:
            return top_k_by_cosine(targets.cpu(), self.sequence_pool.embeddings, allowed, p)
        picks, ok = top_k_by_cosine(targets.cpu(), self.sequence_pool.embeddings, allowed, hard)  # (B, hard)
        rest = allowed.clone()
        rest.scatter_(1, picks, rest.gather(1, picks) & ~ok)  # the hard picks are not drawn again
        random_picks, random_ok = RandomNegativeSampler.choose_sequences(self, targets, target_users, rest, step, p - hard)
        return torch.cat([picks, random_picks], 1), torch.cat([ok, random_ok], 1)


@register_sampler
class HardestNegativeSampler(MediumHardNegativeSampler):
    """The "hardest" ablation: top-K over the whole behaviour set, whose encodings are refreshed every
    ``behavior_table_interval`` steps, and top-P over a sequence pool ten times the usual size.

    Args:
        behavior_table_interval: steps between re-encodings of the whole behaviour set (default 50).
        Other arguments as :class:`NegativeSampler`.
    """

    name = "hardest"
    own_settings = ("behavior_table_interval",)

    def __init__(self, *args, behavior_table_interval: int = 50, **kwargs):
        super().__init__(*args, **kwargs)
        if behavior_table_interval < 1:
            raise ValueError("behavior_table_interval must be >= 1")
        self.behavior_table_interval = behavior_table_interval
        self.full_behavior_embeddings: torch.Tensor | None = None
        self.full_behavior_step = -1

    def _pool_user_count(self) -> int:
        return 10 * self.sequence_pool_size

    def _behavior_candidates(self, user_model, step):
        table_step = (step // self.behavior_table_interval) * self.behavior_table_interval
        all_ids = torch.arange(1, self.catalog.num_behaviors)
        if self.full_behavior_embeddings is None or self.full_behavior_step != table_step:
            self.full_behavior_embeddings = self.encode_behaviors(user_model, all_ids, sharded=True).cpu()
            self.full_behavior_step = table_step
        return all_ids, self.full_behavior_embeddings

    def state_dict(self):
        tensors, meta = super().state_dict()
        if self.full_behavior_embeddings is not None:
            meta["full_behavior_step"] = self.full_behavior_step
            tensors["full_behavior_embeddings"] = self.full_behavior_embeddings
        return tensors, meta

    def load_state_dict(self, tensors, meta):
        super().load_state_dict(tensors, meta)
        if "full_behavior_step" in meta:
            self.full_behavior_step = int(meta["full_behavior_step"])
            self.full_behavior_embeddings = tensors["full_behavior_embeddings"]


def build_sampler(strategy: str, catalog: BehaviorCatalog, users=None, **settings) -> NegativeSampler:
    """The sampler registered under ``strategy`` (``medium_hard``, ``random``, ``hardest``, or any registered one)."""
    if strategy not in SAMPLERS:
        raise ValueError(f"negative sampling strategy {strategy!r} is not one of {tuple(SAMPLERS)}")
    sampler = SAMPLERS[strategy]
    for other in SAMPLERS.values():  # settings only some samplers have go to those only
        for name in set(other.own_settings) - set(sampler.own_settings):
            settings.pop(name, None)
    return sampler(catalog, users, **settings)


__all__ = [
    "NegativeSampler",
    "RandomNegativeSampler",
    "MediumHardNegativeSampler",
    "HardestNegativeSampler",
    "SAMPLERS",
    "register_sampler",
    "SequencePool",
    "SequenceNegatives",
    "build_sampler",
    "top_k_allowed",
    "top_k_by_cosine",
    "step_generator",
]
