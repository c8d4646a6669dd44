"""The serving machinery under the API: mixed-task passes, concurrency, micro-batching, metrics,
settings, older bundles and the `serve` command."""

from __future__ import annotations

import asyncio
import json
import random
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import single_thread  # noqa: F401  (fixture)
from serve_support import (  # noqa: F401  (fixtures)
    assert_matches,
    bundle,
    client_for,
    expected_for,
    live_server,
    post,
    predictor,
    predictor_input,
    run,
    sample_items,
)

import promptmux.serve.mixed as mixed_mod
from promptmux.errors import ConfigError
from promptmux.model.multitask import TaskInfo
from promptmux.serve.mixed import plan_passes, predict_mixed
from promptmux.serve.predictor import Predictor
from promptmux.serve.schemas import ServeSettings
from promptmux.serve.tasks import takes_pairs

pytestmark = pytest.mark.usefixtures("single_thread")


# --- mixed-task passes ----------------------------------------------------------------------------


def test_predict_mixed_runs_one_forward_for_all_tasks(predictor: Predictor, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []
    real = mixed_mod.collate

    def recording(parts, *args, **kwargs):
        calls.append([task for task, _, _ in parts])
        return real(parts, *args, **kwargs)

    monkeypatch.setattr(mixed_mod, "collate", recording)
    items = sample_items()
    raw = [(it["task"], predictor.example(it["task"], predictor_input(it))) for it in items]
    out = predict_mixed(predictor, raw)
    assert len(calls) == 1 and sorted(calls[0]) == ["ner", "pair", "score", "sentiment"]  # one pass, a slice per task
    for result, expected in zip(out, expected_for(predictor, items)):
        assert_matches(result, expected)


def test_very_uneven_lengths_split_into_mixed_passes(predictor: Predictor) -> None:
    short = [("sentiment", "fun"), ("score", "bad"), ("ner", "john")] * 3
    long = [("sentiment", "the movie was " + "really very " * 20 + "good"), ("pair", ("the film " * 15, "it was great " * 10)), ("ner", "mary " * 40)] * 3
    items = [x for pair in zip(short, long) for x in pair]
    stats = mixed_mod.PassStats()
    out = predict_mixed(predictor, [(t, predictor.example(t, x)) for t, x in items], stats)
    assert stats.passes == 2  # shorts together, longs together: less padding than one pass costs
    assert stats.padded_tokens < 1.2 * stats.tokens
    for result, (task, x) in zip(out, items):
        assert_matches(result, predictor.predict(task, [x])[0], tol=1e-5)


@pytest.mark.parametrize(
    "lengths, overhead, expected",
    [
        ([5, 5, 5, 5], 32, [[0, 1, 2, 3]]),
        ([10, 4, 11, 5], 32, [[1, 3, 0, 2]]),  # a split saves 2x6 padded tokens, less than a pass costs
        ([30, 4, 31, 5], 32, [[1, 3], [0, 2]]),  # here it saves 2x26
        ([], 32, []),
    ],
)
def test_plan_passes(lengths: list[int], overhead: int, expected: list[list[int]]) -> None:
    assert plan_passes(lengths, overhead) == expected


def test_one_task_with_single_texts_and_pairs_in_one_pass(predictor: Predictor) -> None:
    # A bundle that does not record `pair` accepts both forms for a task; they tokenize apart.
    mixed = [("pair", "it was good"), ("pair", ("the film", "it was awful")), ("pair", "it was bad")]
    out = predict_mixed(predictor, [(t, predictor.example(t, x)) for t, x in mixed])
    for result, (task, x) in zip(out, mixed):
        assert_matches(result, predictor.predict(task, [x])[0], tol=1e-5)


# --- concurrency and batching ---------------------------------------------------------------------


def random_items(rng: random.Random, n: int) -> list[dict[str, Any]]:
    pool = sample_items() + [
        {"task": "sentiment", "text": "that was the worst film really"},
        {"task": "score", "text": "a very fun plot"},
        {"task": "ner", "text": "the team won in paris"},
        {"task": "pair", "text_a": "a film", "text_b": "it was boring to the end"},
    ]
    return [rng.choice(pool) for _ in range(n)]


@pytest.mark.parametrize("workers", [1, 2])
def test_many_concurrent_clients_get_their_own_answers(predictor: Predictor, workers: int) -> None:
    rng = random.Random(0)
    requests = [random_items(rng, rng.randint(1, 3)) for _ in range(48)]
    cache: dict[str, dict[str, Any]] = {}
    for items in requests:
        for it in items:
            cache.setdefault(json.dumps(it, sort_keys=True), expected_for(predictor, [it])[0])

    async def go() -> tuple[list[httpx.Response], dict[float, int], dict[float, int], str]:
        async with client_for(predictor, max_batch_size=16, max_wait_ms=20, workers=workers) as client:
            responses = await asyncio.gather(*(post(client, {"items": items}) for items in requests))
            metrics = client.app.state.metrics  # type: ignore[attr-defined]
            text = (await client.get("/metrics")).text
            return list(responses), metrics.batch_size.snapshot(), metrics.batch_tasks.snapshot(), text

    responses, sizes, task_counts, text = run(go())
    for items, response in zip(requests, responses):
        assert response.status_code == 200, response.text
        results = response.json()["results"]
        assert [r["task"] for r in results] == [it["task"] for it in items]
        for it, result in zip(items, results):
            assert_matches(result, cache[json.dumps(it, sort_keys=True)])
    total_items = sum(len(items) for items in requests)
    n_batches = sizes[float("inf")]
    assert sizes[1.0] < n_batches, f"no batch held more than one item: {sizes}"
    assert n_batches < total_items / 3, f"{n_batches} batches for {total_items} items: little batching"
    assert task_counts[1.0] < n_batches, "no pass mixed tasks"
    assert "promptmux_items_total{task=\"sentiment\"}" in text
    assert re.search(r'^promptmux_requests_total\{route="/v1/predict",status="200"\} 48$', text, re.M)


def test_max_batch_size_one_turns_batching_off(predictor: Predictor) -> None:
    async def go() -> dict[float, int]:
        async with client_for(predictor, max_batch_size=1, max_wait_ms=20) as client:
            responses = await asyncio.gather(*(post(client, {"items": sample_items()[:3]}) for _ in range(6)))
            assert all(r.status_code == 200 for r in responses)
            return client.app.state.metrics.batch_size.snapshot()  # type: ignore[attr-defined]

    sizes = run(go())
    assert sizes[1.0] == sizes[float("inf")] == 18


def test_real_server_on_loopback_under_concurrent_clients(predictor: Predictor) -> None:
    items = sample_items()
    expected = expected_for(predictor, items)

    async def clients(url: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            return list(await asyncio.gather(*(client.post("/v1/predict", json={"items": [items[i % len(items)]]}) for i in range(32))))

    with live_server(predictor, max_batch_size=8, max_wait_ms=10) as url:
        responses = run(clients(url))
        assert httpx.get(f"{url}/healthz").json()["status"] == "ok"
        metrics = httpx.get(f"{url}/metrics").text
    for i, response in enumerate(responses):
        assert response.status_code == 200, response.text
        assert_matches(response.json()["results"][0], expected[i % len(items)])
    assert re.search(r'^promptmux_batch_size_count \d+$', metrics, re.M)


# --- metrics --------------------------------------------------------------------------------------


def test_metrics_exposition(predictor: Predictor) -> None:
    async def go() -> str:
        async with client_for(predictor) as client:
            await post(client, {"items": sample_items()})
            await post(client, {"items": [{"task": "nope", "text": "a"}]})
            await client.get("/no/such/page")
            r = await client.get("/metrics")
            assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
            return r.text

    text = run(go())
    for family, kind in [
        ("promptmux_requests_total", "counter"), ("promptmux_items_total", "counter"), ("promptmux_errors_total", "counter"),
        ("promptmux_batch_size", "histogram"), ("promptmux_request_duration_seconds", "histogram"), ("promptmux_queue_depth", "gauge"),
        ("promptmux_forward_passes_total", "counter"), ("promptmux_tokens_total", "counter"), ("promptmux_forward_seconds", "histogram"),
    ]:
        assert f"# TYPE {family} {kind}" in text
    sample = re.compile(r'^[a-z_]+(\{([a-z_]+="[^"]*",?)*\})? [-+0-9.eInf]+$')
    for line in text.splitlines():
        assert line.startswith("# HELP ") or line.startswith("# TYPE ") or sample.match(line), line
    assert 'promptmux_requests_total{route="/v1/predict",status="200"} 1' in text
    assert 'promptmux_requests_total{route="/v1/predict",status="422"} 1' in text
    assert 'promptmux_requests_total{route="other",status="404"} 1' in text
    assert 'promptmux_errors_total{kind="invalid_request"} 1' in text
    assert 'promptmux_items_total{task="ner"} 2' in text
    assert 'promptmux_request_duration_seconds_count{route="/v1/predict"} 2' in text
    buckets = [int(v) for v in re.findall(r'^promptmux_batch_size_bucket\{le="[^"]+"\} (\d+)$', text, re.M)]
    assert buckets == sorted(buckets) and buckets[-1] >= 1  # cumulative


def test_metric_families_render_and_refuse_misuse() -> None:
    from promptmux.serve.metrics import Counter, Histogram, MetricsRegistry

    registry = MetricsRegistry()
    c = registry.add(Counter("x_total", "Things.", ("name",)))
    h = registry.add(Histogram("lat_seconds", "Latency.", [0.1, 1]))
    c.inc(name='a "quoted"\nvalue')
    for v in (0.05, 0.5, 5):
        h.observe(v)
    text = registry.render()
    assert 'x_total{name="a \\"quoted\\"\\nvalue"} 1' in text
    assert 'lat_seconds_bucket{le="0.1"} 1\nlat_seconds_bucket{le="1"} 2\nlat_seconds_bucket{le="+Inf"} 3' in text
    assert "lat_seconds_sum 5.55" in text and "lat_seconds_count 3" in text
    with pytest.raises(ValueError, match="cannot decrease"):
        c.inc(-1, name="a")
    with pytest.raises(ValueError, match=r"expected labels \('name',\)"):
        c.inc(other="a")
    with pytest.raises(ValueError, match="registered twice"):
        registry.add(Counter("x_total", "again"))


# --- settings, older bundles, the command --------------------------------------------------------


@pytest.mark.parametrize(
    "field, value, kind",
    [("max_batch_size", 0, "an integer > 0"), ("max_wait_ms", -1, "a number >= 0"), ("timeout_s", 0, "a number > 0"), ("max_items", "many", "an integer"), ("workers", 1.5, "an integer")],
)
def test_settings_are_checked(field: str, value: Any, kind: str) -> None:
    with pytest.raises(ConfigError, match=rf"serve\.{field} must be {kind}.*got {value!r}"):
        ServeSettings(**{field: value})


def test_settings_cross_check() -> None:
    with pytest.raises(ConfigError, match=r"serve\.max_items \(100\) must not exceed serve\.max_queue \(50\)"):
        ServeSettings(max_items=100, max_queue=50)


def test_pair_flag_for_bundles_that_do_not_record_it() -> None:
    old = TaskInfo("nli", "classification", ["no", "yes"], "mean", "accuracy")  # pair defaults to None
    assert takes_pairs(old, {"fields": {"text": "a", "text_b": "b"}}) is True
    assert takes_pairs(old, {"fields": {"text": "a"}}) is False
    assert takes_pairs(old, None) is None
    assert takes_pairs(TaskInfo("nli", "classification", ["no"], "mean", "accuracy", pair=True), None) is True


def test_serve_command_builds_the_app_with_its_options(bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn
    from typer.testing import CliRunner

    from promptmux.cli import app as cli

    seen: dict[str, Any] = {}

    def fake_run(app: Any, **kwargs: Any) -> None:
        seen["app"], seen["kwargs"] = app, kwargs

    monkeypatch.setattr(uvicorn, "run", fake_run)
    args = ["serve", str(bundle), "--port", "8123", "--max-batch-size", "8", "--max-wait-ms", "3", "--max-items", "5", "--max-text-chars", "99", "--timeout-s", "4", "--truncate"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert seen["kwargs"]["host"] == "127.0.0.1" and seen["kwargs"]["port"] == 8123
    s = seen["app"].state.settings
    assert (s.max_batch_size, s.max_wait_ms, s.max_items, s.max_text_chars, s.timeout_s, s.truncate) == (8, 3.0, 5, 99, 4.0, True)
    for wrong, message in ((["--max-batch-size", "0"], "serve.max_batch_size must be an integer > 0"), (["--precision", "fp16"], "--precision must be fp32, bf16 or auto")):
        bad = CliRunner().invoke(cli, ["serve", str(bundle), *wrong])
        assert bad.exit_code != 0 and message in str(bad.exception)
