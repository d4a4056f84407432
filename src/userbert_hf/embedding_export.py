"""Embed every user of a behaviour dataset with a pre-trained user model, save the vectors, search neighbours.

``userbert embed`` runs :func:`main`::

    userbert embed --model_name_or_path outputs/userbert-pretrained --data movielens --output embeddings.parquet

The model (a local folder or a Hub repository) brings its frozen behaviour vocabulary and, for text behaviours,
its word tokenizer; the data is read with that vocabulary, so behaviour ids mean what they meant in pre-training.
The result is a ``datasets.Dataset`` with columns ``user_id`` (string) and ``embedding`` (``List(float32)``),
written as Parquet (``*.parquet``) or as a ``save_to_disk`` folder (any other path).

Example:

```python
>>> from userbert_hf.embedding_export import embed_users, nearest_users
>>> embeddings = embed_users("outputs/userbert-pretrained", "movielens")
>>> ids, scores = nearest_users(embeddings, ["1"], k=5)   # the 5 users most similar to user "1" (cosine)
```
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from .assets import build_catalog, load_complete_model, load_user_model_assets
from .collation import UserBertCollator
from .data import BehaviorData, EventLogColumnArguments, column_options, load_behavior_data
from .modeling_userbert import UserBertModel
from .output_dir import OutputDirError, check_embedding_output
from .vocabulary import BehaviorVocabulary

logger = logging.getLogger(__name__)

METRICS = ("cosine", "dot", "l2")


# ----------------------------------------------------------------------------------------------
# Loading the data with the model's vocabulary
# ----------------------------------------------------------------------------------------------


def _remap_users(users: datasets.Dataset, source: BehaviorVocabulary, target: BehaviorVocabulary) -> datasets.Dataset:
    """Re-express ``behavior_ids`` of ``source`` in ``target`` ids; behaviours unknown to ``target`` are dropped."""
    mapping = np.array([0] + [target.get(raw, 0) for raw in source.raw_ids[1:]], dtype=np.int64)  # source id -> id

    def remap(batch):
        ids = [mapping[np.asarray(seq, dtype=np.int64)] for seq in batch["behavior_ids"]]
        keep = [seq != 0 for seq in ids]
        out = {"behavior_ids": [seq[k].tolist() for seq, k in zip(ids, keep)]}
        if "timestamps" in batch:
            out["timestamps"] = [np.asarray(t)[k].tolist() for t, k in zip(batch["timestamps"], keep)]
        return out

    columns = [c for c in users.column_names if c not in ("user_id", "behavior_ids", "timestamps")]
    return users.remove_columns(columns).map(remap, batched=True, desc="Mapping behaviours to the model vocabulary")


def _count_behaviors(users: datasets.Dataset) -> int:
    return int(pc.sum(pc.list_value_length(users.with_format("arrow")[:]["behavior_ids"])).as_py() or 0)


def read_users(
    data, vocabulary: BehaviorVocabulary, max_behaviors: int | None = None, load_options: dict | None = None
) -> datasets.Dataset:
    """The users of ``data`` (a :class:`BehaviorData` or anything :func:`load_behavior_data` accepts) with
    ``behavior_ids`` in ``vocabulary``'s ids; behaviours the vocabulary does not know are dropped (and counted),
    users left without behaviours are dropped with a warning. ``load_options`` (e.g. ``user_column``) go to
    :func:`load_behavior_data`."""
    if not isinstance(data, BehaviorData):
        data = load_behavior_data(data, vocabulary=vocabulary, max_behaviors=max_behaviors, verbose=False,  # logged
                                  **(load_options or {}))
    users = data.users
    if data.vocabulary.raw_ids != vocabulary.raw_ids:
        # Data loaded with its own vocabulary (a BehaviorData built elsewhere, a saved data folder).
        before = _count_behaviors(users)
        users = _remap_users(users, data.vocabulary, vocabulary)
        dropped = before - _count_behaviors(users)
        if dropped:
            logger.warning("%d behaviours of %s are not in the model's vocabulary: dropped", dropped, data.source)
        lengths = pc.list_value_length(users.with_format("arrow")[:]["behavior_ids"])
        empty = users.num_rows - pc.sum(pc.greater(lengths, 0)).as_py()
        if empty:
            logger.warning("%d users have no behaviour known to the model and get no embedding", empty)
            users = users.filter(lambda seq: len(seq) > 0, input_columns="behavior_ids")
    if "user_id" not in users.column_names:
        raise ValueError(f"the users dataset needs a user_id column, got {users.column_names}")
    return users


# ----------------------------------------------------------------------------------------------
# Embedding
# ----------------------------------------------------------------------------------------------


def _embeddings_dataset(user_ids: list[str], vectors: np.ndarray) -> datasets.Dataset:
    """``user_id`` (string) + ``embedding`` (``List(float32)``) built straight in Arrow."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)  # (N, H)
    n, h = vectors.shape
    offsets = pa.array(np.arange(0, n * h + 1, h, dtype=np.int32))
    table = pa.table({
        "user_id": pa.array(user_ids, type=pa.string()),
        "embedding": pa.ListArray.from_arrays(offsets, pa.array(vectors.reshape(-1))),
    })
    return datasets.Dataset(table)


def embed_users(
    model_name_or_path: str, data, batch_size: int = 64, device: str | torch.device | None = None,
    load_options: dict | None = None,
) -> datasets.Dataset:
    """User embeddings of every user of ``data`` from a pre-trained user model.

    Args:
        model_name_or_path: a folder written by ``userbert pretrain`` (or ``save_pretrained`` + assets) or a Hub
            repository id; its ``behavior_vocab.json`` (and ``tokenizer.json`` for text behaviours) are used.
        data: a :class:`~userbert_hf.data.BehaviorData` or anything ``load_behavior_data`` accepts
            (``"movielens"``, a MovieLens/MIND folder, an event log, ...). Sequences keep the most recent
            ``config.max_behaviors`` behaviours.
        batch_size: users per forward pass.
        device: ``"cpu"``, ``"cuda"``, ...; default: CUDA when available.
        load_options: options for :func:`load_behavior_data` when ``data`` is a name or path (``user_column``,
            ``item_column``, ``time_column``, ``text_column``, ``strict``, ...).

    Returns:
        A ``datasets.Dataset`` with ``user_id`` (string) and ``embedding`` (``List(float32)``, hidden size), in the
        order of the users of ``data``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    # 1. The user model with its frozen vocabulary (and tokenizer).
    # A truncated model.safetensors is reported by name; missing, empty or non-finite weights are an error too.
    model = load_complete_model(UserBertModel, model_name_or_path).to(device).eval()
    config = model.config
    vocabulary, tokenizer = load_user_model_assets(model_name_or_path, config)
    collate = UserBertCollator(build_catalog(vocabulary, config, tokenizer), max_behaviors=config.max_behaviors)
    # 2. The users, in the model's behaviour ids.
    users = read_users(data, vocabulary, config.max_behaviors, load_options)
    # 3. Batches of users -> user embeddings (each batch's distinct behaviours are encoded once).
    user_ids: list[str] = []
    vectors = np.empty((users.num_rows, config.hidden_size), dtype=np.float32)  # (N, H)
    start = 0
    with torch.inference_mode():
        for batch in users.select_columns(["user_id", "behavior_ids"]).iter(batch_size=batch_size):
            inputs = collate([{"behavior_ids": seq} for seq in batch["behavior_ids"]])
            inputs = {k: v.to(device) for k, v in inputs.items()}
            embedding = model(**inputs).user_embedding  # (B, H)
            vectors[start : start + len(embedding)] = embedding.float().cpu().numpy()
            start += len(embedding)
            user_ids.extend(str(u) for u in batch["user_id"])
    if not np.isfinite(vectors).all():
        rows = np.flatnonzero(~np.isfinite(vectors).all(axis=1))
        raise ValueError(f"{model_name_or_path} gives non-finite embeddings for {len(rows)} of {len(vectors)} users "
                         f"(first: {user_ids[rows[0]]!r}); nothing was written")
    return _embeddings_dataset(user_ids, vectors)


def save_user_embeddings(embeddings: datasets.Dataset, output_path: str) -> str:
    """Write embeddings as Parquet (``*.parquet``) or as a ``datasets`` folder (``save_to_disk``)."""
    parent = os.path.dirname(os.path.abspath(output_path))
    os.makedirs(parent, exist_ok=True)
    if output_path.endswith(".parquet"):
        embeddings.to_parquet(output_path)
    else:
        embeddings.save_to_disk(output_path)
    return output_path


def load_user_embeddings(path: str) -> datasets.Dataset:
    """Read what :func:`save_user_embeddings` wrote (Parquet file or ``save_to_disk`` folder)."""
    if os.path.isdir(path):
        return datasets.load_from_disk(path)
    return datasets.Dataset(pq.read_table(path))


def export_user_embeddings(
    model, data, output_path: str, batch_size: int = 64, device=None, overwrite: bool = False,
    load_options: dict | None = None,
) -> datasets.Dataset:
    """:func:`embed_users` + :func:`save_user_embeddings`; ``model`` is a model folder or Hub repository id. An
    existing ``output_path`` that does not hold user embeddings is refused (before anything is computed) unless
    ``overwrite=True``."""
    check_embedding_output(output_path, overwrite)
    embeddings = embed_users(model, data, batch_size=batch_size, device=device, load_options=load_options)
    save_user_embeddings(embeddings, output_path)
    return embeddings


# ----------------------------------------------------------------------------------------------
# Nearest neighbours (faiss when installed, else exact numpy search)
# ----------------------------------------------------------------------------------------------


def embedding_matrix(embeddings: datasets.Dataset) -> np.ndarray:
    """The ``embedding`` column as a new, writable (N, H) float32 array."""
    column = embeddings.with_format("arrow")[:]["embedding"].combine_chunks()  # honours select/filter/shuffle
    if len(column) == 0:
        return np.zeros((0, 0), dtype=np.float32)
    lengths = column.value_lengths().to_numpy(zero_copy_only=False)
    if (lengths != lengths[0]).any():
        raise ValueError("all embeddings must have the same size")
    values = column.flatten().to_numpy(zero_copy_only=False)
    # A writable copy: Arrow buffers are read-only and faiss normalises in place.
    return np.array(values, dtype=np.float32, copy=True).reshape(len(column), -1)


def _numpy_search(vectors: np.ndarray, queries: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Exact search like faiss' flat indexes: ``(scores (Q, k), rows (Q, k))``, best first, ties by row."""
    if metric == "l2":
        scores = (queries**2).sum(1)[:, None] - 2.0 * queries @ vectors.T + (vectors**2).sum(1)[None]  # (Q, N)
        keys = scores
    else:
        scores = queries @ vectors.T  # (Q, N) inner products
        keys = -scores
    k = min(k, vectors.shape[0])
    rows = np.argsort(keys, axis=1, kind="stable")[:, :k]  # (Q, k)
    return np.take_along_axis(scores, rows, 1).astype(np.float32), rows


def nearest_users(
    embeddings: datasets.Dataset,
    query_user_ids,
    k: int = 10,
    metric: str = "cosine",
    exclude_self: bool = True,
    backend: str = "auto",
) -> tuple[list[list[str]], np.ndarray]:
    """The ``k`` users closest to each query user, by exact (flat) search: faiss (the ``faiss`` extra,
    ``pip install userbert_hf[faiss]``) when installed, else numpy (one (Q, N) score matrix: fine up to millions of
    users per query batch; faiss is faster and also offers approximate indexes).

    Args:
        embeddings: a dataset with ``user_id`` and ``embedding`` (from :func:`embed_users`).
        query_user_ids: a user id or a list of them (ids of ``embeddings``).
        k: neighbours per query (at most the number of other users).
        metric: ``"cosine"`` (inner product of L2-normalised vectors, ``IndexFlatIP``), ``"dot"`` (inner product)
            or ``"l2"`` (squared Euclidean distance, ``IndexFlatL2``).
        exclude_self: leave the query user out of its own neighbours.
        backend: ``"auto"`` (faiss if importable), ``"faiss"`` or ``"numpy"``.

    Returns:
        ``(neighbor_ids, scores)``: ``neighbor_ids[q]`` lists the ``k`` neighbour ids of query ``q``, best first;
        ``scores`` (Q, k) float32 holds their similarity (cosine, dot: higher is closer) or distance (l2: lower
        is closer).
    """
    if metric not in METRICS:
        raise ValueError(f"metric={metric!r} is not one of {METRICS}")
    if backend not in ("auto", "faiss", "numpy"):
        raise ValueError(f"backend={backend!r} is not one of ('auto', 'faiss', 'numpy')")
    faiss = None
    if backend != "numpy":
        try:
            import faiss
        except ImportError:
            if backend == "faiss":
                raise ImportError("backend='faiss' needs faiss: pip install 'userbert_hf[faiss]'") from None
    if isinstance(query_user_ids, str):
        query_user_ids = [query_user_ids]
    user_ids = [str(u) for u in embeddings["user_id"]]
    row_of = {u: i for i, u in enumerate(user_ids)}
    missing = [q for q in query_user_ids if str(q) not in row_of]
    if missing:
        raise KeyError(f"user ids not in the embeddings: {missing[:10]}")
    vectors = embedding_matrix(embeddings)  # (N, H)
    if metric == "cosine":
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors /= np.where(norms > 0, norms, 1.0)  # as faiss.normalize_L2: zero vectors stay zero
    rows = np.array([row_of[str(q)] for q in query_user_ids], dtype=np.int64)
    k = min(k, len(user_ids) - (1 if exclude_self else 0))
    if k < 1:
        return [[] for _ in rows], np.zeros((len(rows), 0), dtype=np.float32)
    wanted = k + (1 if exclude_self else 0)
    if faiss is not None:
        index = faiss.IndexFlatL2(vectors.shape[1]) if metric == "l2" else faiss.IndexFlatIP(vectors.shape[1])
        index.add(vectors)
        scores, found = index.search(vectors[rows], wanted)  # (Q, k [+ 1])
    else:
        scores, found = _numpy_search(vectors, vectors[rows], wanted, metric)
    neighbor_ids, kept_scores = [], np.empty((len(rows), k), dtype=np.float32)
    for q, row in enumerate(rows):
        keep = [j for j in range(found.shape[1]) if found[q, j] >= 0 and not (exclude_self and found[q, j] == row)][:k]
        neighbor_ids.append([user_ids[found[q, j]] for j in keep])
        kept_scores[q] = scores[q, keep]
    return neighbor_ids, kept_scores


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------


@dataclass
class EmbeddingExportArguments(EventLogColumnArguments):
    """``userbert embed``: embed every user of a dataset with a pre-trained user model."""

    model_name_or_path: str = field(metadata={"help": "A pre-trained model folder or Hub repository id."})
    data: str = field(
        default="movielens",
        metadata={"help": "'movielens' (bundled), a MovieLens/MIND folder, an event log file, a datasets folder or a "
                          "Hub dataset id."},
    )
    output: str = field(
        default="user_embeddings.parquet",
        metadata={"help": "Output: a .parquet file, or a folder for datasets' save_to_disk."},
    )
    batch_size: int = field(default=64, metadata={"help": "Users per forward pass."})
    device: str | None = field(default=None, metadata={"help": "cpu, cuda, ... (default: cuda when available)."})
    overwrite_output: bool = field(
        default=False,
        metadata={"help": "Replace an existing --output that does not hold user embeddings (refused otherwise)."},
    )

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"--batch_size must be >= 1, got {self.batch_size}")


def main(argv: list[str] | None = None) -> datasets.Dataset:
    from .cli import JobArgumentParser

    parser = JobArgumentParser(
        (EmbeddingExportArguments,), "embed",
        "Embed every user of a behaviour dataset with a pre-trained user model (its frozen vocabulary and tokenizer) "
        "and save user_id + embedding as Parquet or a datasets folder. An existing --output that does not hold user "
        "embeddings is refused unless --overwrite_output is passed.",
        ("userbert embed --model_name_or_path outputs/userbert-pretrained --output embeddings.parquet",
         "userbert embed --model_name_or_path org/userbert-movielens --data events.csv --output embeddings/"),
    )
    (args,) = parser.parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        embeddings = export_user_embeddings(
            args.model_name_or_path, args.data, args.output, args.batch_size, args.device, args.overwrite_output,
            load_options=column_options(args),
        )
    except (OutputDirError, ValueError) as err:
        parser.error(str(err))
    size = len(embeddings[0]["embedding"]) if embeddings.num_rows else 0
    print(f"Embedded {embeddings.num_rows} users ({size} dimensions) with {args.model_name_or_path} -> {args.output}")
    return embeddings


__all__ = [
    "EmbeddingExportArguments",
    "embed_users",
    "export_user_embeddings",
    "save_user_embeddings",
    "load_user_embeddings",
    "embedding_matrix",
    "nearest_users",
    "read_users",
    "main",
]

if __name__ == "__main__":
    main()
