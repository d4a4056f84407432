"""The fine-tuning job: train a downstream head on a (pre-trained) user model and write a Hub-ready folder.

``userbert finetune`` and ``examples/run_{news_recommendation,ctr,next_item}.py`` run :func:`main`:

    userbert finetune --task ctr --model_name_or_path outputs/userbert-pretrained     # fine-tune a pre-trained model
    userbert finetune --task ctr --model_name_or_path nrms                             # same architecture, from scratch
    userbert finetune --task ctr --model_name_or_path outputs/userbert-pretrained --train_fraction 0.1
    userbert finetune --task next_item --data ../shared/data/amazon-beauty/Beauty.txt --model_name_or_path bert4rec
    userbert finetune --task news --data MINDsmall_train --test_data MINDsmall_dev --model_name_or_path nrms
    userbert finetune --task user_classification --data events.csv --user_labels labels.csv --model_name_or_path gru4rec

``--model_name_or_path`` is a preset name (``nrms``, ``naml``, ``lstur``, ``gru4rec``, ``nativectr``, ``bert4rec``, ``sasrec``:
train from scratch, vocabulary and tokenizer built from the data) or a folder / Hub name written by
``userbert pretrain`` (config, weights, vocabulary and tokenizer loaded; the data is read with that frozen
vocabulary, unknown behaviours are counted and skipped; text-behaviour models instead add unseen behaviours,
which they can encode from their text). Every ``transformers.TrainingArguments`` option works.

``--export_pretraining_data DIR`` writes the behaviour sequences a pre-training run may use for this task
(histories only, never an evaluation candidate or target) and exits: ``userbert pretrain --data DIR``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np
from transformers import EarlyStoppingCallback, TrainingArguments

from ..assets import build_catalog, check_finite_run, load_user_model_assets
from ..configuration_userbert import PRESETS, UserBertConfig
from ..data import BehaviorData, EventLogColumnArguments, column_options, load_behavior_data, load_mind_impressions, save_behavior_data
from .splits import split_statistics
from ..early_stopping import configure_early_stopping, validate_patience
from .optim import FinetuningTrainer
from .warm_start import SAME_DATA_FRESH_GAIN, SAME_DATA_SHRINK_PERTURB, same_data_warm_start, soften_pretrained_start
from ..job_steps import finish_job, save_loading_files, start_job
from ..model_card import data_record, example_histories, portable_path, usage_snippet
from ..output_dir import OutputDirError, release_output_dir, run_fingerprint
from ..pretraining.trainer import validate_training_length
from .registry import TASK_REGISTRY, get_task, pretraining_users_for
from ..tokenization_userbert import build_word_tokenizer
from ..vocabulary import BehaviorVocabulary

logger = logging.getLogger(__name__)


@dataclass
class FinetuningDataArguments(EventLogColumnArguments):
    """Which downstream task and labelled data."""

    task: str = field(default="ctr", metadata={"help": "Downstream task.", "choices": TASK_REGISTRY})  # live registry
    data: str = field(
        default="movielens",
        metadata={"help": "ctr, implicit_ctr: 'movielens' (bundled) or a MovieLens folder; next_item: Beauty.txt or any behaviour "
                          "log; news: a MIND split folder; user_classification: any behaviour log."},
    )
    test_data: str | None = field(
        default=None, metadata={"help": "news: a second MIND folder used as the test split (e.g. MINDsmall_dev)."}
    )
    evaluate_test: bool = field(
        default=True,
        metadata={"help": "Evaluate on the test split at the end. False (development runs): the test split is never "
                          "evaluated; the job returns and records the final validation metrics (eval_*) only."},
    )
    user_labels: str | None = field(
        default=None,
        metadata={"help": "user_classification: CSV with columns user_id,label. Without it, MovieLens gets a DEMO "
                          "label (mean rating >= 3.5)."},
    )
    train_fraction: float = field(
        default=1.0, metadata={"help": "Share of labelled training users (impressions for news) kept, e.g. 0.1."}
    )
    split_seed: int = field(default=42, metadata={"help": "Seed of the train/validation/test user split."})
    history_fraction: float = field(
        default=0.8, metadata={"help": "ctr: share of each user's ratings used as history."}
    )
    positive_rating: float = field(default=4.0, metadata={"help": "ctr: ratings >= this are clicks."})
    candidates_per_row: int = field(
        default=16,
        metadata={"help": "ctr: training rows pack up to N candidates of one user, encoding the user once (1: one "
                          "row per (user, candidate)); evaluation rows hold all of a user's candidates."},
    )
    npratio: int = field(default=4, metadata={"help": "news: non-clicked news per clicked news in training rows."})
    train_every_prefix: bool = field(
        default=True,
        metadata={"help": "next_item: train on every prefix of each sequence (SASRec/S3-Rec protocol); False: only "
                          "the last --max_train_targets_per_user targets before validation."},
    )
    max_train_targets_per_user: int = field(
        default=1, metadata={"help": "next_item with --train_every_prefix False: training targets per user (the "
                                     "last ones before validation)."}
    )
    prefixes_in_one_pass: bool | None = field(
        default=None,
        metadata={"help": "next_item with --train_every_prefix: one training row per user whose every position is "
                          "a target, for causal user models (gru4rec, sasrec: the state at a position is that "
                          "prefix's user embedding). Default: on for causal models; False: one row per prefix."},
    )
    negatives_per_positive: int = field(
        default=1, metadata={"help": "implicit_ctr: never-rated popular items per rated candidate (label 0)."}
    )
    popular_items: int = field(
        default=1000, metadata={"help": "implicit_ctr: negatives are drawn from this many most-rated items."}
    )
    exclude_history: bool = field(
        default=True, metadata={"help": "next_item: do not rank behaviours already in the history (S3-Rec protocol)."}
    )
    max_behaviors: int = field(default=100, metadata={"help": "Most recent behaviours kept per history."})
    min_word_frequency: int = field(default=1, metadata={"help": "From scratch: words seen fewer times become [UNK]."})
    strict_data: bool = field(default=False, metadata={"help": "Turn skipped bad input rows into errors."})
    rating_column: str | None = field(
        default=None, metadata={"help": "Event logs / datasets: a numeric rating column (ctr labels rating >= "
                                        "--positive_rating; default: none)."}
    )
    export_pretraining_data: str | None = field(
        default=None,
        metadata={"help": "Write the behaviour sequences pre-training may use for this task to this folder and exit."},
    )

    def __post_init__(self):
        if self.task not in TASK_REGISTRY:
            raise ValueError(f"--task {self.task!r} is not one of {tuple(TASK_REGISTRY)}")
        if not 0 < self.train_fraction <= 1:
            raise ValueError(f"--train_fraction must be in (0, 1], got {self.train_fraction}")
        if not 0 < self.history_fraction < 1:
            raise ValueError(f"--history_fraction must be in (0, 1), got {self.history_fraction}")
        for name in ("max_behaviors", "min_word_frequency", "candidates_per_row", "npratio",
                     "max_train_targets_per_user", "negatives_per_positive", "popular_items"):
            value = getattr(self, name, 1)
            if value < 1:
                raise ValueError(f"--{name} must be >= 1, got {value}")


@dataclass
class FinetuningModelArguments:
    """Which user model to start from."""

    model_name_or_path: str = field(
        default="nrms",
        metadata={"help": f"A pre-trained UserBERT folder or Hub name, or a preset {sorted(PRESETS)} to train from "
                          "scratch."},
    )
    freeze_user_model: bool = field(
        default=False, metadata={"help": "Train only the head (the CTR bias, the classifier); the user model is fixed."}
    )
    shrink_perturb: float | None = field(
        default=None,
        metadata={"help": "Pre-trained models only: before training, every user-model weight becomes F * pre-trained "
                          "+ (1 - F) * a fresh initialisation (shrink and perturb; 1 keeps the pre-trained start, 0 is "
                          "from scratch)."},
    )
    reset_behavior_embeddings: bool = field(
        default=False, metadata={"help": "Pre-trained ID models only: a fresh behaviour (item) table, the context "
                                         "encoder and aggregator kept."}
    )
    soften_same_data_start: bool = field(
        default=True,
        metadata={"help": "Without --shrink_perturb: soften the start (shrink and perturb 0.5) when the model was "
                          "pre-trained on this task's --export_pretraining_data of the same file and the task trains "
                          "on every exported sequence (next_item), i.e. pre-training read nothing fine-tuning does not "
                          "train on; the fresh half is drawn at 0.5 x the default scale unless --initializer_gain "
                          "says otherwise (docs/finetuning.md). false keeps the start as it is."},
    )
    initializer_gain: float | None = field(
        default=None,
        metadata={"help": "From scratch: multiplies every random initialisation (Glorot gain, embedding std; default "
                          "1). A fair scratch baseline tunes it on validation: 0.15-0.25 (MovieLens CTR) and 0.5 "
                          "(Beauty) were best there (docs/pretraining.md). With --shrink_perturb or "
                          "--reset_behavior_embeddings: the scale of the fresh initialisation mixed in."},
    )
    # From-scratch sizes default to those of `userbert pretrain`, so a from-scratch baseline has the architecture
    # of the default pre-trained model.
    hidden_size: int | None = field(
        default=None, metadata={"help": "From scratch: hidden size (default: as `userbert pretrain`)."}
    )
    attention_query_size: int | None = field(
        default=None, metadata={"help": "From scratch: additive attention query size."}
    )
    num_attention_heads: int | None = field(
        default=None, metadata={"help": "From scratch: heads of self-attention encoders."}
    )
    dropout: float | None = field(default=None, metadata={"help": "From scratch: dropout (paper: 0.2)."})
    matching_similarity: str | None = field(
        default=None, metadata={"help": "From scratch: how heads score users against behaviours, 'cosine' or 'dot'."}
    )
    matching_temperature: float | None = field(
        default=None, metadata={"help": "From scratch: head scores are divided by this (default: as pre-training)."}
    )
    behavior_type: str | None = field(
        default=None, metadata={"help": "From scratch: 'plm' reads behaviour texts with a pre-trained language model "
                                        "(--plm_name_or_path; docs/plm.md); default: the preset's.",
                                "choices": ["plm"]},
    )
    plm_name_or_path: str | None = field(
        default=None, metadata={"help": "From scratch with --behavior_type plm: the language model (folder or Hub id)."}
    )
    plm_trainable_layers: int | None = field(
        default=None, metadata={"help": "Language-model layers that learn: 0 (frozen, vectors cached), k (top k; the "
                                        "frozen layers' token states cached), -1 (all); default: 0 from scratch, the "
                                        "pre-trained model's otherwise."},
    )
    plm_cache_dir: str | None = field(
        default=None, metadata={"help": "Where frozen language-model vectors and token states are cached (default: "
                                        "$USERBERT_CACHE or "
                                        "~/.cache/userbert_hf/plm)."},
    )

    def __post_init__(self):
        from ..pretraining.job import PretrainingModelArguments

        pretraining = PretrainingModelArguments()
        for name in ("hidden_size", "attention_query_size", "num_attention_heads", "dropout", "matching_similarity",
                     "matching_temperature"):
            if getattr(self, name) is None:
                setattr(self, name, getattr(pretraining, name))
        if not is_preset(self.model_name_or_path) and (self.behavior_type or self.plm_name_or_path):
            raise ValueError("--behavior_type and --plm_name_or_path build a model from scratch (with a preset as "
                             f"--model_name_or_path); {self.model_name_or_path} keeps its own behaviour encoder")
        if self.shrink_perturb is not None and not 0 <= self.shrink_perturb <= 1:
            raise ValueError(f"--shrink_perturb must be in [0, 1], got {self.shrink_perturb}")
        if is_preset(self.model_name_or_path) and (self.shrink_perturb is not None or self.reset_behavior_embeddings):
            raise ValueError("--shrink_perturb and --reset_behavior_embeddings soften a pre-trained start; "
                             f"{self.model_name_or_path} is a preset (from scratch)")
        softened = self.shrink_perturb is not None or self.reset_behavior_embeddings
        if self.initializer_gain is not None and not is_preset(self.model_name_or_path) and not softened:
            raise ValueError("--initializer_gain sets the initialisation of a model trained from scratch, or of the "
                             f"fresh weights of --shrink_perturb / --reset_behavior_embeddings; {self.model_name_or_path} "
                             "is a pre-trained model and neither option is given")
        if self.initializer_gain is not None and not 0 < self.initializer_gain <= 10:
            raise ValueError(f"--initializer_gain must be in (0, 10], got {self.initializer_gain}")
        if is_preset(self.model_name_or_path):  # from scratch: every invalid size is reported now, by option
            PretrainingModelArguments(
                preset=self.model_name_or_path.lower(), hidden_size=self.hidden_size, dropout=self.dropout,
                attention_query_size=self.attention_query_size, num_attention_heads=self.num_attention_heads,
                matching_similarity=self.matching_similarity, matching_temperature=self.matching_temperature,
                behavior_type=self.behavior_type, plm_name_or_path=self.plm_name_or_path,
                plm_trainable_layers=self.plm_trainable_layers or 0,
            )


@dataclass
class FinetuningArguments(TrainingArguments):
    """Training arguments with defaults for fine-tuning (the default MovieLens CTR run takes ~2 minutes on 2 CPU
    cores).

    The learning rate is 1e-3, not the paper's 1e-4: the paper fine-tunes on 400k impressions, while the ~17k
    MovieLens training pairs give ~40 steps per epoch, in which 1e-4 barely moves a model (validation AUC 0.55-0.60
    after two epochs, from scratch or pre-trained). Pass ``--learning_rate 1e-4`` for the paper's setting.
    """

    output_dir: str = field(default="outputs/userbert-finetuned", metadata={"help": "Where the model is written."})
    learning_rate: float = field(
        default=1e-3, metadata={"help": "Adam(W) learning rate (paper: 1e-4 on far larger labelled data)."}
    )
    num_train_epochs: float = field(default=3.0, metadata={"help": "Epochs over the labelled training rows."})
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Rows per batch (paper: 32)."})
    per_device_eval_batch_size: int = field(default=64, metadata={"help": "Rows per evaluation batch."})
    eval_strategy: str = field(
        default="epoch", metadata={"help": "Evaluate on validation every epoch ('steps', 'no')."}
    )
    save_strategy: str = field(
        default="no", metadata={"help": "Checkpoints ('epoch', 'steps'); the final model is always saved."}
    )
    logging_steps: float = field(default=50, metadata={"help": "Log every N steps."})
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Kept False: the collators read dataset columns forward does not name."}
    )
    resume_from_checkpoint: str | None = field(
        default=None,
        metadata={"help": "Resume from this checkpoint folder, or True / last: from the last complete checkpoint of "
                          "--output_dir (incomplete newer ones skipped)."},
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Write into a non-empty --output_dir (or --export_pretraining_data folder) that an earlier "
                          "run of `userbert finetune` did not write; refused otherwise."},
    )

    early_stopping_patience: int | None = field(
        default=None,
        metadata={"help": "Stop when the validation metric (--metric_for_best_model, default the task's primary "
                  "metric: auc for ctr, ndcg@10 for next_item) has not improved for N evaluations, and keep the best "
                  "checkpoint; --num_train_epochs / --max_steps is then the upper bound."},
    )
    eval_sample_users: int | None = field(
        default=None,
        metadata={"help": "Evaluate between checkpoints on a fixed sample of N validation rows (one per user for ctr "
                  "and next_item) instead of the whole split; the final test always uses the whole test split."},
    )
    user_model_learning_rate: float | None = field(
        default=None, metadata={"help": "Learning rate of the user model's parameters (default: --learning_rate, "
                                        "which the head keeps)."}
    )
    freeze_user_model_steps: int = field(
        default=0, metadata={"help": "The user model stays fixed for the first N optimizer steps (the head warms up)."}
    )

    def __post_init__(self):
        validate_training_length(self)
        validate_patience(self.early_stopping_patience)
        if self.early_stopping_patience and self.eval_strategy == "no":
            raise ValueError("--early_stopping_patience needs validation evaluations: pass --eval_strategy epoch or steps")
        if self.eval_sample_users is not None and self.eval_sample_users < 1:
            raise ValueError(f"--eval_sample_users must be >= 1, got {self.eval_sample_users}")
        if self.user_model_learning_rate is not None and not self.user_model_learning_rate >= 0:
            raise ValueError(f"--user_model_learning_rate must be >= 0, got {self.user_model_learning_rate}")
        if self.freeze_user_model_steps < 0:
            raise ValueError(f"--freeze_user_model_steps must be >= 0, got {self.freeze_user_model_steps}")
        super().__post_init__()


EXAMPLES = (
    "userbert finetune --task ctr --model_name_or_path outputs/userbert-pretrained --output_dir outputs/ctr",
    "userbert finetune --task ctr --model_name_or_path nrms --output_dir outputs/ctr-scratch   # from scratch",
    "userbert finetune --task next_item --data Beauty.txt --model_name_or_path bert4rec --output_dir outputs/beauty",
    "userbert finetune --task ctr --export_pretraining_data outputs/ml-ctr-pretrain",
)


def build_parser():
    from ..cli import JobArgumentParser

    return JobArgumentParser(
        (FinetuningDataArguments, FinetuningModelArguments, FinetuningArguments), "finetune",
        "Fine-tune a pre-trained user model (or a preset from scratch) on a downstream task with the standard "
        "transformers Trainer, evaluate on the held-out test split and write a Hub-ready folder. A non-empty "
        "--output_dir is refused unless an earlier run of this job wrote it and left a checkpoint (then it is "
        "resumed) or --overwrite_output_dir is passed.",
        EXAMPLES,
    )


def parse_args(argv: list[str] | None = None):
    return build_parser().parse(argv)


def is_preset(name: str) -> bool:
    """A preset name trains from scratch; anything else (a folder, a Hub name) is a pre-trained model."""
    return name.lower() in PRESETS and not os.path.isdir(name)


def extendable_copy(vocabulary: BehaviorVocabulary) -> BehaviorVocabulary:
    """An unfrozen copy (same ids) that new behaviours can join: text-behaviour models encode any behaviour from
    its text, so unseen news or ads need not be dropped."""
    return BehaviorVocabulary(vocabulary.raw_ids[1:], vocabulary.texts[1:])


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------
def load_task_data(data_args: FinetuningDataArguments, vocabulary: BehaviorVocabulary | None):
    """Load the labelled splits of a task. Returns ``(splits, vocabulary, behavior_data_or_None, label_names)``."""
    built = get_task(data_args.task).build_splits(data_args, vocabulary)
    return built.splits, built.vocabulary, built.behavior_data, built.label_names


def export_pretraining_data(data_args: FinetuningDataArguments, vocabulary: BehaviorVocabulary | None) -> str:
    """Write the users' behaviour sequences that pre-training may see for this task (``save_behavior_data``)."""
    if data_args.task == "news":
        from ..data import load_mind

        data = load_mind(data_args.data, max_behaviors=None, vocabulary=vocabulary, strict=data_args.strict_data)
    else:
        data = load_behavior_data(
            data_args.data, max_behaviors=None, vocabulary=vocabulary, strict=data_args.strict_data,
            **column_options(data_args),
        )
    users = pretraining_users_for(
        data_args.task, data, history_fraction=data_args.history_fraction, max_behaviors=data_args.max_behaviors
    )
    data.summary.notes.append(
        f"restricted by pretraining_users_for({data_args.task!r}): {len(users)} users, "
        f"{sum(len(x) for x in users['behavior_ids'])} behaviours"
    )
    export_info = {  # lets fine-tuning tell a warm start on its own data (warm_start.same_data_warm_start)
        "task": data_args.task,
        "data_sha256": data_record(data_args.data, getattr(data.summary, "path", None))["data_sha256"],
        "trains_on_whole_export": get_task(data_args.task).trains_on_whole_export,
    }
    save_behavior_data(BehaviorData(users=users, vocabulary=data.vocabulary, summary=data.summary, source=data.source,
                                    export_info=export_info),
                       data_args.export_pretraining_data)
    print(f"Wrote pre-training data for task {data_args.task} to {data_args.export_pretraining_data}: "
          f"`userbert pretrain --data {data_args.export_pretraining_data}`")
    return data_args.export_pretraining_data


# ----------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------
def task_compute_metrics(task: str):
    return get_task(task).metrics_function()


def eval_ignore_keys(task: str) -> list[str]:
    """Model outputs the Trainer should not gather at evaluation: next-item keeps only the target ranks, never
    the (n, V) score matrix."""
    return list(get_task(task).eval_ignore_keys)


# ----------------------------------------------------------------------------------------------
# Saving
# ----------------------------------------------------------------------------------------------
def card_metrics(task: str, metrics: dict, prefix: str = "test_") -> dict[str, float]:
    return get_task(task).card_metrics_from(metrics, prefix)


# ----------------------------------------------------------------------------------------------
# The job
# ----------------------------------------------------------------------------------------------
def run_finetuning(data_args, model_args, training_args) -> dict:
    """Fine-tune, evaluate on test and save; returns the test metrics (``test_*``)."""
    # 0. The output folder: refuse one this job did not write (before anything is loaded or written), or resume
    #    from its last complete checkpoint.
    resume_from = start_job(training_args, "finetune", export_dir=data_args.export_pretraining_data,
                            fingerprint=run_fingerprint(data_args.data, data_args, model_args, training_args))
    task, source = data_args.task, model_args.model_name_or_path
    from_scratch = is_preset(source)
    if training_args.remove_unused_columns:
        logger.warning("--remove_unused_columns True would drop the columns the collator needs: setting it to False")
        training_args.remove_unused_columns = False

    # 1. The pre-trained user model's config, vocabulary and tokenizer (nothing when training from scratch).
    config = vocabulary = tokenizer = None
    if not from_scratch:
        config = UserBertConfig.from_pretrained(source)
        vocabulary, tokenizer = load_user_model_assets(source, config)
        if config.behavior_type in ("text", "plm"):
            vocabulary = extendable_copy(vocabulary)
    if data_args.export_pretraining_data:
        export_pretraining_data(data_args, vocabulary)
        return {}
    behavior_type = config.behavior_type if config is not None else (
        model_args.behavior_type or PRESETS[source.lower()]["behavior_type"])
    task_spec = get_task(task)
    if task_spec.id_behaviours_only and behavior_type in ("text", "plm"):
        raise ValueError(
            f"--task {task} ranks every behaviour of the vocabulary and is implemented for ID-behaviour models "
            "(gru4rec, bert4rec, sasrec); this model encodes behaviour texts"
        )

    # 2. Load the labelled data and build the train / validation / test splits (by user).
    causal = (config if config is not None else UserBertConfig.from_preset(source, behavior_vocab_size=2)).is_causal
    if data_args.prefixes_in_one_pass is None:
        data_args.prefixes_in_one_pass = causal and task == "next_item" and data_args.train_every_prefix
    elif data_args.prefixes_in_one_pass and not causal:
        raise ValueError(f"--prefixes_in_one_pass needs a causal user model (gru4rec, sasrec); {source} is not")
    splits, vocabulary, behavior_data, label_names = load_task_data(data_args, vocabulary)
    splits = task_spec.prepare_training_splits(splits, data_args.train_fraction, training_args.seed,
                                               data_args.candidates_per_row)
    stats = split_statistics(splits, task)
    logger.info("Downstream data (%s): %s", task, json.dumps(stats))
    if len(splits["train"]) == 0 or len(splits["test"]) == 0:
        raise ValueError(f"a split of the {task} data is empty: {stats}")
    if len(splits["validation"]) == 0 and training_args.eval_strategy != "no":
        raise ValueError(f"the validation split of the {task} data is empty ({stats}): pass --eval_strategy no")

    data_source_path = getattr(getattr(behavior_data, "summary", None), "path", None)  # the file a loader read
    softened_by_default = False
    overrides = {}  # config fields of the new or loaded model
    # 3. The word tokenizer for text behaviours (from scratch: built from the behaviour texts).
    if from_scratch and behavior_type in ("text", "plm"):
        if not vocabulary.has_text:
            raise ValueError(f"preset {source!r} encodes behaviour texts but {data_args.data} has none; use an ID "
                             "preset (gru4rec, bert4rec, sasrec)")
    if from_scratch and behavior_type == "plm":  # the language model's own tokenizer
        from ..plm_encoder import load_plm_tokenizer, plm_config_fields

        tokenizer = load_plm_tokenizer(model_args.plm_name_or_path)
        overrides.update(plm_config_fields(model_args.plm_name_or_path, model_args.plm_trainable_layers or 0))
    elif from_scratch and behavior_type == "text":
        tokenizer = build_word_tokenizer(
            vocabulary.texts, min_frequency=data_args.min_word_frequency, max_words=UserBertConfig().max_words
        )

    # 4. The model: the user model (pre-trained or new) plus the task head.
    head = task_spec.head
    if label_names is not None:
        overrides.update(
            num_labels=len(label_names), id2label=dict(enumerate(label_names)),
            label2id={name: i for i, name in enumerate(label_names)},
        )
    if from_scratch:
        config = UserBertConfig.from_preset(
            source, behavior_vocab_size=len(vocabulary),
            word_vocab_size=len(tokenizer) if tokenizer is not None else 2, max_behaviors=data_args.max_behaviors,
            hidden_size=model_args.hidden_size, word_embedding_size=model_args.hidden_size,
            attention_query_size=model_args.attention_query_size, num_attention_heads=model_args.num_attention_heads,
            intermediate_size=4 * model_args.hidden_size, dropout=model_args.dropout,
            matching_similarity=model_args.matching_similarity, matching_temperature=model_args.matching_temperature,
            initializer_gain=model_args.initializer_gain if model_args.initializer_gain is not None else 1.0,
            **overrides,
        )
        model = head(config)
        if behavior_type == "plm":
            from ..plm_encoder import load_plm_weights

            load_plm_weights(model, model_args.plm_name_or_path)
    else:
        if model_args.plm_trainable_layers is not None and config.behavior_type == "plm":
            overrides["plm_trainable_layers"] = model_args.plm_trainable_layers
        if len(vocabulary) > config.behavior_vocab_size:  # text models only: new behaviours need no weights
            overrides["behavior_vocab_size"] = len(vocabulary)
        model = head.from_pretrained(source, **overrides)
        if model_args.shrink_perturb is None and not model_args.reset_behavior_embeddings \
                and model_args.soften_same_data_start and model.config.behavior_type != "plm":
            same_data = same_data_warm_start(getattr(model.config, "pretraining_data", None), task,
                                             data_record(data_args.data, data_source_path)["data_sha256"])
            if same_data is not None:  # a warm start on the fine-tuning data itself: soften it by default
                model_args.shrink_perturb = SAME_DATA_SHRINK_PERTURB
                if model_args.initializer_gain is None:
                    model_args.initializer_gain = SAME_DATA_FRESH_GAIN
                logger.warning("%s was %s: softening its start with --shrink_perturb %s --initializer_gain %s "
                               "(--soften_same_data_start false keeps it as it is)", source, same_data,
                               model_args.shrink_perturb, model_args.initializer_gain)
                softened_by_default = True
        if model_args.shrink_perturb is not None or model_args.reset_behavior_embeddings:
            if model.config.behavior_type == "plm":
                raise ValueError("--shrink_perturb / --reset_behavior_embeddings: a language-model behaviour encoder "
                                 "has no fresh initialisation to mix with")
            softened = soften_pretrained_start(model, shrink_perturb=model_args.shrink_perturb,
                                               reset_behavior_embeddings=model_args.reset_behavior_embeddings,
                                               seed=training_args.seed, initializer_gain=model_args.initializer_gain)
            logger.info("Pre-trained start softened: %s", softened)
    if model_args.freeze_user_model:
        model.freeze_user_model()
        if not any(p.requires_grad for p in model.parameters()):
            raise ValueError(f"--freeze_user_model leaves nothing to train in {head.__name__} (it scores with the "
                             "user model's own behaviour encoder); fine-tune the whole model instead")
    catalog = build_catalog(vocabulary, model.config, tokenizer)
    if model.config.behavior_type == "plm":  # frozen (lower) PLM layers: each text encoded once, then cached
        from ..plm_cache import attach_plm_cache

        attach_plm_cache(model, catalog, model_args.plm_cache_dir, show_progress_bar=training_args.should_log)
    logger.info("%s from %s: %s parameters (%s trainable)", head.__name__, "scratch" if from_scratch else source,
                f"{model.num_parameters():,}", f"{model.num_parameters(only_trainable=True):,}")

    # 5. Fine-tune with the standard Trainer, evaluating on validation (or a fixed sample of it); then evaluate on
    #    test. With early stopping the best validated checkpoint is loaded before the test.
    callbacks = configure_early_stopping(training_args, training_args.early_stopping_patience, task_spec.primary_metric)
    validation_rows = splits["validation"]
    if training_args.eval_sample_users is not None and len(validation_rows) > training_args.eval_sample_users:
        # The same rows for every seed and checkpoint (seeded by the user split, not by the fine-tuning seed).
        validation_rows = validation_rows.shuffle(seed=data_args.split_seed).select(
            range(training_args.eval_sample_users)
        )
    trainer = FinetuningTrainer(
        model=model, args=training_args, train_dataset=splits["train"], eval_dataset=validation_rows or None,
        data_collator=task_spec.collator(catalog, model.config.max_behaviors), compute_metrics=task_compute_metrics(task),
        callbacks=callbacks,
        user_model_learning_rate=training_args.user_model_learning_rate,
        freeze_user_model_steps=training_args.freeze_user_model_steps,
    )
    save_loading_files(trainer, model, vocabulary, tokenizer)  # first: checkpoint pushes while training load too
    ignore_keys = eval_ignore_keys(task)
    started = time.time()
    trainer.train(resume_from_checkpoint=resume_from, ignore_keys_for_eval=ignore_keys)
    train_seconds = time.time() - started
    validation = [entry for entry in trainer.state.log_history if "eval_loss" in entry]  # in-training evaluations
    # Training is over: no evaluation below is a stopping check (a test evaluation's metrics are test_*, which the
    # callback would report missing with "early stopping is disabled", a false alarm after a run that did stop early).
    trainer.remove_callback(EarlyStoppingCallback)
    # The kept model (with early stopping, the best validated checkpoint) on validation: the run's validation figure
    # is the saved and tested model's, not the last in-training evaluation's (a later model under early stopping).
    kept_model_validation = trainer.evaluate(ignore_keys=ignore_keys) if splits["validation"] else {}
    if data_args.evaluate_test:
        test_metrics = trainer.evaluate(splits["test"], ignore_keys=ignore_keys, metric_key_prefix="test")
    else:  # a development run: validation only (the returned metrics are eval_*)
        test_metrics = kept_model_validation

    # 6. Save a Hub-ready folder: weights + config + code, vocabulary, tokenizer, results and a model card. The
    #    auto_map inherited from a pre-training checkpoint is dropped: it is rebuilt for this head on saving.
    model.config.auto_map = None
    settings = {  # data by name, relative path or file name and content hash; never a local absolute path
        "task": task, **data_record(data_args.data, data_source_path),
        "test_data": portable_path(data_args.test_data) if data_args.test_data else None,
        "model_name_or_path": portable_path(source), "from_scratch": from_scratch,
        "preset_or_base": portable_path(source),
        "train_fraction": data_args.train_fraction, "freeze_user_model": model_args.freeze_user_model,
        "shrink_perturb": model_args.shrink_perturb, "shrink_perturb_by_default": softened_by_default,
        "reset_behavior_embeddings": model_args.reset_behavior_embeddings,
        "initializer_gain": model_args.initializer_gain,
        "split_seed": data_args.split_seed, "seed": training_args.seed,
        "learning_rate": training_args.learning_rate, "num_train_epochs": training_args.num_train_epochs,
        "max_steps": training_args.max_steps, "early_stopping_patience": training_args.early_stopping_patience,
        "eval_sample_users": training_args.eval_sample_users, "steps_trained": trainer.state.global_step,
        "user_model_learning_rate": training_args.user_model_learning_rate,
        "freeze_user_model_steps": training_args.freeze_user_model_steps,
        "batch_size": training_args.per_device_train_batch_size * training_args.world_size,
        "gradient_accumulation_steps": training_args.gradient_accumulation_steps,
        "max_behaviors": data_args.max_behaviors,
    }
    settings.update(task_spec.settings_of(data_args))
    results = {
        "test": test_metrics if data_args.evaluate_test else {}, "validation": validation,
        "kept_model_validation": kept_model_validation,
        "train_runtime_seconds": round(train_seconds, 1), "settings": settings, "splits": stats,
    }
    if behavior_data is not None:
        behavior_data.summary.path = portable_path(behavior_data.summary.path)
        results["data_summary"] = behavior_data.summary.to_dict()
    task_type, task_name = task_spec.hub_task_type, task_spec.hub_task_name
    origin = (f"trained from scratch (preset `{source}`)" if from_scratch
              else f"fine-tuned from `{settings['model_name_or_path']}`")
    dataset_name = os.path.basename(os.path.normpath(str(data_args.data)))
    card = dict(
        title=f"UserBERT {model.config.context_encoder}/{model.config.aggregator} user model fine-tuned for "
              f"{task_name.lower()} on {dataset_name}",
        summary=(
            f"A `{head.__name__}` {origin} on {stats['train'].get('pairs', stats['train']['rows']):,} labelled "
            f"training {'(user, candidate) pairs' if task_spec.packs_candidates else 'rows'} "
            f"({data_args.train_fraction:.0%} of the training {task_spec.group_column.removesuffix('_id')}s); metrics are on the held-out test "
            "split."
        ),
        dataset_name=dataset_name,
        data_description=(
            f"`{settings['data']}`" + (f" (test: `{settings['test_data']}`)" if data_args.test_data else "")
            + f", split with `userbert_hf.finetuning`:\n\n```\n{json.dumps(stats, indent=2)}\n```"
        ),
        metrics=card_metrics(task, test_metrics),
        task_type=task_type,
        task_name=task_name,
        usage=(
            f"from userbert_hf import {head.__name__}  # pip install userbert_hf\n"
            f"model = {head.__name__}.from_pretrained('{training_args.hub_model_id or training_args.output_dir}')\n"
            "# the user model alone, without the package:\n"
            + usage_snippet(training_args.hub_model_id or training_args.output_dir, example_histories(vocabulary))
        ),
        data=str(data_args.data),
        tags=[task.replace("_", "-")],
        base_model=None if from_scratch or os.path.isdir(source) else source,
    )
    check_finite_run(model, test_metrics, f"userbert finetune {training_args.output_dir}")
    finish_job(trainer, model, vocabulary, tokenizer, results, card, "Saved the fine-tuned model", test_metrics)
    return test_metrics


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    data_args, model_args, training_args = parser.parse(argv if argv is not None else sys.argv[1:])
    try:
        return run_finetuning(data_args, model_args, training_args)
    except OutputDirError as err:
        parser.error(str(err))
    finally:
        release_output_dir(training_args)


__all__ = [
    "FinetuningDataArguments",
    "FinetuningModelArguments",
    "FinetuningArguments",
    "run_finetuning",
    "main",
]
