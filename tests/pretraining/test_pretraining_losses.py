"""``UserBertForPreTraining.forward`` split into one method per loss computes the same numbers as the single
forward it replaced: the total loss and every component on fixed inputs equal the values that forward gave
(``fixtures/pretraining_losses.json``, computed once with it: ``python tests/pretraining/test_pretraining_losses.py``).
Each per-loss method also equals its pure loss function."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from userbert_hf import UserBertConfig, UserBertForPreTraining
from userbert_hf.modeling_userbert import contrastive_loss_from_scores, in_batch_contrastive_loss, matching_scores

FIXTURE = Path(__file__).parents[1] / "fixtures" / "pretraining_losses.json"
COMPONENTS = ("loss", "mbp_loss", "bsm_loss", "nbp_loss", "cp_loss", "mbp_accuracy", "bsm_accuracy", "nbp_accuracy",
              "cp_accuracy", "uniformity_loss")
SIZES = dict(behavior_vocab_size=30, word_vocab_size=40, hidden_size=16, word_embedding_size=12,
             attention_query_size=8, intermediate_size=32, max_words=6, max_behaviors=12, num_attention_heads=4,
             dropout=0.0)

# name -> (config settings, which inputs, train mode)
CASES = {
    "userbert_gru_masked": (dict(preset="gru4rec", matching_similarity="dot", matching_temperature=1.0,
                                 uniformity_loss_weight=0.0, bsm_loss_weight=0.5), ("mbp", "bsm"), False),
    "userbert_gru_previous": (dict(preset="gru4rec", mbp_query="previous", mbp_loss_weight=0.7),
                              ("mbp", "bsm"), False),
    "userbert_no_context_encoder": (dict(behavior_type="id", context_encoder="none", aggregator="attention"),
                                    ("mbp", "bsm"), False),
    "userbert_projection_uniformity": (dict(preset="bert4rec", projection_head=True, uniformity_loss_weight=0.3,
                                            attention_probs_dropout_prob=0.0),  # SIZES: dropout 0, as the reference ran
                                       ("mbp", "bsm"), True),
    "userbert_text_nrms": (dict(preset="nrms"), ("mbp", "bsm"), False),
    # (The reference forward weighted the next-behaviour loss by bsm_loss_weight 0.4.)
    "ptum": (dict(preset="gru4rec", pretraining_objective="ptum", next_behavior_loss_weight=0.4,
                  uniformity_loss_weight=0.0), ("ptum_mbp", "nbp"), False),
    "cp": (dict(preset="bert4rec", pretraining_objective="cp", cp_matching_temperature=0.5, uniformity_loss_weight=0.0),
           ("cp",), False),
}


def build_case(name: str):
    """A seeded model and fixed inputs of the case ``name``: (model, inputs)."""
    settings, tasks, train = CASES[name]
    settings = dict(settings)
    preset = settings.pop("preset", None)
    config = (UserBertConfig.from_preset(preset, **SIZES, **settings) if preset
              else UserBertConfig(**SIZES, **settings))
    torch.manual_seed(0)
    model = UserBertForPreTraining(config)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=g) * 0.3)
    model.train(train)
    u, b, length = 20, 4, 6
    inputs = {"behavior_index": torch.randint(1, u, (b, length), generator=g)}
    if config.behavior_type == "id":
        inputs["behavior_ids"] = torch.arange(u)
    else:
        inputs["behavior_token_ids"] = torch.randint(1, 40, (u, 6), generator=g)
    lengths = torch.tensor([6, 5, 3, 4])
    mask = torch.arange(length)[None] < lengths[:, None]  # (B, L)
    inputs["behavior_index"] = inputs["behavior_index"] * mask
    inputs["attention_mask"] = mask.long()
    masked = torch.zeros(b, length, dtype=torch.bool)
    masked[0, 2] = masked[0, 4] = masked[1, 1] = masked[2, 2] = masked[3, 3] = True  # never position 0
    inputs["masked_positions"] = masked
    m = int(masked.sum())
    if "mbp" in tasks or "ptum_mbp" in tasks:
        inputs["mbp_candidate_index"] = torch.randint(1, u, (m, 5), generator=g)  # (M, 1 + K)
        inputs["mbp_normalizer"] = torch.tensor(7.0)
    if "ptum_mbp" in tasks:
        inputs["mbp_query_rows"] = masked.nonzero(as_tuple=True)[0]
    if "bsm" in tasks:
        cand = torch.randint(1, u, (b, 3, 4), generator=g)  # (B, 1 + P, L2)
        cand[:, :, 3] = 0
        cand[1, 2, 2:] = 0
        inputs.update(bsm_candidate_index=cand, bsm_candidate_mask=cand != 0,
                      bsm_valid=torch.tensor([True, False, True, True]), bsm_normalizer=torch.tensor(4.0))
    if "nbp" in tasks:
        inputs.update(nbp_candidate_index=torch.randint(1, u, (b, config.ptum_next_k, 5), generator=g),
                      nbp_valid=torch.tensor([[True, True], [True, False], [True, True], [False, False]]))
    if "cp" in tasks:
        view = torch.randint(1, u, (b, 5), generator=g)
        view[2, 3:] = 0
        view_masked = torch.zeros(b, 5, dtype=torch.bool)
        view_masked[0, 1] = view_masked[3, 2] = True
        inputs.update(view_index=view, view_attention_mask=(view != 0).long(), view_masked_positions=view_masked,
                      cp_normalizer=torch.tensor(10.0))
    return model, inputs


def run_case(name: str) -> dict[str, float | None]:
    model, inputs = build_case(name)
    out = model(**inputs)
    return {key: (None if getattr(out, key) is None else float(getattr(out, key).detach())) for key in COMPONENTS}


@pytest.mark.parametrize("name", sorted(CASES))
def test_total_loss_and_every_component_equal_the_single_forward(name):
    expected = json.loads(FIXTURE.read_text())[name]
    got = run_case(name)
    for key in COMPONENTS:
        if expected[key] is None:
            assert got[key] is None, key
        else:
            assert got[key] == pytest.approx(expected[key], rel=1e-5, abs=1e-6), key


def test_every_logged_component_has_its_row_count():
    model, inputs = build_case("userbert_projection_uniformity")
    out = model(**inputs)
    assert out.loss_rows == {"mbp": 5, "bsm": 3, "uniformity": 4}  # masked behaviours, valid BSM users, users
    logged = {k.rsplit("_", 1)[0] for k, v in out.items() if k != "loss" and k.endswith(("_loss", "_accuracy"))}
    assert logged == set(out.loss_rows)


def test_each_loss_method_is_its_pure_loss_function():
    """The weighted sum of the per-loss methods is the total; each method equals the pure function it wraps."""
    model, inputs = build_case("userbert_gru_masked")
    out = model(**inputs)
    config = model.config
    table = model.userbert.encode_behaviors(inputs["behavior_ids"])  # (U, H)
    mask = inputs["attention_mask"].bool()
    encoded = model.userbert.encode_sequences(table[inputs["behavior_index"]], mask, inputs["masked_positions"])
    mbp = model.masked_behavior_loss(table, encoded, inputs["behavior_index"], mask, inputs["masked_positions"],
                                     inputs["mbp_candidate_index"], None, inputs["mbp_normalizer"])
    rows, cols = inputs["masked_positions"].nonzero(as_tuple=True)
    scores = matching_scores(encoded.last_hidden_state[rows, cols], table[inputs["mbp_candidate_index"]])
    torch.testing.assert_close(mbp.loss, contrastive_loss_from_scores(scores, 7.0)[0])
    bsm = model.sequence_matching_loss(table, encoded, inputs["bsm_candidate_index"], inputs["bsm_candidate_mask"],
                                       inputs["bsm_valid"], inputs["bsm_normalizer"])
    torch.testing.assert_close(out.loss, config.mbp_loss_weight * mbp.loss + config.bsm_loss_weight * bsm.loss)

    model, inputs = build_case("cp")
    out = model(**inputs)
    table = model.userbert.encode_behaviors(inputs["behavior_ids"])
    first = model.userbert.encode_sequences(table[inputs["behavior_index"]], inputs["attention_mask"].bool(),
                                            inputs["masked_positions"]).user_embedding
    second = model.userbert.encode_sequences(table[inputs["view_index"]], inputs["view_attention_mask"],
                                             inputs["view_masked_positions"]).user_embedding
    expected = in_batch_contrastive_loss(first, second, 0.5, 10.0, model.config.matching_similarity)
    torch.testing.assert_close(out.loss, expected[0])
    torch.testing.assert_close(out.cp_accuracy, expected[2])


def test_a_ptum_config_saved_before_next_behavior_loss_weight_loads_to_the_same_loss(tmp_path):
    """Configs written before ``next_behavior_loss_weight`` weighted PTUM's next-behaviour loss by
    ``bsm_loss_weight``; loading one keeps that weight."""
    model, inputs = build_case("ptum")
    model.config.save_pretrained(tmp_path)
    stored = json.loads((tmp_path / "config.json").read_text())
    del stored["next_behavior_loss_weight"]
    stored["bsm_loss_weight"] = 0.4
    (tmp_path / "config.json").write_text(json.dumps(stored))
    old = UserBertConfig.from_pretrained(tmp_path)
    assert old.next_behavior_loss_weight == 0.4
    model.config = old
    expected = json.loads(FIXTURE.read_text())["ptum"]
    assert float(model(**inputs).loss) == pytest.approx(expected["loss"], rel=1e-5)
    # A config that names the weight keeps it, whatever bsm_loss_weight says; so does a new PTUM config.
    stored["next_behavior_loss_weight"] = 1.0
    (tmp_path / "config.json").write_text(json.dumps(stored))
    assert UserBertConfig.from_pretrained(tmp_path).next_behavior_loss_weight == 1.0
    assert UserBertConfig(pretraining_objective="ptum", bsm_loss_weight=0.0).next_behavior_loss_weight == 1.0


if __name__ == "__main__":  # writes the reference values (run once on the code that is the reference)
    FIXTURE.write_text(json.dumps({name: run_case(name) for name in sorted(CASES)}, indent=1) + "\n")
