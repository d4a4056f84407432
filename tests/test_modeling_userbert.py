"""Behavioural tests for userbert_hf.modeling_userbert: UserBertModel, the pure losses and UserBertForPreTraining.

Models use tiny configs (see conftest.py) and random, non-default parameters (``model_helpers.randomize_weights``):
the default init zeroes every bias, which would hide padding leaks through biases.
"""

from __future__ import annotations

import doctest
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoModelForPreTraining

import userbert_hf
from userbert_hf import PRESETS, UserBertConfig, UserBertForPreTraining, UserBertModel
from userbert_hf import configuration_userbert, modeling_userbert
from userbert_hf.collation import BehaviorCatalog, UserBertCollator, build_behavior_table, pad_sequences
from userbert_hf.configuration_userbert import AGGREGATORS, CONTEXT_ENCODERS
from userbert_hf.modeling_userbert import contrastive_loss_from_scores, in_batch_contrastive_loss
from model_helpers import randomize_weights

ALL_PRESETS = sorted(PRESETS)
TEXT_PRESETS = sorted(name for name, p in PRESETS.items() if p["behavior_type"] == "text")
ID_PRESETS = sorted(name for name, p in PRESETS.items() if p["behavior_type"] == "id")
ATOL = 1e-5


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------
def _model(config: UserBertConfig, cls=UserBertModel, seed: int = 0):
    torch.manual_seed(seed)
    return randomize_weights(cls(config), seed)


def _inputs(config: UserBertConfig, lengths, length=None, words=5, seed=0):
    """Per-position inputs for users with ``lengths`` behaviours: ``(inputs, attention_mask)``.

    Text behaviours get 1..``words`` words each (right-padded with 0 to ``words``)."""
    generator = torch.Generator().manual_seed(seed)
    length = length or max(max(lengths), 1)
    mask = torch.zeros(len(lengths), length, dtype=torch.long)
    for row, n in enumerate(lengths):
        mask[row, :n] = 1
    if config.behavior_type == "id":
        ids = torch.randint(1, config.behavior_vocab_size, (len(lengths), length), generator=generator) * mask
        return {"behavior_ids": ids}, mask
    tokens = torch.randint(1, config.word_vocab_size, (len(lengths), length, words), generator=generator)
    word_counts = torch.randint(1, words + 1, (len(lengths), length, 1), generator=generator)
    tokens = tokens * (torch.arange(words) < word_counts) * mask[..., None]
    return {"behavior_token_ids": tokens}, mask


def _pad_inputs(inputs: dict, extra_positions: int, extra_words: int = 0) -> dict:
    """Append padding positions (and, for text, padding words)."""
    if "behavior_ids" in inputs:
        return {"behavior_ids": F.pad(inputs["behavior_ids"], (0, extra_positions))}
    return {"behavior_token_ids": F.pad(inputs["behavior_token_ids"], (0, extra_words, 0, extra_positions))}


def _text_catalog(config: UserBertConfig, seed=0) -> BehaviorCatalog:
    generator = torch.Generator().manual_seed(seed)
    n, words = config.behavior_vocab_size, 6
    tokens = torch.randint(1, config.word_vocab_size, (n, words), generator=generator)
    counts = torch.randint(1, words + 1, (n, 1), generator=generator)
    tokens = tokens * (torch.arange(words) < counts)
    tokens[0] = 0  # padding behaviour has no words
    return BehaviorCatalog(n, tokens)


def _catalog(config: UserBertConfig) -> BehaviorCatalog:
    return _text_catalog(config) if config.behavior_type == "text" else BehaviorCatalog(config.behavior_vocab_size)


def _run_fenced_doctests(module):
    """Run a module's docstring examples, which sit inside markdown code fences (``` lines are dropped)."""

    class FencedParser(doctest.DocTestParser):
        def parse(self, string, name="<string>"):
            lines = [line for line in string.splitlines() if not line.strip().startswith("```")]
            return super().parse("\n".join(lines), name)

    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    for test in doctest.DocTestFinder(parser=FencedParser()).find(module):
        runner.run(test)
    return runner.summarize(verbose=False)


def test_docstring_examples():
    for module in (modeling_userbert, configuration_userbert):
        result = _run_fenced_doctests(module)
        assert result.failed == 0 and result.attempted > 0, module.__name__


# ----------------------------------------------------------------------------------------------
# 2. padding invariance
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("preset", ALL_PRESETS)
def test_padding_invariance(tiny_config, preset):
    config = tiny_config(preset)
    model = _model(config)
    inputs, mask = _inputs(config, lengths=[5, 3, 1, 4], length=5, words=5)
    padded_inputs = _pad_inputs(inputs, extra_positions=4, extra_words=3)
    padded_mask = F.pad(mask, (0, 4))
    with torch.no_grad():
        out = model(**inputs, attention_mask=mask)
        padded = model(**padded_inputs, attention_mask=padded_mask)
    assert padded.last_hidden_state.shape == (4, 9, config.hidden_size)
    torch.testing.assert_close(padded.user_embedding, out.user_embedding, atol=ATOL, rtol=0)
    valid = mask.bool()
    torch.testing.assert_close(padded.last_hidden_state[:, :5][valid], out.last_hidden_state[valid], atol=ATOL, rtol=0)
    # Padded positions are exactly zero.
    assert (out.last_hidden_state[~valid] == 0).all()
    assert (padded.last_hidden_state[~padded_mask.bool()] == 0).all()
    # The representation is not trivially zero.
    assert out.user_embedding.abs().min(-1).values.max() > 0
    assert out.last_hidden_state[valid].abs().sum(-1).min() > 0


@pytest.mark.parametrize("preset", ALL_PRESETS)
def test_attention_mask_is_inferred_from_padding_ids(tiny_config, preset):
    config = tiny_config(preset)
    model = _model(config)
    inputs, mask = _inputs(config, lengths=[4, 2])
    with torch.no_grad():
        explicit = model(**inputs, attention_mask=mask)
        inferred = model(**inputs)
    assert torch.equal(inferred.attention_mask, mask.bool())
    torch.testing.assert_close(inferred.user_embedding, explicit.user_embedding, atol=0, rtol=0)


# ----------------------------------------------------------------------------------------------
# 3. users without behaviours
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("context_encoder", CONTEXT_ENCODERS)
@pytest.mark.parametrize("aggregator", AGGREGATORS)
def test_user_without_behaviours(tiny_config, context_encoder, aggregator):
    config = tiny_config(behavior_type="id", context_encoder=context_encoder, aggregator=aggregator,
                         num_hidden_layers=2)
    model = _model(config)
    ids = torch.tensor([[5, 9, 3, 0], [0, 0, 0, 0], [7, 7, 0, 0]])
    mask = (ids != 0).long()
    model.zero_grad()
    out = model(behavior_ids=ids, attention_mask=mask)
    assert torch.isfinite(out.user_embedding).all() and torch.isfinite(out.last_hidden_state).all()
    assert (out.user_embedding[1] == 0).all()
    assert (out.last_hidden_state[1] == 0).all()
    # The empty user does not change the others.
    keep = torch.tensor([0, 2])
    with torch.no_grad():
        alone = model(behavior_ids=ids[keep], attention_mask=mask[keep])
    torch.testing.assert_close(out.user_embedding[keep], alone.user_embedding, atol=ATOL, rtol=0)
    assert out.user_embedding[keep].abs().sum(-1).min() > 0
    # Gradients stay finite (no NaN from fully masked softmax / max rows).
    out.user_embedding.sum().backward()
    for name, param in model.named_parameters():
        if param.grad is not None:
            assert torch.isfinite(param.grad).all(), name


@pytest.mark.parametrize("preset", TEXT_PRESETS)
def test_text_user_without_behaviours(tiny_config, preset):
    config = tiny_config(preset)
    model = _model(config)
    inputs, mask = _inputs(config, lengths=[3, 0, 2])
    with torch.no_grad():
        out = model(**inputs, attention_mask=mask)
        alone = model(behavior_token_ids=inputs["behavior_token_ids"][[0, 2]], attention_mask=mask[[0, 2]])
    assert torch.isfinite(out.user_embedding).all()
    assert (out.user_embedding[1] == 0).all()
    torch.testing.assert_close(out.user_embedding[[0, 2]], alone.user_embedding, atol=ATOL, rtol=0)


# ----------------------------------------------------------------------------------------------
# 4. unique-behaviour table path == per-position path
# ----------------------------------------------------------------------------------------------
def _shared_behaviour_users(seed=0, vocab=40):
    generator = torch.Generator().manual_seed(seed)
    users = []
    for u in range(25):
        n = int(torch.randint(1, 7, (1,), generator=generator))
        seq = torch.randint(1, vocab, (n,), generator=generator).tolist()
        if u < 20:
            seq[int(torch.randint(0, n, (1,), generator=generator))] = 7  # behaviour 7: shared by 20 users
        users.append(seq)
    users.append([])  # and one user without behaviours
    return users


@pytest.mark.parametrize("preset", ALL_PRESETS)
def test_table_path_equals_per_position_path(tiny_config, preset):
    config = tiny_config(preset)
    model = _model(config)
    catalog = _catalog(config)
    users = _shared_behaviour_users(vocab=config.behavior_vocab_size)
    batch = UserBertCollator(catalog)([{"behavior_ids": seq} for seq in users])

    ids = pad_sequences(users)
    distinct = {b for seq in users for b in seq}
    table_key = "behavior_token_ids" if config.behavior_type == "text" else "behavior_ids"
    table = batch[table_key]
    assert table.shape[0] == len(distinct) + 1  # each distinct behaviour once, plus padding
    if config.behavior_type == "text":
        assert int((table == catalog.token_ids[7]).all(-1).sum()) == 1  # shared by 20 users, encoded once
        naive_inputs = {"behavior_token_ids": catalog.token_ids[ids]}
    else:
        assert int((table == 7).sum()) == 1
        naive_inputs = {"behavior_ids": ids}

    with torch.no_grad():
        unique = model(**{table_key: table}, behavior_index=batch["behavior_index"],
                       attention_mask=batch["attention_mask"])
        naive = model(**naive_inputs, attention_mask=(ids != 0).long())
    torch.testing.assert_close(unique.user_embedding, naive.user_embedding, atol=ATOL, rtol=0)
    torch.testing.assert_close(unique.last_hidden_state, naive.last_hidden_state, atol=ATOL, rtol=0)
    assert (unique.user_embedding[-1] == 0).all()


def test_table_path_requires_attention_mask(tiny_config):
    model = _model(tiny_config("gru4rec"))
    with pytest.raises(ValueError, match="attention_mask"):
        model(behavior_ids=torch.tensor([0, 4, 5]), behavior_index=torch.tensor([[1, 2]]))


def test_missing_behaviour_inputs_raise(tiny_config):
    with pytest.raises(ValueError, match="behavior_ids"):
        _model(tiny_config("gru4rec"))(behavior_token_ids=torch.ones(1, 2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="behavior_token_ids"):
        _model(tiny_config("naml"))(behavior_ids=torch.ones(1, 2, dtype=torch.long))


def test_too_many_positions_raise(tiny_config):
    config = tiny_config("bert4rec", max_behaviors=4)
    with pytest.raises(ValueError, match="max_behaviors"):
        _model(config)(behavior_ids=torch.ones(1, 5, dtype=torch.long))


def test_tuple_output_and_pooler(tiny_config):
    model = _model(tiny_config("bert4rec"))
    ids = torch.tensor([[3, 4, 5, 0]])
    with torch.no_grad():
        out = model(behavior_ids=ids)
        as_tuple = model(behavior_ids=ids, return_dict=False)
    assert isinstance(as_tuple, tuple)
    torch.testing.assert_close(as_tuple[0], out.last_hidden_state)
    torch.testing.assert_close(as_tuple[1], out.user_embedding)  # (last_hidden_state, pooler_output, ...) as in BERT
    assert "pooler_output" in out.keys() and out.pooler_output is out.user_embedding  # a real field, not a property
    torch.testing.assert_close(out.behavior_embeddings, model.behavior_encoder.behavior_embeddings(ids))


# ----------------------------------------------------------------------------------------------
# 5. masked positions -> mask embedding
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("preset", ALL_PRESETS)
def test_masked_positions_use_mask_embedding(tiny_config, preset):
    config = tiny_config(preset)
    model = _model(config)
    inputs, mask = _inputs(config, lengths=[5, 4, 3])
    masked = torch.zeros_like(mask, dtype=torch.bool)
    masked[0, 1] = masked[0, 3] = masked[1, 0] = masked[2, 2] = True
    with torch.no_grad():
        out = model(**inputs, attention_mask=mask, masked_positions=masked)
        plain = model(**inputs, attention_mask=mask)
        embeddings = model.get_behavior_embeddings(**inputs)
        replaced = embeddings.clone()
        replaced[masked] = model.mask_embedding.weight[0]
        expected = model.encode_sequences(replaced, mask)
    torch.testing.assert_close(out.user_embedding, expected.user_embedding, atol=ATOL, rtol=0)
    torch.testing.assert_close(out.last_hidden_state, expected.last_hidden_state, atol=ATOL, rtol=0)
    # behavior_embeddings are the encoder outputs before masking.
    torch.testing.assert_close(out.behavior_embeddings, embeddings, atol=0, rtol=0)
    # Masking changes every user that had a masked behaviour.
    assert ((out.user_embedding - plain.user_embedding).abs().max(-1).values > 1e-4).all()


def test_mask_embedding_is_initialised_nonzero(tiny_config):
    torch.manual_seed(0)
    model = UserBertModel(tiny_config("nrms"))
    assert model.mask_embedding.weight.abs().sum() > 0


# ----------------------------------------------------------------------------------------------
# 6. position embeddings count back from the most recent behaviour
# ----------------------------------------------------------------------------------------------
def test_positions_count_back_from_most_recent(tiny_config):
    config = tiny_config(behavior_type="id", context_encoder="none", aggregator="last", use_position_embeddings=True)
    model = _model(config)
    a, b, c, x = 11, 12, 13, 30
    ids = torch.tensor([[a, b, c, 0, 0], [x, a, b, c, 0], [c, 0, 0, 0, 0]])
    with torch.no_grad():
        out = model(behavior_ids=ids)
    emb = model.behavior_encoder.behavior_embeddings.weight
    pos = model.position_embeddings.weight
    # "last" + no context: the user is its most recent behaviour at position 0, whatever came before.
    for row in range(3):
        torch.testing.assert_close(out.user_embedding[row], emb[c] + pos[0], atol=ATOL, rtol=0)
    # Each state is behaviour + position counted back from the end: [a, b, c] -> positions 2, 1, 0.
    lengths = (ids != 0).sum(-1)
    for row in range(3):
        for j in range(int(lengths[row])):
            expected = emb[ids[row, j]] + pos[int(lengths[row]) - 1 - j]
            torch.testing.assert_close(out.last_hidden_state[row, j], expected, atol=ATOL, rtol=0)
    # Prepending an older behaviour leaves the states of the later ones unchanged.
    torch.testing.assert_close(out.last_hidden_state[1, 1:4], out.last_hidden_state[0, 0:3], atol=ATOL, rtol=0)


def test_without_position_embeddings_order_does_not_matter_for_mean(tiny_config):
    config = tiny_config(behavior_type="id", context_encoder="none", aggregator="mean", use_position_embeddings=False)
    model = _model(config)
    assert model.position_embeddings is None
    with torch.no_grad():
        out = model(behavior_ids=torch.tensor([[3, 4, 5], [5, 3, 4]]))
    torch.testing.assert_close(out.user_embedding[0], out.user_embedding[1], atol=ATOL, rtol=0)
    emb = model.behavior_encoder.behavior_embeddings.weight
    torch.testing.assert_close(out.user_embedding[0], emb[[3, 4, 5]].mean(0), atol=ATOL, rtol=0)


@pytest.mark.parametrize("aggregator", ["mean", "max"])
def test_mean_and_max_aggregators_by_hand(tiny_config, aggregator):
    config = tiny_config(behavior_type="id", context_encoder="self_attention", aggregator=aggregator)
    model = _model(config)
    ids = torch.tensor([[3, 4, 5, 0], [6, 0, 0, 0]])
    with torch.no_grad():
        out = model(behavior_ids=ids)
    for row, n in enumerate([3, 1]):
        states = out.last_hidden_state[row, :n]
        expected = states.mean(0) if aggregator == "mean" else states.max(0).values
        torch.testing.assert_close(out.user_embedding[row], expected, atol=ATOL, rtol=0)


# ----------------------------------------------------------------------------------------------
# 7. GRU context encoder and the "last" aggregator
# ----------------------------------------------------------------------------------------------
def test_gru_last_state_matches_manual_gru(tiny_config):
    config = tiny_config("gru4rec", num_hidden_layers=2)
    model = _model(config)
    lengths = [3, 6, 1, 4]  # unsorted on purpose
    inputs, mask = _inputs(config, lengths)
    with torch.no_grad():
        out = model(**inputs, attention_mask=mask)
        for row, n in enumerate(lengths):
            embedded = model.behavior_encoder.behavior_embeddings(inputs["behavior_ids"][row, :n])
            states, _ = model.context_encoder.gru(embedded[None])  # unpadded sequence
            torch.testing.assert_close(out.user_embedding[row], states[0, -1], atol=ATOL, rtol=0)
            torch.testing.assert_close(out.last_hidden_state[row, :n], states[0], atol=ATOL, rtol=0)


def test_lstur_gru_with_positions_matches_manual_gru(tiny_config):
    config = tiny_config("lstur")
    model = _model(config)
    lengths = [2, 5, 3]
    inputs, mask = _inputs(config, lengths)
    with torch.no_grad():
        out = model(**inputs, attention_mask=mask)
        for row, n in enumerate(lengths):
            embedded = model.encode_behaviors(behavior_token_ids=inputs["behavior_token_ids"][row, :n])
            embedded = embedded + model.position_embeddings(torch.arange(n - 1, -1, -1))
            states, _ = model.context_encoder.gru(embedded[None])
            torch.testing.assert_close(out.user_embedding[row], states[0, -1], atol=ATOL, rtol=0)


# ----------------------------------------------------------------------------------------------
# 8. save / load
# ----------------------------------------------------------------------------------------------
SOURCE_DIR = Path(modeling_userbert.__file__).parent


def _assert_checkpoint_files(directory: Path, auto_class: str, class_name: str):
    files = {p.name for p in directory.iterdir()}
    assert "model.safetensors" in files
    assert "pytorch_model.bin" not in files
    for name in ("modeling_userbert.py", "configuration_userbert.py"):
        assert name in files
        assert (directory / name).read_text() == (SOURCE_DIR / name).read_text()
    stored = json.loads((directory / "config.json").read_text())
    assert stored["model_type"] == "userbert"
    assert stored["auto_map"]["AutoConfig"] == "configuration_userbert.UserBertConfig"
    assert stored["auto_map"][auto_class] == f"modeling_userbert.{class_name}"


@pytest.mark.parametrize("preset", ["nrms", "bert4rec"])
def test_user_model_save_and_automodel_load(tiny_config, tmp_path, preset):
    config = tiny_config(preset)
    model = _model(config)
    model.save_pretrained(tmp_path)
    _assert_checkpoint_files(tmp_path, "AutoModel", "UserBertModel")
    inputs, mask = _inputs(config, lengths=[4, 2])
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert type(loaded) is UserBertModel
    with torch.no_grad():
        expected = model(**inputs, attention_mask=mask).user_embedding
        actual = loaded(**inputs, attention_mask=mask).user_embedding
    torch.testing.assert_close(actual, expected, atol=0, rtol=0)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, atol=0, rtol=0)


def test_pretraining_model_save_and_base_model_load(tiny_config, tmp_path):
    config = tiny_config("nrms")
    pretraining = _model(config, UserBertForPreTraining)
    pretraining.save_pretrained(tmp_path)
    _assert_checkpoint_files(tmp_path, "AutoModelForPreTraining", "UserBertForPreTraining")
    inputs, mask = _inputs(config, lengths=[3, 5])
    with torch.no_grad():
        expected = pretraining.userbert(**inputs, attention_mask=mask).user_embedding
        base = UserBertModel.from_pretrained(tmp_path).eval()
        torch.testing.assert_close(base(**inputs, attention_mask=mask).user_embedding, expected, atol=0, rtol=0)
        auto_base = AutoModel.from_pretrained(tmp_path).eval()
        assert type(auto_base) is UserBertModel
        torch.testing.assert_close(auto_base(**inputs, attention_mask=mask).user_embedding, expected, atol=0, rtol=0)
        reloaded = AutoModelForPreTraining.from_pretrained(tmp_path).eval()
        assert type(reloaded) is UserBertForPreTraining
        torch.testing.assert_close(
            reloaded.userbert(**inputs, attention_mask=mask).user_embedding, expected, atol=0, rtol=0
        )


def test_ptum_heads_round_trip(tiny_config, tmp_path):
    config = tiny_config("gru4rec", pretraining_objective="ptum", ptum_next_k=3)
    model = _model(config, UserBertForPreTraining)
    assert len(model.nbp_projections) == 3
    model.save_pretrained(tmp_path)
    loaded = UserBertForPreTraining.from_pretrained(tmp_path)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, atol=0, rtol=0)


# ----------------------------------------------------------------------------------------------
# 9. trust_remote_code where userbert_hf is not importable
# ----------------------------------------------------------------------------------------------
REMOTE_SCRIPT = r"""
import importlib.util, json, sys
sys.path = [p for p in sys.path if 'src' not in p and 'userbert' not in p]
sys.meta_path = [f for f in sys.meta_path if 'editable' not in repr(f).lower() and 'userbert' not in repr(f).lower()]
assert importlib.util.find_spec('userbert_hf') is None, 'userbert_hf still resolvable'
sys.modules['userbert_hf'] = None
try:
    import userbert_hf
except ImportError:
    pass
else:
    raise SystemExit('userbert_hf is importable')
assert importlib.util.find_spec('userbert_hf') is None

import torch
from transformers import AutoModel, AutoModelForPreTraining

args = json.loads(sys.argv[1])
inputs = dict(behavior_token_ids=torch.tensor(args['tokens']), attention_mask=torch.tensor(args['mask']))
result = {}
with torch.no_grad():
    model = AutoModel.from_pretrained(args['model_dir'], trust_remote_code=True).eval()
    result['model_class'] = type(model).__module__ + '.' + type(model).__name__
    result['user_embedding'] = model(**inputs).user_embedding.tolist()
    pretraining = AutoModelForPreTraining.from_pretrained(args['pretraining_dir'], trust_remote_code=True).eval()
    result['pretraining_class'] = type(pretraining).__module__ + '.' + type(pretraining).__name__
    result['pretraining_user_embedding'] = pretraining.userbert(**inputs).user_embedding.tolist()
    try:
        base = AutoModel.from_pretrained(args['pretraining_dir'], trust_remote_code=True).eval()
        result['base_from_pretraining'] = base(**inputs).user_embedding.tolist()
    except Exception as error:
        result['base_from_pretraining_error'] = repr(error)[:300]
result['package_modules'] = sorted(m for m, v in sys.modules.items() if m.startswith('userbert_hf') and v is not None)
print('RESULT ' + json.dumps(result))
"""


@pytest.fixture(scope="module")
def remote_code_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("remote")
    # Separate config objects: save_pretrained writes auto_map into the (shared) config object, which would
    # otherwise leak the AutoModel entry of the first checkpoint into the second.
    config = UserBertConfig.from_preset("nrms", **_TINY_FOR_REMOTE)
    model = _model(config)
    pretraining = _model(UserBertConfig.from_preset("nrms", **_TINY_FOR_REMOTE), UserBertForPreTraining, seed=1)
    model.save_pretrained(root / "model")
    pretraining.save_pretrained(root / "pretraining")
    inputs, mask = _inputs(config, lengths=[4, 1, 3])
    with torch.no_grad():
        expected = model(**inputs, attention_mask=mask).user_embedding
        expected_pretraining = pretraining.userbert(**inputs, attention_mask=mask).user_embedding
    args = dict(model_dir=str(root / "model"), pretraining_dir=str(root / "pretraining"),
                tokens=inputs["behavior_token_ids"].tolist(), mask=mask.tolist())
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HF_MODULES_CACHE")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(root / "hf_home"))
    work = root / "cwd"
    work.mkdir()
    proc = subprocess.run([sys.executable, "-c", REMOTE_SCRIPT, json.dumps(args)], cwd=work, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):]), expected, expected_pretraining


_TINY_FOR_REMOTE = dict(behavior_vocab_size=40, word_vocab_size=60, hidden_size=16, word_embedding_size=12,
                        attention_query_size=8, max_words=8, max_behaviors=16, num_attention_heads=4, dropout=0.0)


def test_trust_remote_code_without_package(remote_code_run):
    result, expected, expected_pretraining = remote_code_run
    assert result["package_modules"] == []
    assert result["model_class"].startswith("transformers_modules.")
    assert result["model_class"].endswith("modeling_userbert.UserBertModel")
    assert result["pretraining_class"].endswith("modeling_userbert.UserBertForPreTraining")
    torch.testing.assert_close(torch.tensor(result["user_embedding"]), expected, atol=ATOL, rtol=0)
    torch.testing.assert_close(torch.tensor(result["pretraining_user_embedding"]), expected_pretraining,
                               atol=ATOL, rtol=0)


def test_pretraining_checkpoint_loads_as_user_model_with_remote_code(remote_code_run):
    result, _, expected_pretraining = remote_code_run
    assert "base_from_pretraining" in result, result.get("base_from_pretraining_error")
    torch.testing.assert_close(torch.tensor(result["base_from_pretraining"]), expected_pretraining,
                               atol=ATOL, rtol=0)


# ----------------------------------------------------------------------------------------------
# 10. pure losses
# ----------------------------------------------------------------------------------------------
def test_contrastive_loss_hand_value():
    loss, mean, accuracy = contrastive_loss_from_scores(torch.tensor([[2.0, 0.0, 0.0]]))
    expected = -math.log(math.exp(2) / (math.exp(2) + 2))
    assert abs(expected - 0.2395) < 1e-4
    assert float(loss) == pytest.approx(expected, abs=1e-6)
    assert float(mean) == pytest.approx(expected, abs=1e-6)
    assert float(accuracy) == 1.0


def test_contrastive_loss_normalizer_and_accuracy():
    scores = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, 1.0], [2.0, 2.5, 1.0], [4.0, -1.0, 0.0]], requires_grad=True)
    per_row = -torch.log_softmax(scores.detach(), -1)[:, 0]
    loss, mean, accuracy = contrastive_loss_from_scores(scores)
    torch.testing.assert_close(loss, per_row.mean())
    torch.testing.assert_close(mean, per_row.mean())
    assert float(accuracy) == 0.5  # rows 0 and 3 rank the positive first
    assert loss.requires_grad and not mean.requires_grad and not accuracy.requires_grad

    loss10, mean10, _ = contrastive_loss_from_scores(scores, normalizer=10.0)
    torch.testing.assert_close(loss10, per_row.sum() / 10)
    torch.testing.assert_close(mean10, per_row.mean())  # the logged mean ignores the normalizer
    loss_t, _, _ = contrastive_loss_from_scores(scores, normalizer=torch.tensor(8.0))
    torch.testing.assert_close(loss_t, per_row.sum() / 8)

    loss10.backward()
    expected_grad = (torch.softmax(scores.detach(), -1) - F.one_hot(torch.zeros(4, dtype=torch.long), 3)) / 10
    torch.testing.assert_close(scores.grad, expected_grad)


def test_contrastive_loss_random_matches_cross_entropy():
    scores = torch.randn(7, 5, generator=torch.Generator().manual_seed(3))
    loss, _, accuracy = contrastive_loss_from_scores(scores)
    torch.testing.assert_close(loss, F.cross_entropy(scores, torch.zeros(7, dtype=torch.long)))
    assert float(accuracy) == pytest.approx(float((scores.argmax(-1) == 0).float().mean()))


def test_contrastive_loss_empty_input():
    scores = torch.zeros(0, 4, requires_grad=True)
    loss, mean, accuracy = contrastive_loss_from_scores(scores)
    assert loss.item() == 0.0 and mean.item() == 0.0 and accuracy.item() == 0.0
    assert torch.isfinite(loss)
    loss.backward()  # still part of the graph, contributes nothing
    assert scores.grad is not None and scores.grad.shape == (0, 4)


def _manual_nt_xent(a, b, temperature):
    n = a.shape[0]
    z = torch.cat([a, b])
    sim = z @ z.T / temperature
    losses, correct = [], []
    for i in range(2 * n):
        partner = (i + n) % (2 * n)
        others = [j for j in range(2 * n) if j != i]
        losses.append(torch.logsumexp(sim[i, others], 0) - sim[i, partner])
        correct.append(max(others, key=lambda j: float(sim[i, j])) == partner)
    return torch.stack(losses), sum(correct) / (2 * n)


@pytest.mark.parametrize("temperature", [1.0, 0.3])
def test_in_batch_contrastive_loss_matches_manual_nt_xent(temperature):
    generator = torch.Generator().manual_seed(5)
    a = torch.randn(4, 8, generator=generator, requires_grad=True)
    b = (a.detach() + 0.8 * torch.randn(4, 8, generator=generator)).requires_grad_()
    per_row, accuracy = _manual_nt_xent(a.detach(), b.detach(), temperature)
    loss, mean, acc = in_batch_contrastive_loss(a, b, temperature)
    torch.testing.assert_close(loss, per_row.mean())
    torch.testing.assert_close(mean, per_row.mean())
    assert float(acc) == pytest.approx(accuracy)
    loss_n, _, _ = in_batch_contrastive_loss(a, b, temperature, normalizer=3.0)
    torch.testing.assert_close(loss_n, per_row.sum() / 3)
    # Symmetric in the two views.
    torch.testing.assert_close(in_batch_contrastive_loss(b, a, temperature)[0], loss)
    loss.backward()
    assert a.grad is not None and b.grad is not None and a.grad.abs().sum() > 0


# ----------------------------------------------------------------------------------------------
# 11. UserBertForPreTraining
# ----------------------------------------------------------------------------------------------
def _userbert_batch(config, seed=0):
    """Hand-built MBP + BSM inputs: 3 users, masked positions, candidates and later-period sequences."""
    generator = torch.Generator().manual_seed(seed)
    vocab = config.behavior_vocab_size
    seq = pad_sequences([[3, 8, 12, 5, 9, 21], [4, 17, 6, 30], [11, 2, 25, 14, 19]])  # (3, 6)
    masked = torch.zeros_like(seq, dtype=torch.bool)
    for r, c in [(0, 1), (0, 4), (1, 2), (2, 0)]:
        masked[r, c] = True
    rows, cols = masked.nonzero(as_tuple=True)
    negatives = torch.randint(31, vocab, (len(rows), 4), generator=generator)  # never equal to a positive
    mbp_ids = torch.cat([seq[rows, cols][:, None], negatives], 1)  # (M, 1 + K)
    bsm_ids = torch.randint(1, vocab, (3, 3, 4), generator=generator)  # (B, 1 + P, L2)
    bsm_ids[:, :, 3] = 0
    bsm_ids[1, 2, 1:] = 0
    table, (index, mbp_index, bsm_index) = build_behavior_table(_catalog(config), seq, mbp_ids, bsm_ids)
    return dict(
        **table, behavior_index=index, attention_mask=(seq != 0).long(), masked_positions=masked,
        mbp_candidate_index=mbp_index, bsm_candidate_index=bsm_index, bsm_candidate_mask=(bsm_ids != 0).long(),
        bsm_valid=torch.tensor([True, False, True]),
    )


def _ce(scores):
    return F.cross_entropy(scores, torch.zeros(scores.shape[0], dtype=torch.long))


@pytest.mark.parametrize("preset", ["bert4rec", "nrms"])
def test_userbert_objective_losses_match_manual(tiny_config, preset):
    config = tiny_config(preset, mbp_loss_weight=0.7, bsm_loss_weight=1.3)
    model = _model(config, UserBertForPreTraining)
    batch = _userbert_batch(config)
    out = model(**batch)
    assert torch.isfinite(out.loss) and out.mbp_loss is not None and out.bsm_loss is not None
    assert out.nbp_loss is None and out.cp_loss is None
    torch.testing.assert_close(out.loss, 0.7 * out.mbp_loss + 1.3 * out.bsm_loss)

    with torch.no_grad():
        base = model.userbert
        table_inputs = {k: batch[k] for k in ("behavior_ids", "behavior_token_ids") if k in batch}
        table = base.encode_behaviors(**table_inputs)
        encoded = base.encode_sequences(table[batch["behavior_index"]], batch["attention_mask"],
                                        batch["masked_positions"])
        rows, cols = batch["masked_positions"].nonzero(as_tuple=True)
        mbp_scores = torch.einsum("mh,mkh->mk", encoded.last_hidden_state[rows, cols],
                                  table[batch["mbp_candidate_index"]])
        valid = batch["bsm_valid"]
        cand_index = batch["bsm_candidate_index"][valid]  # (V, 1 + P, L2)
        v, c, l2 = cand_index.shape
        candidates = base.encode_sequences(table[cand_index.reshape(-1, l2)],
                                           batch["bsm_candidate_mask"][valid].reshape(-1, l2)).user_embedding
        bsm_scores = torch.einsum("vh,vch->vc", encoded.user_embedding[valid], candidates.view(v, c, -1))
    torch.testing.assert_close(out.mbp_loss, _ce(mbp_scores), atol=ATOL, rtol=1e-5)
    torch.testing.assert_close(out.bsm_loss, _ce(bsm_scores), atol=ATOL, rtol=1e-5)
    torch.testing.assert_close(out.user_embedding, encoded.user_embedding, atol=ATOL, rtol=0)

    out.loss.backward()
    assert model.userbert.mask_embedding.weight.grad.abs().sum() > 0


def test_userbert_objective_normalizers_divide_sums(tiny_config):
    config = tiny_config("bert4rec")
    model = _model(config, UserBertForPreTraining)
    batch = _userbert_batch(config)
    with torch.no_grad():
        default = model(**batch)
        scaled = model(**batch, mbp_normalizer=10.0, bsm_normalizer=5.0)
    # 4 masked positions, 2 valid BSM users: loss = 4 * mbp / 10 + 2 * bsm / 5.
    torch.testing.assert_close(scaled.loss, 4 * default.mbp_loss / 10 + 2 * default.bsm_loss / 5)
    torch.testing.assert_close(scaled.mbp_loss, default.mbp_loss)


def test_zero_bsm_weight_leaves_bsm_out_of_the_objective(tiny_config):
    # The model runs each loss whose inputs are present (held-out evaluation reports both tasks); a weight of 0
    # keeps it out of the training objective. The trainer's objective does not even build BSM inputs then.
    config = tiny_config("bert4rec", bsm_loss_weight=0.0)
    batch = _userbert_batch(config)
    out = _model(config, UserBertForPreTraining)(**batch)
    assert out.bsm_loss is not None
    torch.testing.assert_close(out.loss, out.mbp_loss)
    without = {k: v for k, v in batch.items() if not k.startswith("bsm_")}
    out = _model(config, UserBertForPreTraining)(**without)
    assert out.bsm_loss is None and out.bsm_accuracy is None


def test_zero_mbp_weight_leaves_mbp_out_of_the_objective(tiny_config):
    config = tiny_config("bert4rec", mbp_loss_weight=0.0, bsm_loss_weight=2.0)
    out = _model(config, UserBertForPreTraining)(**_userbert_batch(config))
    torch.testing.assert_close(out.loss, 2.0 * out.bsm_loss)


def test_no_masked_positions_gives_zero_mbp_loss_with_gradient_path(tiny_config):
    config = tiny_config("bert4rec", bsm_loss_weight=0.0)
    model = _model(config, UserBertForPreTraining)
    batch = _userbert_batch(config)
    batch["masked_positions"] = torch.zeros_like(batch["masked_positions"])
    batch["mbp_candidate_index"] = batch["mbp_candidate_index"][:0]
    out = model(**batch)
    assert out.loss.item() == 0.0 and out.mbp_loss.item() == 0.0
    out.loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_mbp_query_is_contextual_state_at_masked_position(tiny_config):
    config = tiny_config(behavior_type="id", context_encoder="self_attention", aggregator="attention",
                         bsm_loss_weight=0.0)
    model = _model(config, UserBertForPreTraining)
    batch = _userbert_batch(config)
    with torch.no_grad():
        before = model(**batch)
        # Replace behaviour (0, 5) (not masked) by a new behaviour appended to the table.
        ids = torch.cat([batch["behavior_ids"], torch.tensor([39])])
        index = batch["behavior_index"].clone()
        index[0, 5] = len(ids) - 1
        after = model(**{**batch, "behavior_ids": ids, "behavior_index": index})
        # Only user 0 changed: its masked states attend to the new behaviour; the MBP loss moves.
        assert abs(float(after.mbp_loss) - float(before.mbp_loss)) > 1e-5
        torch.testing.assert_close(after.user_embedding[1:], before.user_embedding[1:], atol=ATOL, rtol=0)
        # The query is not the user embedding (that would be the PTUM / no-context variant).
        table = model.userbert.encode_behaviors(behavior_ids=batch["behavior_ids"])
        rows, _ = batch["masked_positions"].nonzero(as_tuple=True)
        user_scores = torch.einsum("mh,mkh->mk", before.user_embedding[rows], table[batch["mbp_candidate_index"]])
    assert abs(float(_ce(user_scores)) - float(before.mbp_loss)) > 1e-4


def _ptum_batch(config, seed=0):
    generator = torch.Generator().manual_seed(seed)
    vocab = config.behavior_vocab_size
    seq = pad_sequences([[3, 8, 12, 5, 9], [4, 17, 6], [11, 2, 25, 14]])
    masked = torch.zeros_like(seq, dtype=torch.bool)
    masked[0, 2] = masked[1, 1] = masked[2, 1] = True
    rows, cols = masked.nonzero(as_tuple=True)
    mbp_ids = torch.cat([seq[rows, cols][:, None], torch.randint(31, vocab, (len(rows), 3), generator=generator)], 1)
    nbp_ids = torch.randint(1, vocab, (3, config.ptum_next_k, 4), generator=generator)
    table, (index, mbp_index, nbp_index) = build_behavior_table(_catalog(config), seq, mbp_ids, nbp_ids)
    if not config.uses_next_behavior_prediction:  # UserBERT layout: masked positions replaced by [MASK]
        return seq, dict(**table, behavior_index=index, attention_mask=(seq != 0).long(), masked_positions=masked,
                         mbp_candidate_index=mbp_index)
    # PTUM layout (as PtumObjective builds it): the masked behaviours are removed from the sequence and each is
    # predicted from the user embedding of its row (mbp_query_rows).
    keep = (seq != 0) & ~masked
    compact = pad_sequences([row[k].tolist() for row, k in zip(index, keep)])  # indices into the same table
    return seq, dict(**table, behavior_index=compact, attention_mask=pad_sequences([k[k].tolist() for k in keep]).bool(),
                     mbp_candidate_index=mbp_index, mbp_query_rows=rows, masked_positions_dropped=masked,
                     nbp_candidate_index=nbp_index, nbp_valid=torch.tensor([[True, True], [True, False], [False, False]]))


def _ptum_inputs(batch):
    """Model inputs of a test batch (without the bookkeeping entries)."""
    return {k: v for k, v in batch.items() if k != "masked_positions_dropped"}


def _masked(batch):
    return batch.get("masked_positions", batch.get("masked_positions_dropped"))


def test_ptum_objective(tiny_config):
    config = tiny_config("gru4rec", pretraining_objective="ptum", mbp_loss_weight=0.6, next_behavior_loss_weight=1.5)
    model = _model(config, UserBertForPreTraining)
    _, batch = _ptum_batch(config)
    out = model(**_ptum_inputs(batch))
    assert torch.isfinite(out.loss) and out.bsm_loss is None and out.cp_loss is None
    torch.testing.assert_close(out.loss, 0.6 * out.mbp_loss + 1.5 * out.nbp_loss)
    with torch.no_grad():
        table = model.userbert.encode_behaviors(behavior_ids=batch["behavior_ids"])
        rows, _ = _masked(batch).nonzero(as_tuple=True)
        # MBP query: the user embedding (not a position state).
        mbp_scores = torch.einsum("mh,mkh->mk", out.user_embedding[rows], table[batch["mbp_candidate_index"]])
        queries = torch.stack([proj(out.user_embedding) for proj in model.nbp_projections], 1)
        nbp_scores = torch.einsum("bkh,bkch->bkc", queries, table[batch["nbp_candidate_index"]])
        nbp_scores = nbp_scores[batch["nbp_valid"]]
    assert nbp_scores.shape[0] == 3
    torch.testing.assert_close(out.mbp_loss, _ce(mbp_scores), atol=ATOL, rtol=1e-5)
    torch.testing.assert_close(out.nbp_loss, _ce(nbp_scores), atol=ATOL, rtol=1e-5)


def _mbp_loss_from_compact_sequences(model, config, seq, batch):
    """MBP loss when the query is the user embedding of the sequence with the masked behaviours removed (and
    the remaining ones moved up, so the sequence stays left-aligned)."""
    compact = [s[~m][s[~m] != 0].tolist() for s, m in zip(seq, _masked(batch))]
    compact_batch = UserBertCollator(_catalog(config))([{"behavior_ids": row} for row in compact])
    users = model.userbert(**compact_batch).user_embedding  # (B, H)
    table_inputs = {k: batch[k] for k in ("behavior_ids", "behavior_token_ids") if k in batch}
    table = model.userbert.encode_behaviors(**table_inputs)
    rows, _ = _masked(batch).nonzero(as_tuple=True)
    scores = torch.einsum("mh,mkh->mk", users[rows], table[batch["mbp_candidate_index"]])
    return _ce(scores), users


@pytest.mark.parametrize("objective", ["ptum", "userbert"])
def test_masked_behaviours_dropped_for_order_free_model(tiny_config, objective):
    # PTUM, and UserBERT MBP without a context encoder, predict a masked behaviour from the user embedding of the
    # sequence without the masked behaviours. With no positions, no context and attentive pooling, dropping them
    # from the mask is the same as removing them from the sequence.
    config = tiny_config(behavior_type="id", context_encoder="none", aggregator="attention",
                         use_position_embeddings=False, pretraining_objective=objective)
    model = _model(config, UserBertForPreTraining)
    seq, batch = _ptum_batch(config)
    with torch.no_grad():
        out = model(**_ptum_inputs(batch))
        expected_loss, users = _mbp_loss_from_compact_sequences(model, config, seq, batch)
    torch.testing.assert_close(out.mbp_loss, expected_loss, atol=ATOL, rtol=1e-5)
    if objective == "ptum":
        torch.testing.assert_close(out.user_embedding, users, atol=ATOL, rtol=0)


@pytest.mark.parametrize("preset, objective", [("gru4rec", "ptum"), ("nrms", "ptum"), ("naml", "userbert")])
def test_dropped_masked_behaviours_equal_compacted_sequence(tiny_config, preset, objective):
    config = tiny_config(preset, pretraining_objective=objective)
    model = _model(config, UserBertForPreTraining)
    seq, batch = _ptum_batch(config)
    with torch.no_grad():
        out = model(**_ptum_inputs(batch))
        expected_loss, users = _mbp_loss_from_compact_sequences(model, config, seq, batch)
    torch.testing.assert_close(out.mbp_loss, expected_loss, atol=ATOL, rtol=1e-5)
    if objective == "ptum":
        torch.testing.assert_close(out.user_embedding, users, atol=ATOL, rtol=0)


@pytest.mark.parametrize("similarity", ["dot", "cosine"])
def test_cp_objective(tiny_config, similarity):
    # CP scores with its own matcher (cp_matching_*), whatever the other matchers use.
    other = "cosine" if similarity == "dot" else "dot"
    config = tiny_config("bert4rec", pretraining_objective="cp", cp_matching_similarity=similarity,
                         cp_matching_temperature=0.5, matching_similarity=other)
    model = _model(config, UserBertForPreTraining)
    view_a = pad_sequences([[3, 8, 12, 5], [4, 17, 6], [11, 2, 25, 14], [7, 7]])
    view_b = pad_sequences([[8, 12, 5], [17, 4, 6], [11, 2, 25], [7, 9, 7]])
    masked_a = torch.zeros_like(view_a, dtype=torch.bool)
    masked_a[0, 1] = True
    table, (index_a, index_b) = build_behavior_table(BehaviorCatalog(config.behavior_vocab_size), view_a, view_b)
    out = model(**table, behavior_index=index_a, attention_mask=(view_a != 0).long(), masked_positions=masked_a,
                view_index=index_b, view_attention_mask=(view_b != 0).long())
    assert torch.isfinite(out.loss) and out.mbp_loss is None and out.bsm_loss is None
    torch.testing.assert_close(out.loss, out.cp_loss)
    with torch.no_grad():
        emb_a = model.userbert(behavior_ids=view_a, masked_positions=masked_a).user_embedding
        emb_b = model.userbert(behavior_ids=view_b).user_embedding
        expected, _, accuracy = in_batch_contrastive_loss(emb_a, emb_b, 0.5, similarity=similarity)
    torch.testing.assert_close(out.user_embedding, emb_a, atol=ATOL, rtol=0)
    torch.testing.assert_close(out.cp_loss, expected, atol=ATOL, rtol=1e-5)
    torch.testing.assert_close(out.cp_accuracy, accuracy)


@pytest.mark.parametrize("similarity, temperature", [("cosine", 1.0), ("dot", 0.5)])
def test_cp_uses_its_own_matcher_not_the_matching_settings(tiny_config, similarity, temperature):
    # UserBERT's matcher (dot / 0.1 here) must not leak into CP: CP scores with cp_matching_similarity /
    # cp_matching_temperature (defaults cosine / 1.0).
    overrides = {} if similarity == "cosine" else dict(cp_matching_similarity=similarity,
                                                       cp_matching_temperature=temperature)
    config = tiny_config("bert4rec", pretraining_objective="cp", matching_similarity="dot", matching_temperature=0.1,
                         **overrides)
    model = _model(config, UserBertForPreTraining)
    view_a = pad_sequences([[3, 8, 12, 5], [4, 17, 6], [11, 2, 25, 14]])
    view_b = pad_sequences([[8, 12, 5], [17, 4, 6], [11, 2, 25]])
    table, (index_a, index_b) = build_behavior_table(BehaviorCatalog(config.behavior_vocab_size), view_a, view_b)
    out = model(**table, behavior_index=index_a, attention_mask=(view_a != 0).long(),
                masked_positions=torch.zeros_like(view_a, dtype=torch.bool), view_index=index_b,
                view_attention_mask=(view_b != 0).long())
    with torch.no_grad():
        emb_a = model.userbert(behavior_ids=view_a).user_embedding
        emb_b = model.userbert(behavior_ids=view_b).user_embedding
        expected = in_batch_contrastive_loss(emb_a, emb_b, temperature, similarity=similarity)[0]
        other = in_batch_contrastive_loss(emb_a, emb_b, 0.1, similarity="dot")[0]
    torch.testing.assert_close(out.cp_loss, expected, atol=ATOL, rtol=1e-5)
    assert not torch.allclose(out.cp_loss, other, atol=1e-3)


def test_pretraining_requires_behavior_index(tiny_config):
    model = _model(tiny_config("gru4rec"), UserBertForPreTraining)
    with pytest.raises(ValueError, match="behavior_index"):
        model(behavior_ids=torch.tensor([[1, 2]]), attention_mask=torch.ones(1, 2))


def test_package_registers_auto_classes():
    config = UserBertConfig(behavior_type="id", context_encoder="gru", aggregator="last", hidden_size=8,
                            behavior_vocab_size=10)
    assert type(AutoModel.from_config(config)) is UserBertModel
    assert type(AutoModelForPreTraining.from_config(config)) is UserBertForPreTraining
    assert userbert_hf.UserBertModel is UserBertModel
