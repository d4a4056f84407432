"""Pre-train a user model with UserBERT on behaviour logs (default: the bundled MovieLens ml-latest-small).

    python examples/run_pretraining.py                                   # defaults, a few minutes on CPU
    python examples/run_pretraining.py --preset bert4rec --data ../shared/data/amazon-beauty/Beauty.txt
    torchrun --nproc_per_node 2 examples/run_pretraining.py --use_cpu    # two processes (gloo)

Every option of `userbert pretrain --help` works here; the steps are in `userbert_hf.pretraining.job`:
1. load the behaviour logs, 2. build the word tokenizer, 3. build the user model, 4. pre-train with the
medium-hard negative sampler, 5. save a Hub-ready folder with a model card.
"""

from userbert_hf.pretraining.job import main

if __name__ == "__main__":
    main()
