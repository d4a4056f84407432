"""Causal user models (SASRec, GRU4Rec): causal attention, and next-item training on every prefix in one pass.

A causal model's contextual state at a position is the user embedding of the prefix ending there, so one
sequence row with per-position labels must give exactly the mean loss of its prefix rows.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from userbert_hf import UserBertConfig, UserBertForNextBehaviorPrediction, UserBertForPreTraining, UserBertModel
from userbert_hf.finetuning import NextBehaviorCollator, build_next_item_dataset
from userbert_hf.finetuning.job import main
from userbert_hf.collation import BehaviorCatalog

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def _tiny(preset: str, **overrides) -> UserBertConfig:
    return UserBertConfig.from_preset(preset, behavior_vocab_size=40, hidden_size=16, max_behaviors=12, **overrides)


def test_which_configs_are_causal():
    assert _tiny("sasrec").is_causal and _tiny("gru4rec").is_causal
    assert not _tiny("bert4rec").is_causal  # bidirectional
    assert not _tiny("sasrec", aggregator="mean").is_causal  # the user embedding is not the last state
    assert _tiny("bert4rec", causal_attention=True, aggregator="last").is_causal
    with pytest.raises(Exception, match="causal_attention"):
        _tiny("gru4rec", causal_attention=True)


def test_causal_attention_states_ignore_later_behaviours():
    torch.manual_seed(0)
    model = UserBertModel(_tiny("sasrec")).eval()
    mask = torch.ones(1, 6, dtype=torch.long)
    first = model(behavior_ids=torch.tensor([[3, 5, 7, 9, 11, 13]]), attention_mask=mask).last_hidden_state
    second = model(behavior_ids=torch.tensor([[3, 5, 7, 20, 21, 22]]), attention_mask=mask).last_hidden_state
    torch.testing.assert_close(first[:, :3], second[:, :3])  # positions before the change: identical
    assert not torch.allclose(first[:, 3:], second[:, 3:], atol=1e-4)
    # The state at a position equals the user embedding of the prefix alone (forward positions, no padding effect).
    prefix = model(behavior_ids=torch.tensor([[3, 5, 7]]), attention_mask=torch.ones(1, 3)).user_embedding
    torch.testing.assert_close(first[:, 2], prefix)
    # Bidirectional attention (bert4rec) does look ahead.
    bidirectional = UserBertModel(_tiny("bert4rec")).eval()
    a = bidirectional(behavior_ids=torch.tensor([[3, 5, 7, 9, 11, 13]]), attention_mask=mask).last_hidden_state
    b = bidirectional(behavior_ids=torch.tensor([[3, 5, 7, 20, 21, 22]]), attention_mask=mask).last_hidden_state
    assert not torch.allclose(a[:, :3], b[:, :3], atol=1e-4)


def test_causal_attention_weights_are_lower_triangular():
    torch.manual_seed(0)
    model = UserBertModel(_tiny("sasrec")).eval()
    out = model(behavior_ids=torch.tensor([[3, 5, 7, 0]]), attention_mask=torch.tensor([[1, 1, 1, 0]]),
                output_attentions=True)
    for weights in out.attentions:  # (1, heads, 4, 4)
        assert torch.all(weights[..., :3, :].triu(1)[..., :3] == 0)
        torch.testing.assert_close(weights[0, :, :3, :3].sum(-1), torch.ones(weights.shape[1], 3))


@pytest.mark.parametrize("preset", ["sasrec", "gru4rec"])
def test_per_position_loss_is_the_mean_of_prefix_losses(preset):
    torch.manual_seed(0)
    model = UserBertForNextBehaviorPrediction(_tiny(preset)).eval()
    sequence = [3, 5, 7, 9, 11, 13]
    history = torch.tensor([sequence[:-1], [4, 6, 0, 0, 0]])  # second user: one prefix target, then padding
    mask = (history > 0).long()
    labels = torch.tensor([sequence[1:], [8, -100, -100, -100, -100]])
    loss = model(behavior_ids=history, attention_mask=mask, labels=labels).loss
    prefix_losses = []
    for t in range(1, len(sequence)):
        prefix = torch.tensor([sequence[:t]])
        prefix_losses.append(model(behavior_ids=prefix, attention_mask=torch.ones_like(prefix),
                                   labels=torch.tensor([sequence[t]])).loss)
    prefix_losses.append(model(behavior_ids=torch.tensor([[4]]), attention_mask=torch.ones(1, 1),
                               labels=torch.tensor([8])).loss)
    torch.testing.assert_close(loss, torch.stack(prefix_losses).mean(), rtol=1e-5, atol=1e-5)


def test_per_position_labels_need_a_causal_model():
    model = UserBertForNextBehaviorPrediction(_tiny("bert4rec"))
    with pytest.raises(ValueError, match="causal"):
        model(behavior_ids=torch.tensor([[3, 5]]), attention_mask=torch.ones(1, 2), labels=torch.tensor([[5, 7]]))


def test_sequence_rows_cover_exactly_the_prefix_rows():
    users = [
        {"user_id": "a", "behavior_ids": [1, 2, 3, 4, 5, 6, 7]},
        {"user_id": "b", "behavior_ids": [8, 9, 10, 11]},  # one training target: 9 after [8]... up to position 1
        {"user_id": "c", "behavior_ids": [12, 13, 14]},  # too short for a training target
    ]
    data = SimpleNamespace(users=users)
    prefix_rows = build_next_item_dataset(data, max_train_targets_per_user=None, max_behaviors=None)["train"]
    sequence_rows = build_next_item_dataset(data, max_train_targets_per_user=None, max_behaviors=None,
                                            sequence_rows=True)
    train = sequence_rows["train"]
    assert train["user_id"] == ["a", "b"]
    assert train[0]["history"] == [1, 2, 3, 4] and train[0]["next_behaviors"] == [2, 3, 4, 5]
    assert train[1]["history"] == [8] and train[1]["next_behaviors"] == [9]
    covered = {(row["user_id"], tuple(row["history"][: i + 1]), nxt)
               for row in train for i, nxt in enumerate(row["next_behaviors"])}
    expected = {(row["user_id"], tuple(row["history"]), row["target"]) for row in prefix_rows}
    assert covered == expected
    # Validation and test rows do not change.
    prefix_all = build_next_item_dataset(data, max_train_targets_per_user=None, max_behaviors=None)
    for split in ("validation", "test"):
        assert sequence_rows[split].to_dict() == prefix_all[split].to_dict()
    # Longer than max_behaviors: windows of aligned history and labels, together every training target.
    short = build_next_item_dataset(data, max_train_targets_per_user=None, max_behaviors=2, sequence_rows=True)
    assert [(r["user_id"], r["history"], r["next_behaviors"]) for r in short["train"]] == [
        ("a", [3, 4], [4, 5]), ("a", [1, 2], [2, 3]), ("b", [8], [9])]
    assert sorted(t for r in short["train"] for t in r["next_behaviors"]) == sorted(prefix_rows["target"])
    with pytest.raises(ValueError, match="every prefix"):
        build_next_item_dataset(data, max_train_targets_per_user=1, sequence_rows=True)


def test_collator_gives_per_position_labels_aligned_with_positions():
    collator = NextBehaviorCollator(BehaviorCatalog(20), max_behaviors=3)
    batch = collator([
        {"history": [1, 2, 3, 4], "target": 5, "exclude": [], "next_behaviors": [2, 3, 4, 5]},
        {"history": [7], "target": 8, "exclude": [], "next_behaviors": [8]},
    ])
    assert batch["labels"].tolist() == [[3, 4, 5], [8, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    positions = batch["behavior_ids"][batch["behavior_index"]]  # the history ids per position
    assert positions[0].tolist() == [2, 3, 4] and positions[1, 0].item() == 7


def test_sasrec_pretrains_and_trains_every_prefix_in_one_pass(tmp_path):
    """The job uses sequence rows for causal presets (and says so), per-prefix rows otherwise."""
    quick = ["--max_steps", "3", "--per_device_train_batch_size", "4", "--eval_strategy", "no", "--disable_tqdm",
             "true", "--hidden_size", "16", "--num_attention_heads", "2", "--max_behaviors", "20", "--seed", "0"]
    data = str(FIXTURES / "beauty_small.txt")
    metrics = main(["--task", "next_item", "--data", data, "--model_name_or_path", "sasrec",
                    "--output_dir", str(tmp_path / "sas"), *quick])
    assert 0 <= metrics["test_ndcg@10"] <= 1
    results = json.loads((tmp_path / "sas" / "training_results.json").read_text())
    assert json.dumps(results).count('"prefixes_in_one_pass": true') >= 1
    bert = main(["--task", "next_item", "--data", data, "--model_name_or_path", "bert4rec", "--matching_similarity",
                 "dot", "--matching_temperature", "0.5", "--output_dir", str(tmp_path / "bert"), *quick])
    assert 0 <= bert["test_ndcg@10"] <= 1
    config = json.loads((tmp_path / "bert" / "config.json").read_text())  # from-scratch matcher options reach the head
    assert (config["matching_similarity"], config["matching_temperature"]) == ("dot", 0.5)
    sas_config = json.loads((tmp_path / "sas" / "config.json").read_text())  # default: the pre-training matcher
    assert (sas_config["matching_similarity"], sas_config["matching_temperature"]) == ("cosine", 0.1)
    with pytest.raises((ValueError, SystemExit)):
        main(["--task", "next_item", "--data", data, "--model_name_or_path", "bert4rec", "--matching_similarity",
              "euclid", "--output_dir", str(tmp_path / "bad-matcher"), *quick])
    results = json.loads((tmp_path / "bert" / "training_results.json").read_text())
    assert '"prefixes_in_one_pass": false' in json.dumps(results)
    with pytest.raises(ValueError, match="causal"):
        main(["--task", "next_item", "--data", data, "--model_name_or_path", "bert4rec", "--prefixes_in_one_pass",
              "true", "--output_dir", str(tmp_path / "bad"), *quick])


def test_sasrec_pretrained_with_userbert_then_fine_tuned_in_one_pass(tmp_path):
    """MBP on SASRec predicts a masked behaviour from the ones before it (the mask token's causal state); the
    pre-trained folder keeps causal attention and fine-tunes on sequence rows."""
    from userbert_hf.pretraining.job import main as pretrain

    from job_helpers import tiny_pretrain_args

    args = tiny_pretrain_args(tmp_path / "pre", "--num_attention_heads", "2", "--max_steps", "4")
    args[args.index("gru4rec")] = "sasrec"
    pretrain(args)
    config = json.loads((tmp_path / "pre" / "config.json").read_text())
    assert config["causal_attention"] is True and config["aggregator"] == "last"
    state = json.loads((tmp_path / "pre" / "checkpoint-4" / "trainer_state.json").read_text())
    history = [entry for entry in state["log_history"] if "mbp_loss" in entry]
    assert len(history) == 4 and all(0 < entry["mbp_loss"] < 20 for entry in history)
    metrics = main(["--task", "next_item", "--data", "movielens", "--model_name_or_path", str(tmp_path / "pre"),
                    "--output_dir", str(tmp_path / "fine"), "--max_steps", "2", "--per_device_train_batch_size", "8",
                    "--eval_strategy", "no", "--disable_tqdm", "true"])
    assert 0 <= metrics["test_ndcg@10"] <= 1
    assert '"prefixes_in_one_pass": true' in (tmp_path / "fine" / "training_results.json").read_text()



def test_mbp_query_previous_is_only_for_left_to_right_models():
    assert _tiny("sasrec", mbp_query="previous").mbp_query == "previous"
    assert _tiny("gru4rec", mbp_query="previous").is_left_to_right
    with pytest.raises(Exception, match="left-to-right"):
        _tiny("bert4rec", mbp_query="previous")  # bidirectional: the previous state has seen the masked one


def test_masked_positions_from_first_never_mask_the_first_behaviour():
    import numpy as np

    from userbert_hf.pretraining.masking import choose_masked_positions, num_masked

    rng = np.random.default_rng(0)
    for length in range(2, 40):
        positions = choose_masked_positions(length, 0.1, rng, first=1)
        assert len(positions) == num_masked(length, 0.1) and positions.min() >= 1  # 10%, at least one, never 0
        assert len(set(positions.tolist())) == len(positions) and positions.max() < length
    assert len(choose_masked_positions(1, 0.1, rng, first=1)) == 0
    # The default draw is unchanged (seeded runs of the paper's MBP reproduce).
    a = choose_masked_positions(30, 0.1, np.random.default_rng(5))
    b = np.sort(np.random.default_rng(5).choice(30, size=3, replace=False))
    assert a.tolist() == b.tolist()


@pytest.mark.parametrize("preset", ["sasrec", "gru4rec"])
def test_mbp_query_previous_predicts_from_the_prefix_state(preset):
    """With mbp_query='previous' a masked behaviour is scored from the user embedding of the behaviours before it
    (the state the next-item head reads), not from the mask token's state."""
    from userbert_hf.modeling_userbert import matching_scores

    torch.manual_seed(0)
    config = _tiny(preset, mbp_query="previous", bsm_loss_weight=0.0, uniformity_loss_weight=0.0, dropout=0.0)
    model = UserBertForPreTraining(config).eval()
    seq = torch.tensor([[3, 5, 7, 9, 11]])
    masked = torch.tensor([[False, False, False, True, False]])  # behaviour 9 at position 3
    candidates = torch.tensor([[9, 20, 21, 22, 23]])  # positive first
    ids = torch.arange(40)  # a behaviour table of every id: index == id
    out = model(behavior_ids=ids, behavior_index=seq, attention_mask=torch.ones(1, 5), masked_positions=masked,
                mbp_candidate_index=candidates)
    prefix = model.userbert(behavior_ids=torch.tensor([[3, 5, 7]]), attention_mask=torch.ones(1, 3)).user_embedding
    table = model.userbert.encode_behaviors(ids)
    scores = matching_scores(prefix, table[candidates], config.matching_similarity, config.matching_temperature)
    expected = torch.nn.functional.cross_entropy(scores, torch.zeros(1, dtype=torch.long))
    torch.testing.assert_close(out.mbp_loss, expected)
    # The target is not replaced by [MASK]: the user embedding is that of the whole, unmasked sequence.
    whole = model.userbert(behavior_ids=seq, attention_mask=torch.ones(1, 5)).user_embedding
    torch.testing.assert_close(out.user_embedding, whole)
    # The paper's query (the mask token's own state) gives a different loss on the same inputs.
    model.config.mbp_query = "masked"
    other = model(behavior_ids=ids, behavior_index=seq, attention_mask=torch.ones(1, 5), masked_positions=masked,
                  mbp_candidate_index=candidates)
    assert not torch.allclose(other.mbp_loss, expected)
    model.config.mbp_query = "previous"
    with pytest.raises(ValueError, match="first behaviour"):
        model(behavior_ids=ids, behavior_index=seq, attention_mask=torch.ones(1, 5),
              masked_positions=torch.tensor([[True, False, False, False, False]]), mbp_candidate_index=candidates)


def test_pretraining_job_with_mbp_query_previous(tmp_path, capsys):
    """--mbp_query previous reaches the saved config, MBP trains, and a bidirectional preset is refused up front."""
    from userbert_hf.pretraining.job import main as pretrain

    from job_helpers import tiny_pretrain_args

    args = tiny_pretrain_args(tmp_path / "pre", "--num_attention_heads", "2", "--max_steps", "3", "--mbp_query",
                              "previous")
    args[args.index("gru4rec")] = "sasrec"
    metrics = pretrain(args)
    assert json.loads((tmp_path / "pre" / "config.json").read_text())["mbp_query"] == "previous"
    assert 0 < metrics["mbp_loss"] < 20
    args = tiny_pretrain_args(tmp_path / "bad", "--mbp_query", "previous")
    args[args.index("gru4rec")] = "bert4rec"
    with pytest.raises(SystemExit):  # a usage error naming the option, before any data is read
        pretrain(args)
    assert "--mbp_query='previous' needs a left-to-right context encoder" in capsys.readouterr().err


def test_mbp_query_auto_picks_previous_for_left_to_right_userbert_models():
    from userbert_hf.pretraining.job import PretrainingDataArguments, PretrainingModelArguments, build_config

    def query(**kwargs):
        return build_config(PretrainingModelArguments(**kwargs), PretrainingDataArguments(), None, None).mbp_query

    assert query(preset="sasrec", num_attention_heads=2) == "previous"
    assert query(preset="gru4rec") == "previous"
    assert query(preset="nrms") == "masked" and query(preset="bert4rec", num_attention_heads=2) == "masked"
    assert query(preset="sasrec", num_attention_heads=2, objective="ptum") == "masked"  # PTUM removes, not masks
    assert query(preset="sasrec", num_attention_heads=2, mbp_query="masked") == "masked"  # the paper's, on request


@pytest.mark.parametrize("query", ["masked", "previous"])
def test_sequence_sampler_sees_targets_as_the_model_encodes_them(query):
    """The BSM sampler (medium-hard: the target's embedding picks its negatives) gets A's [MASK] positions under
    the paper's query and the whole A under mbp_query 'previous', which keeps targets in the input."""
    from userbert_hf.pretraining.objectives import ObjectiveSettings, UserBertObjective
    from userbert_hf.pretraining.samplers import SequenceNegatives

    class RecordingSampler:
        num_sequence_negatives = 1

        def __init__(self):
            self.masks = []

        def behavior_negatives(self, user_model, ids, users, step):
            return torch.ones(len(ids), 2, dtype=torch.long)

        def sequence_negatives(self, user_model, target_ids, masked_positions, users, windows, step):
            self.masks.append(masked_positions)
            n = len(target_ids)
            return SequenceNegatives(ids=[[[5, 6]]] * n, users=[[1]] * n, windows=[[(0, 1)]] * n, has_negatives=[True] * n)

    sampler = RecordingSampler()
    objective = UserBertObjective(ObjectiveSettings(first_maskable=int(query == "previous"), seed=1),
                                  BehaviorCatalog(40), sampler)
    batch = {"sequence_ids": torch.tensor([[3, 5, 7, 9, 11, 13]]), "timestamps": torch.arange(6)[None],
             "attention_mask": torch.ones(1, 6, dtype=torch.long), "user_index": torch.tensor([0])}
    prepared = objective.prepare(batch, step=0)
    assert prepared.bsm_valid.all() and prepared.masked_positions.any()
    objective.model_inputs(prepared, None, 0, _tiny("sasrec", mbp_query=query))
    (seen,) = sampler.masks
    if query == "masked":
        torch.testing.assert_close(seen, prepared.masked_positions)
    else:
        assert seen is None
