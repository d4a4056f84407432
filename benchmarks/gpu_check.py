"""One-shot accelerator check: pre-training step times (default and paper size, fp32 and bf16), full-ranking
evaluation throughput and peak memory. Run through ``benchmarks/gpu_check.sh``.

    python benchmarks/gpu_check.py                 # CUDA when available, else CPU at smaller sizes
    python benchmarks/gpu_check.py --tiny          # seconds on CPU (what the test suite runs)

Pre-training step: an NRMS user model (text behaviours: word self-attention + additive attention; behaviour
self-attention; attentive pooling) with UserBERT's MBP (K = 4 candidates per masked behaviour, 10% masked) and
BSM (1 + P = 5 candidate sequences per user), on a synthetic batch in the batch-table layout the trainer builds
(distinct behaviours encoded once): forward, backward and an AdamW step, median over ``--steps`` after
``--warmup``. "default" is the bundled-data job's size (hidden 64, query 32, 4 heads), "paper" the paper's
(hidden 256, query 200, 16 heads); 32 users x 100 behaviours x 30 words on an accelerator. bf16 runs under
``torch.autocast``; the loss of the first step at each precision is printed so that bf16 can be checked against
fp32 (same weights, same batch).

Full ranking: a SASRec next-item head (hidden 64, 50 behaviours) scores every item of a Beauty-sized catalogue
(12,102 items) for each user and ranks the target (``target_rank``), in batches of 256 users.

Peak memory: ``torch.cuda.max_memory_allocated`` on CUDA, the process's peak RSS (``ru_maxrss``) on CPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import time

import torch

from userbert_hf import UserBertConfig, UserBertForNextBehaviorPrediction, UserBertForPreTraining

SIZES = {
    "default": dict(hidden_size=64, word_embedding_size=64, attention_query_size=32, num_attention_heads=4),
    "paper": dict(hidden_size=256, word_embedding_size=256, attention_query_size=200, num_attention_heads=16),
}


def shapes(device: torch.device, tiny: bool) -> dict:
    """Batch shapes: the paper's on an accelerator, smaller on CPU (so that the check finishes in minutes)."""
    if tiny:
        return dict(users=4, behaviors=12, words=6, vocab=200, word_vocab=100, steps=2, warmup=1,
                    rank_users=64, items=500, paper_scale=8)
    if device.type == "cuda":
        return dict(users=32, behaviors=100, words=30, vocab=20_000, word_vocab=30_000, steps=10, warmup=3,
                    rank_users=22_363, items=12_102, paper_scale=1)
    return dict(users=32, behaviors=50, words=15, vocab=5_000, word_vocab=10_000, steps=3, warmup=1,
                rank_users=2_048, items=12_102, paper_scale=1)


def pretraining_batch(s: dict, device: torch.device, generator: torch.Generator) -> dict:
    """Synthetic batch-table inputs: U distinct behaviours (texts of 1..words words), B users x L behaviours,
    MBP candidates (1 + K) and BSM candidate sequences (1 + P of L/2 behaviours)."""
    b, l, w, k, p = s["users"], s["behaviors"], s["words"], 4, 4
    table_size = min(s["vocab"], b * l * 2)
    lengths = torch.randint(1, w + 1, (table_size,), generator=generator)
    tokens = torch.randint(2, s["word_vocab"], (table_size, w), generator=generator)
    tokens = tokens * (torch.arange(w)[None] < lengths[:, None])  # (U, W), right-padded with 0
    tokens[0] = 0  # row 0: padding
    index = torch.randint(1, table_size, (b, l), generator=generator)  # (B, L)
    masked = torch.rand(b, l, generator=generator) < 0.1
    masked[:, 1] = True
    candidates = torch.randint(1, table_size, (int(masked.sum()), 1 + k), generator=generator)  # (M, 1 + K)
    bsm = torch.randint(1, table_size, (b, 1 + p, l // 2), generator=generator)  # (B, 1 + P, L/2)
    batch = dict(
        behavior_ids=torch.arange(table_size), behavior_token_ids=tokens, behavior_index=index,
        attention_mask=torch.ones(b, l, dtype=torch.long), masked_positions=masked, mbp_candidate_index=candidates,
        bsm_candidate_index=bsm, bsm_candidate_mask=torch.ones_like(bsm), bsm_valid=torch.ones(b, dtype=torch.bool),
    )
    return {name: value.to(device) for name, value in batch.items()}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_pretraining(size: str, dtype: str, s: dict, device: torch.device) -> dict:
    overrides = dict(SIZES[size])
    if s["paper_scale"] > 1:  # --tiny: shrink the paper size too (same ratios between the two sizes)
        overrides = {name: max(4, value // s["paper_scale"]) for name, value in overrides.items()}
        overrides["num_attention_heads"] = 4 if size == "paper" else 2
    config = UserBertConfig.from_preset(
        "nrms", behavior_vocab_size=s["vocab"], word_vocab_size=s["word_vocab"], max_words=s["words"],
        max_behaviors=s["behaviors"], dropout=0.2, **overrides,
    )
    torch.manual_seed(0)
    model = UserBertForPreTraining(config).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch = pretraining_batch(s, device, torch.Generator().manual_seed(0))
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bf16")
    times, first_loss = [], None
    for step in range(s["warmup"] + s["steps"]):
        synchronize(device)
        start = time.perf_counter()
        with autocast:
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        synchronize(device)
        if step == 0:
            first_loss = float(loss.detach())
        if step >= s["warmup"]:
            times.append(time.perf_counter() - start)
    return {"size": size, "dtype": dtype, "hidden": config.hidden_size, "step_s": round(statistics.median(times), 4),
            "first_loss": round(first_loss, 4)}


@torch.no_grad()
def time_full_ranking(s: dict, device: torch.device) -> dict:
    config = UserBertConfig.from_preset("sasrec", behavior_vocab_size=s["items"], hidden_size=64, max_behaviors=50,
                                        num_attention_heads=2)
    torch.manual_seed(0)
    model = UserBertForNextBehaviorPrediction(config).to(device).eval()
    generator = torch.Generator().manual_seed(1)
    users, batch_size, ranked = s["rank_users"], 256, 0
    lengths = torch.randint(1, 51, (users,), generator=generator)
    history = torch.randint(1, s["items"], (users, 50), generator=generator) * (torch.arange(50)[None] < lengths[:, None])
    targets = torch.randint(1, s["items"], (users,), generator=generator)
    synchronize(device)
    start = time.perf_counter()
    for first in range(0, users, batch_size):
        ids = history[first : first + batch_size].to(device)  # (B, 50)
        out = model(behavior_ids=ids, attention_mask=ids != 0, labels=targets[first : first + batch_size].to(device),
                    exclude_index=ids)
        ranked += int(out.target_rank.shape[0])
    synchronize(device)
    seconds = time.perf_counter() - start
    return {"users": ranked, "items": s["items"] - 1, "seconds": round(seconds, 3),
            "users_per_s": round(ranked / seconds, 1)}


def peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (seconds on CPU; the test suite runs this)")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    s = shapes(device, args.tiny)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"device: {device.type} ({name}); torch {torch.__version__}; threads {torch.get_num_threads()}")
    print(f"batch: {s['users']} users x {s['behaviors']} behaviours x {s['words']} words; "
          f"{s['steps']} timed steps after {s['warmup']}")
    results = {"device": device.type, "device_name": name, "shapes": s, "steps": []}
    for size in ("default", "paper"):
        for dtype in ("fp32", "bf16"):
            row = time_pretraining(size, dtype, s, device)
            results["steps"].append(row)
            print(f"pretraining step  {size:7s} hidden {row['hidden']:4d} {dtype}: {row['step_s']:.4f} s "
                  f"(first loss {row['first_loss']:.4f})")
    ranking = time_full_ranking(s, device)
    results["full_ranking"] = ranking
    print(f"full ranking: {ranking['users']} users x {ranking['items']} items in {ranking['seconds']:.3f} s = "
          f"{ranking['users_per_s']:.1f} users/s")
    results["peak_memory_mib"] = peak_memory_mib(device)
    print(f"peak memory: {results['peak_memory_mib']:.1f} MiB "
          f"({'torch.cuda.max_memory_allocated' if device.type == 'cuda' else 'peak RSS'})")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=1)
    return results


if __name__ == "__main__":
    main()
