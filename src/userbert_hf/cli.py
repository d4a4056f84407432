"""The ``userbert`` console command: ``userbert pretrain|finetune|embed [--option value ...]``."""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "pretrain": ("userbert_hf.pretraining_job", "Pre-train a user model (UserBERT, PTUM or CP)."),
    "finetune": ("userbert_hf.finetuning_job", "Fine-tune a user model on a downstream task."),
    "embed": ("userbert_hf.embedding_export", "Embed every user of a dataset and save the vectors."),
    "experiment": ("userbert_hf.experiments.runner", "Run a pre-train/fine-tune grid from a YAML config, with a report."),
}


def usage() -> str:
    lines = ["usage: userbert <command> [--option value ...]", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run `userbert <command> --help` for the options of a command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"userbert: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[command][0])
    module.main(rest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
