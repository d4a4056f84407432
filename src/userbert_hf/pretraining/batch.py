"""The typed pre-training batch: what an objective prepared for one micro-batch, before negatives are chosen.

Shapes: B users, L positions of the input sequence, Lb positions of BSM's later period, M masked behaviours
(row-major over ``masked_positions``), k next behaviours (PTUM).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class PretrainingBatch:
    """One micro-batch of pre-training examples.

    The rows each task's loss sums over (after every exclusion) are counted later, when the objective's
    ``model_inputs`` has chosen the negatives (it returns them beside the model inputs), so the trainer can
    normalise by the counts of the whole step over all micro-batches and ranks; ``excluded_users`` counts the
    users that sit out a task (logged, never silent).

    Example:

    ```python
    >>> batch = PretrainingBatch(user_index=torch.tensor([0]), sequence_ids=torch.tensor([[3, 4]]),
    ...                          attention_mask=torch.tensor([[True, True]]))
    >>> batch.num_users
    1
    ```
    """

    user_index: torch.Tensor  # (B,) dataset row of each user
    sequence_ids: torch.Tensor  # (B, L) input sequence: period A (UserBERT), the context (PTUM), view 1 (CP)
    attention_mask: torch.Tensor  # (B, L) bool
    timestamps: torch.Tensor | None = None  # (B, L)
    masked_positions: torch.Tensor | None = None  # (B, L) bool: behaviours to predict (MBP)
    masked_ids: torch.Tensor | None = None  # (M,) behaviour id at each masked position, row-major
    # Behaviour sequence matching (UserBERT)
    positive_ids: torch.Tensor | None = None  # (B, Lb) the later period B (the positive)
    bsm_valid: torch.Tensor | None = None  # (B,) bool: users with two periods
    target_window: torch.Tensor | None = None  # (B, 2) first and last timestamp of A
    # Next behaviour prediction (PTUM)
    next_ids: torch.Tensor | None = None  # (B, k)
    next_valid: torch.Tensor | None = None  # (B, k) bool
    # Second augmented view (CP)
    view_ids: torch.Tensor | None = None  # (B, L') behaviour ids of the second view
    view_attention_mask: torch.Tensor | None = None  # (B, L')
    view_masked_positions: torch.Tensor | None = None  # (B, L')
    excluded_users: dict[str, int] = field(default_factory=dict)

    @property
    def num_users(self) -> int:
        return int(self.user_index.shape[0])

    @property
    def masked_rows(self) -> torch.Tensor:
        """(M,) the row of each masked behaviour, in the row-major order of ``masked_ids``."""
        if self.masked_positions is None:
            return torch.zeros(0, dtype=torch.long)
        return self.masked_positions.nonzero(as_tuple=True)[0]

    @property
    def masked_users(self) -> torch.Tensor:
        """(M,) the user (dataset row) of each masked behaviour."""
        return self.user_index[self.masked_rows]


__all__ = ["PretrainingBatch"]
