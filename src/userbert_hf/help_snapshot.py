"""``userbert <command> --help`` without importing torch or transformers.

A job's help lists every ``TrainingArguments`` option, and building it means importing transformers (seconds of
CPU). So the package ships the help texts, ``cli_help.json``, written by the live parsers, and prints one when it is
current: the installed transformers version and the source files that define the job's argument dataclasses
(their classes, ``cli.py`` and ``configuration_userbert.py``, where the presets come from) are those it was
written from (SHA-1 of each file). Otherwise the live parser answers, as it always did: a new option never goes
missing from ``--help``, it only makes ``--help`` slower until the snapshot is rewritten with one command:

    python -m userbert_hf.help_snapshot

``tests/test_cli_arguments.py`` fails while the shipped snapshot is stale. Texts are formatted for 100 columns.

Example:

```python
>>> from userbert_hf.help_snapshot import snapshot_help
>>> snapshot_help("pretrain").startswith("usage: userbert pretrain")  # doctest: +SKIP
True
```
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from importlib import metadata
from pathlib import Path

SNAPSHOT = Path(__file__).with_name("cli_help.json")
PACKAGE_DIR = Path(__file__).resolve().parent
JOBS = {"pretrain": "userbert_hf.pretraining.job", "finetune": "userbert_hf.finetuning.job"}  # with build_parser()
COMMANDS = tuple(JOBS)
WIDTH = 100
ALWAYS = ("cli.py", "help_snapshot.py", "configuration_userbert.py")


def _sha1(relative: str) -> str | None:
    path = PACKAGE_DIR / relative
    return hashlib.sha1(path.read_bytes()).hexdigest() if path.is_file() else None


def _transformers_version() -> str | None:
    try:
        return metadata.version("transformers")
    except metadata.PackageNotFoundError:
        return None


def live_help(command: str) -> tuple[str, list[str]]:
    """The live parser's help of ``command`` at :data:`WIDTH` columns, and the package files it depends on."""
    import importlib

    module = importlib.import_module(JOBS[command])
    job = module.build_parser()
    columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(WIDTH)
    try:
        text = job.parser.format_help()
    finally:
        if columns is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = columns
    files = set(ALWAYS) | {Path(module.__file__).resolve().relative_to(PACKAGE_DIR).as_posix()}
    for dtype in job.dataclass_types:
        for klass in dtype.__mro__:
            defining = sys.modules.get(klass.__module__)
            if defining is not None and klass.__module__.startswith(__package__ + "."):
                files.add(Path(defining.__file__).resolve().relative_to(PACKAGE_DIR).as_posix())
    return text, sorted(files)


def build_snapshot() -> dict:
    """The snapshot of every command of :data:`COMMANDS`, from the live parsers."""
    commands = {}
    for command in COMMANDS:
        text, files = live_help(command)
        commands[command] = {"sources": {f: _sha1(f) for f in files}, "help": text}
    return {"transformers": _transformers_version(), "width": WIDTH, "commands": commands}


def snapshot_help(command: str) -> str | None:
    """The shipped help of ``command`` if it is current (see the module docstring), else ``None``."""
    try:
        snapshot = json.loads(SNAPSHOT.read_text())
        entry = snapshot["commands"][command]
    except (OSError, ValueError, KeyError):
        return None
    if snapshot.get("transformers") != _transformers_version():
        return None
    if any(_sha1(relative) != digest for relative, digest in entry["sources"].items()):
        return None
    return entry["help"]


def main() -> None:
    SNAPSHOT.write_text(json.dumps(build_snapshot(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {SNAPSHOT}")


if __name__ == "__main__":
    main()
