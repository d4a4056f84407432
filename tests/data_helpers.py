"""Helpers shared by the data tests (``tests/data/``)."""

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from userbert_hf.data import BehaviorData, bundled_movielens_path, load_default_dataset

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
MIND_FIXTURE = FIXTURES / "mind"
BEAUTY_PATH = (REPO_ROOT / ".." / "shared" / "data" / "amazon-beauty" / "Beauty.txt").resolve()


@pytest.fixture(scope="module")
def movielens_full():
    return load_default_dataset(max_behaviors=None, verbose=False)


@pytest.fixture(scope="module")
def ratings_frame():
    frame = pd.read_csv(bundled_movielens_path() / "ratings.csv")
    frame["file_order"] = np.arange(len(frame))
    # Stable time order within a user: ties keep file order.
    return frame.sort_values(["userId", "timestamp", "file_order"]).reset_index(drop=True)


def raw_sequence(data: BehaviorData, row: dict) -> list[str]:
    return [data.vocabulary.raw_id(i) for i in row["behavior_ids"]]


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def by_user(data: BehaviorData) -> dict[str, list[str]]:
    return {row["user_id"]: raw_sequence(data, row) for row in data.users}


EVENTS = [  # unsorted, a tie at t=20 (file order must win), a duplicate, texts with comma/quotes/missing
    {"user_id": "u2", "item_id": 30, "timestamp": 20, "title": 'Say "hi", then go'},
    {"user_id": "u1", "item_id": 10, "timestamp": 30, "title": "Ten"},
    {"user_id": "u1", "item_id": 11, "timestamp": 10, "title": ""},
    {"user_id": "u2", "item_id": 31, "timestamp": 20, "title": "Thirty-one"},
    {"user_id": "u1", "item_id": 10, "timestamp": 30, "title": "Ten again"},
    {"user_id": "u3", "item_id": 11, "timestamp": 1_700_000_000, "title": "Eleven"},
    {"user_id": "u2", "item_id": 10, "timestamp": 5, "title": "Ten, later text"},
]


def write_events(directory: Path, fmt: str) -> Path:
    path = directory / f"events.{fmt}"
    if fmt == "csv":
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(EVENTS[0]))
            writer.writeheader()
            writer.writerows(EVENTS)
    elif fmt == "tsv":  # as logs are written: no quoting
        lines = ["\t".join(EVENTS[0])] + ["\t".join(str(v) for v in event.values()) for event in EVENTS]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(e) + "\n" for e in EVENTS))
    elif fmt == "json":
        path.write_text(json.dumps(EVENTS, indent=1))
    elif fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(EVENTS), path)
    return path
