r"""Fine-tune a user model for news recommendation on MIND (download MINDsmall_train / MINDsmall_dev yourself).

Training rows are one clicked news plus 4 non-clicked news of the same impression (a 5-way softmax); evaluation
ranks whole impressions (per-impression AUC, MRR, nDCG@5, nDCG@10).

    python examples/run_news_recommendation.py --data MINDsmall_train --test_data MINDsmall_dev \
        --model_name_or_path nrms --output_dir outputs/news-nrms
    # pre-train on the users' click histories, then fine-tune with 10% of the labelled impressions
    python examples/run_news_recommendation.py --data MINDsmall_train --export_pretraining_data outputs/mind-pretrain
    userbert pretrain --data outputs/mind-pretrain --output_dir outputs/nrms-mind
    python examples/run_news_recommendation.py --data MINDsmall_train --test_data MINDsmall_dev \
        --model_name_or_path outputs/nrms-mind --train_fraction 0.1
    # a smoke test on the fixture in this repository
    python examples/run_news_recommendation.py --data tests/fixtures/mind --test_data tests/fixtures/mind \
        --eval_strategy no --max_steps 5

Every option of `userbert finetune --help` works here; the steps are in `userbert_hf.finetuning.job`.
"""

import sys

from userbert_hf.finetuning.job import main

if __name__ == "__main__":
    main(["--task", "news", *sys.argv[1:]])
