"""The README's command lines, as written: every ``userbert pretrain`` / ``userbert finetune`` line parses with the
job's own parser and each option lands in the setting of its name; files of the repository a command names exist;
and the defaults and the paper recipe the README describes are the parser's. (Running the jobs themselves is
tested in the jobs' tests, on tiny data.)"""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path

import pytest

from userbert_hf.cli import COMMANDS

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def readme_commands() -> list[list[str]]:
    """Every ``userbert ...`` line of the README's bash blocks (continuations joined, comments dropped)."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.split(r"\s#\s", line)[0].strip()
            if line.startswith("userbert "):
                commands.append(shlex.split(line)[1:])
    return commands


def parse(command: str, argv: list[str]):
    """The job's argument dataclasses for ``userbert <command> ARGV`` (the module the CLI dispatches to)."""
    return importlib.import_module(COMMANDS[command][0]).parse_args(argv)


def test_the_readme_shows_every_command():
    assert {argv[0] for argv in readme_commands()} == set(COMMANDS)


@pytest.mark.parametrize("argv", [a for a in readme_commands() if a[0] in ("pretrain", "finetune")],
                         ids=lambda a: " ".join(a))
def test_job_command_parses_with_each_option_set(argv):
    command, rest = argv[0], argv[1:]
    parsed = parse(command, rest)
    assert len(rest) % 2 == 0, rest  # every option of these lines takes a value
    for option, value in zip(rest[::2], rest[1::2]):
        name = option.removeprefix("--")
        owners = [arguments for arguments in parsed if hasattr(arguments, name)]
        assert owners, f"{option} is no setting of `userbert {command}`"
        assert str(getattr(owners[0], name)) == value, (option, getattr(owners[0], name))


@pytest.mark.parametrize("argv", [a for a in readme_commands() if a[0] in ("experiment", "embed")],
                         ids=lambda a: " ".join(a))
def test_files_a_command_names_exist(argv):
    named = [a for a in argv[1:] if re.search(r"\.(ya?ml|py)$", a)]
    for path in named:
        assert (ROOT / path).is_file(), path
    if argv[0] == "experiment":
        assert named, argv


def test_the_default_job_is_what_the_readme_says():
    """Quick start: NRMS, random negatives, cosine / 0.1 with a uniformity loss, 10% held out and evaluated every
    50 steps, early stopping with patience 3 under an upper bound of 1,000 steps."""
    data, model, training = parse("pretrain", [])
    assert "random negatives, cosine matchers with\ntemperature 0.1 and a uniformity loss" in README
    assert (model.preset, training.negative_sampling) == ("nrms", "random")
    assert (model.matching_similarity, model.matching_temperature, model.uniformity_loss_weight) == ("cosine", 0.1, 1.0)
    assert "evaluates them every 50 steps" in README and training.eval_steps == 50
    assert "not improved for 3\nevaluations" in README and training.early_stopping_patience == 3
    assert "at most `--max_steps` 1,000" in README and training.max_steps == 1000


def test_the_paper_recipe_is_what_the_readme_says():
    """``--recipe paper``: dot-product matchers, no uniformity loss, medium-hard negatives, the masked MBP query,
    the published optimiser (Adam, constant rate, no clipping)."""
    data, model, training = parse("pretrain", ["--recipe", "paper"])
    assert "dot-product matchers, no uniformity loss, medium-hard negatives, the\nmasked MBP query" in README
    assert (model.recipe, model.matching_similarity, model.uniformity_loss_weight) == ("paper", "dot", 0.0)
    assert (training.negative_sampling, model.mbp_query) == ("medium_hard", "masked")
    assert (getattr(training.lr_scheduler_type, "value", training.lr_scheduler_type), training.max_grad_norm) == ("constant", 0.0)
