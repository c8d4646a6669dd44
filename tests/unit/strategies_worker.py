"""One process of a multi-process run of several configs, for test_strategies_matrix.py (not a test).

Launched with `torchrun --nproc_per_node N tests/unit/strategies_worker.py PLAN.json`, where the
plan is a list of `[config_path, dump_dir]`: trains each config in turn in the same process group
(one launch instead of one per strategy saves the start-up time), and each rank writes its final
parameters to `dump_dir/rank<r>.safetensors` and `{"steps", "stopped"}` to `dump_dir/rank<r>.json`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(plan_file: str) -> None:
    import torch.distributed as dist
    from safetensors.torch import save_model

    from promptmux.config import load_config
    from promptmux.train.distributed import end_process_group
    from promptmux.train.trainer import train

    for config, dump in json.loads(Path(plan_file).read_text(encoding="utf-8")):
        out = Path(dump)
        out.mkdir(parents=True, exist_ok=True)
        if config == "gradcheck":
            gradcheck(out)
            continue
        result = train(load_config(config))
        rank = dist.get_rank() if dist.is_initialized() else 0
        save_model(result.model, str(out / f"rank{rank}.safetensors"))
        summary = {"steps": result.steps, "stopped": result.stopped}
        (out / f"rank{rank}.json").write_text(json.dumps(summary), encoding="utf-8")
    end_process_group()


def gradcheck(out: Path) -> None:
    """`TaskGradients` against the gradients of the global batch, in the running process group.

    Each rank holds different rows of two tasks. The per-task gradients written to `.grad` must be
    the aggregate of the gradients of the *global* batch (rank-averaged before aggregating, and
    averaged once): for coefficients 1 (CAGrad with c = 0) the plain global gradient, for PCGrad
    PCGrad of the global per-task gradients, which differs from the mean of per-rank PCGrads.
    """
    import torch
    import torch.distributed as dist

    from promptmux.train.task_grads import TaskGradients
    from promptmux.weighting import build_weighting

    rank, world = dist.get_rank(), dist.get_world_size()

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.encoder = torch.nn.Linear(4, 3)
            self.heads = torch.nn.ModuleDict({"a": torch.nn.Linear(3, 1), "b": torch.nn.Linear(3, 1)})

        def losses(self, r: int) -> dict[str, torch.Tensor]:
            gen = torch.Generator().manual_seed(100 + r)
            x, ya, yb = torch.randn(5, 4, generator=gen), torch.randn(5, 1, generator=gen), torch.randn(5, 1, generator=gen)
            h = torch.tanh(self.encoder(x))
            return {"a": ((self.heads["a"](h) - ya) ** 2).mean(), "b": ((self.heads["b"](h) + 3 * yb) ** 2).mean()}

    def flat_grads(model: Tiny, r: int) -> dict[str, torch.Tensor]:
        """Per-task gradients of rank r's rows, flattened in TaskGradients' order (shared first)."""
        params = list(model.encoder.parameters()) + list(model.heads.parameters())
        out = {}
        for t, loss in model.losses(r).items():
            g = torch.autograd.grad(loss, params, allow_unused=True, retain_graph=True)
            out[t] = torch.cat([torch.zeros(p.numel()) if x is None else x.reshape(-1) for p, x in zip(params, g)])
        return out

    def combine(weighting, per_task: dict[str, torch.Tensor], n: int) -> torch.Tensor:
        shared, coefs = weighting.aggregate({t: v[:n] for t, v in per_task.items()}, {t: torch.tensor(1.0) for t in per_task}, 0)
        return torch.cat([shared, sum(coefs[t] * per_task[t][n:] for t in per_task)])

    report = {}
    for name, options in (("cagrad", {"c": 0.0}), ("pcgrad", {})):
        model = Tiny()
        weighting = build_weighting(name, ["a", "b"], {"a": 1.0, "b": 1.0}, options)
        grads = TaskGradients(weighting, model, world)
        grads.accumulate(model.losses(rank), 1.0)
        grads.apply(step=0)
        got = torch.cat([p.grad.reshape(-1) for p in grads.params])
        # Reference, computed alone on every rank from all ranks' rows.
        local = [flat_grads(Tiny(), r) for r in range(world)]
        global_ = {t: sum(g[t] for g in local) / world for t in ("a", "b")}
        expected = combine(weighting, global_, grads.n_shared)
        mean_of_local = sum(combine(weighting, g, grads.n_shared) for g in local) / world
        report[name] = {"error": float((got - expected).abs().max()), "local_vs_global": float((mean_of_local - expected).abs().max())}
    (out / f"rank{rank}.json").write_text(json.dumps(report), encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1])
