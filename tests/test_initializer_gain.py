"""``initializer_gain``: a from-scratch model's initial scale, and the fine-tuning option that sets it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from huggingface_hub.errors import StrictDataclassError

from userbert_hf import UserBertConfig, UserBertForCTRPrediction, UserBertForNextBehaviorPrediction
from userbert_hf.finetuning.job import FinetuningModelArguments, main
from userbert_hf.finetuning.warm_start import fresh_copy, shrink_and_perturb
from userbert_hf.model_card import recipe_description

QUICK = ["--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "32", "--eval_strategy", "no",
         "--disable_tqdm", "true", "--logging_steps", "1", "--seed", "0", "--train_fraction", "0.1",
         "--max_behaviors", "20", "--report_to", "none", "--hidden_size", "16", "--attention_query_size", "8",
         "--num_attention_heads", "2"]


def model_at(preset: str, gain: float | None, seed: int = 3) -> dict[str, torch.Tensor]:
    extra = {} if gain is None else {"initializer_gain": gain}
    config = UserBertConfig.from_preset(preset, behavior_vocab_size=50, word_vocab_size=30, hidden_size=16,
                                        attention_query_size=8, num_attention_heads=2, max_behaviors=10, **extra)
    torch.manual_seed(seed)
    return {name: p.detach().clone() for name, p in UserBertForCTRPrediction(config).named_parameters()}


def is_constant(tensor: torch.Tensor) -> bool:
    return bool((tensor == tensor.flatten()[0]).all())


@pytest.mark.parametrize("preset", ["nrms", "naml", "lstur", "gru4rec", "nativectr", "bert4rec", "sasrec"])
def test_every_random_tensor_is_scaled_by_the_gain_and_constant_ones_are_kept(preset):
    default, unit, half = model_at(preset, None), model_at(preset, 1.0), model_at(preset, 0.5)
    random_tensors = 0
    for name, tensor in default.items():
        assert torch.equal(unit[name], tensor), name  # gain 1 is the initialisation of before
        if is_constant(tensor):  # norms, biases, the CTR offset
            assert torch.equal(half[name], tensor), name
        else:  # each tensor is drawn once with the same generator: exactly 0.5 x
            random_tensors += 1
            assert torch.allclose(half[name], 0.5 * tensor, atol=1e-7), name
    assert random_tensors >= 3


def test_gain_0_71_is_the_scale_of_an_even_mixture_of_two_initialisations():
    """A --shrink_perturb 0.5 start of a never-trained model mixes two independent initialisations: the std of
    each random tensor shrinks by sqrt(0.5) = 0.707, which a from-scratch model gets with initializer_gain 0.71."""
    config = UserBertConfig.from_preset("sasrec", behavior_vocab_size=4000, hidden_size=64, num_attention_heads=2,
                                        max_behaviors=10)
    torch.manual_seed(0)
    a = UserBertForNextBehaviorPrediction(config)
    b = fresh_copy(a, seed=1)
    table = "userbert.behavior_encoder.behavior_embeddings.weight"
    mixed = 0.5 * a.state_dict()[table] + 0.5 * b.state_dict()[table]  # (4000, 64)
    scaled = fresh_copy(UserBertForNextBehaviorPrediction(
        UserBertConfig.from_dict({**config.to_dict(), "initializer_gain": 0.71})), seed=2).state_dict()[table]
    assert mixed.std().item() / a.state_dict()[table].std().item() == pytest.approx(0.707, abs=0.01)
    assert scaled.std().item() == pytest.approx(mixed.std().item(), rel=0.02)


def test_the_gain_is_validated_and_saved(tmp_path):
    for bad in (0.0, -1.0, 11.0):
        with pytest.raises((ValueError, StrictDataclassError), match="initializer_gain"):
            UserBertConfig.from_preset("sasrec", behavior_vocab_size=10, initializer_gain=bad)
    config = UserBertConfig.from_preset("sasrec", behavior_vocab_size=10, hidden_size=8, num_attention_heads=2,
                                        initializer_gain=0.5)
    config.save_pretrained(tmp_path)
    assert UserBertConfig.from_pretrained(tmp_path).initializer_gain == 0.5
    with pytest.raises(ValueError, match="is a pre-trained model"):
        FinetuningModelArguments(model_name_or_path="outputs/some-model", initializer_gain=0.5)
    with pytest.raises(ValueError, match=r"must be in \(0, 10\]"):
        FinetuningModelArguments(model_name_or_path="sasrec", initializer_gain=0.0)


def test_the_job_initialises_a_scratch_model_at_the_gain_and_records_it(tmp_path):
    saved = {}
    for gain in ("1", "0.5"):
        out = tmp_path / f"gain{gain}"
        # learning rate 0: the saved model is the initialisation itself
        main(["--task", "ctr", "--model_name_or_path", "nrms", "--output_dir", str(out), "--max_steps", "1",
              "--learning_rate", "0", "--initializer_gain", gain, *QUICK])
        saved[gain] = UserBertForCTRPrediction.from_pretrained(out)
        settings = json.loads(Path(out / "training_results.json").read_text())["settings"]
        assert settings["initializer_gain"] == float(gain) and saved[gain].config.initializer_gain == float(gain)
    full, half = dict(saved["1"].named_parameters()), dict(saved["0.5"].named_parameters())
    for name, tensor in full.items():
        expected = tensor if is_constant(tensor) else 0.5 * tensor
        assert torch.allclose(half[name], expected, atol=1e-7), name
    card = (tmp_path / "gain0.5" / "README.md").read_text()
    assert "initialised at 0.5 x the default scale" in card
    assert "initialised at" not in (tmp_path / "gain1" / "README.md").read_text()


def test_the_fresh_half_of_a_softened_start_can_be_drawn_at_a_gain():
    config = UserBertConfig.from_preset("sasrec", behavior_vocab_size=30, hidden_size=8, num_attention_heads=2,
                                        intermediate_size=16, max_behaviors=10)
    torch.manual_seed(5)
    start = UserBertForNextBehaviorPrediction(config)
    before = {name: p.detach().clone() for name, p in start.named_parameters()}
    fresh = dict(fresh_copy(start, seed=7).named_parameters())  # the fresh half at the config's gain (1)
    shrink_and_perturb(start, 0.5, seed=7, initializer_gain=0.25)
    assert start.config.initializer_gain == 1.0  # the model's own config is left alone
    for name, param in start.named_parameters():
        if not name.startswith("userbert."):
            continue
        scaled = fresh[name] if is_constant(fresh[name]) else 0.25 * fresh[name]
        assert torch.allclose(param, 0.5 * before[name] + 0.5 * scaled, atol=1e-6), name
    # the option is accepted for a pre-trained start only together with a softening option, and named on the card
    FinetuningModelArguments(model_name_or_path="outputs/some-model", shrink_perturb=0.5, initializer_gain=0.25)
    line = recipe_description({"task": "next_item", "model_name_or_path": "outputs/m", "from_scratch": False,
                               "shrink_perturb": 0.5, "initializer_gain": 0.25, "train_fraction": 1.0})
    assert "0.5 x a fresh initialisation at 0.25 x the default scale" in line


def test_a_pretraining_card_names_the_gain_of_the_config_when_the_run_did_not_record_it():
    from userbert_hf.model_card import model_card_from_results

    config = UserBertConfig.from_preset("gru4rec", behavior_vocab_size=10, hidden_size=8, initializer_gain=0.25)
    results = {"settings": {"objective": "userbert", "data": "movielens", "max_steps": 10, "batch_size": 4,
                            "learning_rate": 1e-3}, "metrics": {}}
    assert "initialised at 0.25 x the default scale" in str(model_card_from_results(config, results, "m"))
    config.initializer_gain = 1.0
    assert "initialised at" not in str(model_card_from_results(config, results, "m"))
