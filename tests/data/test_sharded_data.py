"""User rows from Parquet shards, memory-mapped, with clear errors for malformed shards."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from userbert_hf.data import DataFormatError, load_default_dataset
from userbert_hf.sharded_data import load_user_shards, write_user_shards


@pytest.fixture(scope="module")
def movielens():
    return load_default_dataset(verbose=False)


def test_shards_round_trip_memory_mapped(movielens, tmp_path):
    paths = write_user_shards(movielens.users, tmp_path / "shards", rows_per_shard=200)
    assert len(paths) == 4  # 610 users in shards of 200
    movielens.vocabulary.save(tmp_path / "shards")
    data = load_user_shards(tmp_path / "shards", tmp_path / "shards" / "behavior_vocab.json", cache_dir=str(tmp_path / "cache"))
    assert len(data.users) == 610
    assert data.users.cache_files, "the users dataset should be backed by (memory-mapped) Arrow files"
    for i in (0, 123, 609):
        assert data.users[i]["behavior_ids"] == movielens.users[i]["behavior_ids"]
        assert data.users[i]["timestamps"] == movielens.users[i]["timestamps"]
        assert data.users[i]["user_id"] == movielens.users[i]["user_id"]


def _write(path, ids, times):
    table = pa.table({"user_id": ["a"] * len(ids), "behavior_ids": ids, "timestamps": times})
    pq.write_table(table, path)


def test_malformed_shards_are_named(movielens, tmp_path):
    pq.write_table(pa.table({"user_id": ["a"], "items": [[1]]}), tmp_path / "bad.parquet")
    with pytest.raises(DataFormatError, match=r"bad.parquet: missing column\(s\) \['behavior_ids', 'timestamps'\]"):
        load_user_shards(str(tmp_path / "bad.parquet"), movielens.vocabulary, cache_dir=str(tmp_path / "c1"))
    _write(tmp_path / "ids.parquet", [[1, 2], [3, 99999]], [[1, 2], [3, 4]])
    with pytest.raises(DataFormatError, match="behaviour ids must be in"):
        load_user_shards(str(tmp_path / "ids.parquet"), movielens.vocabulary, cache_dir=str(tmp_path / "c2"))
    _write(tmp_path / "len.parquet", [[1, 2], [3]], [[1, 2], [3, 4]])
    with pytest.raises(DataFormatError, match="user row 1 has different numbers"):
        load_user_shards(str(tmp_path / "len.parquet"), movielens.vocabulary, cache_dir=str(tmp_path / "c3"))
    with pytest.raises(FileNotFoundError):
        load_user_shards(str(tmp_path / "nothing-*.parquet"), movielens.vocabulary)


def test_pretraining_job_reads_a_shard_folder(movielens, tmp_path):
    from userbert_hf.pretraining.job import main

    write_user_shards(movielens.users, tmp_path / "shards", rows_per_shard=300)
    movielens.vocabulary.save(tmp_path / "shards")
    metrics = main([
        "--data", str(tmp_path / "shards"), "--preset", "gru4rec", "--hidden_size", "16", "--max_steps", "3",
        "--behavior_pool_size", "100", "--sequence_pool_size", "20", "--output_dir", str(tmp_path / "out"),
        "--use_cpu", "--disable_tqdm", "true", "--logging_steps", "1",
    ])
    assert metrics["mbp_loss"] > 0 and metrics["bsm_loss"] > 0
    assert (tmp_path / "out" / "behavior_vocab.json").exists() and (tmp_path / "out" / "model.safetensors").exists()
