"""Regenerate the model cards of released UserBERT checkpoints from what their runs recorded.

    python model_cards/generate_cards.py outputs/userbert-pretrained outputs/userbert-ctr
    python model_cards/generate_cards.py outputs/userbert-pretrained --namespace org --update_readme

For each model folder (written by ``userbert pretrain`` or ``userbert finetune``) the script reads
``config.json`` and ``training_results.json`` and writes ``model_cards/<folder name>.md`` with
``userbert_hf.model_card.model_card_from_results`` (which calls ``build_model_card``): the metrics in the card's
``model-index`` are the numbers of ``training_results.json``, never typed by hand. ``TEMPLATE.md`` documents the
sections. ``--update_readme`` also replaces the folder's ``README.md`` (the file the Hub shows) with the new card.
The code is the package's (``userbert_hf.experiments.cards``); this script only calls it.
"""

from __future__ import annotations

import sys
from pathlib import Path

from userbert_hf.experiments.cards import GENERATED_NOTICE, generate_card, write_cards  # noqa: F401
from userbert_hf.experiments.cards import main as _main

CARDS_DIR = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> list[Path]:
    return _main(argv, default_output_dir=CARDS_DIR)


if __name__ == "__main__":
    main(sys.argv[1:])
