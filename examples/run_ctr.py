"""Fine-tune a user model for click-through-rate prediction (default: the bundled MovieLens ml-latest-small).

A user's earlier 80% of ratings (by time) are the history, the later ones are candidates labelled rating >= 4;
users are split 80/10/10 into train / validation / test. Metrics: AUC, AP and log loss over (user, candidate) pairs.

    # 1. (optional) pre-train on what the CTR task may see: every user's history part, never a candidate
    python examples/run_ctr.py --export_pretraining_data outputs/ml-ctr-pretrain
    userbert pretrain --data outputs/ml-ctr-pretrain --output_dir outputs/nrms-pretrained
    # 2. fine-tune the pre-trained model, and the same architecture from scratch for comparison
    python examples/run_ctr.py --model_name_or_path outputs/nrms-pretrained --output_dir outputs/ctr-pretrained
    python examples/run_ctr.py --model_name_or_path nrms --output_dir outputs/ctr-scratch
    # 3. the low-resource setting of the paper: 10% of the labelled training users
    python examples/run_ctr.py --model_name_or_path outputs/nrms-pretrained --train_fraction 0.1

Every option of `userbert finetune --help` works here; the steps are in `userbert_hf.finetuning.job`.
"""

import sys

from userbert_hf.finetuning.job import main

if __name__ == "__main__":
    main(["--task", "ctr", *sys.argv[1:]])
