"""Only this package's code in the folders it writes: config.json and the tokenizer/processor files are written
from an allow-list (a loaded folder's keys naming code never survive), and `userbert experiment` writes its model
cards with package code, never with a `model_cards/generate_cards.py` found in the working directory."""

from __future__ import annotations

import json
import os
import types
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from userbert_hf import UserBertConfig, UserBertForPreTraining
from userbert_hf.configuration_userbert import allowed_config_keys
from userbert_hf.model_card import save_run_results
from userbert_hf.processing_userbert import UserBertProcessor
from userbert_hf.tokenization_userbert import build_word_tokenizer
from userbert_hf.vocabulary import BehaviorVocabulary

CODE_KEYS = ["custom_pipelines", "tokenizer_class", "processor_class", "feature_extractor_type", "image_processor_type",
             "model_class", "pipeline_class", "trust_remote_code", "auto_map"]
_OWN_TOKENIZER_KEYS = {"backend", "model_max_length", "pad_token", "padding_side", "tokenizer_class",
                       "truncation_side", "unk_token",
                       # transformers writes the backend's padding / truncation settings (numbers, no code)
                       "max_length", "pad_to_multiple_of", "pad_token_type_id", "stride", "truncation_strategy"}


def _code_ref(draw_name: str) -> str:
    return f"evil_org/payload--{draw_name}.Payload"


code_values = st.one_of(
    st.sampled_from(["evil.Payload", "evil_org/repo--modeling_x.X", "modeling_userbert.UserBertModel.extra",
                     "os.system", "../../modeling_x.X"]),
    st.dictionaries(st.sampled_from(["AutoModel", "AutoConfig", "AutoTokenizer", "AutoProcessor", "impl"]),
                    st.sampled_from(["evil.Payload", "org/r--modeling_userbert.UserBertModel", "x.y.z"]),
                    min_size=1, max_size=3),
)
foreign_keys = st.dictionaries(
    st.one_of(st.sampled_from(CODE_KEYS), st.from_regex(r"[a-z]{1,8}_class", fullmatch=True),
              st.from_regex(r"[a-z_]{1,12}", fullmatch=True)),
    code_values, min_size=1, max_size=6,
)


def _tiny_config(**kwargs) -> UserBertConfig:
    return UserBertConfig.from_preset("gru4rec", behavior_vocab_size=12, hidden_size=8, num_attention_heads=2,
                                      max_behaviors=5, **kwargs)


def _saved_keys_are_ours(config_json: dict) -> None:
    assert set(config_json) <= allowed_config_keys(UserBertConfig), set(config_json) - allowed_config_keys(UserBertConfig)
    for ref in (config_json.get("auto_map") or {}).values():
        module, name = ref.split(".")
        assert module in ("configuration_userbert", "modeling_userbert", "processing_userbert") and "--" not in ref
    for name in config_json.get("architectures") or []:
        assert name.startswith("UserBert") and "." not in name


@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(extra=foreign_keys)
def test_config_json_keeps_no_loaded_key_naming_code(tmp_path_factory, extra):
    folder = tmp_path_factory.mktemp("cfg")
    _tiny_config().save_pretrained(folder)
    loaded = json.loads((folder / "config.json").read_text())
    loaded.update(extra)
    loaded["architectures"] = ["UserBertForPreTraining", "evil.Payload"]
    (folder / "config.json").write_text(json.dumps(loaded))
    config = UserBertConfig.from_pretrained(folder)
    model = UserBertForPreTraining(config)
    out = tmp_path_factory.mktemp("out")
    model.save_pretrained(out)
    saved = json.loads((out / "config.json").read_text())
    _saved_keys_are_ours(saved)
    assert saved["architectures"] == ["UserBertForPreTraining"]
    for key in extra:
        if key not in allowed_config_keys(UserBertConfig):
            assert key not in saved


def test_custom_pipelines_and_tokenizer_class_do_not_survive_a_round_trip(tmp_path):
    config = _tiny_config()
    config.custom_pipelines = {"user-feature-extraction": {"impl": "evil.Pipeline", "pt": ["AutoModel"]}}
    config.tokenizer_class = "evil.Tokenizer"
    config.processor_class = "evil_mod.Processor"
    saved = config.to_dict()
    assert "custom_pipelines" not in saved and "tokenizer_class" not in saved and "processor_class" not in saved


@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
@given(extra=foreign_keys)
def test_tokenizer_and_processor_files_are_written_from_an_allow_list(tmp_path_factory, extra):
    source = tmp_path_factory.mktemp("src")
    tokenizer = build_word_tokenizer(["toy story", "the matrix"], max_words=6)
    processor = UserBertProcessor(BehaviorVocabulary(["1", "2"]), tokenizer, max_behaviors=5, max_words=6)
    processor.save_pretrained(source)
    for name in ("tokenizer_config.json", "processor_config.json"):
        data = json.loads((source / name).read_text())
        data.update(extra)
        data["tokenizer_class"] = "evil.Tokenizer"
        data["chat_template"] = "{{ cycler.__init__.__globals__.os.system('id') }}"
        (source / name).write_text(json.dumps(data))
    loaded = UserBertProcessor.from_pretrained(source)
    out = tmp_path_factory.mktemp("out")
    loaded.save_pretrained(out)
    tokenizer_config = json.loads((out / "tokenizer_config.json").read_text())
    assert set(tokenizer_config) <= _OWN_TOKENIZER_KEYS, set(tokenizer_config) - _OWN_TOKENIZER_KEYS
    assert "." not in tokenizer_config["tokenizer_class"]
    processor_config = json.loads((out / "processor_config.json").read_text())
    assert set(processor_config) <= {"processor_class", "behavior_type", "max_behaviors", "max_words", "auto_map"}
    assert processor_config["processor_class"] == "UserBertProcessor"
    package = Path(__import__("userbert_hf").__file__).parent
    for name in os.listdir(out):  # our data files, and our own code files as they are in the package
        if name.endswith(".py"):
            assert (out / name).read_text() == (package / name).read_text(), name
        else:
            assert name in ("behavior_vocab.json", "processor_config.json", "tokenizer.json", "tokenizer_config.json")
    assert loaded.tokenizer("Toy story")["input_ids"] == tokenizer("Toy story")["input_ids"]


def test_experiment_cards_never_run_a_script_of_the_working_directory(tmp_path, monkeypatch):
    from userbert_hf.experiments.report import write_model_cards

    model = tmp_path / "outputs" / "grid-userbert"
    _tiny_config().save_pretrained(model)
    BehaviorVocabulary(["1", "2", "3"]).save(model)
    save_run_results(str(model), {"metrics": {"loss": 1.5}, "settings": {"data": "movielens", "preset": "gru4rec",
                                                                          "objective": "userbert", "max_steps": 2}})
    planted = tmp_path / "model_cards" / "generate_cards.py"
    planted.parent.mkdir()
    planted.write_text(f"open({str(tmp_path / 'ran')!r}, 'w').write('x')\ndef main(argv): return []\n")
    monkeypatch.chdir(tmp_path)
    spec = types.SimpleNamespace(split_seeds=[0], effective_pretrain_seeds=[0], pretrained_methods=["userbert"],
                                 cells=lambda: [], pretraining_owner=lambda method: method)
    runner = types.SimpleNamespace(spec=spec, pretrained_dir=lambda method, split, pseed=None: model, run_dir=None,
                                   is_reference=lambda cell: False)
    written = write_model_cards(runner, "model_cards")
    assert not (tmp_path / "ran").exists()
    assert [p.name for p in written] == ["grid-userbert.md"]  # written for pip users too (package code)
    assert "Generated by model_cards/generate_cards.py" in Path("model_cards/grid-userbert.md").read_text()
    # a file of the user's that is not a generated card is not replaced
    (tmp_path / "model_cards" / "grid-userbert.md").write_text("my notes\n")
    with pytest.raises(ValueError, match="not a card generated"):
        write_model_cards(runner, "model_cards")
    assert (tmp_path / "model_cards" / "grid-userbert.md").read_text() == "my notes\n"
