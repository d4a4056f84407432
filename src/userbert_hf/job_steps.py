"""The steps the pre-training and fine-tuning jobs share: how a job starts (logging, its output folder, the seed)
and how it ends (weights, processor, results, model card, push). Each job keeps only what is its own: its data,
model, trainer, settings and card text.

Example:

```python
>>> resume_from = start_job(training_args, "pretrain", expect_sampler_state=True)   # before anything is loaded
>>> trainer = UserBertTrainer(...)
>>> save_loading_files(trainer, model, vocabulary, tokenizer)   # pushes made while training load too
>>> trainer.train(resume_from_checkpoint=resume_from)
>>> finish_job(trainer, model, vocabulary, tokenizer, results, card_fields, "Saved the model")
```
"""

from __future__ import annotations

import json
import logging
import math
import os

from transformers import set_seed
from transformers.dynamic_module_utils import custom_object_save

from .model_card import build_model_card, save_run_results
from .output_dir import checkpoint_mark_callback, claim_output_dir, prepare_output_dir, push_output_dir
from .processing_userbert import save_processor


def start_job(training_args, job: str, *, expect_sampler_state: bool = False, export_dir: str | None = None,
              fingerprint: str | None = None):
    """Set up logging, claim the output folder and seed everything; returns the checkpoint to resume from.

    Nothing is loaded or written before the folder is claimed: a folder this job did not write is refused
    (:func:`claim_output_dir`), one an earlier run of it wrote is resumed from its last complete checkpoint. With
    ``export_dir`` (``userbert finetune --export_pretraining_data``) that folder is prepared instead and nothing is
    resumed.
    """
    logging.basicConfig(level=logging.INFO if training_args.should_log else logging.WARNING)
    if export_dir:
        prepare_output_dir(export_dir, "export", overwrite=training_args.overwrite_output_dir)
        resume_from = None
    else:
        resume_from = claim_output_dir(training_args, job, expect_sampler_state=expect_sampler_state,
                                       fingerprint=fingerprint)
    if training_args.device.type == "cpu":
        training_args.dataloader_pin_memory = False  # pinning needs an accelerator (torch warns on CPU)
    set_seed(training_args.seed)
    return resume_from


def save_loading_files(trainer, model, vocabulary, tokenizer, config=None) -> None:
    """The processor (vocabulary, tokenizer) and the model code, written into the output folder before training
    so that checkpoint pushes made while training (``hub_strategy="every_save"``) load too (main process only)."""
    trainer.add_callback(checkpoint_mark_callback(trainer.args))  # each checkpoint carries the job's mark
    if trainer.is_world_process_zero():
        save_processor(trainer.args.output_dir, model.config, vocabulary, tokenizer)
        custom_object_save(model, trainer.args.output_dir, config=config)


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def finish_job(trainer, model, vocabulary, tokenizer, results: dict, card: dict, message: str, shown: dict) -> None:
    """Write the Hub-ready folder: weights, config and code, processor, ``training_results.json`` (``results``, its
    ``settings`` included), the model card (:func:`build_model_card` with ``card``, the run's settings and config),
    print ``message`` with the finite values of ``shown``, and push the folder as written when ``--push_to_hub``."""
    output_dir = trainer.args.output_dir
    trainer.save_model(output_dir)
    if not trainer.is_world_process_zero():
        return
    save_processor(output_dir, model.config, vocabulary, tokenizer)
    save_run_results(output_dir, results)
    card = build_model_card(config=model.config, settings=results["settings"], **card)
    card.save(os.path.join(output_dir, "README.md"))
    print(f"{message} to {output_dir}: {json.dumps({k: v for k, v in shown.items() if _finite(v)})}")
    if trainer.args.push_to_hub:  # the folder as written: our card, results, code, vocabulary, processor
        push_output_dir(trainer, output_dir)


__all__ = ["start_job", "save_loading_files", "finish_job"]
