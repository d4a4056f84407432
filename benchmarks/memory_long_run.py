"""A long pre-training run on MovieLens keeps memory flat: peak RSS after the first steps vs at the end.

    python benchmarks/memory_long_run.py [--steps 2000] [--preset bert4rec]

The sampler's pools are rebuilt every step / every T steps and the logs are flushed every `logging_steps`;
none of it may accumulate. Prints resident memory every 100 steps and its growth from step 100 to the end.
"""

import argparse
import resource
import tempfile
import time

import psutil
import torch
from transformers import TrainerCallback

from userbert_hf import UserBertConfig, UserBertForPreTraining
from userbert_hf.collation import BehaviorCatalog
from userbert_hf.data import load_default_dataset
from userbert_hf.pretraining.trainer import UserBertTrainer, UserBertTrainingArguments


class MemoryProbe(TrainerCallback):
    def __init__(self, every):
        self.every, self.samples = every, []

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every == 0 or state.global_step == 1:
            info = psutil.Process().memory_info()
            self.samples.append((state.global_step, info.rss / 2**20, (info.rss - info.shared) / 2**20))
            print(f"step {state.global_step}: rss {info.rss / 2**20:.1f} MiB", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--preset", default="bert4rec")
    args = parser.parse_args()
    data = load_default_dataset(verbose=False)
    config = UserBertConfig.from_preset(args.preset, behavior_vocab_size=len(data.vocabulary), hidden_size=32,
                                        num_attention_heads=2, intermediate_size=64)
    torch.manual_seed(0)
    probe = MemoryProbe(every=100)
    with tempfile.TemporaryDirectory() as out:
        training = UserBertTrainingArguments(
            out, max_steps=args.steps, per_device_train_batch_size=32, learning_rate=1e-3, use_cpu=True,
            logging_steps=50, save_strategy="no", disable_tqdm=True, report_to=[],
        )
        trainer = UserBertTrainer(model=UserBertForPreTraining(config), args=training, train_dataset=data.users,
                                  catalog=BehaviorCatalog(len(data.vocabulary)), callbacks=[probe])
        started = time.time()
        trainer.train()
        elapsed = time.time() - started
    first = next(s for s in probe.samples if s[0] >= 100)
    last = probe.samples[-1]
    print(f"{args.steps} steps of {args.preset} pre-training on MovieLens in {elapsed:.0f} s")
    print("step  rss_MiB  anonymous_rss_MiB")
    for step, rss, heap in probe.samples[:: max(1, len(probe.samples) // 10)] + [last]:
        print(f"{step:5d}  {rss:7.1f}  {heap:7.1f}")
    print(f"RSS growth from step {first[0]} to {last[0]}: {last[1] - first[1]:+.1f} MiB "
          f"(ratio {last[1] / first[1]:.3f}); anonymous RSS growth {last[2] - first[2]:+.1f} MiB; "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
