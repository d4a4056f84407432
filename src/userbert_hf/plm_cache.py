"""Cached behaviour vectors of a frozen language-model behaviour encoder.

A frozen encoder (``plm_trainable_layers=0``) gives each behaviour text the same pooled vector in every step, so
the jobs encode each text once per vocabulary (batched, with a progress bar) and store the vectors as safetensors:

    <cache_dir>/<encoder key>/<vocabulary key>.safetensors   (token_ids (V, W) int32, vectors (V, D) float32)

The encoder key hashes the encoder's weights and pooling; the vocabulary key hashes the catalog's token rows. A
second run with the same encoder and vocabulary reads the file and never runs the encoder; a new vocabulary of
the same encoder (fine-tuning data with new titles) reuses the rows of the files already there and encodes only
the new texts. Pre-training, the sampler's pools, fine-tuning and ``encode()`` all read the attached vectors
through the model's behaviour encoder; rows it does not hold are encoded on the fly.

With the top k layers tuned, the token states of the frozen lower layers are cached instead
(``plm_state_cache.py``; :func:`attach_plm_cache` attaches either).

Default folder: ``$USERBERT_CACHE`` or ``~/.cache/userbert_hf/plm`` (``--plm_cache_dir`` overrides it).
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import torch

from .collation import BehaviorCatalog
from .plm_encoder import UserBertPlmEncoder, plm_encoders
from .plm_state_cache import vocabulary_key  # shared with the lower-layer state cache

logger = logging.getLogger(__name__)


def default_cache_dir() -> str:
    return os.environ.get("USERBERT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "userbert_hf", "plm")


def encoder_key(encoder: UserBertPlmEncoder) -> str:
    """Hash of what fixes a frozen encoder's pooled vectors: its weights and its pooling."""
    digest = hashlib.sha256(encoder.pooling.encode())
    for name, tensor in sorted(encoder.plm.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:20]


@torch.no_grad()
def encode_catalog(encoder: UserBertPlmEncoder, token_ids: torch.Tensor, batch_size: int = 256,
                   show_progress_bar: bool = True) -> torch.Tensor:
    """Pooled encoder vectors (V, D) of every token row (V, W), encoded in batches of similar length."""
    was_training = encoder.training
    encoder.eval()
    device = next(encoder.parameters()).device
    lengths = (token_ids != 0).sum(-1)  # (V,)
    order = torch.argsort(lengths, stable=True)  # short texts together: less padding per batch
    vectors = torch.zeros(token_ids.shape[0], encoder.plm.config.hidden_size)
    starts = range(0, len(order), batch_size)
    if show_progress_bar:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="Encoding behaviour texts", total=len(starts))
    try:
        for start in starts:
            rows = order[start : start + batch_size]
            width = max(int(lengths[rows].max()), 1)
            vectors[rows] = encoder.pool(token_ids[rows, :width].to(device)).float().cpu()
    finally:
        encoder.train(was_training)
    return vectors


def _known_rows(folder: Path, skip: Path) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Token rows and vectors of the other cache files of one encoder (to reuse their texts), or ``None``."""
    from safetensors.torch import load_file

    ids, vectors = [], []
    for path in sorted(folder.glob("*.safetensors")):
        if path == skip:
            continue
        try:
            tensors = load_file(str(path))
        except Exception as err:  # a truncated file is skipped (and rewritten by its own vocabulary's run)
            logger.warning("Skipping unreadable PLM cache file %s (%s)", path, err)
            continue
        ids.append(tensors["token_ids"].long())
        vectors.append(tensors["vectors"])
    if not ids:
        return None
    width = max(t.shape[1] for t in ids)
    ids = [torch.nn.functional.pad(t, (0, width - t.shape[1])) for t in ids]
    return torch.cat(ids), torch.cat(vectors)


def cached_vectors(encoder: UserBertPlmEncoder, catalog: BehaviorCatalog, cache_dir: str | None = None,
                   show_progress_bar: bool = True) -> tuple[torch.Tensor, Path, bool]:
    """``(vectors (V, D), file, reused)``: the pooled vectors of every behaviour of ``catalog``, read from the
    cache file of this encoder and vocabulary when it exists (``reused`` True), else computed (reusing rows other
    vocabularies of the same encoder already hold) and written."""
    from safetensors.torch import load_file, save_file

    token_ids = catalog.token_ids
    folder = Path(cache_dir or default_cache_dir()) / encoder_key(encoder)
    path = folder / f"{vocabulary_key(token_ids)}.safetensors"
    if path.exists():
        try:
            tensors = load_file(str(path))
            if torch.equal(tensors["token_ids"].long(), token_ids):
                logger.info("PLM behaviour vectors: read %d cached vectors from %s", len(token_ids), path)
                return tensors["vectors"], path, True
        except Exception as err:
            logger.warning("PLM cache file %s is unreadable (%s): encoding again", path, err)
    vectors = torch.zeros(token_ids.shape[0], encoder.plm.config.hidden_size)
    todo = (token_ids != 0).any(-1)  # rows without tokens (padding, empty texts) pool to zeros
    known = _known_rows(folder, path) if folder.exists() else None
    if known is not None:
        encoder.attach_cache(*known)
        try:
            found, from_cache = encoder.lookup(token_ids)
        finally:
            encoder.detach_cache()
        vectors[found] = from_cache[found].float()
        todo &= ~found
    logger.info("PLM behaviour vectors: encoding %d of %d behaviour texts (%d from other cache files) into %s",
                int(todo.sum()), len(token_ids), int((~todo).sum()), path)
    if todo.any():
        vectors[todo] = encode_catalog(encoder, token_ids[todo], show_progress_bar=show_progress_bar)
    folder.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".tmp{os.getpid()}")
    save_file({"token_ids": token_ids.to(torch.int32).contiguous(), "vectors": vectors.contiguous()}, str(partial))
    os.replace(partial, path)  # atomic: a reader never sees half a file
    return vectors, path, False


def attach_plm_cache(model: torch.nn.Module, catalog: BehaviorCatalog, cache_dir: str | None = None,
                     show_progress_bar: bool = True) -> bool:
    """Give every frozen PLM behaviour encoder of ``model`` the cached vectors of ``catalog``'s behaviours, and
    every encoder whose top k < L layers learn the cached token states of its frozen lower part
    (``plm_state_cache.py``), computing and storing them on first use. Returns whether any encoder got a cache; a
    model without such an encoder (or whose states would be too large) is left as it is.

    Example:

    ```python
    >>> attach_plm_cache(model, build_catalog(vocabulary, model.config, tokenizer), "/tmp/plm-cache")  # doctest: +SKIP
    True
    ```
    """
    from .plm_state_cache import attach_lower_states

    attached = False
    for encoder in plm_encoders(model):
        if catalog.token_ids is None:
            continue
        if not encoder.frozen:
            attached |= attach_lower_states(encoder, catalog, cache_dir or default_cache_dir(), show_progress_bar)
            continue
        vectors, _, _ = cached_vectors(encoder, catalog, cache_dir, show_progress_bar)
        encoder.attach_cache(catalog.token_ids, vectors)
        attached = True
    return attached


__all__ = ["attach_plm_cache", "cached_vectors", "default_cache_dir", "encode_catalog", "encoder_key", "vocabulary_key"]
