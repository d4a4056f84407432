"""Two gloo ranks holding 3 and 1 rows gather each other's rows with gradients (run under torchrun).

    python -m torch.distributed.run --nproc_per_node 2 tests/scripts/gather_unequal.py OUT_DIR

``main`` also runs inside a process whose gloo process group is already up (``ddp_pretrain.py --gather_unequal``
calls it after its pre-training cases): it then uses that group and leaves it up.
"""

import json
import os
import sys

import torch
import torch.distributed as dist

from userbert_hf.modeling_userbert import _gather_with_gradients


def main(out_dir: str) -> None:
    own_group = not dist.is_initialized()
    if own_group:
        dist.init_process_group("gloo")
    assert dist.get_backend() == "gloo" and dist.get_world_size() == 2
    rank = dist.get_rank()
    rows = torch.arange(3 if rank == 0 else 1, dtype=torch.float32)[:, None].repeat(1, 2) + 10 * rank  # (n, 2)
    rows.requires_grad_(True)
    gathered, offset = _gather_with_gradients(rows)
    # Every rank's loss weights every gathered row by (its index + 1): each row's gradient is the sum over ranks.
    (gathered.sum(1) * torch.arange(1, gathered.shape[0] + 1)).sum().backward()
    result = {"gathered": gathered.tolist(), "offset": offset, "grad": rows.grad.tolist()}
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(result, f)
    if own_group:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
