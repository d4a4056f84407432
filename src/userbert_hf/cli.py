"""The ``userbert`` console command: ``userbert pretrain|finetune|embed [--option value ...]``.

Each command's module is imported only when the command runs, and the jobs import their heavy dependencies
(datasets, the trainer, the data loaders) only once their arguments are valid, so argument errors come back
quickly; ``<command> --help`` prints the help text shipped in ``cli_help.json`` while it is current
(:mod:`userbert_hf.help_snapshot`), without importing torch or transformers. :class:`JobArgumentParser` is the ``HfArgumentParser`` every job uses: ``usage: userbert
<command>``, a description and examples, this package's options grouped before the many ``TrainingArguments``,
and invalid settings reported as a usage line plus a message naming the option, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import math
import os
import sys
import textwrap

COMMANDS = {
    "pretrain": ("userbert_hf.pretraining.job", "Pre-train a user model (UserBERT, PTUM or CP)."),
    "finetune": ("userbert_hf.finetuning.job", "Fine-tune a user model on a downstream task."),
    "embed": ("userbert_hf.embedding_export", "Embed every user of a dataset and save the vectors."),
    "experiment": ("userbert_hf.experiments.runner", "Run a pre-train/fine-tune grid from a YAML config, with a report."),
}


def usage() -> str:
    lines = ["usage: userbert <command> [--option value ...]", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run `userbert <command> --help` for the options of a command."]
    return "\n".join(lines)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown after each option; description and examples printed as written."""


def _own_fields(dataclass_type) -> set[str]:
    """Fields a ``TrainingArguments`` subclass adds (not those it only re-defaults)."""
    from transformers import TrainingArguments

    inherited = {f.name for f in dataclasses.fields(TrainingArguments)}
    return {f.name for f in dataclasses.fields(dataclass_type) if f.name not in inherited}


def _section_title(dataclass_type) -> str:
    doc = (dataclass_type.__doc__ or dataclass_type.__name__).strip().splitlines()[0]
    return doc.rstrip(".")


class JobArgumentParser:
    """The argument parser of a ``userbert <command>`` job (an ``HfArgumentParser`` underneath).

    Args:
        dataclass_types: the job's argument dataclasses; a ``TrainingArguments`` subclass may be among them.
        command: ``"pretrain"``, ``"finetune"`` or ``"embed"`` (for ``usage: userbert <command>``).
        description: what the command does (printed by ``--help``).
        examples: command lines printed at the end of ``--help``.

    Help lists, in order, the options of each of our dataclasses, then the options a ``TrainingArguments``
    subclass adds (pre-training settings, ``--overwrite_output_dir``), then the ``TrainingArguments`` options.
    Any ``ValueError`` raised while building the dataclasses (an invalid setting in a ``__post_init__``, an
    unknown option) exits with status 2 after a usage line and the message.

    Example:

    ```python
    >>> parser = JobArgumentParser((EmbeddingExportArguments,), "embed", "Embed users.", ["userbert embed ..."])
    >>> (args,) = parser.parse(["--model_name_or_path", "outputs/userbert-pretrained"])
    ```
    """

    def __init__(self, dataclass_types, command: str, description: str, examples: list[str] | tuple[str, ...] = ()):
        from transformers import HfArgumentParser, TrainingArguments

        self.dataclass_types = tuple(dataclass_types)
        epilog = "examples:\n" + "\n".join(f"  {line}" for line in examples) if examples else None
        parser = HfArgumentParser(
            self.dataclass_types, prog=f"userbert {command}", usage=f"userbert {command} [--option value ...]",
            description=textwrap.fill(description, 100), epilog=epilog, formatter_class=_HelpFormatter,
        )
        sections: list[tuple[str, set[str]]] = []
        for dtype in self.dataclass_types:
            names = {f.name for f in dataclasses.fields(dtype)}
            if issubclass(dtype, TrainingArguments):
                own = _own_fields(dtype)
                sections.append(("job and pre-training options (beyond transformers.TrainingArguments)", own))
                sections.append(("training (transformers.TrainingArguments, with this job's defaults)", names - own))
            else:
                sections.append((_section_title(dtype), names))
        parser.format_help = lambda: self._format_help(parser, sections)
        self.parser = parser

    @staticmethod
    def _format_help(parser: argparse.ArgumentParser, sections) -> str:
        formatter = parser._get_formatter()
        formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups)
        formatter.add_text(parser.description)
        placed = set()
        for title, names in sections:
            actions = [a for a in parser._actions if a.dest in names]
            placed.update(id(a) for a in actions)
            formatter.start_section(title)
            formatter.add_arguments(actions)
            formatter.end_section()
        rest = [a for a in parser._actions if id(a) not in placed]  # -h/--help
        formatter.start_section("other")
        formatter.add_arguments(rest)
        formatter.end_section()
        formatter.add_text(parser.epilog)
        return formatter.format_help()

    def error(self, message: str):
        """Print the usage line and ``message``, exit with status 2."""
        self.parser.error(message)

    def parse(self, argv: list[str] | None = None) -> tuple:
        """The dataclasses from ``argv`` (or a single ``.json`` file of settings)."""
        argv = list(sys.argv[1:] if argv is None else argv)
        try:
            if len(argv) == 1 and argv[0].endswith(".json"):
                parsed = self.parser.parse_json_file(os.path.abspath(argv[0]))
            else:
                parsed = self.parser.parse_args_into_dataclasses(args=argv)
        except ValueError as err:
            self.parser.error(str(err))
        for args in parsed:  # every number option finite: inf / nan settings give a broken model
            for name, value in vars(args).items():
                if isinstance(value, float) and not math.isfinite(value):
                    self.parser.error(f"--{name} {value}: must be a finite number")
        return parsed


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"userbert: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        return 2
    if rest in (["-h"], ["--help"]):  # the shipped help text when current: no torch/transformers import
        from .help_snapshot import snapshot_help

        text = snapshot_help(command)
        if text is not None:
            print(text, end="")
            return 0
    module = importlib.import_module(COMMANDS[command][0])
    try:
        module.main(rest)
    except Exception as error:  # bad input data is a usage error, as bad options are: exit 2, no traceback
        from .data.summary import DataFormatError, DataNotFoundError

        if not isinstance(error, (DataFormatError, DataNotFoundError)):
            raise
        print(f"usage: userbert {command} [--option value ...]\nuserbert {command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
