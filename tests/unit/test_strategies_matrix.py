"""Every loss weighting and task sampler: trains, behaves as its method defines, survives resume.

1. Matrix: every registered weighting and sampler trains the tiny model for a few steps (bf16
   autocast) in one process, and all of them together in one 2-process gloo launch (torchrun),
   with finite losses, weights logged every step and identical models on both ranks.
2. Definitions: each method against its formula on small hand-made inputs.
3. State: `state_dict` round trips, and an exact (bit-identical) resume through a real checkpoint.

A new strategy is picked up by the matrix automatically (give it options in OPTIONS if it needs
some) and gets a definition test here.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from engine_support import (
    assert_same_tensors,
    events,
    load_tensors,
    one_thread,
    sigterm_during_step,
    subprocess_env,
    write_run_config,
)

from promptmux.config import load_config
from promptmux.data.samplers import SAMPLERS, build_sampler
from promptmux.errors import ConfigError
from promptmux.train.trainer import train
from promptmux.weighting import WEIGHTINGS, build_weighting

TASKS = ["sentiment", "score", "ner"]  # engine_support's tasks, in config order
STEPS = 4
# Options a strategy needs to be built at all (the others run with their defaults).
OPTIONS = {
    "weighting": {
        "priority": {"phases": [{"until_step": 2, "weights": {"sentiment": 0.8, "score": 0.2}}, {"weights": {"sentiment": 0.2, "score": 0.8}}]},
        "dwa": {"window": 1},
    },
    "sampling": {"capped": {"cap": 30}},
}
GRADIENT_METHODS = [n for n in WEIGHTINGS.names() if WEIGHTINGS.get(n).needs_task_grads]
LOSS_METHODS = [n for n in WEIGHTINGS.names() if not WEIGHTINGS.get(n).needs_task_grads]


def weighting_config(folder: Path, backbone: Path, name: str, options: dict | None = None, **train_overrides):
    return write_run_config(
        folder, backbone,
        sampling={"mixed": True},
        weighting={"strategy": name, "options": OPTIONS["weighting"].get(name, {}) if options is None else options},
        train={"max_steps": STEPS, "grad_accum": 1, "eval_every": STEPS, "log_every": 1, "precision": "bf16", **train_overrides},
    )


def sampler_config(folder: Path, backbone: Path, name: str):
    return write_run_config(
        folder, backbone,
        sampling={"strategy": name, "mixed": False, "options": OPTIONS["sampling"].get(name, {})},
        train={"max_steps": STEPS, "grad_accum": 1, "eval_every": 2, "log_every": 1, "precision": "bf16"},
    )


def check_run(run: Path, weighting: str | None) -> None:
    for e in events(run, "train"):
        assert all(math.isfinite(v) for v in e["loss"].values()), e
    logged = events(run, "weights")
    if weighting in ("equal", "static"):
        assert logged == []  # constant weights are not logged step by step
    elif weighting is not None:
        assert [e["step"] for e in logged] == list(range(1, STEPS + 1))  # every step
        for e in logged:
            assert e["weights"] and set(e["weights"]) <= set(TASKS)
            assert all(math.isfinite(w) and w >= 0 for w in e["weights"].values()), e


# --- 1. the matrix: single process ---------------------------------------------------------------


@pytest.mark.parametrize("name", WEIGHTINGS.names())
def test_every_weighting_trains_in_one_process(tmp_path, tiny_backbone, name):
    with one_thread():
        result = train(load_config(weighting_config(tmp_path, tiny_backbone, name)))
    assert (result.steps, result.stopped) == (STEPS, "completed")
    check_run(tmp_path / "run", name)
    if name == "uncertainty":  # the learned weights move
        logged = [e["weights"] for e in events(tmp_path / "run", "weights")]
        assert any(abs(w - 1.0) > 1e-3 for w in logged[-1].values())
    if name == "priority":  # 0-based steps 0, 1 (logged as 1, 2) use phase 0; step 2 on, phase 1
        logged = {e["step"]: e["weights"] for e in events(tmp_path / "run", "weights")}
        assert logged[2].get("sentiment", 0.8) == 0.8 and logged[3].get("sentiment", 0.2) == 0.2
        assert logged[2].get("score", 0.2) == 0.2 and logged[3].get("score", 0.8) == 0.8


@pytest.mark.parametrize("name", SAMPLERS.names())
def test_every_sampler_trains_in_one_process(tmp_path, tiny_backbone, name):
    with one_thread():
        result = train(load_config(sampler_config(tmp_path, tiny_backbone, name)))
    assert (result.steps, result.stopped) == (STEPS, "completed")
    check_run(tmp_path / "run", None)


def test_gradient_path_with_unit_coefficients_equals_plain_backward(tmp_path, tiny_backbone):
    """CAGrad with c = 0 is the sum of task gradients: the per-task-gradient path must give the
    model equal weighting gives (up to float summation order), heads and encoder alike."""
    with one_thread():
        plain = train(load_config(weighting_config(tmp_path / "a", tiny_backbone, "equal", precision="fp32")))
        summed = train(load_config(weighting_config(tmp_path / "b", tiny_backbone, "cagrad", {"c": 0}, precision="fp32")))
    a, b = plain.model.state_dict(), summed.model.state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)


def test_gradient_methods_need_several_tasks_per_step(tmp_path, tiny_backbone):
    config = write_run_config(tmp_path, tiny_backbone, sampling={"mixed": False}, train={"grad_accum": 1})
    for name in GRADIENT_METHODS:
        with pytest.raises(ConfigError, match=rf"weighting\.strategy: {name} .*sampling\.mixed"):
            load_config(config, [f"weighting.strategy={name}"])
        load_config(config, [f"weighting.strategy={name}", "train.grad_accum=2"])  # several batches a step
    for name in LOSS_METHODS:
        load_config(config, [f"weighting.strategy={name}", f"weighting.options={json.dumps(OPTIONS['weighting'].get(name, {}))}"])


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["sampling.strategy=capped", "sampling.options={cap: 0}"], r"sampling\.options: cap"),
        (["sampling.options={bogus: 1}"], r"sampling\.options: .*bogus"),
        (["sampling.strategy=performance", "sampling.options={targets: {nope: 50}}"], r"sampling\.options: targets: unknown task"),
        (["weighting.strategy=priority", "weighting.options={phases: [{until_step: 5, weights: {nope: 1}}]}"],
         r"weighting\.options: phases\[0\]\.weights: unknown task"),
        (["weighting.strategy=priority", "weighting.options={phases: [{weights: {ner: 1}}, {weights: {ner: 2}}]}"],
         r"weighting\.options: phases\[0\]\.until_step"),
        (["weighting.strategy=priority"], r"weighting\.options: priority needs phases"),
        (["weighting.strategy=loss_driven", "weighting.options={alpha: -1}"], r"weighting\.options: alpha"),
        (["weighting.strategy=cagrad", "weighting.options={c: 1.5}"], r"weighting\.options: c must"),
    ],
)
def test_bad_strategy_options_name_the_key(tmp_path, tiny_backbone, overrides, key):
    config = write_run_config(tmp_path, tiny_backbone, sampling={"mixed": True})
    with pytest.raises(ConfigError, match=key):
        load_config(config, overrides)


# --- 1b. the matrix: two processes (DDP over gloo), all strategies in one launch ----------------

WORKER = Path(__file__).with_name("strategies_worker.py")
TORCHRUN = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_every_strategy_trains_in_two_processes(tmp_path, tiny_backbone):
    runs: dict[str, tuple[Path, str | None]] = {}
    for name in WEIGHTINGS.names():
        runs[f"w-{name}"] = (weighting_config(tmp_path / f"w-{name}", tiny_backbone, name, batch_size=4), name)
    for name in SAMPLERS.names():
        runs[f"s-{name}"] = (sampler_config(tmp_path / f"s-{name}", tiny_backbone, name), None)
    # Gradient methods also with single-task batches, several per step (some steps: one task).
    runs["w-pcgrad-accum"] = (write_run_config(
        tmp_path / "w-pcgrad-accum", tiny_backbone, sampling={"mixed": False}, weighting={"strategy": "pcgrad"},
        train={"max_steps": STEPS, "grad_accum": 2, "batch_size": 4, "eval_every": STEPS, "log_every": 1, "precision": "bf16"},
    ), "pcgrad")
    # The reference pair for the reduction: per-task gradients averaged once, not twice.
    runs["fp32-equal"] = (weighting_config(tmp_path / "fp32-equal", tiny_backbone, "equal", batch_size=4, precision="fp32"), "equal")
    runs["fp32-cagrad0"] = (weighting_config(tmp_path / "fp32-cagrad0", tiny_backbone, "cagrad", {"c": 0}, batch_size=4, precision="fp32"), None)
    plan = tmp_path / "plan.json"
    gradcheck = tmp_path / "dump" / "gradcheck"
    # (gradcheck last: the trainings set up the process group.)
    plan.write_text(json.dumps([[str(cfg), str(tmp_path / "dump" / key)] for key, (cfg, _) in runs.items()] + [["gradcheck", str(gradcheck)]]))

    cmd = [TORCHRUN, "--nnodes", "1", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), str(WORKER), str(plan)]
    done = subprocess.run(cmd, env=subprocess_env(tmp_path / "cache"), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]

    # TaskGradients writes the aggregate of the global batch's per-task gradients (averaged over
    # the 2 processes once, before the nonlinear aggregation), checked against a reference.
    for r in (0, 1):
        report = json.loads((gradcheck / f"rank{r}.json").read_text())
        assert report["cagrad"]["error"] < 1e-6 and report["pcgrad"]["error"] < 1e-6, report
        assert report["pcgrad"]["local_vs_global"] > 1e-3, report  # the check can tell the two apart
    for key, (cfg, name) in runs.items():
        dump = tmp_path / "dump" / key
        assert [json.loads((dump / f"rank{r}.json").read_text()) for r in (0, 1)] == [{"steps": STEPS, "stopped": "completed"}] * 2, key
        rank0 = load_tensors(dump / "rank0.safetensors")
        assert_same_tensors(rank0, load_tensors(dump / "rank1.safetensors"))
        assert_same_tensors(rank0, load_tensors(cfg.parent / "run" / "last" / "model.safetensors"))
        if key.startswith("w-"):
            check_run(cfg.parent / "run", name)
    a = load_tensors(tmp_path / "dump" / "fp32-equal" / "rank0.safetensors")
    b = load_tensors(tmp_path / "dump" / "fp32-cagrad0" / "rank0.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)


# --- 2. definitions on hand-made inputs ------------------------------------------------------------

W3 = {"a": 1.0, "b": 1.0, "c": 1.0}


def make(name: str, tasks=("a", "b", "c"), **options):
    return build_weighting(name, list(tasks), {t: 1.0 for t in tasks}, options)


def losses_of(**values: float) -> dict[str, torch.Tensor]:
    return {t: torch.tensor(v, requires_grad=True) for t, v in values.items()}


def test_loss_driven_matches_the_formula():
    w = make("loss_driven", alpha=2.0, beta=1.0)
    losses = losses_of(a=0.5, c=3.0)
    total, weights = w(losses, step=0)
    expected = {"a": 1 / (1 + math.exp(-2.0 * (0.5 - 1.0))), "c": 1 / (1 + math.exp(-2.0 * (3.0 - 1.0)))}
    assert weights == pytest.approx(expected)
    total.backward()  # the weights are constants: d total / d L_i = lambda_i
    assert losses["a"].grad.item() == pytest.approx(expected["a"])


def test_priority_switches_exactly_at_its_step_and_ramps_linearly():
    phases = [{"until_step": 500, "weights": {"a": 0.8, "b": 0.2}}, {"weights": {"a": 0.2, "b": 0.8}}]
    step = make("priority", tasks=("a", "b", "c"), phases=phases)
    assert step.weights_at(0) == step.weights_at(499) == {"a": 0.8, "b": 0.2, "c": 1.0}
    assert step.weights_at(500) == step.weights_at(10**6) == {"a": 0.2, "b": 0.8, "c": 1.0}
    ramp = make("priority", tasks=("a", "b", "c"), phases=phases, ramp=True)
    assert ramp.weights_at(0) == pytest.approx({"a": 0.8, "b": 0.2, "c": 1.0})
    assert ramp.weights_at(250) == pytest.approx({"a": 0.5, "b": 0.5, "c": 1.0})
    assert ramp.weights_at(500) == ramp.weights_at(900) == pytest.approx({"a": 0.2, "b": 0.8, "c": 1.0})
    three = make("priority", tasks=("a",), phases=[{"until_step": 10, "weights": {"a": 1}}, {"until_step": 20, "weights": {"a": 3}}], ramp=True)
    assert [three.weights_at(s)["a"] for s in (0, 5, 10, 15, 20, 30)] == pytest.approx([1, 2, 3, 3, 3, 3])
    _, logged = step(losses_of(b=1.0), step=500)
    assert logged == {"b": 0.8}


def test_uncertainty_weights_move_towards_one_over_twice_the_loss():
    w = make("uncertainty", tasks=("a", "b"))
    opt = torch.optim.SGD(w.parameters(), lr=0.1)
    for _ in range(300):
        total, weights = w(losses_of(a=2.0, b=0.25), step=0)
        opt.zero_grad()
        total.backward()
        opt.step()
    # d/ds (e^-s L + s/2) = 0  <=>  e^-s = 1 / (2 L)
    assert weights == pytest.approx({"a": 0.25, "b": 2.0}, rel=1e-2)
    assert w.state_dict()["log_vars"].shape == (2,)


def test_dwa_follows_the_loss_ratio_definition():
    w = make("dwa", tasks=("a", "b"), window=2, temperature=2.0)
    history = [(4.0, 1.0), (2.0, 1.0), (1.5, 1.0), (1.5, 0.8)]  # steps 0-3: windows 0 and 1
    for step, (a, b) in enumerate(history):
        assert w.weights(losses_of(a=a, b=b), step) == {"a": 1.0, "b": 1.0}  # < 2 windows complete
    r = np.array([1.5 / 3.0, 0.9 / 1.0])  # mean of window 1 / mean of window 0
    expected = 2 * np.exp(r / 2.0) / np.exp(r / 2.0).sum()
    got = w.weights(losses_of(a=1.0, b=1.0), 4)
    assert [got["a"], got["b"]] == pytest.approx(expected.tolist())
    assert got["b"] > got["a"]  # b's loss fell less: b gets more weight
    assert w.weights(losses_of(b=1.0), 5) == pytest.approx({"b": expected[1]})  # same window, same weights


def test_famo_weights_and_logit_update_follow_the_algorithm():
    w = make("famo", tasks=("a", "b"), lr=0.025, gamma=0.0)
    got = w.weights(losses_of(a=2.0, b=0.5), 0)
    # z uniform: w_i = n (1/L_i) / sum_j (1/L_j)
    assert [got["a"], got["b"]] == pytest.approx([2 * 0.5 / 2.5, 2 * 2.0 / 2.5])
    w.weights(losses_of(a=1.0, b=0.45), 1)  # a fell by log 2, b by log(0.5/0.45)
    w.weights(losses_of(a=1.0, b=0.45), 2)  # closes step 1: xi takes its first Adam step
    delta = torch.tensor([math.log(2.0), math.log(0.5 / 0.45)], dtype=torch.float64)
    z = torch.full((2,), 0.5, dtype=torch.float64)
    g = z * (delta - (z * delta).sum())
    torch.testing.assert_close(w.xi, -0.025 * g / (g.abs() + 1e-8))  # Adam's first step: lr * sign
    assert w.xi[0] < 0 < w.xi[1]  # a improved faster, so b gains weight


def pcgrad_reference(grads: list[torch.Tensor], seed: int, step: int) -> torch.Tensor:
    """Algorithm 1 of Yu et al. 2020 on the vectors, with the orders PCGrad draws."""
    rng = np.random.default_rng([seed, step])
    projected = [g.clone() for g in grads]
    for gi in projected:
        for j in rng.permutation(len(grads)):
            dot = gi @ grads[j]
            if dot < 0:
                gi -= dot / (grads[j] @ grads[j]) * grads[j]
    return sum(projected)


def test_pcgrad_projects_conflicting_gradients_and_leaves_the_others_alone():
    w = make("pcgrad", tasks=("a", "b"))
    g1, g2 = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])  # conflict: g1 . g2 = -1
    combined, coefs = w.aggregate({"a": g1, "b": g2}, {"a": torch.tensor(1.0), "b": torch.tensor(1.0)}, 0)
    p1 = g1 - (g1 @ g2) / (g2 @ g2) * g2  # (0.5, 0.5)
    p2 = g2 - (g2 @ g1) / (g1 @ g1) * g1  # (0, 1)
    assert p1 @ g2 >= 0 and p2 @ g1 >= 0
    torch.testing.assert_close(combined, p1 + p2)
    assert coefs == pytest.approx({"a": 1.0 + 1.0, "b": 1.0 + 0.5})  # p1 + p2 = 2 g1 + 1.5 g2
    h1, h2 = torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0])  # no conflict: the plain sum
    combined, coefs = w.aggregate({"a": h1, "b": h2}, {"a": torch.tensor(1.0), "b": torch.tensor(1.0)}, 0)
    torch.testing.assert_close(combined, h1 + h2)
    assert coefs == {"a": 1.0, "b": 1.0}
    gen = torch.Generator().manual_seed(0)
    grads = [torch.randn(6, generator=gen, dtype=torch.float64) for _ in range(4)]
    w4 = make("pcgrad", tasks=("a", "b", "c", "d"), seed=3)
    combined, _ = w4.aggregate(dict(zip("abcd", grads)), {t: torch.tensor(1.0) for t in "abcd"}, 7)
    torch.testing.assert_close(combined.double(), pcgrad_reference(grads, 3, 7), rtol=1e-5, atol=1e-6)


def test_cagrad_solves_its_subproblem_and_maximises_the_worst_improvement():
    c = 0.5
    w = make("cagrad", tasks=("a", "b", "c"), c=c)
    grads = [torch.tensor([1.0, 0.2, 0.0]), torch.tensor([-0.6, 1.0, 0.1]), torch.tensor([0.1, -0.3, 0.8])]
    update, coefs = w.aggregate(dict(zip("abc", grads)), {t: torch.tensor(1.0) for t in "abc"}, 0)
    G = torch.stack(grads).double()
    g0 = G.mean(0)
    d = update.double() * (1 + c**2) / 3  # undo the sum scale and the rescale
    # The update is g0 + lambda g_w on the sphere of radius c |g0| around g0 ...
    assert (d - g0).norm().item() == pytest.approx(c * g0.norm().item(), rel=1e-3)
    # ... and no point of that ball improves the worst task more (eq. 2 of the paper).
    gen = torch.Generator().manual_seed(0)
    u = torch.randn(20000, 3, generator=gen, dtype=torch.float64)
    ball = g0 + c * g0.norm() * u / u.norm(dim=1, keepdim=True) * torch.rand(20000, 1, generator=gen, dtype=torch.float64) ** (1 / 3)
    assert (G @ d).min().item() >= (ball @ G.T).min(dim=1).values.max().item() - 1e-4
    # The weights solve the simplex problem: no grid point does better.
    A = (G @ G.T).numpy()
    b = np.full(3, 1 / 3)
    radius = c * math.sqrt(b @ A @ b)
    best = min(x @ A @ b + radius * math.sqrt(x @ A @ x) for x in (np.array([i, j, 100 - i - j]) / 100 for i in range(101) for j in range(101 - i)))
    wstar = CAGradSolve(A, c)
    assert wstar @ A @ b + radius * math.sqrt(wstar @ A @ wstar) <= best + 1e-6
    # c = 0 is plain equal weighting (the sum of task gradients).
    plain, coefs0 = make("cagrad", c=0.0).aggregate(dict(zip("abc", grads)), {t: torch.tensor(1.0) for t in "abc"}, 0)
    torch.testing.assert_close(plain, sum(grads))
    assert coefs0 == {"a": 1.0, "b": 1.0, "c": 1.0}


def CAGradSolve(A: np.ndarray, c: float) -> np.ndarray:
    return WEIGHTINGS.get("cagrad").solve(A, c)


def test_mgda_finds_the_minimum_norm_point_of_the_hull():
    w = make("mgda", tasks=("a", "b"))
    g1, g2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])
    update, coefs = w.aggregate({"a": g1, "b": g2}, {"a": torch.tensor(1.0), "b": torch.tensor(1.0)}, 0)
    # Two tasks, closed form: w1 = (g2 - g1) . g2 / |g1 - g2|^2 = 4 / 5.
    assert coefs == pytest.approx({"a": 2 * 0.8, "b": 2 * 0.2})
    d = update / 2
    torch.testing.assert_close(d, 0.8 * g1 + 0.2 * g2)
    assert (g1 @ d).item() >= (d @ d).item() - 1e-6 and (g2 @ d).item() >= (d @ d).item() - 1e-6
    opposed, _ = w.aggregate({"a": g1, "b": -g1}, {"a": torch.tensor(1.0), "b": torch.tensor(1.0)}, 0)
    assert opposed.norm().item() < 1e-6  # Pareto-stationary: no common descent direction


def test_gradnorm_pulls_the_lagging_task_up():
    w = make("gradnorm", tasks=("a", "b"), alpha=1.5, lr=0.025)
    g = {"a": torch.tensor([1.0, 0.0]), "b": torch.tensor([0.0, 1.0])}  # equal gradient norms
    _, first = w.aggregate(g, {"a": torch.tensor(2.0), "b": torch.tensor(2.0)}, 0)
    assert first == pytest.approx({"a": 1.0, "b": 1.0})  # w = K softmax(0)
    torch.testing.assert_close(w.initial, torch.tensor([2.0, 2.0], dtype=torch.float64))
    for step in range(1, 20):  # a's loss stays, b's halves: a lags, so its weight must grow
        _, weights = w.aggregate(g, {"a": torch.tensor(2.0), "b": torch.tensor(1.0)}, step)
    assert weights["a"] > 1.0 > weights["b"]
    assert sum(weights.values()) == pytest.approx(2.0)


def test_annealed_goes_from_proportional_to_uniform():
    sizes = {"big": 9000, "mid": 900, "small": 100}
    s = build_sampler("annealed", sizes, 0, 2.0)
    s.set_total_steps(101)
    n = np.array(list(sizes.values()), dtype=np.float64)
    np.testing.assert_allclose(s.probabilities(0), n / n.sum())
    np.testing.assert_allclose(s.probabilities(50), np.sqrt(n) / np.sqrt(n).sum())
    np.testing.assert_allclose(s.probabilities(100), np.full(3, 1 / 3))
    shares = [s.probabilities(t)[2] for t in range(101)]
    assert all(a <= b for a, b in zip(shares, shares[1:]))  # the small task only gains
    with pytest.raises(RuntimeError, match="step count"):
        build_sampler("annealed", sizes, 0, 2.0).probabilities(5)


def test_capped_caps_the_large_tasks():
    s = build_sampler("capped", {"big": 9000, "mid": 900, "small": 100}, 0, 2.0, {"cap": 1000})
    np.testing.assert_allclose(s.probabilities(0), np.array([1000, 900, 100]) / 2000)


def test_performance_raises_the_share_of_the_worst_task():
    s = build_sampler("performance", {"a": 100, "b": 100, "c": 100}, 0, 2.0, {"tau": 0.1, "floor": 0.1})
    np.testing.assert_allclose(s.probabilities(0), np.full(3, 1 / 3))  # nothing observed yet
    s.observe({"a": 90.0, "b": 60.0, "c": 85.0})
    p = s.probabilities(10)
    assert p.argmax() == 1 and p[1] > 1 / 3 and p.min() >= 0.1 / 3 and p.sum() == pytest.approx(1.0)
    lag = np.array([0.10, 0.40, 0.15])
    np.testing.assert_allclose(p, 0.9 * np.exp(lag / 0.1) / np.exp(lag / 0.1).sum() + 0.1 / 3)
    s.observe({"b": 95.0})  # b caught up: c (85) is now the worst
    assert s.probabilities(20).argmax() == 2
    targets = build_sampler("performance", {"a": 1, "b": 1}, 0, 2.0, {"targets": {"b": -0.1}})
    targets.observe({"a": 50.0, "b": -0.5})  # b: neg_mse, 4x its target -> lags more
    assert targets.probabilities(0)[1] > 0.5


# --- 3. state: round trips and an exact resume ----------------------------------------------------


def drive(w, steps: range) -> list[dict[str, float]]:
    """Feed a weighting a deterministic loss (and gradient) sequence; return the weights."""
    out = []
    for step in steps:
        losses = {t: torch.tensor(1.0 + 0.5 * math.sin(step + i) ** 2) for i, t in enumerate(W3)}
        if w.needs_task_grads:
            gen = torch.Generator().manual_seed(step)
            grads = {t: torch.randn(5, generator=gen) for t in W3}
            out.append(w.aggregate(grads, losses, step)[1])
        else:
            out.append(w(losses, step)[1])
    return out


@pytest.mark.parametrize("name", WEIGHTINGS.names())
def test_weighting_state_survives_a_checkpoint(name, tmp_path):
    options = {"dwa": {"window": 2}}.get(name, OPTIONS["weighting"].get(name, {}))
    if name == "priority":
        options = {"phases": [{"until_step": 5, "weights": {"a": 0.5}}, {"weights": {"a": 2.0}}]}
    w = make(name, **options)
    drive(w, range(7))
    torch.save(w.state_dict(), tmp_path / "weighting.pt")
    expected = drive(w, range(7, 14))
    resumed = make(name, **options)
    resumed.load_state_dict(torch.load(tmp_path / "weighting.pt", weights_only=False))
    assert drive(resumed, range(7, 14)) == expected


@pytest.mark.parametrize("name", SAMPLERS.names())
def test_sampler_state_survives_a_checkpoint(name):
    sizes = {"big": 900, "mid": 90, "small": 10}
    s = build_sampler(name, sizes, 5, 2.0, OPTIONS["sampling"].get(name))
    s.set_total_steps(50)
    for step in range(20):
        s.sample(step)
        if step == 10:
            s.observe({"big": 80.0, "mid": 70.0, "small": 40.0})
    state = json.loads(json.dumps(s.state_dict()))  # the trainer saves it as JSON
    expected = [(s.sample(t), s.counts(8, t), s.probabilities(t).tolist()) for t in range(20, 40)]
    resumed = build_sampler(name, sizes, 999, 2.0, OPTIONS["sampling"].get(name))
    resumed.set_total_steps(50)
    resumed.load_state_dict(copy.deepcopy(state))
    assert [(resumed.sample(t), resumed.counts(8, t), resumed.probabilities(t).tolist()) for t in range(20, 40)] == expected


@pytest.mark.parametrize(
    ("weighting", "sampling", "mixed", "accum"),
    [("famo", "performance", False, 2), ("gradnorm", "annealed", True, 1), ("uncertainty", "capped", True, 2)],
)
def test_resume_is_exact_with_stateful_strategies(tmp_path, tiny_backbone, monkeypatch, weighting, sampling, mixed, accum):
    """8 steps straight == 5 steps, SIGTERM, resume, 3 more: same model, weights and sampler state."""
    config = write_run_config(
        tmp_path, tiny_backbone,
        sampling={"strategy": sampling, "mixed": mixed, "options": OPTIONS["sampling"].get(sampling, {})},
        weighting={"strategy": weighting},
        train={"max_steps": 8, "eval_every": 2, "log_every": 1, "grad_accum": accum},
    )
    straight, legs = tmp_path / "straight", tmp_path / "legs"
    with one_thread():
        train(load_config(config, [f"output.dir={straight}"]))
        with monkeypatch.context() as m:
            sigterm_during_step(m, 5)
            assert train(load_config(config, [f"output.dir={legs}"])).stopped == "sigterm"
        assert train(load_config(config, [f"output.dir={legs}"]), resume=True).steps == 8
    assert_same_tensors(load_tensors(straight / "last" / "model.safetensors"), load_tensors(legs / "last" / "model.safetensors"))
    a = torch.load(straight / "last" / "weighting.pt", weights_only=False)
    b = torch.load(legs / "last" / "weighting.pt", weights_only=False)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    state = lambda run: json.loads((run / "last" / "trainer_state.json").read_text())["sampler"]  # noqa: E731
    assert state(straight) == state(legs)
    weights = lambda run: {e["step"]: e["weights"] for e in events(run, "weights")}  # noqa: E731
    assert weights(legs) == weights(straight)
