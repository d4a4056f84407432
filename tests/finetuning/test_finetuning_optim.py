"""Fine-tuning options: the user model's own learning rate, its frozen first steps, and a softened pre-trained start
(shrink and perturb, a fresh behaviour table)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import TrainingArguments

from userbert_hf import UserBertConfig, UserBertForCTRPrediction, UserBertForNextBehaviorPrediction, UserBertForPreTraining
from userbert_hf.assets import save_user_model_assets
from userbert_hf.data import load_movielens
from userbert_hf.finetuning.job import FinetuningArguments, FinetuningModelArguments, main
from userbert_hf.finetuning.optim import FinetuningTrainer, user_model_parameter_names
from userbert_hf.finetuning.warm_start import BEHAVIOR_TABLE, fresh_copy, fresh_seed, shrink_and_perturb
from userbert_hf.tokenization_userbert import build_word_tokenizer

QUICK = ["--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "32", "--eval_strategy", "no",
         "--disable_tqdm", "true", "--logging_steps", "1", "--seed", "0", "--train_fraction", "0.1",
         "--max_behaviors", "20", "--report_to", "none"]


def tiny_head() -> UserBertForCTRPrediction:
    config = UserBertConfig.from_preset("gru4rec", behavior_vocab_size=50, hidden_size=8, max_behaviors=10)
    torch.manual_seed(0)
    return UserBertForCTRPrediction(config)


def trainer_for(tmp_path, **options) -> FinetuningTrainer:
    args = TrainingArguments(output_dir=str(tmp_path), learning_rate=1e-3, weight_decay=0.01, report_to="none",
                             lr_scheduler_type="linear")
    return FinetuningTrainer(model=tiny_head(), args=args, **options)


def test_param_groups_carry_the_two_rates(tmp_path):
    trainer = trainer_for(tmp_path, user_model_learning_rate=1e-4)
    model = trainer.model
    optimizer = trainer.create_optimizer()
    user_names = user_model_parameter_names(model)
    by_id = {id(p): n for n, p in model.named_parameters()}
    seen = set()
    for index, group in enumerate(optimizer.param_groups):
        names = {by_id[id(p)] for p in group["params"]}
        seen |= names
        in_user = names <= user_names
        assert in_user or not names & user_names  # a group is all user model or all head
        assert group["lr"] == (1e-4 if in_user else 1e-3)
        assert (index in trainer.user_groups) == in_user
    assert seen == {n for n, p in model.named_parameters() if p.requires_grad}  # every parameter, once
    assert "ctr_bias" in seen - user_names
    # Without the options the stock optimiser is used: one rate.
    plain = trainer_for(tmp_path).create_optimizer()
    assert {group["lr"] for group in plain.param_groups} == {1e-3}


def test_frozen_steps_give_the_user_model_rate_zero_then_the_schedule(tmp_path):
    trainer = trainer_for(tmp_path, user_model_learning_rate=1e-4, freeze_user_model_steps=3)
    trainer.create_optimizer()
    scheduler = trainer.create_scheduler(10)
    rates = []
    for _ in range(6):
        rates.append([group["lr"] for group in trainer.optimizer.param_groups])
        trainer.optimizer.step()
        scheduler.step()
    user = trainer.user_groups[0]
    head = next(i for i in range(len(rates[0])) if i not in trainer.user_groups)
    assert [r[user] for r in rates[:3]] == [0.0, 0.0, 0.0]
    assert rates[3][user] == pytest.approx(1e-4 * 7 / 10) and rates[4][user] == pytest.approx(1e-4 * 6 / 10)
    assert [r[head] for r in rates] == pytest.approx([1e-3 * (10 - s) / 10 for s in range(6)])  # untouched


def test_options_are_validated(tmp_path):
    with pytest.raises(ValueError, match="--freeze_user_model_steps"):
        FinetuningArguments(output_dir=str(tmp_path), freeze_user_model_steps=-1)
    with pytest.raises(ValueError, match="--user_model_learning_rate"):
        FinetuningArguments(output_dir=str(tmp_path), user_model_learning_rate=-1e-3)


@pytest.fixture(scope="module")
def pretrained_nrms(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pretrained")
    data = load_movielens(verbose=False)
    tokenizer = build_word_tokenizer(data.vocabulary.texts, max_words=30)
    config = UserBertConfig.from_preset(
        "nrms", behavior_vocab_size=len(data.vocabulary), word_vocab_size=len(tokenizer), hidden_size=16,
        word_embedding_size=16, attention_query_size=8, num_attention_heads=2, max_behaviors=20,
    )
    torch.manual_seed(0)
    UserBertForPreTraining(config).save_pretrained(folder)
    save_user_model_assets(folder, data.vocabulary, tokenizer)
    return folder


def test_user_model_unchanged_during_the_frozen_steps(tmp_path, pretrained_nrms):
    pretrained = UserBertForPreTraining.from_pretrained(pretrained_nrms).userbert.state_dict()
    out = tmp_path / "frozen"
    main(["--task", "ctr", "--model_name_or_path", str(pretrained_nrms), "--output_dir", str(out),
          "--max_steps", "3", "--freeze_user_model_steps", "3", "--learning_rate", "0.01", "--weight_decay", "0.1",
          *QUICK])
    tuned = UserBertForCTRPrediction.from_pretrained(out)
    settings = json.loads(Path(out / "training_results.json").read_text())["settings"]
    assert settings["freeze_user_model_steps"] == 3 and settings["user_model_learning_rate"] is None
    # Every user model tensor is the pre-trained one (weight decay included); the head learnt. (That the user
    # model moves once its steps are over is the schedule test above.)
    for name, tensor in tuned.userbert.state_dict().items():
        assert torch.equal(tensor, pretrained[name]), name
    assert tuned.ctr_bias.item() != 0.0

def sasrec(seed: int = 0) -> UserBertForNextBehaviorPrediction:
    config = UserBertConfig.from_preset("sasrec", behavior_vocab_size=30, hidden_size=8, num_attention_heads=2,
                                        intermediate_size=16, max_behaviors=10)
    torch.manual_seed(seed)
    return UserBertForNextBehaviorPrediction(config)


def test_each_parameter_is_the_mixture_of_pretrained_and_fresh():
    model = sasrec(seed=5)
    pretrained = {n: p.detach().clone() for n, p in model.named_parameters()}
    fresh = dict(fresh_copy(model, seed=3).named_parameters())
    changed = shrink_and_perturb(model, 0.3, seed=3)
    for name, param in model.named_parameters():
        assert torch.allclose(param, 0.3 * pretrained[name] + 0.7 * fresh[name], atol=1e-6), name
    assert changed["parameters"] == len(pretrained)
    assert changed["values"] == sum(p.numel() for p in pretrained.values())


def test_factor_one_keeps_the_start_and_zero_is_a_fresh_model():
    model = sasrec(seed=5)
    pretrained = {n: p.detach().clone() for n, p in model.named_parameters()}
    shrink_and_perturb(model, 1.0, seed=3)
    assert all(torch.equal(p, pretrained[n]) for n, p in model.named_parameters())
    shrink_and_perturb(model, 0.0, seed=3)
    fresh = dict(fresh_copy(model, seed=3).named_parameters())
    assert all(torch.equal(p, fresh[n]) for n, p in model.named_parameters())
    assert not torch.equal(model.userbert.position_embeddings.weight, pretrained["userbert.position_embeddings.weight"])


def test_fresh_copy_is_seeded_and_leaves_the_global_generator_alone():
    model = sasrec()
    torch.manual_seed(11)
    expected = torch.rand(3)
    torch.manual_seed(11)
    a, b, c = fresh_copy(model, 1), fresh_copy(model, 1), fresh_copy(model, 2)
    assert torch.equal(torch.rand(3), expected)  # the caller's random stream is untouched
    table = lambda m: m.userbert.behavior_encoder.behavior_embeddings.weight  # noqa: E731
    assert torch.equal(table(a), table(b)) and not torch.equal(table(a), table(c))


def test_only_the_behaviour_table_is_reset():
    model = sasrec(seed=5)
    pretrained = {n: p.detach().clone() for n, p in model.named_parameters()}
    changed = shrink_and_perturb(model, 0.0, seed=3, only=(BEHAVIOR_TABLE,))
    assert changed["parameters"] == 1
    fresh = dict(fresh_copy(model, seed=3).named_parameters())
    for name, param in model.named_parameters():
        assert torch.equal(param, fresh[name] if name == BEHAVIOR_TABLE else pretrained[name]), name


def test_frozen_parameters_are_kept_and_bad_input_is_refused():
    model = sasrec(seed=5)
    frozen = model.userbert.position_embeddings.weight
    frozen.requires_grad = False
    before = frozen.detach().clone()
    shrink_and_perturb(model, 0.5, seed=3)
    assert torch.equal(frozen, before)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        shrink_and_perturb(model, 1.5, seed=3)
    text = UserBertForCTRPrediction(UserBertConfig.from_preset("nrms", behavior_vocab_size=20, word_vocab_size=30,
                                                               hidden_size=8, word_embedding_size=8,
                                                               attention_query_size=4, num_attention_heads=2))
    with pytest.raises(ValueError, match="from their text"):
        shrink_and_perturb(text, 0.0, seed=3, only=(BEHAVIOR_TABLE,))


def test_the_fresh_half_is_independent_of_a_start_with_the_fine_tuning_seed():
    """A model pre-trained from the initialisation of seed s, fine-tuned with seed s: mixing it with a fresh model of
    seed s would give init_s + 0.5 * change (the initial scale kept); the fresh half uses a derived seed."""
    from userbert_hf.finetuning.warm_start import soften_pretrained_start

    model = sasrec(seed=1)  # "pre-trained" for 0 steps from seed 1's initialisation
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    soften_pretrained_start(model, shrink_perturb=0.5, reset_behavior_embeddings=False, seed=1)
    table = model.userbert.behavior_encoder.behavior_embeddings.weight
    assert not torch.equal(table, start[BEHAVIOR_TABLE])
    # two independent initialisations mixed half and half: the spread falls by about 1/sqrt(2)
    ratio = (table[1:].std() / start[BEHAVIOR_TABLE][1:].std()).item()
    assert 0.6 < ratio < 0.82, ratio


def test_softening_options_are_validated():
    with pytest.raises(ValueError, match=r"--shrink_perturb must be in \[0, 1\]"):
        FinetuningModelArguments(model_name_or_path="outputs/some-model", shrink_perturb=2.0)
    with pytest.raises(ValueError, match="is a preset"):
        FinetuningModelArguments(model_name_or_path="sasrec", reset_behavior_embeddings=True)
    with pytest.raises(ValueError, match="is a preset"):
        FinetuningModelArguments(model_name_or_path="nrms", shrink_perturb=0.5)


def test_the_job_softens_the_start_and_records_it(tmp_path, pretrained_nrms):
    pretrained = UserBertForPreTraining.from_pretrained(pretrained_nrms).userbert.state_dict()
    out = tmp_path / "softened"
    # learning rate 0: what the saved model holds is the softened start itself
    main(["--task", "ctr", "--model_name_or_path", str(pretrained_nrms), "--output_dir", str(out), "--max_steps", "1",
          "--learning_rate", "0", "--shrink_perturb", "0.25", *QUICK])
    tuned = UserBertForCTRPrediction.from_pretrained(out)
    fresh = fresh_copy(tuned, seed=fresh_seed(0)).userbert.state_dict()  # QUICK fine-tunes with --seed 0
    for name, param in tuned.userbert.named_parameters():
        expected = 0.25 * pretrained[name] + 0.75 * fresh[name]
        assert torch.allclose(param, expected, atol=1e-6), name
    settings = json.loads(Path(out / "training_results.json").read_text())["settings"]
    assert settings["shrink_perturb"] == 0.25 and settings["reset_behavior_embeddings"] is False


# ----------------------------------------------------------------------------------------------
# The default softening of a warm start on the fine-tuning data itself
# ----------------------------------------------------------------------------------------------
def test_same_data_warm_start_needs_the_task_the_file_and_a_task_that_trains_on_the_whole_export():
    from userbert_hf.finetuning.registry import TASK_REGISTRY
    from userbert_hf.finetuning.warm_start import same_data_warm_start

    record = {"task": "next_item", "data_sha256": "ab12", "trains_on_whole_export": True}
    assert "next_item" in same_data_warm_start(record, "next_item", "ab12")
    assert same_data_warm_start(record, "ctr", "ab12") is None  # another task
    assert same_data_warm_start(record, "next_item", "cd34") is None  # another file
    assert same_data_warm_start(record, "next_item", None) is None  # a file with no hash (a Hub data set)
    assert same_data_warm_start({**record, "trains_on_whole_export": False}, "next_item", "ab12") is None
    assert same_data_warm_start(None, "next_item", "ab12") is None  # no record: never called one
    # Only leave-one-out next-item trains on every sequence its export holds; CTR's export also holds the
    # validation and test users' histories, news and user classification hold users the task does not train on.
    assert {name for name, task in TASK_REGISTRY.items() if task.trains_on_whole_export} == {"next_item"}


def _next_item_file(path: Path, users: int = 40, seed: int = 0) -> Path:
    """A Beauty-format file (``user item item ...``): ``users`` users of 5-10 items out of 30."""
    import random

    rng = random.Random(seed)
    lines = [" ".join([str(u)] + [str(rng.randint(1, 30)) for _ in range(rng.randint(5, 10))])
             for u in range(1, users + 1)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_warm_start_on_the_task_data_itself_is_softened_by_default(tmp_path):
    from userbert_hf.data import load_behavior_data
    from userbert_hf.model_card import data_fingerprint
    from userbert_hf.pretraining.job import main as pretrain

    data = _next_item_file(tmp_path / "items.txt")
    export = tmp_path / "export"
    main(["--task", "next_item", "--data", str(data), "--export_pretraining_data", str(export),
          "--output_dir", str(tmp_path / "unused")])
    record = {"task": "next_item", "data_sha256": data_fingerprint(data), "trains_on_whole_export": True}
    assert load_behavior_data(str(export), verbose=False).export_info == record
    pretrain(["--data", str(export), "--preset", "sasrec", "--hidden_size", "8", "--num_attention_heads", "2",
              "--max_steps", "2", "--per_device_train_batch_size", "8", "--early_stopping_patience", "0",
              "--eval_fraction", "0", "--report_to", "none", "--disable_tqdm", "true",
              "--output_dir", str(tmp_path / "pre")])
    assert json.loads((tmp_path / "pre" / "config.json").read_text())["pretraining_data"] == record
    pretrained = UserBertForPreTraining.from_pretrained(tmp_path / "pre").userbert.state_dict()

    def finetune(name, data_file, *extra):  # learning rate 0: the saved model is the start itself
        out = tmp_path / name
        main(["--task", "next_item", "--data", str(data_file), "--model_name_or_path", str(tmp_path / "pre"),
              "--output_dir", str(out), "--max_steps", "1", "--learning_rate", "0", "--per_device_train_batch_size",
              "8", "--eval_strategy", "no", "--disable_tqdm", "true", "--seed", "0", "--report_to", "none", *extra])
        settings = json.loads((out / "training_results.json").read_text())["settings"]
        return UserBertForNextBehaviorPrediction.from_pretrained(out), settings

    default, settings = finetune("default", data)
    assert settings["shrink_perturb"] == 0.5 and settings["shrink_perturb_by_default"] is True
    assert "by default" in (tmp_path / "default" / "README.md").read_text()
    assert settings["initializer_gain"] == 0.5  # the fresh half at half the default scale
    explicit, explicit_settings = finetune("explicit", data, "--shrink_perturb", "0.5", "--initializer_gain", "0.5")
    assert explicit_settings["shrink_perturb_by_default"] is False
    fresh = fresh_copy(default, seed=fresh_seed(0), initializer_gain=0.5).userbert.state_dict()
    for name, param in default.userbert.named_parameters():  # exactly --shrink_perturb 0.5 --initializer_gain 0.5
        assert torch.equal(param, explicit.userbert.state_dict()[name]), name
        assert torch.allclose(param, 0.5 * pretrained[name] + 0.5 * fresh[name], atol=1e-6), name
    _, gain_settings = finetune("own_gain", data, "--shrink_perturb", "0.5")  # an explicit choice is left alone
    assert gain_settings["initializer_gain"] is None and gain_settings["shrink_perturb_by_default"] is False
    kept, kept_settings = finetune("kept", data, "--soften_same_data_start", "false")
    other, other_settings = finetune("other", _next_item_file(tmp_path / "other.txt", seed=1))  # another file
    for model, record_of in ((kept, kept_settings), (other, other_settings)):
        assert record_of["shrink_perturb"] is None and record_of["shrink_perturb_by_default"] is False
        for name, param in model.userbert.named_parameters():
            assert torch.equal(param, pretrained[name]), name
