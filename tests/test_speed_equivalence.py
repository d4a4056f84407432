"""The fast building blocks give the outputs of the straightforward implementations they replaced, and the model
runs device-agnostically (bf16 autocast, no host round trips).

Reference implementations below are the code before the speed-ups (commit 288f8ca): explicit softmax attention
with three projections, a GRU over packed sequences, word-tensor comparisons for identical texts. Models get
random parameters (biases included) so that padding leaks through biases would show.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from userbert_hf import PRESETS, UserBertConfig, UserBertForPreTraining, UserBertModel
from userbert_hf.collation import BehaviorCatalog, build_behavior_table
from userbert_hf.modeling_userbert import UserBertContextEncoder, UserBertSelfAttention, UserBertTextEncoder
from model_helpers import randomize_weights  # random parameters, biases included; padding rows stay zero

ATOL = 1e-5


# ----------------------------------------------------------------------------------------------
# reference implementations (the code before the speed-ups)
# ----------------------------------------------------------------------------------------------
def reference_self_attention(module: UserBertSelfAttention, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    n, s, _ = hidden.shape

    def heads(x):  # (N, S, H) -> (N, heads, S, head_size)
        return x.view(n, s, module.num_heads, module.head_size).transpose(1, 2)

    q, k, v = heads(module.query(hidden)), heads(module.key(hidden)), heads(module.value(hidden))
    scores = q @ k.transpose(-1, -2) / module.head_size**0.5  # (N, heads, S, S)
    allowed = mask[:, None, None, :]  # (N, 1, 1, S)
    if getattr(module, "causal", False):  # SASRec: no position attends to a later one
        allowed = allowed & torch.ones(s, s, dtype=torch.bool).tril()
    scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
    context = torch.softmax(scores, dim=-1) @ v  # (N, heads, S, head_size)
    return module.output(context.transpose(1, 2).reshape(n, s, -1))


def reference_gru(module: UserBertContextEncoder, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    lengths = mask.sum(-1).clamp(min=1).cpu()
    packed = nn.utils.rnn.pack_padded_sequence(hidden, lengths, batch_first=True, enforce_sorted=False)
    output, _ = module.gru(packed)
    output, _ = nn.utils.rnn.pad_packed_sequence(output, batch_first=True, total_length=mask.shape[1])
    return module.dropout(output) * mask.unsqueeze(-1)


class ReferenceBlocks:
    """Context manager: swap the reference implementations into the model classes."""

    def __enter__(self):
        self.attention = UserBertSelfAttention.forward
        self.context = UserBertContextEncoder.forward
        UserBertSelfAttention.forward = reference_self_attention
        fast_context = self.context

        def context_forward(module, hidden, mask):
            if module.kind == "gru":
                return reference_gru(module, hidden, mask)
            return fast_context(module, hidden, mask)

        UserBertContextEncoder.forward = context_forward
        return self

    def __exit__(self, *exc):
        UserBertSelfAttention.forward = self.attention
        UserBertContextEncoder.forward = self.context


def reference_identical(token_ids: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a == b) | (token_ids[a] == token_ids[b]).all(-1)


def reference_table_width(token_ids: torch.Tensor, unique_ids: torch.Tensor) -> int:
    tokens = token_ids[unique_ids]
    return int((tokens != 0).any(0).nonzero().max()) + 1 if bool((tokens != 0).any()) else 1


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------
def _batch(config: UserBertConfig, lengths: list[int], seed: int = 0) -> dict[str, torch.Tensor]:
    """Batch-table inputs for users with ``lengths`` behaviours (an empty user included by callers)."""
    generator = torch.Generator().manual_seed(seed)
    length = max(max(lengths), 1)
    ids = torch.zeros(len(lengths), length, dtype=torch.long)
    for row, n in enumerate(lengths):
        ids[row, :n] = torch.randint(1, config.behavior_vocab_size, (n,), generator=generator)
    catalog = BehaviorCatalog(config.behavior_vocab_size, _token_table(config, seed) if config.behavior_type == "text" else None)
    table, (index,) = build_behavior_table(catalog, ids)
    return {**table, "behavior_index": index, "attention_mask": (ids != 0).long()}


def _token_table(config: UserBertConfig, seed: int = 0) -> torch.Tensor:
    """Word ids per behaviour: 1..max_words words, right-padded; row 0 (padding) empty; a duplicate text."""
    generator = torch.Generator().manual_seed(seed + 1)
    tokens = torch.zeros(config.behavior_vocab_size, config.max_words, dtype=torch.long)
    for row in range(1, config.behavior_vocab_size):
        n = int(torch.randint(1, config.max_words + 1, (1,), generator=generator))
        tokens[row, :n] = torch.randint(2, config.word_vocab_size, (n,), generator=generator)
    tokens[5] = tokens[3]  # behaviours 3 and 5 share a title
    return tokens


# ----------------------------------------------------------------------------------------------
# building blocks
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("output_projection", [False, True])
def test_fused_self_attention_matches_softmax_attention(output_projection):
    torch.manual_seed(0)
    module = randomize_weights(UserBertSelfAttention(16, 4, dropout=0.0, output_projection=output_projection))
    hidden = torch.randn(5, 7, 16, requires_grad=True)
    mask = torch.arange(7)[None] < torch.tensor([7, 3, 1, 0, 5])[:, None]  # (5, 7), row 3 fully padded
    fast = module(hidden, mask)
    reference = reference_self_attention(module, hidden, mask)
    keys = mask.any(-1)  # a row without any key: the reference averages padding, the fused kernel gives 0
    torch.testing.assert_close(fast[keys], reference[keys], atol=ATOL, rtol=1e-5)
    assert torch.isfinite(fast).all()
    # Gradients (parameters and inputs) through the valid positions match too.
    (grad_fast,) = torch.autograd.grad((fast * mask[..., None]).sum(), module.query.weight)
    (grad_reference,) = torch.autograd.grad((reference * mask[..., None]).sum(), module.query.weight)
    torch.testing.assert_close(grad_fast, grad_reference, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("lengths", [[6, 2, 0, 4], [6, 6, 5, 6]], ids=["ragged-packed", "dense-padded"])
def test_gru_paths_match_packed_gru(tiny_config, lengths):
    """Ragged CPU batches run packed, dense ones (and every batch on accelerators) padded: same states."""
    config = tiny_config("gru4rec", num_hidden_layers=2)
    encoder = randomize_weights(UserBertContextEncoder(config))
    hidden = torch.randn(4, 6, config.hidden_size)
    mask = torch.arange(6)[None] < torch.tensor(lengths)[:, None]
    hidden = hidden * mask[..., None]
    torch.testing.assert_close(encoder(hidden, mask), reference_gru(encoder, hidden, mask), atol=ATOL, rtol=1e-5)


@pytest.mark.parametrize("text_encoder", ["self_attention", "cnn"])
def test_length_chunked_text_encoding_matches_one_padded_batch(tiny_config, text_encoder):
    """Rows sorted by text length and encoded in chunks cut to their longest text give the vectors (and the
    gradients) of encoding the whole padded table at once."""
    config = tiny_config("nrms", text_encoder=text_encoder, max_words=8)
    torch.manual_seed(0)
    encoder = randomize_weights(UserBertTextEncoder(config))
    encoder.length_chunk_rows = 3  # chunk even this small table
    tokens = _token_table(config)[torch.randperm(config.behavior_vocab_size, generator=torch.Generator().manual_seed(0))]
    chunked, padded = encoder(tokens), encoder.encode_padded(tokens)  # (40, H) each
    torch.testing.assert_close(chunked, padded, atol=ATOL, rtol=1e-5)
    assert (chunked[(tokens != 0).any(-1)].abs().sum(-1) > 0).all()  # every text got a real vector
    weights = torch.randn_like(padded)
    (grad_chunked,) = torch.autograd.grad((chunked * weights).sum(), encoder.word_embeddings.weight)
    (grad_padded,) = torch.autograd.grad((padded * weights).sum(), encoder.word_embeddings.weight)
    torch.testing.assert_close(grad_chunked, grad_padded, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_user_model_matches_reference_blocks(tiny_config, preset):
    """Every preset: user embeddings and contextual states equal those of the reference blocks."""
    config = tiny_config(preset, num_hidden_layers=2)
    torch.manual_seed(0)
    model = randomize_weights(UserBertModel(config))
    batch = _batch(config, [16, 3, 1, 0, 9])
    with torch.no_grad():
        fast = model(**batch)
        with ReferenceBlocks():
            reference = model(**batch)
    torch.testing.assert_close(fast.user_embedding, reference.user_embedding, atol=ATOL, rtol=1e-5)
    torch.testing.assert_close(fast.last_hidden_state, reference.last_hidden_state, atol=ATOL, rtol=1e-5)


@pytest.mark.parametrize("preset", ["nrms", "lstur", "bert4rec"])
def test_pretraining_loss_and_gradients_match_reference_blocks(tiny_config, preset):
    config = tiny_config(preset, num_hidden_layers=2)
    torch.manual_seed(0)
    model = randomize_weights(UserBertForPreTraining(config)).train()  # dropout 0 in the tiny config
    batch = _batch(config, [16, 12, 5, 9])
    masked = torch.zeros_like(batch["attention_mask"], dtype=torch.bool)
    masked[:, 1] = True
    rows = int(masked.sum())
    candidates = torch.randint(1, batch["behavior_index"].max() + 1, (rows, 5), generator=torch.Generator().manual_seed(3))
    inputs = {**batch, "masked_positions": masked, "mbp_candidate_index": candidates}

    def loss_and_grads():
        model.zero_grad()
        loss = model(**inputs).loss
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    fast_loss, fast_grads = loss_and_grads()
    with ReferenceBlocks():
        reference_loss, reference_grads = loss_and_grads()
    torch.testing.assert_close(fast_loss, reference_loss, atol=ATOL, rtol=1e-5)
    assert len(fast_grads) == len(reference_grads)
    for fast, reference in zip(fast_grads, reference_grads):
        torch.testing.assert_close(fast, reference, atol=1e-4, rtol=1e-4)


# ----------------------------------------------------------------------------------------------
# catalog internals
# ----------------------------------------------------------------------------------------------
def test_catalog_identity_and_table_width_match_word_comparisons():
    config = UserBertConfig(behavior_vocab_size=40, word_vocab_size=30, max_words=6)
    tokens = _token_table(config)
    tokens[7, :] = 0  # an empty text (same "text" as padding)
    tokens[9] = tokens[11]
    catalog = BehaviorCatalog(config.behavior_vocab_size, tokens)
    ids = torch.arange(config.behavior_vocab_size)
    fast = catalog.identical(ids[:, None], ids[None, :])
    assert torch.equal(fast, reference_identical(tokens, ids[:, None], ids[None, :]))
    assert fast[3, 5] and fast[9, 11] and fast[0, 7] and not fast[3, 4]
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        unique = torch.unique(torch.randint(0, config.behavior_vocab_size, (5,), generator=generator))
        width = catalog.table_inputs(unique)["behavior_token_ids"].shape[1]
        assert width == reference_table_width(tokens, unique)
    assert catalog.table_inputs(torch.tensor([0, 7]))["behavior_token_ids"].shape == (2, 1)


def test_behavior_table_indices_point_at_the_same_ids():
    catalog = BehaviorCatalog(50)
    a, b = torch.tensor([[3, 4, 0], [4, 9, 9]]), torch.tensor([[[9, 1]], [[3, 3]]])
    table, (index_a, index_b) = build_behavior_table(catalog, a, b)
    assert torch.equal(table["behavior_ids"][index_a], a) and torch.equal(table["behavior_ids"][index_b], b)
    assert table["behavior_ids"].tolist() == [0, 1, 3, 4, 9]


# ----------------------------------------------------------------------------------------------
# GPU readiness, checked on CPU
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("preset", ["nrms", "bert4rec", "gru4rec"])
def test_bf16_autocast_gives_finite_losses_close_to_fp32(tiny_config, preset):
    config = tiny_config(preset, num_hidden_layers=2)
    torch.manual_seed(0)
    model = randomize_weights(UserBertForPreTraining(config), scale=0.2)
    batch = _batch(config, [16, 12, 5, 9])
    masked = torch.zeros_like(batch["attention_mask"], dtype=torch.bool)
    masked[:, 0] = True
    candidates = torch.randint(1, batch["behavior_index"].max() + 1, (4, 5), generator=torch.Generator().manual_seed(1))
    inputs = {**batch, "masked_positions": masked, "mbp_candidate_index": candidates}
    with torch.no_grad():
        fp32 = model(**inputs).mbp_loss
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = model(**inputs).mbp_loss
    assert torch.isfinite(bf16)
    assert abs(float(bf16) - float(fp32)) < 0.05 * max(1.0, abs(float(fp32)))
    # and it trains under autocast: gradients are finite
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(**inputs).loss
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def _run_on_meta(model: nn.Module, batch: dict) -> None:
    """Forward + backward with every tensor on the meta device (shapes, no data): any ``.cpu()``, ``.item()``
    or ``bool(tensor)`` raises there, as each would stall a GPU."""
    model = model.to("meta")
    model(**{k: v.to("meta") for k, v in batch.items()}).user_embedding.sum().backward()


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_user_model_step_has_no_host_round_trips(tiny_config, preset):
    config = tiny_config(preset, num_hidden_layers=2)
    _run_on_meta(UserBertModel(config).train(), _batch(config, [16, 3, 1, 9]))


def test_meta_check_catches_a_host_round_trip(tiny_config):
    """The check above fails on the code before the speed-ups (the packed GRU reads its lengths on the host)."""
    config = tiny_config("gru4rec")
    with ReferenceBlocks(), pytest.raises(NotImplementedError, match="meta"):
        _run_on_meta(UserBertModel(config).train(), _batch(config, [16, 3, 1, 9]))


# ----------------------------------------------------------------------------------------------
# batched per-impression metrics
# ----------------------------------------------------------------------------------------------
def test_batched_impression_metrics_equal_the_per_impression_functions():
    """The sort/bincount computation over all impressions gives the mean of the per-impression functions, with
    tied scores (average-rank AUC, MIND tie order), single-class, click-free and empty impressions."""
    import numpy as np

    from userbert_hf.finetuning.metrics import (
        auc_score, grouped_impression_metrics, impression_metrics, mrr_score, ndcg_score,
    )
    from userbert_hf.finetuning.news import make_news_compute_metrics

    rng = np.random.default_rng(0)
    labels, scores = [], []
    for i in range(300):
        size = int(rng.integers(0, 25))
        labels.append((rng.random(size) < rng.random()).astype(int))
        scores.append(rng.integers(0, 6, size).astype(float))  # many ties
    labels[5], scores[5] = np.array([1, 1, 1]), np.array([0.1, 0.2, 0.3])  # single class
    metrics = impression_metrics(labels, scores, ks=(1, 5, 10))
    aucs = [auc_score(y, s) for y, s in zip(labels, scores) if 0 < y.sum() < len(y)]
    clicked = [(y, s) for y, s in zip(labels, scores) if y.sum() > 0]
    assert metrics["auc"] == pytest.approx(np.mean(aucs), abs=1e-12)
    assert metrics["mrr"] == pytest.approx(np.mean([mrr_score(y, s) for y, s in clicked]), abs=1e-12)
    for k in (1, 5, 10):
        assert metrics[f"ndcg@{k}"] == pytest.approx(np.mean([ndcg_score(y, s, k) for y, s in clicked]), abs=1e-12)
    assert metrics["num_impressions"] == 300
    assert metrics["num_auc_skipped"] == 300 - len(aucs) and metrics["num_no_click_skipped"] == 300 - len(clicked)

    # the flat (grouped) and padded (Trainer) layouts give the same numbers
    groups = np.concatenate([np.full(len(y), 1000 - i) for i, y in enumerate(labels)])
    position = np.concatenate([np.arange(len(y)) for y in labels])
    interleaved = np.lexsort((groups, position))  # rows of all impressions interleaved, each one's order kept
    grouped = grouped_impression_metrics(
        groups[interleaved], np.concatenate(labels)[interleaved], np.concatenate(scores)[interleaved], ks=(1, 5, 10)
    )
    nonempty = [i for i, y in enumerate(labels) if len(y)]
    assert grouped["auc"] == pytest.approx(metrics["auc"]) and grouped["mrr"] == pytest.approx(metrics["mrr"])
    assert grouped["ndcg@5"] == pytest.approx(metrics["ndcg@5"]) and grouped["num_impressions"] == len(nonempty)
    width = max(len(y) for y in labels)
    padded_labels = np.full((len(labels), width), -100)
    padded_scores = np.zeros((len(labels), width))
    for i, (y, s) in enumerate(zip(labels, scores)):
        padded_labels[i, : len(y)], padded_scores[i, : len(s)] = y, s
    news = make_news_compute_metrics(ks=(5, 10))((padded_scores, padded_labels))
    assert news["mrr"] == pytest.approx(metrics["mrr"]) and news["ndcg@10"] == pytest.approx(metrics["ndcg@10"])
    assert news["num_impressions"] == len(nonempty)


# ----------------------------------------------------------------------------------------------
# attention-probability dropout and the fused kernel
# ----------------------------------------------------------------------------------------------
ATTENTION_PRESETS = ["nrms", "bert4rec", "sasrec"]


def _pretraining_loss_and_grads(model, config, flash_only: bool):
    """One training-mode forward + backward of UserBertForPreTraining: (loss, gradients). ``flash_only`` allows
    only PyTorch's fused flash kernel for scaled_dot_product_attention (it raises when that kernel cannot run)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    batch = _batch(config, [16, 12, 5, 9])
    masked = torch.zeros_like(batch["attention_mask"], dtype=torch.bool)
    masked[:, 1] = True
    candidates = torch.randint(
        1, batch["behavior_index"].max() + 1, (int(masked.sum()), 5), generator=torch.Generator().manual_seed(3)
    )
    backends = [SDPBackend.FLASH_ATTENTION] if flash_only else [SDPBackend.MATH]
    model.zero_grad()
    torch.manual_seed(1)
    with sdpa_kernel(backends):
        loss = model(**batch, masked_positions=masked, mbp_candidate_index=candidates).loss
        loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]


@pytest.mark.parametrize("preset", ATTENTION_PRESETS)
def test_training_without_attention_dropout_runs_the_fused_kernel_with_the_unfused_results(tiny_config, preset):
    """attention_probs_dropout_prob=0: a training step runs with only the fused flash kernel allowed and gives the
    loss and gradients of the unfused math path; with attention dropout on, the fused kernel cannot run on CPU."""
    config = tiny_config(preset, num_hidden_layers=2, attention_probs_dropout_prob=0.0)  # dropout 0 (tiny config)
    torch.manual_seed(0)
    model = randomize_weights(UserBertForPreTraining(config)).train()
    fused_loss, fused_grads = _pretraining_loss_and_grads(model, config, flash_only=True)
    math_loss, math_grads = _pretraining_loss_and_grads(model, config, flash_only=False)
    torch.testing.assert_close(fused_loss, math_loss, atol=ATOL, rtol=1e-5)
    assert len(fused_grads) == len(math_grads) > 0
    for fused, math in zip(fused_grads, math_grads):
        torch.testing.assert_close(fused, math, atol=1e-4, rtol=1e-4)

    dropping = UserBertForPreTraining(tiny_config(preset, num_hidden_layers=2, attention_probs_dropout_prob=0.2))
    dropping.load_state_dict(model.state_dict())
    with pytest.raises(RuntimeError, match="No available kernel"):
        _pretraining_loss_and_grads(dropping.train(), config, flash_only=True)


@pytest.mark.parametrize("preset", ATTENTION_PRESETS)
def test_attention_probs_dropout_acts_only_in_training(tiny_config, preset):
    """Same weights, attention dropout 0 or 0.2: equal outputs in eval; in training (every other dropout 0) the
    model with 0 is deterministic and equals eval, the one with 0.2 is not."""
    batch = _batch(tiny_config(preset), [16, 3, 1, 9])
    models = {}
    for p in (0.0, 0.2):
        torch.manual_seed(0)
        models[p] = randomize_weights(UserBertModel(tiny_config(preset, num_hidden_layers=2, attention_probs_dropout_prob=p)))
    models[0.2].load_state_dict(models[0.0].state_dict())
    with torch.no_grad():
        evaluated = {p: m.eval()(**batch).user_embedding for p, m in models.items()}
        trained = {p: m.train()(**batch).user_embedding for p, m in models.items()}
    torch.testing.assert_close(evaluated[0.0], evaluated[0.2], atol=ATOL, rtol=1e-5)
    torch.testing.assert_close(trained[0.0], evaluated[0.0], atol=ATOL, rtol=1e-5)
    assert not torch.allclose(trained[0.2], evaluated[0.2], atol=1e-3)


def test_presets_set_attention_probs_dropout_from_their_reference_implementations():
    """NRMS (dropout on embeddings and attention outputs only) and the models without self-attention: 0; the
    BERT4Rec and SASRec reference implementations drop attention probabilities (0.2)."""
    values = {name: UserBertConfig.from_preset(name).attention_probs_dropout_prob for name in PRESETS}
    assert values == {"nrms": 0.0, "naml": 0.0, "lstur": 0.0, "gru4rec": 0.0, "nativectr": 0.0,
                      "bert4rec": 0.2, "sasrec": 0.2}
    assert UserBertConfig().attention_probs_dropout_prob == 0.0
    assert UserBertConfig.from_preset("nrms", attention_probs_dropout_prob=0.2).attention_probs_dropout_prob == 0.2
    with pytest.raises(Exception, match="attention_probs_dropout_prob"):
        UserBertConfig(attention_probs_dropout_prob=1.0)
