"""One process of a multi-process training run, for tests/unit/test_distributed.py (not a test).

Launched with `torchrun --nproc_per_node N tests/unit/ddp_worker.py CONFIG OUT_DIR [override ...]`:
trains with `promptmux.train.trainer.train`, then each rank writes the final parameters of its own
model to `OUT_DIR/rank<r>.safetensors` and a small JSON summary to `OUT_DIR/rank<r>.json`, so the
test can check that every rank ended with the same model as the saved bundle.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(argv: list[str]) -> None:
    from safetensors.torch import save_model

    from promptmux.config import load_config
    from promptmux.train.distributed import end_process_group
    from promptmux.train.trainer import train

    config, out, overrides = Path(argv[0]), Path(argv[1]), argv[2:]
    cfg = load_config(config, overrides)
    result = train(cfg)

    import torch.distributed as dist

    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    out.mkdir(parents=True, exist_ok=True)
    save_model(result.model, str(out / f"rank{rank}.safetensors"))
    summary = {"rank": rank, "world_size": world, "steps": result.steps, "stopped": result.stopped}
    (out / f"rank{rank}.json").write_text(json.dumps(summary), encoding="utf-8")
    end_process_group()


if __name__ == "__main__":
    main(sys.argv[1:])
