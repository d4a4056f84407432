"""The main job: pre-train a user model with UserBERT (or PTUM / CP) and write a Hub-ready folder.

``userbert pretrain`` and ``examples/run_pretraining.py`` run :func:`main`. With no arguments it pre-trains a
small NRMS-style user model on the bundled MovieLens ml-latest-small data.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass, field

from ..assets import build_catalog, check_finite_run, load_user_model_assets
from ..configuration_userbert import PRESETS, UserBertConfig
from ..data import EventLogColumnArguments, column_options, load_behavior_data
from ..job_steps import finish_job, save_loading_files, start_job
from ..sharded_data import load_user_shards
from ..model_card import data_record, example_histories, portable_path, source_dataset_name
from ..modeling_userbert import UserBertForPreTraining
from ..output_dir import OutputDirError, release_output_dir, run_fingerprint
from ..tokenization_userbert import build_word_tokenizer
from .objectives import OBJECTIVES
from .samplers import SAMPLERS
from .trainer import UserBertTrainer, UserBertTrainingArguments
from .recipes import recipe_settings
from ..early_stopping import configure_early_stopping, validate_patience

logger = logging.getLogger(__name__)


@dataclass
class PretrainingDataArguments(EventLogColumnArguments):
    """Which behaviour logs to pre-train on."""

    data: str = field(
        default="movielens",
        metadata={"help": "'movielens' (bundled), a MovieLens/MIND folder, Beauty.txt, an event log file "
                          "(CSV/TSV/JSONL/Parquet), a datasets folder or a Hub dataset id (one event per row)."},
    )
    max_behaviors: int = field(default=100, metadata={"help": "Most recent behaviours kept per user."})
    min_word_frequency: int = field(default=1, metadata={"help": "Words seen fewer times become [UNK]."})
    strict_data: bool = field(default=False, metadata={"help": "Turn skipped bad input rows into errors."})
    eval_fraction: float | None = field(
        default=None,
        metadata={"help": "Share of users held out (seeded by --seed) for held-out pre-training evaluation; default "
                  "0.1 when the data has at least 100 users, else 0 (no evaluation)."},
    )


    def __post_init__(self):
        if self.max_behaviors < 1:
            raise ValueError(f"--max_behaviors must be >= 1, got {self.max_behaviors}")
        if self.min_word_frequency < 1:
            raise ValueError(f"--min_word_frequency must be >= 1, got {self.min_word_frequency}")
        if getattr(self, "eval_fraction", None) is not None and not 0 <= self.eval_fraction < 1:
            raise ValueError(f"--eval_fraction must be in [0, 1), got {self.eval_fraction}")

@dataclass
class PretrainingModelArguments:
    """Which user model to pre-train."""

    preset: str = field(default="nrms", metadata={"help": "User model preset (the paper's user models).",
                                                  "choices": sorted(PRESETS)})
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Continue pre-training a saved UserBERT model (folder or Hub name)."}
    )
    objective: str = field(  # choices: the live registry of userbert_hf.pretraining.objectives
        default="userbert", metadata={"help": "Pre-training objective: userbert (MBP+BSM), ptum, cp, or a registered one.",
                                      "choices": OBJECTIVES}
    )
    hidden_size: int | None = field(default=64, metadata={"help": "Hidden size (paper: 256)."})
    attention_query_size: int | None = field(default=32, metadata={"help": "Additive attention query size (paper: 200)."})
    num_attention_heads: int | None = field(default=4, metadata={"help": "Heads of self-attention encoders."})
    mbp_loss_weight: float = field(default=1.0, metadata={"help": "Weight of masked behaviour prediction (0 = off)."})
    mbp_query: str = field(
        default="auto",
        metadata={"help": "Which state predicts a masked behaviour: 'masked' (its own position, the paper), "
                  "'previous' (left-to-right models: the prefix state before it, read as next-behaviour heads read "
                  "the model; causal attention hides the target, so it is not replaced by [MASK]) or 'auto' "
                  "(previous for left-to-right presets such as sasrec and gru4rec, masked otherwise; see "
                  "docs/pretraining.md).", "choices": ["auto", "masked", "previous"]},
    )
    bsm_loss_weight: float = field(default=1.0, metadata={"help": "Weight of behaviour sequence matching (0 = off)."})
    next_behavior_loss_weight: float = field(
        default=1.0, metadata={"help": "ptum: weight of next-behaviour prediction (0 = off)."}
    )
    dropout: float = field(default=0.2, metadata={"help": "Dropout (paper: 0.2)."})
    attention_probs_dropout_prob: float | None = field(
        default=None, metadata={"help": "Dropout on attention probabilities (default: the preset's, 0 for nrms; set it "
                                "to --dropout for the behaviour before this option existed)."}
    )
    initializer_range: float = field(default=0.02, metadata={"help": "Std of embedding initialisation."})
    initializer_gain: float = field(
        default=1.0, metadata={"help": "Multiplies every random initialisation (Glorot gain, embedding std)."}
    )
    matching_similarity: str = field(
        default="cosine", metadata={"help": "Matcher scores: 'cosine' (default) or 'dot' (the paper)."}
    )
    matching_temperature: float = field(default=0.1, metadata={"help": "Matcher scores are divided by this."})
    cp_matching_similarity: str = field(
        default="cosine", metadata={"help": "CP's in-batch matcher: 'cosine' or 'dot'.", "choices": ["cosine", "dot"]}
    )
    cp_matching_temperature: float = field(
        default=1.0, metadata={"help": "CP's matcher scores are divided by this (CL4SRec: 1.0; see docs/pretraining.md)."}
    )
    projection_head: bool = field(default=False, metadata={"help": "MLP between the user embedding and BSM/CP."})
    uniformity_loss_weight: float = field(
        default=1.0, metadata={"help": "Weight of the uniformity loss on the batch's user embeddings (0 = off)."}
    )
    recipe: str | None = field(
        default=None,
        metadata={"help": "A published recipe: 'paper' (UserBERT as published: dot matchers, no uniformity loss, "
                  "medium-hard negatives, masked MBP query, Adam, ...), 'ptum_paper' or 'cp_paper'. Options given "
                  "explicitly override it (recorded); see userbert_hf/pretraining/recipes.py and docs/pretraining.md.",
                  "choices": ["paper", "ptum_paper", "cp_paper"]},
    )
    behavior_type: str | None = field(
        default=None, metadata={"help": "'plm': behaviour texts read by a pre-trained language model "
                                        "(--plm_name_or_path; see docs/plm.md); default: the preset's.",
                                "choices": ["plm"]},
    )
    plm_name_or_path: str | None = field(
        default=None, metadata={"help": "The language model (folder or Hub id of a transformers / "
                                        "sentence-transformers encoder) of --behavior_type plm."},
    )
    plm_trainable_layers: int = field(
        default=0, metadata={"help": "Layers of the language model that learn: 0 (frozen, vectors cached), k (top k; "
                                     "the frozen layers' token states cached), -1 (all)."},
    )
    plm_cache_dir: str | None = field(
        default=None, metadata={"help": "Where frozen language-model vectors and token states are cached (default: "
                                        "$USERBERT_CACHE or "
                                        "~/.cache/userbert_hf/plm)."},
    )

    def __post_init__(self):
        if self.behavior_type == "plm" and not self.plm_name_or_path and self.model_name_or_path is None:
            raise ValueError("--behavior_type plm needs --plm_name_or_path (a folder or Hub id of the language model)")
        if self.objective == "cp" and self.mbp_query == "previous":
            raise ValueError("--mbp_query previous does not go with --objective cp: CP's first view would lose its "
                             "[MASK] tokens (use --mbp_query auto or masked)")
        # Build the config once with placeholder vocabulary sizes: every invalid size, weight or choice is
        # reported now, naming the option, not after the data has been loaded.
        if self.model_name_or_path is None:
            try:
                build_config(self, PretrainingDataArguments(), None, None)
            except Exception as err:  # huggingface_hub's strict dataclasses wrap the ValueError
                cause = err.__cause__ if isinstance(err.__cause__, ValueError) else err
                raise ValueError(str(cause).replace("UserBertConfig: ", "").replace("UserBertConfig.", "--")) from None


@dataclass
class PretrainingArguments(UserBertTrainingArguments):
    """Training arguments with defaults for the bundled-data job (a few minutes on 2 CPU cores)."""

    output_dir: str = field(default="outputs/userbert-pretrained", metadata={"help": "Where the model is written."})
    max_steps: int = field(
        default=1000, metadata={"help": "Optimizer steps: the upper bound when early stopping is on (the default)."}
    )
    early_stopping_patience: int | None = field(
        default=3,
        metadata={"help": "Stop when the held-out metric (--metric_for_best_model, default knn_recall_at_20: the k-NN "
                  "probe of the held-out users' embeddings) has not improved for N evaluations, and keep the best "
                  "checkpoint (checkpoints then follow the evaluations); 0 (or no held-out users, or --eval_strategy no) = "
                  "train for --max_steps."},
    )
    negative_sampling: str = field(
        default="random",
        metadata={"help": "Negative sampling: 'random' (this job's default: on the bundled data it fine-tuned better "
                  "than the paper's sampler, see docs/pretraining.md), 'medium_hard' (the paper), 'hardest', or a "
                  "registered sampler.", "choices": SAMPLERS},  # the live registry of userbert_hf.pretraining.samplers
    )
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Users per batch (paper: 32)."})
    learning_rate: float = field(
        default=1e-3, metadata={"help": "Adam(W) learning rate (paper: 1e-5 on 63M behaviours; higher for small data)."}
    )
    logging_steps: float = field(default=10, metadata={"help": "Log every N steps."})
    save_steps: float = field(default=100, metadata={"help": "Checkpoint every N steps."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Checkpoints kept."})
    resume_from_checkpoint: str | None = field(
        default=None,
        metadata={"help": "Resume from this checkpoint folder, or True / last: from the last complete checkpoint of "
                          "--output_dir (incomplete newer ones skipped)."},
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Write into a non-empty --output_dir not written by `userbert pretrain` (refused otherwise); "
                          "in a folder of an earlier run, start over instead of resuming from its checkpoints."},
    )
    eval_strategy: str = field(default="steps", metadata={"help": "Held-out evaluation: 'steps', 'epoch' or 'no'."})
    eval_steps: float | None = field(default=50, metadata={"help": "Evaluate the held-out users every N steps."})

    def __post_init__(self):
        validate_patience(self.early_stopping_patience)
        super().__post_init__()


EXAMPLES = (
    "userbert pretrain                                    # NRMS-style model on the bundled MovieLens",
    "userbert pretrain --data events.csv --preset bert4rec --output_dir outputs/bert4rec",
    "userbert pretrain --output_dir outputs/run --resume_from_checkpoint last   # after a crash",
    "torchrun --nproc_per_node 2 examples/run_pretraining.py --use_cpu",
)


def build_parser():
    from ..cli import JobArgumentParser

    return JobArgumentParser(
        (PretrainingDataArguments, PretrainingModelArguments, PretrainingArguments), "pretrain",
        "Pre-train a user model on behaviour logs with UserBERT (masked behaviour prediction + behaviour sequence "
        "matching; random or the paper's medium-hard negatives), PTUM or CP, and write a Hub-ready folder. A non-empty --output_dir "
        "is refused unless an earlier run of this job wrote it (then its last complete checkpoint is resumed) or "
        "--overwrite_output_dir is passed.",
        EXAMPLES,
    )


def parse_args(argv: list[str] | None = None, parser=None):
    """The job's three argument dataclasses; with ``--recipe`` its options are applied first (see
    :func:`userbert_hf.pretraining.recipes.parse_with_recipe`)."""
    from .recipes import parse_with_recipe

    return parse_with_recipe(parser or build_parser(), list(sys.argv[1:] if argv is None else argv))


def build_config(model_args: PretrainingModelArguments, data_args, vocabulary, tokenizer) -> UserBertConfig:
    overrides = {
        k: v
        for k, v in dict(
            hidden_size=model_args.hidden_size,
            word_embedding_size=model_args.hidden_size,
            attention_query_size=model_args.attention_query_size,
            num_attention_heads=model_args.num_attention_heads,
            intermediate_size=4 * model_args.hidden_size if model_args.hidden_size else None,
            attention_probs_dropout_prob=model_args.attention_probs_dropout_prob,
        ).items()
        if v is not None
    }
    preset = UserBertConfig.from_preset(model_args.preset)
    if getattr(model_args, "behavior_type", None) == "plm":  # the preset's user model over a language model
        from ..plm_encoder import plm_config_fields

        overrides.update(plm_config_fields(model_args.plm_name_or_path, model_args.plm_trainable_layers))
        preset = UserBertConfig.from_preset(model_args.preset, behavior_type="text")
    mbp_query = model_args.mbp_query
    if mbp_query == "auto":
        uses_mbp_query = model_args.objective in OBJECTIVES and OBJECTIVES[model_args.objective].uses_mbp_query
        mbp_query = "previous" if preset.is_left_to_right and uses_mbp_query else "masked"
    if vocabulary is not None and preset.behavior_type == "text" and not vocabulary.has_text:
        raise ValueError(
            f"preset {model_args.preset!r} encodes behaviour texts but {data_args.data} has none; "
            "name a text column of an event log with --text_column (e.g. title), or use an ID preset (gru4rec, bert4rec)"
        )
    return UserBertConfig.from_preset(
        model_args.preset,
        behavior_vocab_size=len(vocabulary) if vocabulary is not None else 2,
        word_vocab_size=len(tokenizer) if tokenizer is not None else 2,
        max_behaviors=data_args.max_behaviors,
        pretraining_objective=model_args.objective,
        mbp_loss_weight=model_args.mbp_loss_weight,
        mbp_query=mbp_query,
        bsm_loss_weight=model_args.bsm_loss_weight,
        next_behavior_loss_weight=model_args.next_behavior_loss_weight,
        dropout=model_args.dropout,
        initializer_range=model_args.initializer_range,
        initializer_gain=model_args.initializer_gain,
        matching_similarity=model_args.matching_similarity,
        matching_temperature=model_args.matching_temperature,
        cp_matching_similarity=model_args.cp_matching_similarity,
        cp_matching_temperature=model_args.cp_matching_temperature,
        projection_head=model_args.projection_head,
        uniformity_loss_weight=model_args.uniformity_loss_weight,
        recipe=model_args.recipe,
        **overrides,
    )


def run_pretraining(data_args, model_args, training_args) -> dict:
    """Pre-train and save; returns the final metrics."""
    # 0. The output folder: refuse one this job did not write (nothing is loaded or written before this), or
    #    resume from its last complete checkpoint.
    resume_from = start_job(
        training_args, "pretrain", expect_sampler_state=OBJECTIVES[model_args.objective].uses_sampler,
        fingerprint=run_fingerprint(data_args.data, data_args, model_args, training_args),
    )

    # 1. Load the behaviour logs (one row per user, behaviours in time order). Continuing from a saved model
    #    reuses its vocabulary and tokenizer so ids map the same way.
    tokenizer = None
    if model_args.model_name_or_path:
        config = UserBertConfig.from_pretrained(model_args.model_name_or_path)
        vocabulary, tokenizer = load_user_model_assets(model_args.model_name_or_path, config)
        data = load_behavior_data(
            data_args.data, max_behaviors=data_args.max_behaviors, vocabulary=vocabulary, strict=data_args.strict_data,
            verbose=False, **column_options(data_args),  # the summary is logged once (INFO) on the main process
        )
    elif _is_user_shard_folder(data_args.data):  # Parquet user shards at scale, memory-mapped
        data = load_user_shards(data_args.data, data_args.data, max_behaviors=data_args.max_behaviors)
        vocabulary = data.vocabulary
    else:
        data = load_behavior_data(
            data_args.data, max_behaviors=data_args.max_behaviors, strict=data_args.strict_data, verbose=False,
            **column_options(data_args),
        )
        vocabulary = data.vocabulary

    # 2. Build the word tokenizer for text behaviours (when pre-training from scratch), or read the language
    #    model's own.
    if not model_args.model_name_or_path and model_args.behavior_type == "plm":
        from ..plm_encoder import load_plm_tokenizer

        tokenizer = load_plm_tokenizer(model_args.plm_name_or_path)
    elif not model_args.model_name_or_path and PRESETS[model_args.preset.lower()].get("behavior_type") == "text":
        if vocabulary.has_text:
            tokenizer = build_word_tokenizer(
                vocabulary.texts, min_frequency=data_args.min_word_frequency, max_words=UserBertConfig().max_words
            )

    # 3. Build the user model and its pre-training heads.
    if model_args.model_name_or_path:
        model = UserBertForPreTraining.from_pretrained(model_args.model_name_or_path, pretraining_objective=model_args.objective)
    else:
        model = UserBertForPreTraining(build_config(model_args, data_args, vocabulary, tokenizer))
        if model.config.behavior_type == "plm":
            from ..plm_encoder import load_plm_weights

            load_plm_weights(model, model_args.plm_name_or_path)
    # What the model reads, for fine-tuning to tell a warm start on its own data: the export's record, kept when
    # pre-training continues on the data the model was pre-trained on, dropped when it continues on other data.
    export_info = getattr(data, "export_info", None)
    if model_args.model_name_or_path and getattr(model.config, "pretraining_data", None) != export_info:
        export_info = None
    model.config.pretraining_data = export_info
    catalog = build_catalog(vocabulary, model.config, tokenizer)
    if model.config.behavior_type == "plm":  # frozen (lower) PLM layers: each text encoded once, then cached
        from ..plm_cache import attach_plm_cache

        attach_plm_cache(model, catalog, model_args.plm_cache_dir, show_progress_bar=training_args.should_log)
    logger.info("User model: %s parameters, %s", f"{model.num_parameters():,}", model.config.to_diff_dict())

    # 4. Pre-train with --negative_sampling (random by default). The vocabulary, tokenizer and model code go into the
    #    output folder first, so pushes made during training (push_to_hub with hub_strategy="every_save") are
    #    loadable too.
    check_some_task_can_run(data.users, data_args.data)
    train_users, eval_users = split_held_out_users(data.users, data_args.eval_fraction, training_args.seed)
    if eval_users is None and training_args.eval_strategy != "no":
        training_args.eval_strategy = "no"  # nothing to evaluate on (and no early stopping: --max_steps steps)
    # Early stopping on the held-out k-NN probe: it measures what fine-tuning consumes (whether the embeddings
    # place users with similar interests together) for every objective, and follows fine-tuned AUC more closely
    # than the held-out task accuracy does (docs/performance.md).
    callbacks = configure_early_stopping(training_args, training_args.early_stopping_patience, "knn_recall_at_20")
    trainer = UserBertTrainer(
        model=model, args=training_args, train_dataset=train_users, eval_dataset=eval_users, catalog=catalog,
        callbacks=callbacks,
    )
    save_loading_files(trainer, model, vocabulary, tokenizer, config=model.config)
    started = time.time()
    trainer.train(resume_from_checkpoint=resume_from)
    elapsed = time.time() - started
    evaluated_steps = [e["step"] for e in trainer.state.log_history if "eval_mbp_loss" in e]
    best_loaded = training_args.load_best_model_at_end and trainer.state.best_model_checkpoint is not None
    if trainer.evaluator is not None and (
        best_loaded or not evaluated_steps or evaluated_steps[-1] != trainer.state.global_step
    ):
        trainer.evaluate()  # held-out figures of the final model (the best one with early stopping)

    # 5. Save a Hub-ready folder: config + safetensors + model code, vocabulary, tokenizer, model card.
    metrics = final_task_metrics(trainer.state.log_history)
    metrics["train_runtime_seconds"] = round(elapsed, 1)
    dataset_name = source_dataset_name(data_args.data, getattr(data.summary, "path", None))
    settings = pretraining_settings(data_args, model_args, training_args, model.config, data, vocabulary, eval_users)
    settings.update(
        early_stopping_patience=training_args.early_stopping_patience, steps_trained=trainer.state.global_step,
        best_step=int(trainer.state.best_model_checkpoint.rsplit("-", 1)[1]) if best_loaded else None,
    )
    if model_args.objective != "cp":
        settings.update(behavior_pool_fraction=training_args.behavior_pool_fraction,
                        exclude_own_behaviors=training_args.exclude_own_behaviors,
                        hard_negative_fraction=training_args.hard_negative_fraction)
    # every recipe option and the recipe's name first; the values above (what ran) win. Sampler and task
    # options that the objective does not use are left out (a CP run draws no behaviour pool).
    unused = set() if model_args.objective == "userbert" else set(_UNUSED_BY_OBJECTIVE.get(model_args.objective, ()))
    recorded = {k: v for k, v in recipe_settings(model_args, training_args).items() if k not in unused}
    settings = {**recorded, **settings}
    data.summary.path = portable_path(data.summary.path)  # recorded and shown without the local layout
    card = dict(
        title=f"UserBERT {model_args.preset} user model pre-trained on {dataset_name}",
        summary=(
            f"A {model_args.preset} user model pre-trained with the `{model_args.objective}` objective on "
            f"{len(data.users):,} users and {len(vocabulary) - 1:,} distinct behaviours."
        ),
        dataset_name=dataset_name,
        data_description=f"`{settings['data']}`, loaded with `userbert_hf.data`:\n\n```\n{data.summary}\n```",
        metrics={k: v for k, v in metrics.items() if k != "train_runtime_seconds"},
        task_type="feature-extraction",
        task_name="User model pre-training",
        model_id=training_args.hub_model_id or training_args.output_dir,
        data=str(data_args.data),
        example_behaviors=example_histories(vocabulary),
    )
    results = {"metrics": metrics, "settings": settings, "data_summary": data.summary.to_dict()}
    check_finite_run(model, metrics, f"userbert pretrain {training_args.output_dir}")
    finish_job(trainer, model, vocabulary, tokenizer, results, card, "Saved the pre-trained user model", metrics)
    return metrics


# Recipe options an objective never reads (not recorded for its runs: they did not run).
_SEQUENCE_OPTIONS = ("sequence_pool_size", "sequence_pool_interval", "num_sequence_negatives", "bsm_loss_weight",
                     "bsm_positive", "bsm_min_behaviors", "bsm_gap")
_UNUSED_BY_OBJECTIVE = {
    "ptum": _SEQUENCE_OPTIONS,
    "cp": _SEQUENCE_OPTIONS + ("behavior_pool_size", "num_behavior_negatives", "mask_ratio", "mbp_loss_weight",
                               "mbp_query", "behavior_pool_fraction", "exclude_own_behaviors", "hard_negative_fraction"),
}


def pretraining_settings(data_args, model_args, training_args, config, data, vocabulary, eval_users) -> dict:
    """The settings a pre-training run records in ``training_results.json`` and its card: what ran (the sampler
    the objective used, the resolved MBP query, CP's matcher), the data by name and content hash (no local path),
    and the budget."""
    objective = model_args.objective
    sampler = {"ptum": "random", "cp": "in_batch"}.get(objective, training_args.negative_sampling)
    settings = {
        **data_record(data_args.data, getattr(data.summary, "path", None)),
        "users": len(data.users), "behaviours": len(vocabulary) - 1,
        "preset": model_args.preset, "objective": objective, "recipe": getattr(config, "recipe", None),
        "negative_sampling": sampler, "pretraining_data": config.pretraining_data,
    }
    if objective != "cp":
        settings.update(
            behavior_pool_size=training_args.behavior_pool_size, num_behavior_negatives=training_args.num_behavior_negatives,
            mask_ratio=training_args.mask_ratio, mbp_loss_weight=config.mbp_loss_weight, mbp_query=config.mbp_query,
        )
    if objective == "userbert":
        settings.update(
            sequence_pool_size=training_args.sequence_pool_size,
            sequence_pool_interval=training_args.sequence_pool_interval,
            num_sequence_negatives=training_args.num_sequence_negatives, bsm_loss_weight=config.bsm_loss_weight,
            bsm_positive=training_args.bsm_positive, bsm_min_behaviors=training_args.bsm_min_behaviors,
            bsm_gap=training_args.bsm_gap,
        )
    if objective == "cp":
        settings.update(cp_matching_similarity=config.cp_matching_similarity,
                        cp_matching_temperature=config.cp_matching_temperature)
    settings.update(
        matching_similarity=config.matching_similarity, matching_temperature=config.matching_temperature,
        uniformity_loss_weight=config.uniformity_loss_weight, projection_head=config.projection_head,
        dropout=config.dropout, hidden_size=config.hidden_size, max_behaviors=config.max_behaviors,
        initializer_gain=config.initializer_gain,
        held_out_users=len(eval_users) if eval_users is not None else 0,
        max_steps=training_args.max_steps, num_train_epochs=training_args.num_train_epochs,
        batch_size=training_args.per_device_train_batch_size * training_args.world_size,
        gradient_accumulation_steps=training_args.gradient_accumulation_steps,
        learning_rate=training_args.learning_rate, seed=training_args.seed,
    )
    return settings


def _is_user_shard_folder(path: str) -> bool:
    return os.path.isdir(path) and os.path.exists(os.path.join(path, "behavior_vocab.json")) and any(
        name.endswith(".parquet") for name in os.listdir(path)
    )


def check_some_task_can_run(users, source) -> None:
    """Every pre-training task (MBP, BSM, PTUM's next behaviours, CP's augmented views) needs a user with at least
    two behaviours: data without one would "train" on nothing and report zero losses."""
    import pyarrow.compute as pc

    lengths = pc.list_value_length(users.data.column("behavior_ids"))
    longest = pc.max(lengths).as_py() if len(lengths) else 0
    if not longest or longest < 2:
        raise ValueError(f"{source}: no pre-training task can run on this data: every one of its {len(users)} users has "
                         f"at most {longest or 0} behaviour (at least one user with two or more is needed)")


def split_held_out_users(users, eval_fraction: float | None, seed: int):
    """``(train_users, held_out_users)``: a seeded share of users held out for pre-training evaluation (``None``
    when ``eval_fraction`` is 0, or by default with fewer than 100 users)."""
    import numpy as np

    if eval_fraction is None:
        eval_fraction = 0.1 if len(users) >= 100 else 0.0
    if not 0 <= eval_fraction < 1:
        raise ValueError(f"--eval_fraction must be in [0, 1), got {eval_fraction}")
    n_eval = int(round(len(users) * eval_fraction))
    if eval_fraction > 0 and not 0 < n_eval < len(users):
        raise ValueError(f"--eval_fraction {eval_fraction} of {len(users)} users holds out {n_eval}: choose a share that "
                         "leaves at least one held-out and one training user, or 0 for no held-out evaluation")
    if n_eval == 0:
        return users, None
    order = np.random.default_rng(seed).permutation(len(users))
    held_out = np.sort(order[:n_eval]).tolist()
    kept = np.sort(order[n_eval:]).tolist()
    return users.select(kept), users.select(held_out)


def final_task_metrics(log_history: list[dict]) -> dict:
    """The last logged value of each task loss / accuracy and of each held-out (``eval_*``) metric."""
    metrics = {}
    for entry in log_history:
        for key, value in entry.items():
            if key.endswith("_loss") or key.endswith("_accuracy") or key == "loss" or key.startswith("eval_"):
                metrics[key] = value
    return metrics


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    data_args, model_args, training_args = parse_args(argv, parser)
    try:
        return run_pretraining(data_args, model_args, training_args)
    except OutputDirError as err:
        parser.error(str(err))
    finally:
        release_output_dir(training_args)


__all__ = ["PretrainingDataArguments", "PretrainingModelArguments", "PretrainingArguments", "run_pretraining", "main"]
