"""Soft prompts of every kind in mixed-task batches, on the tiny in-process model.

Per kind: rows read only their own task's prompt; padding and prompt positions do not leak into
heads; a short frozen-backbone run trains only prompts and heads, and its bundle reloads into a
model that predicts the same, with the prompts bit-exact.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import single_thread, tiny_config, write_tasks  # noqa: F401  (fixture)
from mixed_support import TrainedRun, assert_rows_alone, batch_logits, encode_mixed, mixed_tasks
from safetensors.torch import load_file

from promptmux.config import config_from_dict
from promptmux.config.schema import INSTANCE_KINDS, VECTOR_KINDS
from promptmux.data.collate import collate
from promptmux.data.encode import encode_examples
from promptmux.errors import BundleError
from promptmux.model import MultiTaskModel, TaskInfo, build_model, load_backbone
from promptmux.model.prompts import PROMPTS, SoftPrompt
from promptmux.serve.bundle import load_bundle
from promptmux.serve.predictor import Predictor
from promptmux.tasks.spec import Example
from promptmux.train.setup import build_optimizer

pytestmark = pytest.mark.usefixtures("single_thread")

KINDS = ["shallow", "deep", "prefix", "late", "shared", "generated"]
# Every kind, the kinds with free per-task vectors once more with `reparam: residual`, and the
# kinds with an instance-aware term (`instance_hidden`) with it.
VARIANTS = [*KINDS, *(f"{kind}+residual" for kind in VECTOR_KINDS), *(f"{kind}+instance" for kind in INSTANCE_KINDS)]
L = 4

# Two classification tasks with the same label count (so heads can be made identical), and a token
# task (its word_starts must keep pointing at the real tokens).
TASKS = mixed_tasks(b_pooling="cls")


@pytest.fixture(scope="module")
def encoded(tiny_backbone: Path):
    return encode_mixed(tiny_backbone, TASKS)


def prompt_spec(variant: str) -> dict:
    """`model.prompts` settings for a variant: a kind, `kind+residual` or `kind+instance`."""
    kind, _, extra = variant.partition("+")
    spec = {"kind": kind, "length": L, "rank": 2}
    if extra == "instance":
        return {**spec, "instance_hidden": 8}
    return {**spec, **({"reparam": extra, "reparam_hidden": 8} if extra else {})}


def make_model(tiny_backbone: Path, variant: str, seed: int = 0) -> MultiTaskModel:
    """A model with `variant`'s prompts. A residual network or an instance term starts at zero
    (its `up` is zero), so here it gets random values: the tests then see what a trained one does."""
    torch.manual_seed(seed)
    encoder = load_backbone(str(tiny_backbone))[0]
    model = build_model(encoder, TASKS, head_dropout=0.0, prompts=prompt_spec(variant)).eval()
    for network in (model.prompt.reparam, getattr(model.prompt, "instance", None)):
        if network is not None:
            with torch.no_grad():
                network.up.weight.normal_(0.0, 0.5)
                network.up.bias.normal_(0.0, 0.5)
    return model


def everything(encoded, order=("a", "b", "tok")):
    return [(t, encoded[t], np.arange(len(encoded[t]))) for t in order]


@torch.no_grad()
def perturb_task(prompt: SoftPrompt, task: str) -> None:
    """Change every parameter that belongs to `task` alone (not the shared ones)."""
    i = prompt.tasks.index(task)
    if prompt.kind in VECTOR_KINDS:
        prompt.prompts[task].add_(torch.randn_like(prompt.prompts[task]))
    elif prompt.kind == "shared":
        prompt.mpt.prefix_task_cols[i].add_(torch.randn_like(prompt.mpt.prefix_task_cols[i]))
        prompt.mpt.prefix_task_rows[i].add_(torch.randn_like(prompt.mpt.prefix_task_rows[i]))
    elif prompt.kind == "generated":
        prompt.task_embeddings[task].add_(3 * torch.randn_like(prompt.task_embeddings[task]))
    else:
        raise AssertionError(f"no perturbation for {prompt.kind}")


def test_every_kind_is_registered_and_tested() -> None:
    assert PROMPTS.names() == sorted(KINDS)


def test_kind_none_builds_no_prompt(tiny_backbone: Path) -> None:
    encoder = load_backbone(str(tiny_backbone))[0]
    assert build_model(encoder, TASKS, 0.0, {"kind": "none"}).prompt is None
    assert build_model(encoder, TASKS, 0.0).prompt is None


# --- mixed-task batches ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", VARIANTS)
def test_rows_read_only_their_own_task_prompt(tiny_backbone: Path, encoded, kind: str) -> None:
    model = make_model(tiny_backbone, kind)
    before = batch_logits(model, everything(encoded))
    perturb_task(model.prompt, "b")
    after = batch_logits(model, everything(encoded))
    # Task b's rows see the change; every other row is untouched.
    assert (after["b"] - before["b"]).abs().max() > 1e-4  # (float noise is ~1e-7)
    torch.testing.assert_close(after["a"], before["a"], atol=1e-6, rtol=0)
    torch.testing.assert_close(after["tok"], before["tok"], atol=1e-6, rtol=0)


@pytest.mark.parametrize("kind", VARIANTS)
def test_swapping_a_rows_task_swaps_its_prompt(tiny_backbone: Path, encoded, kind: str) -> None:
    model = make_model(tiny_backbone, kind)
    model.heads["b"].load_state_dict(model.heads["a"].state_dict())
    model.heads["b"].pooling = "mean"  # heads a and b now differ only by their task's prompt
    perturb_task(model.prompt, "b")  # (shared and generated tasks start close to one another)
    rows = np.arange(len(encoded["a"]))
    as_a = batch_logits(model, [("a", encoded["a"], rows), ("tok", encoded["tok"], np.arange(2))])["a"]
    as_b = batch_logits(model, [("tok", encoded["tok"], np.arange(2)), ("b", encoded["a"], rows)])["b"]
    assert (as_a - as_b).abs().max() > 1e-4
    # And the prompt is the only difference: with b's prompt set to a's, the rows agree again.
    with torch.no_grad():
        p = model.prompt
        if p.kind in VECTOR_KINDS:
            p.prompts["b"].copy_(p.prompts["a"])
        elif p.kind == "shared":
            p.mpt.prefix_task_cols[1].copy_(p.mpt.prefix_task_cols[0])
            p.mpt.prefix_task_rows[1].copy_(p.mpt.prefix_task_rows[0])
        else:
            p.task_embeddings["b"].copy_(p.task_embeddings["a"])
    as_b = batch_logits(model, [("b", encoded["a"], rows)])["b"]
    torch.testing.assert_close(as_a, as_b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", VARIANTS)
def test_padding_and_batch_company_do_not_change_a_row(tiny_backbone: Path, encoded, kind: str) -> None:
    """Each row alone (no padding at all) gives what it gives padded inside a mixed batch."""
    model = make_model(tiny_backbone, kind)
    mixed = batch_logits(model, everything(encoded, ("tok", "b", "a")))
    for t in ("a", "b", "tok"):
        assert_rows_alone(model, mixed, t, encoded[t])


@pytest.mark.parametrize("kind", VARIANTS)
def test_heads_see_only_the_real_tokens(tiny_backbone: Path, encoded, kind: str) -> None:
    model = make_model(tiny_backbone, kind)
    seen: dict[str, torch.Tensor] = {}
    hooks = [
        model.heads[t].register_forward_hook(lambda m, args, out, t=t: seen.__setitem__(t, args[0]))
        for t in model.heads
    ]
    full: list[torch.Tensor] = []
    hooks.append(model.encoder.register_forward_hook(lambda m, args, out: full.append(out.last_hidden_state)))
    batch = collate(everything(encoded), pad_id=0)
    with torch.no_grad():
        model(**batch.model_inputs())
    for h in hooks:
        h.remove()
    n = batch.input_ids.shape[1]
    (states,) = full
    assert states.shape[1] == L + n  # the encoder ran over prompt + tokens ...
    for t, sl in batch.rows.items():
        assert seen[t].shape[1] == n  # ... and every head got the token positions only
        torch.testing.assert_close(seen[t], states[sl, L:], atol=0, rtol=0)


def test_prompts_change_the_encoder_output(tiny_backbone: Path, encoded) -> None:
    """A model with a prompt differs from the same encoder without one (the prompt is read)."""
    with_prompt = make_model(tiny_backbone, "shallow")
    without = MultiTaskModel(with_prompt.encoder, with_prompt.heads)
    a = batch_logits(with_prompt, everything(encoded))["a"]
    b = batch_logits(without, everything(encoded))["a"]
    assert (a - b).abs().max() > 1e-3


@pytest.mark.parametrize("kind", ["deep", "prefix", "late"])
def test_layer_prompt_hooks_are_inert_outside_a_pass_and_kept_per_thread(tiny_backbone: Path, encoded, kind: str) -> None:
    """The server may run passes of one model in several threads: each must see its own prompts."""
    from concurrent.futures import ThreadPoolExecutor

    model = make_model(tiny_backbone, kind)
    batch = collate(everything(encoded), pad_id=0)
    plain = model.encoder(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
    jobs = [everything(encoded, order) for order in (("a", "b", "tok"), ("tok", "a"), ("b",), ("a",))] * 5
    expected = [batch_logits(model, parts) for parts in jobs]
    # After passes with prompts, the bare encoder computes what it did before (hooks are no-ops).
    again = model.encoder(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
    torch.testing.assert_close(again, plain, atol=0, rtol=0)
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(lambda parts: batch_logits(model, parts), jobs))
    for e, g in zip(expected, got):
        assert e.keys() == g.keys()
        for t in e:
            torch.testing.assert_close(g[t], e[t], atol=1e-5, rtol=1e-5)


def test_prefix_keys_and_values_of_every_layer_are_read(tiny_backbone: Path, encoded) -> None:
    """Each layer's key prefix and value prefix change the output on their own."""
    model = make_model(tiny_backbone, "prefix")
    prefix = model.prompt.prompts["a"]
    assert prefix.shape == (model.encoder.config.num_hidden_layers, 2, L, 32)
    before = batch_logits(model, everything(encoded))["a"]
    for layer in range(prefix.size(0)):
        for kv in (0, 1):
            with torch.no_grad():
                saved = prefix[layer, kv].clone()
                prefix[layer, kv].add_(10 * torch.randn_like(saved))
            after = batch_logits(model, everything(encoded))["a"]
            with torch.no_grad():
                prefix[layer, kv].copy_(saved)
            assert (after - before).abs().max() > 1e-5, (layer, kv)  # (float noise is ~1e-7)


def test_prefix_prompt_positions_reach_tokens_only_through_the_prefixes(tiny_backbone: Path, encoded, monkeypatch) -> None:
    """What enters at the prompt positions is never read: only the keys and values replace it."""
    model = make_model(tiny_backbone, "prefix")
    before = batch_logits(model, everything(encoded))
    zeros = type(model.prompt).forward
    monkeypatch.setattr(type(model.prompt), "forward", lambda self, ids: 5 * torch.randn_like(zeros(self, ids)))
    after = batch_logits(model, everything(encoded))
    for t in before:
        torch.testing.assert_close(after[t], before[t], atol=1e-5, rtol=1e-5)


def test_prefix_matches_attention_over_explicit_extra_keys_and_values(tiny_backbone: Path) -> None:
    """One layer by hand: softmax(q [K_p; K]^T / sqrt(d)) [V_p; V] for the real tokens."""
    from promptmux.model.backbone import encoder_layers
    from promptmux.model.prompts.prefix import key_value_modules

    model = make_model(tiny_backbone, "prefix")
    encoder = model.encoder
    ids = torch.tensor([[2, 7, 9, 11, 3]])
    prefix = model.prompt.prompts[model.prompt.tasks[1]].detach()
    captured: dict[str, torch.Tensor] = {}
    attn = encoder_layers(encoder)[0].attention
    hook = attn.register_forward_hook(lambda m, args, out: captured.__setitem__("out", out[0]))
    pre = encoder_layers(encoder)[0].register_forward_pre_hook(
        lambda m, args, kwargs: captured.__setitem__("in", (args[0] if args else kwargs["hidden_states"]).detach()),
        with_kwargs=True,
    )
    with torch.no_grad():
        model.prompt.encode(encoder, {model.prompt.tasks[1]: slice(0, 1)}, ids, torch.ones_like(ids))
    hook.remove()
    pre.remove()
    hidden = captured["in"][:, L:]  # the real tokens' input to layer 0
    key, value = key_value_modules(encoder)[0]
    query = attn.self.query
    heads = encoder.config.num_attention_heads
    d = hidden.size(-1) // heads

    def split(x):
        return x.view(1, -1, heads, d).transpose(1, 2)

    q = split(query(hidden))
    k = split(torch.cat([prefix[0, 0].unsqueeze(0), key(hidden)], 1))
    v = split(torch.cat([prefix[0, 1].unsqueeze(0), value(hidden)], 1))
    context = torch.softmax(q @ k.transpose(-1, -2) / d**0.5, -1) @ v
    expected = attn.output(context.transpose(1, 2).reshape(1, -1, heads * d), hidden)
    torch.testing.assert_close(captured["out"][:, L:], expected, atol=1e-5, rtol=1e-5)


def seen_in_a_pass(model: MultiTaskModel, parts, install) -> list[torch.Tensor]:
    """What hooks record during one mixed-batch pass: `install(record)` registers them (returning
    their handles) and they call `record(tensor)`. A first pass installs the prompt's own hooks, so
    the recording ones run after them."""
    batch_logits(model, parts)
    seen: list[torch.Tensor] = []
    hooks = install(seen.append)
    try:
        batch_logits(model, parts)
    finally:
        for h in hooks:
            h.remove()
    return seen


def layer_inputs_seen(model: MultiTaskModel, parts) -> list[torch.Tensor]:
    """Each encoder layer's input hidden states during one mixed-batch pass, as the layer reads it
    (after the prompt's own pre-hooks)."""
    from promptmux.model.backbone import encoder_layers

    def install(record):
        return [
            layer.register_forward_pre_hook(lambda m, args, kwargs: record(args[0] if args else kwargs["hidden_states"]), with_kwargs=True)
            for layer in encoder_layers(model.encoder)
        ]

    return seen_in_a_pass(model, parts, install)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("padded", [True, False], ids=["padded", "unpadded"])
@pytest.mark.parametrize("layer", [0, 1])
def test_late_prompt_joins_the_sequence_at_its_layer(
    tiny_backbone: Path, encoded, attention: str, padded: bool, layer: int
) -> None:
    """Layers 0..k-1 run on the text alone, exactly as without a prompt (no prompt positions at
    all); layer k's input is each row's task prompt in front of the text's hidden states; the
    widened mask lets a padded row compute what it computes alone; and the prompt changes the output."""
    torch.manual_seed(0)
    encoder = load_backbone(str(tiny_backbone))[0]
    encoder.config._attn_implementation = attention
    model = build_model(encoder, TASKS, head_dropout=0.0, prompts={"kind": "late", "length": L, "layer": layer}).eval()
    assert model.prompt.layer == layer
    # Padded: rows of different lengths (the layers get a mask); unpadded: one row per task (no mask).
    parts = everything(encoded) if padded else [(t, encoded[t], np.arange(1)) for t in ("a", "b")]
    seen = layer_inputs_seen(model, parts)
    batch = collate(parts, pad_id=0)
    bare = model.encoder(input_ids=batch.input_ids, attention_mask=batch.attention_mask, output_hidden_states=True)
    real = batch.attention_mask.bool()
    for i in range(layer):  # below k: the bare encoder's inputs, shape and all
        assert seen[i].shape == bare.hidden_states[i].shape
        torch.testing.assert_close(seen[i][real], bare.hidden_states[i][real], atol=1e-5, rtol=1e-5)
    n = batch.input_ids.size(1)
    assert seen[layer].shape[1] == L + n and all(s.shape[1] == L + n for s in seen[layer:])
    torch.testing.assert_close(seen[layer][:, L:][real], bare.hidden_states[layer][real], atol=1e-5, rtol=1e-5)
    for t, sl in batch.rows.items():  # layer k's input at the prompt positions: the task's prompt
        torch.testing.assert_close(seen[layer][sl, :L], model.prompt.prompts[t].expand(sl.stop - sl.start, L, 32))
    mixed = batch_logits(model, parts)
    if padded:
        for t, enc, _ in parts:
            assert_rows_alone(model, mixed, t, enc)
    without = MultiTaskModel(model.encoder, model.heads)
    assert (mixed["a"] - batch_logits(without, parts)["a"]).abs().max() > 1e-3


def test_late_prompt_mask_widening_keeps_the_given_mask_and_opens_the_prompt() -> None:
    from promptmux.model.prompts.late import entering_mask

    keys = torch.tensor([[True, True, False]])  # one row, its last key padding
    per_query = keys[:, None, None, :].expand(1, 1, 3, 3)  # [B, 1, Q, K], a row per query
    for given in (keys[:, None, None, :], per_query):
        wide = entering_mask(given, 2)
        q = 1 if given.size(2) == 1 else 5
        assert wide.shape == (1, 1, q, 5)
        assert wide[..., :2].all()  # everyone reads the prompt
        torch.testing.assert_close(wide[..., -given.size(2):, 2:], given)  # the text's own mask, kept
        assert (wide[..., :, 2:] == keys).all()  # the prompt's queries read what the first query reads
    additive = torch.zeros(1, 1, 1, 3).masked_fill(~keys[:, None, None, :], torch.finfo(torch.float32).min)
    wide = entering_mask(additive, 2)
    assert wide.dtype == torch.float32 and (wide[..., :2] == 0).all()
    torch.testing.assert_close(wide[..., 2:], additive)


def test_late_prompt_refuses_a_layer_the_encoder_lacks_and_an_unmaskable_attention(tiny_backbone: Path) -> None:
    from promptmux.errors import ConfigError

    encoder = load_backbone(str(tiny_backbone))[0]
    with pytest.raises(ConfigError, match=r"model.prompts.layer: 2 is not a layer of this encoder \(it has layers 0..1\)"):
        build_model(encoder, TASKS, head_dropout=0.0, prompts={"kind": "late", "length": L, "layer": 2})
    encoder.config._attn_implementation = "flash_attention_2"
    with pytest.raises(ConfigError, match="works with attention sdpa or eager, not flash_attention_2"):
        build_model(encoder, TASKS, head_dropout=0.0, prompts={"kind": "late", "length": L})


def test_segment_means_pool_only_real_tokens_as_adaptive_average_pooling_cuts_them() -> None:
    from promptmux.model.prompts.instance import segment_means

    torch.manual_seed(0)
    hidden = torch.randn(1, 9, 3)
    for n in (9, 5, 2):  # longer and shorter than L = 4 (segments then repeat tokens)
        expected = torch.nn.functional.adaptive_avg_pool1d(hidden[:, :n].transpose(1, 2), 4).transpose(1, 2)
        real = torch.arange(9)[None] < n
        torch.testing.assert_close(segment_means(hidden, real, 4), expected)
        # the same row left-padded: padding never enters, whatever its values or place
        shifted = torch.cat([torch.full((1, 9 - n, 3), 1e4), hidden[:, :n]], 1)
        torch.testing.assert_close(segment_means(shifted, real.flip(1), 4), expected)


def test_instance_aware_late_prompt_starts_static_and_gives_each_text_its_own_prompt(
    tiny_backbone: Path, encoded
) -> None:
    """At the start (`up` zero) the prompt is the static late prompt; once trained, rows of one task
    with different texts enter with different prompts, and the same text with the same one."""
    fresh = build_model(load_backbone(str(tiny_backbone))[0], TASKS, 0.0, prompts=prompt_spec("late+instance")).eval()
    static = build_model(load_backbone(str(tiny_backbone))[0], TASKS, 0.0, prompts=prompt_spec("late")).eval()
    assert fresh.prompt.instance is not None and static.prompt.instance is None
    static.load_state_dict({k: v for k, v in fresh.state_dict().items() if ".instance." not in k})
    parts = everything(encoded)
    for t, logits in batch_logits(fresh, parts).items():
        torch.testing.assert_close(logits, batch_logits(static, parts)[t])
    trained = make_model(tiny_backbone, "late+instance")  # `up` random, as after training
    rows = [("a", encoded["a"], np.arange(len(encoded["a"])))]
    seen = layer_inputs_seen(trained, rows)[trained.prompt.layer][:, :L]
    assert (seen[0] - seen[1]).abs().max() > 1e-3  # two texts, two prompts
    twice = layer_inputs_seen(trained, [("a", encoded["a"], np.array([1, 1]))])[trained.prompt.layer][:, :L]
    torch.testing.assert_close(twice[0], twice[1])
    torch.testing.assert_close(twice[0], seen[1])  # and a text's prompt is its own, whatever its company
    n = sum(p.numel() for p in trained.prompt.instance.parameters())
    assert n == 2 * 32 * 8 + 8 + 32  # down and up of the bottleneck, shared by every task


def prefix_keys_seen(model: MultiTaskModel, parts) -> list[torch.Tensor]:
    """Each layer's key prefixes ([B, L, H]) in one mixed-batch pass, as the key projections put out
    (after the prompt's own hook)."""
    from promptmux.model.prompts.prefix import key_value_modules

    def install(record):
        return [key.register_forward_hook(lambda m, args, out: record(out[:, :L])) for key, _ in key_value_modules(model.encoder)]

    return seen_in_a_pass(model, parts, install)


def test_instance_aware_prefix_starts_static_and_moves_each_layers_keys_by_its_text(tiny_backbone: Path, encoded) -> None:
    """At the start the prefixes are the static ones; once trained, each layer's keys and values are
    the task's plus the projection of a term of the row's text at that layer (not the same at two
    layers), and a text's prefix is its own, whatever its company or padding."""
    from promptmux.model.prompts.instance import segment_means
    from promptmux.model.prompts.prefix import key_value_modules

    fresh = build_model(load_backbone(str(tiny_backbone))[0], TASKS, 0.0, prompts=prompt_spec("prefix+instance")).eval()
    static = build_model(load_backbone(str(tiny_backbone))[0], TASKS, 0.0, prompts=prompt_spec("prefix")).eval()
    static.load_state_dict({k: v for k, v in fresh.state_dict().items() if ".instance." not in k})
    parts = everything(encoded)
    for t, logits in batch_logits(fresh, parts).items():
        torch.testing.assert_close(logits, batch_logits(static, parts)[t])
    trained = make_model(tiny_backbone, "prefix+instance")
    prompt, rows = trained.prompt, [("a", encoded["a"], np.arange(len(encoded["a"])))]
    keys = prefix_keys_seen(trained, rows)
    inputs = layer_inputs_seen(trained, rows)
    real = collate(rows, pad_id=0).model_inputs()["attention_mask"].bool()
    task = prompt.tasks.index("a")
    scales = prompt.instance.scale
    assert scales.shape == (len(keys),)  # one scale per layer
    for i, (key, _) in enumerate(key_value_modules(trained.encoder)):
        text = inputs[i][:, L:]
        delta = prompt.instance.branch(segment_means(text, real, L), scales[i])
        expected = prompt.vectors()[task, i, 0] + delta @ key.weight.T
        torch.testing.assert_close(keys[i], expected, rtol=1e-4, atol=1e-4)
    assert (keys[0][0] - keys[0][1]).abs().max() > 1e-3  # two texts, two prefixes
    twice = prefix_keys_seen(trained, [("a", encoded["a"], np.array([1, 1]))])
    torch.testing.assert_close(twice[-1][0], twice[-1][1])
    torch.testing.assert_close(twice[-1][0], keys[-1][1], rtol=1e-4, atol=1e-5)
    n = sum(p.numel() for p in prompt.instance.parameters())
    assert n == 2 * 32 * 8 + 8 + 32  # one bottleneck for every task and layer


def test_prefix_refuses_an_encoder_without_key_and_value_projections(tiny_backbone: Path) -> None:
    from promptmux.errors import ConfigError
    from promptmux.model.backbone import encoder_layers

    encoder = load_backbone(str(tiny_backbone))[0]
    for layer in encoder_layers(encoder):
        layer.attention.self.k_proj = torch.nn.Linear(32, 32)  # a second module named like a key: ambiguous
    with pytest.raises(ConfigError, match=r"layer 0 .* 2 modules named like a key projection"):
        build_model(encoder, TASKS, head_dropout=0.0, prompts={"kind": "prefix", "length": L})


# --- residual reparameterization (reparam: residual) ----------------------------------------------


@pytest.mark.parametrize("kind", VECTOR_KINDS)
def test_residual_reparam_starts_as_the_identity_with_one_scale_per_group(tiny_backbone: Path, encoded, kind: str) -> None:
    plain = make_model(tiny_backbone, kind)
    torch.manual_seed(0)  # as make_model: the same heads and prompts, plus an untouched network
    encoder = load_backbone(str(tiny_backbone))[0]
    model = build_model(encoder, TASKS, head_dropout=0.0, prompts=prompt_spec(f"{kind}+residual")).eval()
    torch.testing.assert_close(model.prompt.vectors(), plain.prompt.vectors(), atol=0, rtol=0)
    for t, got in batch_logits(model, everything(encoded)).items():
        torch.testing.assert_close(got, batch_logits(plain, everything(encoded))[t], atol=0, rtol=0)
    # One scale per layer (deep) or per layer and key/value (prefix); the network reads unit-RMS vectors.
    stack = torch.stack([model.prompt.prompts[t] for t in model.prompt.tasks])
    n_layers = encoder.config.num_hidden_layers
    groups = {"shallow": (), "late": (), "deep": (n_layers,), "prefix": (n_layers, 2)}[kind]
    scale = model.prompt.reparam.scale
    assert scale.shape == (*groups, 1, 1)
    rms = (stack / scale).pow(2).mean(dim=(0, stack.dim() - 2, stack.dim() - 1)).sqrt()
    torch.testing.assert_close(rms, torch.ones(groups), atol=1e-4, rtol=0)
    if kind == "prefix":  # (the tiny model's layer inputs all leave a LayerNorm at RMS 1)
        assert scale.max() / scale.min() > 1.05  # the groups' scales do differ


def test_residual_reparam_is_one_network_for_every_task_and_keeps_tasks_apart(tiny_backbone: Path, encoded) -> None:
    model = make_model(tiny_backbone, "prefix+residual")
    before = batch_logits(model, everything(encoded))
    with torch.no_grad():
        model.prompt.reparam.down.bias.add_(1.0)
    after = batch_logits(model, everything(encoded))
    for t in ("a", "b", "tok"):  # the network is shared: changing it moves every task
        assert (after[t] - before[t]).abs().max() > 1e-4, t
    # A loss on task a's rows reaches the network and a's prompt, never b's prompt.
    model.train()
    batch = collate([("a", encoded["a"], np.arange(len(encoded["a"])))], pad_id=0)
    model(**batch.model_inputs())["a"].float().pow(2).mean().backward()
    p = model.prompt
    assert p.prompts["a"].grad.abs().max() > 0 and p.reparam.down.weight.grad.abs().max() > 0
    assert p.prompts["b"].grad is None or not p.prompts["b"].grad.any()


def test_generated_prompt_needs_only_a_new_embedding_for_a_new_task(tiny_backbone: Path) -> None:
    model = make_model(tiny_backbone, "generated")
    shared_before = {n: p.clone() for n, p in model.prompt.named_parameters() if "task_embeddings" not in n}
    model.prompt.add_task("c")
    names = [n for n, _ in model.prompt.named_parameters()]
    assert [n for n in names if "task_embeddings" in n] == [f"task_embeddings.{t}" for t in ("a", "b", "tok", "c")]
    assert {n: p for n, p in model.prompt.named_parameters() if "task_embeddings" not in n}.keys() == shared_before.keys()
    ids = torch.tensor([3, 0])
    out = model.prompt(ids)
    assert out.shape == (2, L, 32) and not torch.allclose(out[0], out[1])


# --- optimizer ------------------------------------------------------------------------------------


@pytest.mark.parametrize("prompt_lr, expected", [(0.3, 0.3), (None, 0.01)])
def test_prompts_get_their_own_rate_and_no_weight_decay(tiny_backbone: Path, tmp_path: Path, prompt_lr, expected) -> None:
    tasks = write_tasks(tmp_path, ["sentiment"])
    prompts = {"kind": "shallow", "length": L, **({"lr": prompt_lr} if prompt_lr else {})}
    cfg = config_from_dict(
        tiny_config(tiny_backbone, tasks, tmp_path / "run", model={"prompts": prompts}, train={"head_lr": 0.01, "weight_decay": 0.1}),
        base_dir=tmp_path,
    )
    info = TaskInfo("sentiment", "classification", ["negative", "positive"], "mean", "accuracy")
    model = build_model(load_backbone(str(tiny_backbone))[0], [info], 0.0, cfg.model.prompts)
    groups = build_optimizer(cfg, model).param_groups
    prompt_ids = {id(p) for p in model.prompt.parameters()}
    placed = [(g["lr"], g["weight_decay"]) for g in groups for p in g["params"] if id(p) in prompt_ids]
    assert len(placed) == len(prompt_ids) and set(placed) == {(expected, 0.0)}


@pytest.mark.parametrize(
    "spec",
    [{"reparam": "residual"}, {"kind": "late", "instance_hidden": 4}, {"kind": "prefix", "instance_hidden": 4}],
    ids=["residual", "late-instance", "prefix-instance"],
)
def test_prompt_networks_take_network_lr_and_the_vectors_keep_theirs(tiny_backbone: Path, tmp_path: Path, spec) -> None:
    tasks = write_tasks(tmp_path, ["sentiment"])
    prompts = {"kind": "shallow", "length": L, "lr": 0.3, "network_lr": 0.002, **spec}
    cfg = config_from_dict(tiny_config(tiny_backbone, tasks, tmp_path / "run", model={"prompts": prompts}), base_dir=tmp_path)
    info = TaskInfo("sentiment", "classification", ["negative", "positive"], "mean", "accuracy")
    model = build_model(load_backbone(str(tiny_backbone))[0], [info], 0.0, cfg.model.prompts)
    (network,) = model.prompt.networks()
    rate = {id(p): g["lr"] for g in build_optimizer(cfg, model).param_groups for p in g["params"]}
    assert {rate[id(p)] for p in network.parameters()} == {0.002}
    assert rate[id(model.prompt.prompts["sentiment"])] == 0.3
    assert sum(id(p) in rate for p in model.prompt.parameters()) == len(list(model.prompt.parameters()))  # each once


# --- a short frozen-backbone run per kind ---------------------------------------------------------


@pytest.fixture(scope="module", params=VARIANTS)
def run(request, tiny_backbone: Path, tmp_path_factory: pytest.TempPathFactory, single_thread) -> TrainedRun:  # noqa: F811
    variant = request.param
    folder = tmp_path_factory.mktemp(f"prompt-{variant.replace('+', '-')}")
    tasks = write_tasks(folder, ["sentiment", "pair", "ner"], n_train=64, n_dev=16)
    tasks["pair"]["pooling"] = "pair"  # the two texts' means compared ([u, v, |u-v|, u*v]) under prompts
    cfg = config_from_dict(
        tiny_config(
            tiny_backbone, tasks, folder / "run",
            model={"freeze": {"strategy": "backbone"}, "prompts": {**prompt_spec(variant), "lr": 0.05}},
            sampling={"mixed": True, "strategy": "uniform"},
            train={"max_steps": 40, "eval_every": 20, "log_every": 10},
        ),
        base_dir=folder,
    )
    return TrainedRun.train(variant, folder, cfg, kind=variant.partition("+")[0])


def test_frozen_backbone_trains_only_prompts_and_heads(run: TrainedRun) -> None:
    state = run.result.model.state_dict()
    encoder_keys = [k for k in state if k.startswith("encoder.")]
    prompt_keys = [k for k in state if k.startswith("prompt.")]
    assert encoder_keys and prompt_keys
    for k in encoder_keys:
        assert torch.equal(state[k], run.initial[k]), f"{k} changed under freeze.strategy=backbone"
    assert any(not torch.equal(state[k], run.initial[k]) for k in prompt_keys), "the prompts did not train"
    if "+residual" in run.name:
        # The network trains too, starting from the identity (up = 0).
        assert not run.initial["prompt.reparam.up.weight"].any()
        assert state["prompt.reparam.up.weight"].abs().max() > 0
    heads = [k for k in state if k.startswith("heads.")]
    assert all(not torch.equal(state[k], run.initial[k]) for k in heads if k.endswith(".out.weight"))


def test_trainable_count_and_share_are_printed(run: TrainedRun) -> None:
    model = run.result.model
    trainable = sum(p.numel() for p in model.prompt.parameters()) + sum(p.numel() for p in model.heads.parameters())
    total = sum(p.numel() for p in model.parameters())
    assert trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)
    m = re.search(r"trainable parameters: ([\d,]+) of ([\d,]+) \(([\d.]+)%\)", run.printed)
    assert m, run.printed
    assert int(m.group(1).replace(",", "")) == trainable and int(m.group(2).replace(",", "")) == total
    assert float(m.group(3)) == pytest.approx(100 * trainable / total, abs=0.01)
    n_prompt = sum(p.numel() for p in model.prompt.parameters())
    assert f"soft prompts ({run.kind}): {n_prompt:,}" in run.printed


def test_bundle_records_the_prompt_settings(run: TrainedRun) -> None:
    meta = json.loads((run.out / "last" / "bundle.json").read_text(encoding="utf-8"))
    reparam = {"reparam": "residual", "reparam_hidden": 8} if "+residual" in run.name else {"reparam": "none", "reparam_hidden": 16}
    assert meta["settings"]["prompts"] == {
        "kind": run.kind, "length": L, "layer": None, "rank": 2, "task_embedding_dim": 32, "generator_hidden": 256,
        "init": "vocab", "instance_hidden": 8 if "+instance" in run.name else None, **reparam,
    }


def test_prompts_survive_save_and_load_bit_exactly(run: TrainedRun) -> None:
    saved = load_file(str(run.out / "last" / "model.safetensors"))
    trained = {k: v for k, v in run.result.model.state_dict().items() if k.startswith("prompt.")}
    assert trained and {k for k in saved if k.startswith("prompt.")} == set(trained)
    model, _, _, _, _ = load_bundle(run.out / "last")
    assert type(model.prompt) is type(run.result.model.prompt)
    for k, v in trained.items():
        assert torch.equal(saved[k], v) and torch.equal(model.state_dict()[k], v), k


def test_loaded_bundle_predicts_like_the_trained_model_in_mixed_batches(run: TrainedRun) -> None:
    loaded, tokenizer, tasks, _, _ = load_bundle(run.out / "last")
    trained = run.result.model.eval()
    parts = []
    for info in tasks:
        rows = [Example(*x) if isinstance(x, tuple) else Example(tuple(x) if isinstance(x, list) else x) for x in run.dev_inputs(info.name)]
        enc = encode_examples(rows, tokenizer, info.type, 32, info.n_labels)
        parts.append((info.name, enc, np.arange(len(enc))))
    expected = batch_logits(trained, parts)
    got = batch_logits(loaded, parts)
    for t in expected:
        torch.testing.assert_close(got[t], expected[t], atol=1e-6, rtol=1e-6)
    # And through the user-facing Predictor, per task.
    predictor = Predictor.from_pretrained(run.out / "last")
    for t in ("sentiment", "pair", "ner"):
        again = Predictor(trained, tokenizer, list(predictor.tasks.values()), predictor.settings)
        assert predictor.predict(t, run.dev_inputs(t)) == again.predict(t, run.dev_inputs(t))


def test_a_bundle_without_its_prompt_setting_is_refused(run: TrainedRun, tmp_path: Path) -> None:
    """The setting matters: without it the prompt weights in model.safetensors have no module."""
    copy_dir = tmp_path / "bundle"
    shutil.copytree(run.out / "last", copy_dir)
    meta = json.loads((copy_dir / "bundle.json").read_text(encoding="utf-8"))
    del meta["settings"]["prompts"]
    (copy_dir / "bundle.json").write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(BundleError, match="unexpected"):
        load_bundle(copy_dir)


def test_old_bundles_without_prompts_still_load(run: TrainedRun, tmp_path: Path) -> None:
    """A bundle written before soft prompts existed (no `prompts` setting, no prompt weights)."""
    from promptmux.serve.bundle import write_bundle

    model, tokenizer, tasks, settings, _ = load_bundle(run.out / "last")
    plain = MultiTaskModel(model.encoder, model.heads)
    write_bundle(tmp_path / "old", plain, tokenizer, tasks, {k: v for k, v in settings.items() if k != "prompts"})
    loaded, _, _, settings, _ = load_bundle(tmp_path / "old")
    assert loaded.prompt is None and "prompts" not in settings
