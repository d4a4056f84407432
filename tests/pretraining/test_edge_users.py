"""Edge users, end to end: loader -> UserBertObjective -> UserBertTrainer (and the model on its own).

The users (next to ordinary ones) are:

* ``one``: a single behaviour; gets exactly one masked position and sits out BSM (counted);
* ``dup``: one event written four times (same item, same timestamp): the loader keeps one (``duplicate_event``);
* ``same_id``: one item repeated with increasing timestamps;
* ``same_time``: different items, all at one timestamp: no two periods, sits out BSM;
* ``identical`` (added in memory, since the loader deduplicates such rows): one id repeated at one timestamp;
  sits out BSM and its id is never its own MBP negative;
* ``long``: more behaviours than ``max_behaviors``: the loader keeps the most recent N; the model refuses more
  than ``config.max_behaviors`` positions with a clear ``ValueError``;
* ``two``: two behaviours at different times: BSM uses it (A and B one behaviour each) only with
  ``bsm_min_behaviors=1``; with the default 2 it is excluded and counted;
* a user with zero behaviours, at model level: a zero, finite embedding.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from datasets import Dataset

from userbert_hf import UserBertConfig, UserBertForPreTraining, UserBertModel
from userbert_hf.collation import BehaviorCatalog, UserBertPretrainingCollator
from userbert_hf.data import load_event_log
from userbert_hf.pretraining.masking import num_masked
from userbert_hf.pretraining.objectives import ObjectiveSettings, UserBertObjective
from userbert_hf.pretraining.samplers import build_sampler
from userbert_hf.pretraining.trainer import UserBertTrainer, UserBertTrainingArguments

pytestmark = pytest.mark.timeout(120)

MAX_BEHAVIORS = 8
NUM_ITEMS = 30
LONG = 20  # behaviours of the "long" user in the file


# ------------------------------------------------------------------------------------------------- data
def event_rows() -> list[tuple[str, str, int]]:
    rows = [("one", "i1", 100)]
    rows += [("dup", "i2", 200)] * 4
    rows += [("same_id", "i3", 50 + 10 * k) for k in range(5)]
    rows += [("same_time", f"i{4 + k}", 300) for k in range(4)]
    rows += [("long", f"i{k % NUM_ITEMS}", 2000 + 10 * k) for k in range(LONG)]
    rows += [("two", "i8", 20), ("two", "i9", 10)]  # written out of time order
    rng = np.random.default_rng(0)
    for u in range(6):
        for k in range(int(rng.integers(5, 9))):
            rows.append((f"normal{u}", f"i{int(rng.integers(0, NUM_ITEMS))}", 1000 + 100 * u + 10 * k))
    rng.shuffle(rows)  # unsorted file, as real logs are
    # make sure every item exists, so the vocabulary is the same however the rows fall
    rows += [("normal0", f"i{k}", 5000 + k) for k in range(NUM_ITEMS)]
    return rows


@pytest.fixture(scope="module")
def log_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("edge") / "events.csv"
    path.write_text("user_id,item_id,timestamp\n" + "".join(f"{u},{i},{t}\n" for u, i, t in event_rows()))
    return path


@pytest.fixture(scope="module")
def loaded(log_path):
    return load_event_log(log_path, max_behaviors=MAX_BEHAVIORS, verbose=False)


def with_identical_user(data) -> Dataset:
    """The loaded users plus ``identical``: four times the same id at the same timestamp."""
    columns = data.users.select_columns(["user_id", "behavior_ids", "timestamps"]).to_dict()
    columns["user_id"].append("identical")
    columns["behavior_ids"].append([data.vocabulary["i12"]] * 4)
    columns["timestamps"].append([400] * 4)
    return Dataset.from_dict(columns, features=data.users.select_columns(["user_id", "behavior_ids", "timestamps"]).features)


def bsm_eligible(times: list[int], min_behaviors: int, gap: int = 0) -> bool:
    """Independent statement of the rule: some split s with len(A), len(B) >= min_behaviors and a time gap."""
    n = len(times)
    return any(times[s] - times[s - 1] > gap for s in range(max(min_behaviors, 1), n - min_behaviors + 1))


# ---------------------------------------------------------------------------------------------- loader
def test_loader_keeps_edge_users_as_documented(loaded):
    data = loaded
    users = {row["user_id"]: row for row in data.users}
    raw = lambda row: [data.vocabulary.raw_id(i) for i in row["behavior_ids"]]  # noqa: E731
    assert raw(users["one"]) == ["i1"] and users["one"]["timestamps"] == [100]
    # exact duplicate events collapse to one (and are counted)
    assert raw(users["dup"]) == ["i2"] and data.summary.skipped == {"duplicate_event": 3}
    assert raw(users["same_id"]) == ["i3"] * 5 and users["same_id"]["timestamps"] == [50, 60, 70, 80, 90]
    assert users["same_time"]["timestamps"] == [300] * 4
    assert sorted(raw(users["same_time"])) == ["i4", "i5", "i6", "i7"]
    # the most recent max_behaviors, oldest first
    assert users["long"]["timestamps"] == [2000 + 10 * k for k in range(LONG - MAX_BEHAVIORS, LONG)]
    assert raw(users["long"]) == [f"i{k % NUM_ITEMS}" for k in range(LONG - MAX_BEHAVIORS, LONG)]
    assert data.summary.truncated_users == 2  # "long" and normal0 (which holds the catalogue rows)
    assert raw(users["two"]) == ["i9", "i8"] and users["two"]["timestamps"] == [10, 20]  # sorted by time
    assert len(data.vocabulary) == NUM_ITEMS + 1
    assert all(1 <= len(row["behavior_ids"]) <= MAX_BEHAVIORS for row in data.users)

    untruncated = load_event_log(data.summary.path, max_behaviors=None, verbose=False)
    assert len(next(r for r in untruncated.users if r["user_id"] == "long")["behavior_ids"]) == LONG


# --------------------------------------------------------------------------------------- batch builder
def collate_all(users: Dataset) -> dict:
    rows = [dict(row, user_index=i) for i, row in enumerate(users)]
    return UserBertPretrainingCollator(MAX_BEHAVIORS)(rows)


@pytest.mark.parametrize("min_behaviors", [1, 2])
def test_batch_builder_edge_users(loaded, min_behaviors):
    users = with_identical_user(loaded)
    names = users["user_id"]
    row_of = {name: i for i, name in enumerate(names)}
    builder = UserBertObjective(ObjectiveSettings(bsm_min_behaviors=min_behaviors, seed=3), BehaviorCatalog(NUM_ITEMS + 1))
    excluded = [name for name, times in zip(names, users["timestamps"]) if not bsm_eligible(times, min_behaviors)]
    assert {"one", "dup", "same_time", "identical"} <= set(excluded)
    assert ("two" in excluded) == (min_behaviors == 2)
    assert "same_id" not in excluded and "long" not in excluded
    batch = collate_all(users)
    one_behavior_a = 0
    for step in range(4):
        out = builder.prepare(batch, step)
        valid = out.bsm_valid.tolist()
        assert [names[i] for i, ok in enumerate(valid) if not ok] == excluded
        a_lengths = out.attention_mask.sum(1).tolist()
        b_lengths = (out.positive_ids != 0).sum(1).tolist()
        masked = out.masked_positions.sum(1).tolist()
        one_behavior_a += a_lengths.count(1)
        for i, name in enumerate(names):
            # 10% (at least one) of A is masked; an A of one behaviour sits out MBP (it would see only [MASK])
            assert masked[i] == (num_masked(a_lengths[i], builder.settings.mask_ratio) if a_lengths[i] >= 2 else 0)
            assert not (out.masked_positions[i] & ~out.attention_mask[i]).any()  # never padding
            if valid[i]:
                assert a_lengths[i] >= min_behaviors and b_lengths[i] >= min_behaviors
                total = min(len(users[i]["behavior_ids"]), MAX_BEHAVIORS)
                assert a_lengths[i] + b_lengths[i] == total
            else:
                assert b_lengths[i] == 0  # the positive is empty; the whole sequence is the MBP input
        one = row_of["one"]
        assert a_lengths[one] == 1 and masked[one] == 0 and not valid[one]
        two = row_of["two"]
        if min_behaviors == 1:
            assert valid[two] and a_lengths[two] == 1 and b_lengths[two] == 1
            assert out.sequence_ids[two, 0] == loaded.vocabulary["i9"]  # A: the earlier behaviour
            assert out.positive_ids[two, 0] == loaded.vocabulary["i8"]  # B: the later one
            assert out.target_window[two].tolist() == [10, 10]
        else:
            assert not valid[two] and a_lengths[two] == 2
    assert one_behavior_a >= 4  # at least "one" at every step
    assert builder.stats == {"users": 4 * len(names), "bsm_excluded_users": 4 * len(excluded),
                             "mbp_excluded_users": one_behavior_a}


# -------------------------------------------------------------------------------------------- trainer
def make_trainer(users: Dataset, vocabulary_size: int, output_dir, preset: str, **arguments):
    config = UserBertConfig.from_preset(
        preset, behavior_vocab_size=vocabulary_size, hidden_size=16, intermediate_size=32, num_attention_heads=2,
        max_behaviors=MAX_BEHAVIORS, pretraining_objective="userbert", dropout=0.0,
    )
    torch.manual_seed(0)
    model = UserBertForPreTraining(config)
    settings = dict(
        max_steps=3, per_device_train_batch_size=32, logging_steps=1, learning_rate=1e-3, use_cpu=True,
        save_strategy="no", disable_tqdm=True, report_to=[], lr_scheduler_type="constant", seed=11,
        behavior_pool_size=20, sequence_pool_size=5, sequence_pool_interval=1000,
    )
    settings.update(arguments)
    args = UserBertTrainingArguments(str(output_dir), **settings)
    return UserBertTrainer(model=model, args=args, train_dataset=users, catalog=BehaviorCatalog(vocabulary_size))


def spy(trainer) -> dict:
    """Record what the objective prepared, the MBP negatives drawn and the BSM rows the model got."""
    records = {"prepared": [], "negatives": [], "bsm_valid": []}
    prepare, negatives, model_inputs = (trainer.objective.prepare, trainer.sampler.behavior_negatives,
                                        trainer.objective.model_inputs)

    def recorded_prepare(batch, step):
        out = prepare(batch, step)
        records["prepared"].append(out)
        return out

    def recorded_negatives(user_model, target_ids, target_users, step):
        out = negatives(user_model, target_ids, target_users, step)
        records["negatives"].append((target_ids.clone().cpu(), out.clone().cpu()))
        return out

    def recorded_model_inputs(batch, user_model, step, config):
        out = model_inputs(batch, user_model, step, config)
        records["bsm_valid"].append((batch.user_index.tolist(), out[0]["bsm_valid"].cpu().tolist()))
        return out

    trainer.objective.prepare = recorded_prepare
    trainer.sampler.behavior_negatives = recorded_negatives
    trainer.objective.model_inputs = recorded_model_inputs
    return records


def assert_finite_losses(trainer, steps: int):
    entries = [e for e in trainer.state.log_history if "loss" in e]
    assert len(entries) == steps
    for entry in entries:
        for key, value in entry.items():
            if key.endswith("loss") or key.endswith("accuracy"):
                assert math.isfinite(value), (key, entry)
        assert "mbp_loss" in entry and "bsm_loss" in entry


@pytest.mark.parametrize("preset", ["gru4rec", "bert4rec"])
@pytest.mark.parametrize("min_behaviors", [2, 1])
def test_trainer_steps_with_edge_users(loaded, tmp_path, preset, min_behaviors):
    users = with_identical_user(loaded)
    names = users["user_id"]
    vocabulary = loaded.vocabulary
    steps = 3
    trainer = make_trainer(users, len(vocabulary), tmp_path, preset, max_steps=steps, bsm_min_behaviors=min_behaviors)
    records = spy(trainer)
    trainer.train()

    assert_finite_losses(trainer, steps)
    excluded = [name for name, times in zip(names, users["timestamps"]) if not bsm_eligible(times, min_behaviors)]
    # one micro-batch per step holds every user: each excluded user is counted once per step
    assert len(records["prepared"]) == steps
    assert trainer.objective.stats["bsm_excluded_users"] == steps * len(excluded)
    identical_id, same_id = vocabulary["i12"], vocabulary["i3"]
    for out in records["prepared"]:
        order = [names[i] for i in out.user_index.tolist()]
        one = order.index("one")
        assert int(out.masked_positions[one].sum()) == 0 and int(out.attention_mask[one].sum()) == 1
        assert not out.bsm_valid[one]
        assert not out.bsm_valid[order.index("identical")] and not out.bsm_valid[order.index("same_time")]
        assert bool(out.bsm_valid[order.index("two")]) == (min_behaviors == 1)
        assert int(out.attention_mask.sum(1).max()) <= MAX_BEHAVIORS
    # MBP negatives are never the target itself, in particular not the id of a user made of one repeated id
    seen_targets = set()
    for targets, negatives in records["negatives"]:
        assert negatives.shape == (len(targets), trainer.sampler.num_behavior_negatives)
        assert not (negatives == targets[:, None]).any()
        assert ((negatives >= 1) & (negatives < len(vocabulary))).all()
        seen_targets.update(targets.tolist())
    assert identical_id in seen_targets and same_id in seen_targets
    if min_behaviors == 1:
        # the two-period user reaches the BSM loss (negatives were found for its one-behaviour period A)
        for user_index, valid in records["bsm_valid"]:
            assert valid[user_index.index(names.index("two"))]


@pytest.mark.parametrize(
    "preset", ["gru4rec", "bert4rec"],
)
def test_a_batch_where_no_user_has_two_periods(loaded, tmp_path, preset):
    users = with_identical_user(loaded)
    edge = [i for i, name in enumerate(users["user_id"]) if name in ("one", "dup", "same_time", "identical")]
    trainer = make_trainer(users.select(edge), len(loaded.vocabulary), tmp_path, preset, max_steps=2,
                           num_sequence_negatives=2)
    trainer.train()
    # BSM does not run for a micro-batch without any user that has two periods (it used to crash GRU models);
    # MBP still trains on every user.
    steps = [e for e in trainer.state.log_history if "loss" in e]
    assert len(steps) == 2 and all(math.isfinite(e["mbp_loss"]) and "bsm_loss" not in e for e in steps)
    assert trainer.objective.stats["bsm_excluded_users"] == 2 * len(edge)


def test_mbp_negatives_of_a_repeated_id_are_never_that_id(loaded, tmp_path):
    # Every masked target is the same id (a pool of 20 of 30 behaviours often contains it): no negative equals it.
    users = with_identical_user(loaded)
    trainer = make_trainer(users, len(loaded.vocabulary), tmp_path, "gru4rec", max_steps=1)
    model = trainer.model.userbert
    target = loaded.vocabulary["i12"]
    for strategy in ("medium_hard", "random", "hardest"):
        sampler = build_sampler(strategy, trainer.catalog, users, behavior_pool_size=20)
        for step in range(10):
            negatives = sampler.behavior_negatives(model, torch.full((6,), target), torch.arange(6), step)
            assert negatives.shape == (6, 4) and not (negatives == target).any(), strategy


# -------------------------------------------------------------------------------------------- max_behaviors
def test_model_refuses_more_positions_than_max_behaviors():
    config = UserBertConfig.from_preset("gru4rec", behavior_vocab_size=NUM_ITEMS + 1, hidden_size=16,
                                        max_behaviors=MAX_BEHAVIORS)
    model = UserBertModel(config).eval()
    ok = torch.arange(1, MAX_BEHAVIORS + 1)[None]
    assert torch.isfinite(model(behavior_ids=ok).user_embedding).all()
    with pytest.raises(ValueError, match=rf"{MAX_BEHAVIORS + 1} positions but config.max_behaviors={MAX_BEHAVIORS}"):
        model(behavior_ids=torch.arange(1, MAX_BEHAVIORS + 2)[None])


def test_collator_keeps_the_most_recent_behaviours(log_path):
    data = load_event_log(log_path, max_behaviors=None, verbose=False)
    users = data.users
    index = users["user_id"].index("long")
    batch = UserBertPretrainingCollator(MAX_BEHAVIORS)([dict(users[index], user_index=index)])
    assert batch["sequence_ids"].shape == (1, MAX_BEHAVIORS)
    assert batch["timestamps"][0].tolist() == users[index]["timestamps"][-MAX_BEHAVIORS:]
    assert batch["sequence_ids"][0].tolist() == users[index]["behavior_ids"][-MAX_BEHAVIORS:]


def test_trainer_on_sequences_longer_than_max_behaviors(log_path, tmp_path):
    data = load_event_log(log_path, max_behaviors=None, verbose=False)
    # A pool of crops from every user, re-drawn at every step: at step 0 all crops happen to fit (seeded), at
    # step 1 a crop of the 20- or 38-behaviour users is longer than max_behaviors=8.
    trainer = make_trainer(data.users, len(data.vocabulary), tmp_path, "gru4rec", max_steps=4,
                           sequence_pool_size=len(data.users), sequence_pool_interval=1)
    trainer.train()
    assert_finite_losses(trainer, 4)


# -------------------------------------------------------------------------------------------- zero behaviours
ZERO_USER_CONFIGS = [
    dict(preset="gru4rec"),
    dict(preset="bert4rec"),
    *(dict(behavior_type="id", context_encoder=c, aggregator=a)
      for c in ("none", "self_attention", "transformer", "gru", "cnn") for a in ("attention", "mean", "max", "last")),
    dict(preset="nrms"),
    dict(preset="naml"),
    dict(preset="lstur"),
]


@pytest.mark.parametrize("settings", ZERO_USER_CONFIGS, ids=lambda s: "-".join(str(v) for v in s.values()))
def test_user_without_behaviours_gets_a_zero_finite_embedding(tiny_config, settings):
    settings = dict(settings)
    config = tiny_config(settings.pop("preset", None), **settings)
    torch.manual_seed(0)
    model = UserBertModel(config)
    mask = torch.tensor([[0, 0, 0, 0], [1, 1, 1, 0], [0, 0, 0, 0]])
    if config.behavior_type == "id":
        inputs = {"behavior_ids": torch.tensor([[0, 0, 0, 0], [5, 7, 9, 0], [0, 0, 0, 0]])}
    else:
        words = torch.zeros(3, 4, 5, dtype=torch.long)
        words[1, :3] = torch.tensor([[3, 4, 0, 0, 0], [5, 6, 7, 0, 0], [8, 0, 0, 0, 0]])
        inputs = {"behavior_token_ids": words}
    for training in (False, True):
        model.train(training)
        out = model(**inputs, attention_mask=mask)
        assert torch.isfinite(out.user_embedding).all() and torch.isfinite(out.last_hidden_state).all()
        assert torch.equal(out.user_embedding[0], torch.zeros(config.hidden_size))
        assert torch.equal(out.user_embedding[2], torch.zeros(config.hidden_size))
        assert torch.equal(out.last_hidden_state[0], torch.zeros_like(out.last_hidden_state[0]))
        assert out.user_embedding[1].abs().sum() > 0
    # the empty users contribute no gradient, and no NaN
    model.zero_grad()
    model(**inputs, attention_mask=mask).user_embedding.sum().backward()
    for name, parameter in model.named_parameters():
        if parameter.grad is not None:
            assert torch.isfinite(parameter.grad).all(), name
    # a batch of only empty users (e.g. after filtering) works too
    only_empty = {k: v[[0, 2]] for k, v in inputs.items()}
    out = model(**only_empty, attention_mask=mask[[0, 2]])
    assert torch.equal(out.user_embedding, torch.zeros(2, config.hidden_size))
