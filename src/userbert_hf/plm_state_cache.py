"""Cached token states of the frozen lower part of a language-model behaviour encoder whose top layers learn.

With ``plm_trainable_layers=k`` (0 < k < L layers) the embeddings and the first F = L - k layers are frozen and run
in eval mode, so each behaviour text gets the same token states out of layer F in every step. The jobs compute
them once per vocabulary (batched, with a progress bar) and store them as safetensors:

    <cache_dir>/lower<F>-<lower key>/<vocabulary key>.safetensors
        token_ids (V, W) int32, lengths (V,) int32, offsets (V,) int64, states (T, D) float32

The lower key hashes F and the weights of the frozen part only (the tuned top layers change during training; the
states do not), so pre-training and fine-tuning with the same F share the file. ``states`` packs the states of
every token of every row, padding excluded (T tokens in all); row i's are ``states[offsets[i] : offsets[i] +
lengths[i]]``, and ``lengths`` is the attention mask (tokens are left-aligned). States are float32: float16 would
halve the file and the memory but moves each state by about 1e-3 relative, far above the 1e-5 the cached path
must match the full encoder by.

Where the states would not fit a bound (T x D x 4 bytes above :data:`MAX_STATE_BYTES`, 2 GiB, or
``$USERBERT_PLM_STATE_CACHE_GB`` GiB) nothing is cached (a logged message) and the whole encoder runs every step.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import torch

from .collation import BehaviorCatalog
from .plm_encoder import UserBertPlmEncoder

logger = logging.getLogger(__name__)

MAX_STATE_BYTES = 2 * 1024**3  # default bound on the cached states (T x D x 4 bytes)
_CHECK_ROWS = 4  # rows on which the cached path is compared with the full encoder when attached


def vocabulary_key(token_ids: torch.Tensor) -> str:
    """Hash of a catalog's token rows (V, W)."""
    rows = token_ids.to(torch.int32).contiguous()
    return hashlib.sha256(str(tuple(rows.shape)).encode() + rows.numpy().tobytes()).hexdigest()[:20]


def max_state_bytes() -> int:
    """The bound on cached states in bytes: ``$USERBERT_PLM_STATE_CACHE_GB`` GiB, else :data:`MAX_STATE_BYTES`."""
    gigabytes = os.environ.get("USERBERT_PLM_STATE_CACHE_GB")
    return int(float(gigabytes) * 1024**3) if gigabytes else MAX_STATE_BYTES


def lower_key(encoder: UserBertPlmEncoder) -> str:
    """``lower<F>-<hash>``: F frozen layers and a hash of the frozen part's weights (embeddings, lower layers)."""
    digest = hashlib.sha256(f"frozen_layers={encoder.frozen_layers}".encode())
    for i, module in enumerate(encoder.frozen_modules()):
        for name, tensor in sorted(module.state_dict().items()):
            digest.update(f"{i}.{name}".encode())
            digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return f"lower{encoder.frozen_layers}-{digest.hexdigest()[:20]}"


@torch.no_grad()
def encode_lower_states(encoder: UserBertPlmEncoder, token_ids: torch.Tensor, batch_size: int = 128,
                        show_progress_bar: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """``(states (T, D), offsets (V,))``: the frozen lower part's states of every token of every row (V, W),
    packed row after row (padding excluded), encoded in batches of similar length."""
    was_training = encoder.training
    encoder.eval()
    device = next(encoder.parameters()).device
    mask = token_ids != 0  # (V, W)
    lengths = mask.sum(-1)  # (V,)
    offsets = torch.cumsum(lengths, 0) - lengths  # (V,) where each row's tokens start
    states = torch.zeros(int(lengths.sum()), encoder.plm.config.hidden_size)  # (T, D)
    order = torch.argsort(lengths, stable=True)
    order = order[lengths[order] > 0]  # rows without tokens have no states
    starts = range(0, len(order), batch_size)
    if show_progress_bar:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="Encoding behaviour texts (frozen layers)", total=len(starts))
    try:
        for start in starts:
            rows = order[start : start + batch_size]  # (b,)
            width = int(lengths[rows].max())
            keep = mask[rows, :width]  # (b, w)
            hidden = encoder.lower_states(token_ids[rows, :width].to(device)).float().cpu()  # (b, w, D)
            index = (offsets[rows].unsqueeze(1) + keep.long().cumsum(1) - 1)[keep]  # (tokens,)
            states[index] = hidden[keep]
    finally:
        encoder.train(was_training)
    return states, offsets


def cached_states(encoder: UserBertPlmEncoder, catalog: BehaviorCatalog, cache_dir: str,
                  show_progress_bar: bool = True) -> tuple[torch.Tensor, torch.Tensor, Path, bool]:
    """``(states (T, D), offsets (V,), file, reused)`` of every behaviour of ``catalog``: read from the cache file
    of this frozen part and vocabulary when it exists (``reused`` True), else computed and written."""
    from safetensors.torch import load_file, save_file

    token_ids = catalog.token_ids
    path = Path(cache_dir) / lower_key(encoder) / f"{vocabulary_key(token_ids)}.safetensors"
    if path.exists():
        try:
            tensors = load_file(str(path))
            if torch.equal(tensors["token_ids"].long(), token_ids):
                logger.info("PLM lower-layer states: read the states of %d behaviours (%d tokens) from %s",
                            len(token_ids), tensors["states"].shape[0], path)
                return tensors["states"], tensors["offsets"], path, True
        except Exception as err:
            logger.warning("PLM state cache file %s is unreadable (%s): encoding again", path, err)
    logger.info("PLM lower-layer states: encoding %d behaviour texts through the %d frozen layers into %s",
                len(token_ids), encoder.frozen_layers, path)
    states, offsets = encode_lower_states(encoder, token_ids, show_progress_bar=show_progress_bar)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".tmp{os.getpid()}")
    lengths = (token_ids != 0).sum(-1).to(torch.int32)
    save_file({"token_ids": token_ids.to(torch.int32).contiguous(), "lengths": lengths.contiguous(),
               "offsets": offsets.contiguous(), "states": states.contiguous()}, str(partial))
    os.replace(partial, path)  # atomic: a reader never sees half a file
    return states, offsets, path, False


@torch.no_grad()
def _replays_the_encoder(encoder: UserBertPlmEncoder, token_ids: torch.Tensor) -> bool:
    """Whether running the top layers on cached states gives the full encoder's pooled outputs on a few rows (an
    encoder whose layers need more than states and a mask, e.g. rotary positions, would not)."""
    rows = token_ids[(token_ids != 0).any(-1)][:_CHECK_ROWS]  # (n, W)
    was_training = encoder.training
    encoder.eval()
    try:
        cached, full = encoder._pool_from_states(rows), encoder.pool(rows)  # (n, D) each
    finally:
        encoder.train(was_training)
    return bool(torch.allclose(cached, full, atol=1e-4, rtol=1e-4))


def attach_lower_states(encoder: UserBertPlmEncoder, catalog: BehaviorCatalog, cache_dir: str,
                        show_progress_bar: bool = True) -> bool:
    """Attach the cached lower-part states of ``catalog``'s behaviours to ``encoder`` (computing and storing them
    on first use). Returns False, with a logged message, where there is nothing to cache (no frozen layers under
    learning ones), where the states would exceed :func:`max_state_bytes`, or where the top layers cannot be
    replayed on them."""
    if not encoder.frozen_layers or catalog.token_ids is None:
        return False
    tokens, hidden = int((catalog.token_ids != 0).sum()), encoder.plm.config.hidden_size
    size, bound = tokens * hidden * 4, max_state_bytes()
    if size > bound:
        logger.warning("PLM lower-layer states not cached: %d tokens x %d x 4 bytes = %.2f GiB is above the bound of "
                       "%.2f GiB ($USERBERT_PLM_STATE_CACHE_GB); the whole encoder runs every step",
                       tokens, hidden, size / 1024**3, bound / 1024**3)
        return False
    states, offsets, _, _ = cached_states(encoder, catalog, cache_dir, show_progress_bar)
    encoder.attach_state_cache(catalog.token_ids, states, offsets)
    if not _replays_the_encoder(encoder, catalog.token_ids):
        encoder.detach_cache()
        logger.warning("PLM lower-layer states not used: the top layers of this %s encoder do not reproduce its "
                       "outputs from cached states; the whole encoder runs every step", encoder.plm.config.model_type)
        return False
    return True


__all__ = ["MAX_STATE_BYTES", "attach_lower_states", "cached_states", "encode_lower_states", "lower_key",
           "max_state_bytes"]
