"""``UserBertProcessor``: from raw behaviour ids (``"1"``, ``"N55528"``) to UserBERT model inputs.

The processor holds what a user model needs besides its weights: the frozen behaviour vocabulary, the word
tokenizer of text behaviours and the collation (the distinct behaviours of a batch in one table, padding,
truncation to the most recent ``max_behaviors``). It saves into and loads from a model folder or Hub repository
like any transformers processor (``processor_config.json`` + ``behavior_vocab.json`` + ``tokenizer.json``), and,
registered for ``AutoProcessor``, its code is copied next to the model, so

```python
from transformers import AutoModel, AutoProcessor
processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
model = AutoModel.from_pretrained(folder, trust_remote_code=True)
user_embedding = model(**processor([["1", "50", "296"], ["2", "3"]])).user_embedding
```

works where ``userbert_hf`` is not installed. This file is copied with its flat siblings (``collation.py``,
``vocabulary.py``, ``tokenization_userbert.py``) and must only import them relatively.

Not a ``transformers.ProcessorMixin``: the mixin (transformers 5.x) requires every sub-processor (a tokenizer
here) to exist, while ID-behaviour models have no tokenizer, and it has no place for the behaviour vocabulary.
The class keeps the processor contract instead: ``save_pretrained`` / ``from_pretrained`` / ``push_to_hub`` /
``register_for_auto_class`` / ``__call__`` returning a ``BatchFeature``.
"""

from __future__ import annotations

import json
import logging
import os

import torch
from transformers.dynamic_module_utils import custom_object_save
from transformers.feature_extraction_utils import BatchFeature
from transformers.utils import PushToHubMixin, cached_file

from .collation import BehaviorCatalog, collate_histories
from .vocabulary import VOCAB_FILE_NAME, BehaviorVocabulary

logger = logging.getLogger(__name__)

PROCESSOR_CONFIG_NAME = "processor_config.json"
TOKENIZER_FILE_NAME = "tokenizer.json"
_HUB_KWARGS = ("cache_dir", "force_download", "proxies", "token", "revision", "local_files_only", "subfolder")


class UserBertProcessor(PushToHubMixin):
    """Turns users' raw behaviour ids into ``UserBertModel`` inputs (and any ``UserBertFor<Task>``'s user part).

    Args:
        vocabulary: the model's ``BehaviorVocabulary`` (only read: unknown ids are dropped and counted, never added).
        tokenizer: the word tokenizer of text behaviours (``None`` for ID behaviours).
        max_behaviors: the most recent behaviours kept per user (the model's ``config.max_behaviors``).
        max_words: words per behaviour text (the model's ``config.max_words``).

    Calling the processor on B users gives a ``BatchFeature`` with the batch's behaviour table
    (``behavior_ids`` (U,) or ``behavior_token_ids`` (U, W)), ``behavior_index`` (B, L) and ``attention_mask``
    (B, L); its attribute ``unknown_behaviors`` lists, per user, how many ids the vocabulary did not know.

    Example:

    ```python
    >>> from userbert_hf.vocabulary import BehaviorVocabulary
    >>> processor = UserBertProcessor(BehaviorVocabulary(["1", "50", "296", "2"]), max_behaviors=2)
    >>> inputs = processor([["1", "50", "296"], ["2", "999"]])
    >>> inputs["behavior_ids"].tolist(), inputs["behavior_index"].tolist(), inputs.unknown_behaviors
    ([0, 2, 3, 4], [[1, 2], [3, 0]], [0, 1])
    >>> inputs = processor([["296", "1"]], timestamps=[[20, 10]])  # ordered by time: "1" (id 1), then "296" (id 3)
    >>> inputs["behavior_ids"][inputs["behavior_index"]].tolist()
    [[1, 3]]
    ```
    """

    _auto_class = None
    model_input_names = ["behavior_ids", "behavior_token_ids", "behavior_index", "attention_mask"]

    def __init__(self, vocabulary: BehaviorVocabulary, tokenizer=None, max_behaviors: int | None = 100,
                 max_words: int = 30, behavior_type: str | None = None):
        if not isinstance(vocabulary, BehaviorVocabulary):
            raise TypeError(f"vocabulary must be a BehaviorVocabulary, got {type(vocabulary).__name__}")
        if max_behaviors is not None and max_behaviors < 1:
            raise ValueError(f"max_behaviors must be a positive integer or None, got {max_behaviors!r}")
        self.vocabulary = vocabulary
        self.tokenizer = tokenizer
        self.max_behaviors = max_behaviors
        self.max_words = int(max_words)
        # "plm": the tokenizer is a pre-trained language model's (its token ids, special tokens included).
        self._behavior_type = behavior_type if tokenizer is not None and behavior_type == "plm" else None
        self.catalog = BehaviorCatalog.from_vocabulary(vocabulary, tokenizer, self.max_words, self.behavior_type)

    @property
    def behavior_type(self) -> str:
        return self._behavior_type or ("text" if self.tokenizer is not None else "id")

    @classmethod
    def from_config(cls, config, vocabulary: BehaviorVocabulary, tokenizer=None) -> "UserBertProcessor":
        """The processor of a model with ``config`` (its ``max_behaviors``, ``max_words``; the tokenizer is kept
        only for text behaviours)."""
        if config.behavior_type in ("text", "plm") and tokenizer is None:
            raise ValueError(f"a {config.behavior_type}-behaviour model needs its tokenizer in the processor")
        if len(vocabulary) > config.behavior_vocab_size:
            raise ValueError(
                f"the vocabulary has {len(vocabulary)} behaviours but config.behavior_vocab_size is "
                f"{config.behavior_vocab_size}: it does not belong to this model"
            )
        return cls(vocabulary, tokenizer if config.behavior_type in ("text", "plm") else None,
                   max_behaviors=config.max_behaviors, max_words=config.max_words, behavior_type=config.behavior_type)

    def check_model_config(self, config) -> None:
        """Raise a ``ValueError`` naming every setting in which this processor does not belong to the model of
        ``config``: behaviour type, a vocabulary larger than the model's behaviour table (ids the model cannot look
        up), a word tokenizer larger than its word table, or another ``max_behaviors`` / ``max_words`` (the
        processor would cut histories and titles where the model was not trained to read them).

        Example:
            >>> from userbert_hf import UserBertConfig
            >>> config = UserBertConfig.from_preset("gru4rec", behavior_vocab_size=10, max_behaviors=8)
            >>> UserBertProcessor(BehaviorVocabulary(["a", "b"]), max_behaviors=8).check_model_config(config)
            >>> UserBertProcessor(BehaviorVocabulary(["a", "b"]), max_behaviors=20).check_model_config(config)  # doctest: +ELLIPSIS
            Traceback (most recent call last):
            ...
            ValueError: this processor does not belong to the model: max_behaviors 20 (model: 8). Load ...
        """
        problems = []
        if self.behavior_type != config.behavior_type:
            problems.append(f"behaviour type {self.behavior_type!r} (model: {config.behavior_type!r})")
        if len(self.vocabulary) > config.behavior_vocab_size:
            problems.append(f"{len(self.vocabulary)} behaviours in the vocabulary (model: behavior_vocab_size "
                            f"{config.behavior_vocab_size})")
        if self.behavior_type == "text" and self.tokenizer is not None and len(self.tokenizer) > config.word_vocab_size:
            problems.append(f"{len(self.tokenizer)} words in the tokenizer (model: word_vocab_size "
                            f"{config.word_vocab_size})")
        if self.max_behaviors != config.max_behaviors:
            problems.append(f"max_behaviors {self.max_behaviors} (model: {config.max_behaviors})")
        if self.behavior_type != "id" and self.max_words != config.max_words:
            problems.append(f"max_words {self.max_words} (model: {config.max_words})")
        if problems:
            raise ValueError("this processor does not belong to the model: " + "; ".join(problems)
                             + ". Load the processor saved with the model (AutoProcessor.from_pretrained(model folder))")

    # ------------------------------------------------------------------ raw ids -> model inputs
    def convert_behaviors_to_ids(self, history, timestamps=None) -> tuple[list[int], int]:
        """One user's raw ids -> ``(vocabulary ids oldest first, number of unknown ids dropped)``; with
        ``timestamps`` the behaviours are stably sorted by time first (as the data loaders do)."""
        history = list(history)
        if timestamps is not None:
            timestamps = list(timestamps)
            if len(timestamps) != len(history):
                raise ValueError(f"a user has {len(history)} behaviours but {len(timestamps)} timestamps")
            order = sorted(range(len(history)), key=lambda i: timestamps[i])  # stable
            history = [history[i] for i in order]
        ids = [self.vocabulary.get(str(raw), 0) for raw in history]
        kept = [i for i in ids if i != 0]
        return kept, len(ids) - len(kept)

    def __call__(self, histories, timestamps=None, return_tensors: str | None = "pt") -> BatchFeature:
        """Model inputs for a batch of users.

        Args:
            histories: B lists of raw behaviour ids (strings; numbers are converted with ``str``), oldest first
                unless ``timestamps`` are given; one flat list of ids is one user.
            timestamps: optional B lists of sortable times aligned with ``histories``.
            return_tensors: ``"pt"`` (torch tensors) or ``"np"`` (numpy arrays).
        """
        if isinstance(histories, (str, bytes)):
            raise TypeError("histories must be lists of behaviour ids, e.g. [['1', '50'], ['2']]")
        histories = list(histories)
        if histories and all(isinstance(h, (str, int)) for h in histories):  # a single user
            histories = [histories]
            timestamps = [timestamps] if timestamps is not None else None
        if timestamps is not None and len(timestamps) != len(histories):
            raise ValueError(f"got {len(histories)} users but {len(timestamps)} timestamp lists")
        ids, unknown = [], []
        for i, history in enumerate(histories):
            try:
                kept, dropped = self.convert_behaviors_to_ids(history, None if timestamps is None else timestamps[i])
            except ValueError as error:
                raise ValueError(f"user {i}: {error}") from None
            ids.append(kept)
            unknown.append(dropped)
        if sum(unknown):
            logger.warning("%d behaviour ids of %d users are not in the vocabulary: dropped", sum(unknown),
                           sum(1 for u in unknown if u))
        return self.collate(ids, return_tensors=return_tensors, unknown_behaviors=unknown)

    def collate(self, ids: list, return_tensors: str | None = "pt", unknown_behaviors=None) -> BatchFeature:
        """Model inputs for histories already in vocabulary ids (what the data loaders produce)."""
        inputs, _ = collate_histories(self.catalog, ids, self.max_behaviors)
        if return_tensors not in ("pt", "np", None):
            raise ValueError(f"return_tensors must be 'pt' or 'np', got {return_tensors!r}")
        if return_tensors == "np":
            inputs = {k: v.numpy() for k, v in inputs.items()}
        features = BatchFeature(inputs)
        features.unknown_behaviors = list(unknown_behaviors) if unknown_behaviors is not None else [0] * len(ids)
        return features

    # ------------------------------------------------------------------ saving and loading
    def to_dict(self) -> dict:
        out = {
            "processor_class": type(self).__name__,
            "behavior_type": self.behavior_type,
            "max_behaviors": self.max_behaviors,
            "max_words": self.max_words,
        }
        if self._auto_class is not None:
            out["auto_map"] = {self._auto_class: f"{type(self).__module__.split('.')[-1]}.{type(self).__name__}"}
        return out

    def save_pretrained(self, save_directory: str | os.PathLike, push_to_hub: bool = False, **kwargs) -> list[str]:
        """Write ``processor_config.json``, ``behavior_vocab.json`` and the tokenizer (text behaviours) into
        ``save_directory``, and this file with its siblings when registered for ``AutoProcessor``."""
        if os.path.isfile(save_directory):
            raise ValueError(f"{save_directory} should be a directory, not a file")
        os.makedirs(save_directory, exist_ok=True)
        if push_to_hub:
            commit_message = kwargs.pop("commit_message", None)
            repo_id = kwargs.pop("repo_id", str(save_directory).split(os.path.sep)[-1])
            from huggingface_hub import create_repo

            repo_id = create_repo(repo_id, exist_ok=True, token=kwargs.get("token"), private=kwargs.get("private")).repo_id
            files_timestamps = self._get_files_timestamps(save_directory)
        files = [str(self.vocabulary.save(save_directory))]
        if self.tokenizer is not None:  # written from an allow-list: only the settings this package produces
            from .tokenization_userbert import own_word_tokenizer

            files += list(own_word_tokenizer(self.tokenizer).save_pretrained(save_directory))
        if self._auto_class is not None:
            custom_object_save(self, save_directory)
        path = os.path.join(save_directory, PROCESSOR_CONFIG_NAME)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=2, sort_keys=True)
            f.write("\n")
        files.append(path)
        if push_to_hub:
            self._upload_modified_files(save_directory, repo_id, files_timestamps, commit_message=commit_message,
                                        token=kwargs.get("token"))
        return files

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs) -> "UserBertProcessor":
        """Load from a folder or Hub repository written by :meth:`save_pretrained`; a model folder without
        ``processor_config.json`` (``behavior_vocab.json`` + ``config.json``) works too."""
        name = str(pretrained_model_name_or_path)
        hub_kwargs = {k: kwargs[k] for k in _HUB_KWARGS if kwargs.get(k) is not None}

        def resolve(filename: str) -> str | None:
            return cached_file(name, filename, _raise_exceptions_for_missing_entries=False, **hub_kwargs)

        settings_file = resolve(PROCESSOR_CONFIG_NAME) or resolve("config.json")
        if settings_file is None:
            raise OSError(f"{name} has neither {PROCESSOR_CONFIG_NAME} nor config.json: not a UserBERT model folder")
        with open(settings_file, encoding="utf-8") as f:
            settings = json.load(f)
        vocab_file = resolve(VOCAB_FILE_NAME)
        if vocab_file is None:
            raise OSError(f"{name} has no {VOCAB_FILE_NAME}: the behaviour vocabulary is missing")
        vocabulary = BehaviorVocabulary.load(vocab_file)
        vocabulary.freeze()
        tokenizer = None
        if settings.get("behavior_type", "id") in ("text", "plm"):  # plm: the language model's own tokenizer
            from transformers import PreTrainedTokenizerFast

            # Read from tokenizer.json, not through AutoTokenizer: that would read the folder's config.json (a
            # UserBERT model) and ask to trust remote code again.
            tokenizer = PreTrainedTokenizerFast.from_pretrained(name, **hub_kwargs)
        return cls(vocabulary, tokenizer, max_behaviors=settings.get("max_behaviors", 100),
                   max_words=settings.get("max_words", 30), behavior_type=settings.get("behavior_type"))

    @classmethod
    def register_for_auto_class(cls, auto_class: str = "AutoProcessor") -> None:
        """Make :meth:`save_pretrained` copy this code and name it in ``auto_map`` (``trust_remote_code``)."""
        if not isinstance(auto_class, str):
            auto_class = auto_class.__name__
        cls._auto_class = auto_class

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(behaviors={len(self.vocabulary) - 1}, behavior_type={self.behavior_type!r}, "
                f"max_behaviors={self.max_behaviors}, max_words={self.max_words})")


def save_processor(output_dir: str | os.PathLike, config, vocabulary: BehaviorVocabulary, tokenizer=None) -> UserBertProcessor:
    """Write the processor of a model (``config``) into its output folder: what the pre-training and fine-tuning
    jobs call so ``AutoProcessor.from_pretrained(output_dir, trust_remote_code=True)`` works."""
    processor = UserBertProcessor.from_config(config, vocabulary, tokenizer)
    processor.save_pretrained(output_dir)
    return processor


__all__ = ["UserBertProcessor", "save_processor", "PROCESSOR_CONFIG_NAME"]
