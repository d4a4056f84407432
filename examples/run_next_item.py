r"""Fine-tune an ID-behaviour user model for next-item prediction (leave-one-out, full ranking; HR@k, NDCG@k).

Training predicts each user's third-last item, validation the second-last, test the last one, ranked against every
item (items already in the history are not ranked, as in S3-Rec's evaluation). Amazon Beauty is the usual file:

    python examples/run_next_item.py --data ../shared/data/amazon-beauty/Beauty.txt --model_name_or_path bert4rec
    python examples/run_next_item.py --data ../shared/data/amazon-beauty/Beauty.txt --model_name_or_path gru4rec \
        --max_train_targets_per_user 5 --num_train_epochs 10 --learning_rate 1e-3
    # pre-train on the sequences without their last two items (the evaluation targets), then fine-tune
    python examples/run_next_item.py --data ../shared/data/amazon-beauty/Beauty.txt \
        --export_pretraining_data outputs/beauty-pretrain
    userbert pretrain --data outputs/beauty-pretrain --preset bert4rec --output_dir outputs/bert4rec-beauty
    python examples/run_next_item.py --data ../shared/data/amazon-beauty/Beauty.txt \
        --model_name_or_path outputs/bert4rec-beauty

Every option of `userbert finetune --help` works here; the steps are in `userbert_hf.finetuning.job`.
"""

import sys

from userbert_hf.finetuning.job import main

if __name__ == "__main__":
    main(["--task", "next_item", *sys.argv[1:]])
