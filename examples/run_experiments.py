"""Run an experiment grid and write its report (the same as `userbert experiment CONFIG`).

    # 1. the MovieLens CTR grid: UserBERT, PTUM, CP and no pre-training x 3 user splits x 3 seeds x 10/25/100%
    #    of the labels, plus popularity, item-mean and matrix-factorisation baselines on the same splits
    python examples/run_experiments.py experiments/movielens_ctr.yaml
    # 2. interrupted? the same command resumes: finished cells are read from outputs/experiments/NAME/results.jsonl
    python examples/run_experiments.py experiments/movielens_ctr.yaml
    # 3. only rebuild docs/results.md (tables, paired tests, plots) and the model cards from the results
    python examples/run_experiments.py experiments/movielens_ctr.yaml --report_only

The grid's format is documented in `userbert_hf.experiments.spec`; the steps in `userbert_hf.experiments.runner`.
"""

import sys

from userbert_hf.experiments.runner import main

if __name__ == "__main__":
    main(sys.argv[1:])
