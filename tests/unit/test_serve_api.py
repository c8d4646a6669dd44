"""The HTTP API: every endpoint, every error path, mixed-task requests, prompts.

Concurrency, micro-batching, metrics, settings and the `serve` command: test_serve_batching.py.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from helpers import single_thread  # noqa: F401  (fixture)
from serve_support import (  # noqa: F401  (fixtures)
    assert_matches,
    bundle,
    client_for,
    expected_for,
    post,
    predictor,
    run,
    sample_items,
)

import promptmux.serve.batcher as batcher_mod
from promptmux.serve.app import swagger_ui_assets
from promptmux.serve.predictor import Predictor

pytestmark = pytest.mark.usefixtures("single_thread")


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"] and error["code"]
    return error


# --- the read-only endpoints ----------------------------------------------------------------------


def test_tasks_lists_types_labels_pairs_and_limits(predictor: Predictor) -> None:
    async def go() -> dict[str, Any]:
        async with client_for(predictor, max_items=7) as client:
            r = await client.get("/v1/tasks")
            assert r.status_code == 200
            return r.json()

    body = run(go())
    tasks = {t["name"]: t for t in body["tasks"]}
    assert list(tasks) == ["sentiment", "pair", "score", "ner"]
    assert tasks["sentiment"] == {"name": "sentiment", "type": "classification", "labels": ["negative", "positive"], "pair": False, "prompt": None, "metric": "accuracy", "pooling": "mean"}
    assert tasks["pair"]["pair"] is True and tasks["pair"]["labels"] == ["no", "yes"]
    assert tasks["score"]["type"] == "regression" and tasks["score"]["labels"] is None
    assert tasks["ner"]["type"] == "token" and tasks["ner"]["pair"] is False
    assert body["limits"]["max_items"] == 7 and body["limits"]["max_text_chars"] == 4000


def test_healthz_docs_openapi_and_playground(predictor: Predictor) -> None:
    async def go() -> None:
        async with client_for(predictor) as client:
            health = await client.get("/healthz")
            assert health.status_code == 200
            assert health.json()["status"] == "ok" and health.json()["tasks"] == 4
            docs = await client.get("/docs")
            assert docs.status_code == 200 and "swagger" in docs.text.lower()
            if swagger_ui_assets() is not None:  # served from here, not from a CDN
                assert "/docs-assets/swagger-ui-bundle.js" in docs.text and "cdn" not in docs.text
                script = await client.get("/docs-assets/swagger-ui-bundle.js")
                assert script.status_code == 200 and len(script.content) > 100_000
            spec = (await client.get("/openapi.json")).json()
            assert {"/v1/predict", "/v1/tasks", "/healthz", "/metrics"} <= set(spec["paths"])
            assert "PredictRequest" in spec["components"]["schemas"]
            page = await client.get("/")
            assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
            for element in ('id="task"', 'id="text"', 'id="text_b"', 'id="predict"', 'id="result"'):
                assert element in page.text

    run(go())


def test_unknown_route_is_a_json_404(predictor: Predictor) -> None:
    async def go() -> None:
        async with client_for(predictor) as client:
            error = error_of(await client.get("/v2/nothing"), 404)
            assert "/v2/nothing" in error["message"]
            error = error_of(await client.get("/v1/predict"), 405)
            assert "GET /v1/predict" in error["message"]

    run(go())


# --- predictions ----------------------------------------------------------------------------------


def test_mixed_task_request_matches_the_predictor(predictor: Predictor) -> None:
    items = sample_items()

    async def go() -> dict[str, Any]:
        async with client_for(predictor) as client:
            r = await post(client, {"items": items})
            assert r.status_code == 200, r.text
            return r.json()

    results = run(go())["results"]
    assert [r["index"] for r in results] == list(range(len(items)))
    assert [r["task"] for r in results] == [it["task"] for it in items]
    for result, expected in zip(results, expected_for(predictor, items)):
        assert_matches(result, expected)
    by_task = {r["task"]: r for r in results}
    assert set(by_task["sentiment"]) == {"index", "task", "label", "score"}  # no probabilities unless asked
    assert set(by_task["score"]) == {"index", "task", "value"}
    assert set(by_task["ner"]) == {"index", "task", "tokens", "entities"}
    assert [t["word"] for t in results[1]["tokens"]] == ["john", "works", "in", "paris", "city"]


def test_top_k_and_probabilities(predictor: Predictor) -> None:
    items = [{"task": "sentiment", "text": "the movie was good"}, {"task": "score", "text": "fun"}, {"task": "ner", "text": "john"}]

    async def go() -> dict[str, Any]:
        async with client_for(predictor) as client:
            return (await post(client, {"items": items, "top_k": 1, "return_probabilities": True})).json()

    sentiment, score, ner = run(go())["results"]
    expected = predictor.predict("sentiment", ["the movie was good"])[0]
    assert sentiment["probabilities"] == pytest.approx(expected["probabilities"], abs=1e-4)
    assert sentiment["top"] == [{"label": expected["label"], "score": pytest.approx(expected["score"], abs=1e-4)}]
    assert "top" not in score and "probabilities" not in score  # a value has no label ranking
    assert "top" not in ner


def test_truncation_when_configured(predictor: Predictor) -> None:
    long = "the movie was great " * 20

    async def go() -> dict[str, Any]:
        async with client_for(predictor, max_text_chars=30, truncate=True) as client:
            r = await post(client, {"items": [{"task": "sentiment", "text": long}, {"task": "sentiment", "text": "fun"}]})
            assert r.status_code == 200, r.text
            return r.json()

    first, second = run(go())["results"]
    assert first["truncated"] is True and "truncated" not in second
    assert_matches(first, predictor.predict("sentiment", [long[:30]])[0])


# --- errors ---------------------------------------------------------------------------------------

BAD_ITEMS = [
    ({"task": "nope", "text": "x"}, "task", r"unknown task 'nope'; this bundle has: sentiment, pair, score, ner"),
    ({"text": "x"}, "task", r"Field required"),
    ({"task": "sentiment"}, "text", r"field required: give text, or text_a and text_b"),
    ({"task": "pair", "text_a": "a"}, "text_b", r"a pair needs text_a and text_b"),
    ({"task": "sentiment", "text": "a", "text_a": "b", "text_b": "c"}, "text", r"not both"),
    ({"task": "pair", "text": "a"}, "text", r"task 'pair' reads text pairs: give text_a and text_b"),
    ({"task": "sentiment", "text_a": "a", "text_b": "b"}, "text_a", r"task 'sentiment' \(classification\) reads one text"),
    ({"task": "ner", "text_a": "a", "text_b": "b"}, "text_a", r"reads one text"),
    ({"task": "sentiment", "text": "   "}, "text", r"empty text"),
    ({"task": "ner", "text": " "}, "text", r"a token task needs a non-empty text"),
    ({"task": "pair", "text_a": "a", "text_b": ""}, "text_a", r"empty text"),
    ({"task": "sentiment", "text": 5}, "text", r"valid string"),
    ({"task": "sentiment", "text": "a", "label": 1}, "label", r"Extra inputs are not permitted"),
]


@pytest.mark.parametrize("item, field, message", BAD_ITEMS, ids=[f"{i}-{f}" for i, (_, f, _) in enumerate(BAD_ITEMS)])
def test_bad_item_is_a_422_naming_index_and_field(predictor: Predictor, item: dict[str, Any], field: str, message: str) -> None:
    async def go() -> httpx.Response:
        async with client_for(predictor) as client:
            return await post(client, {"items": [{"task": "sentiment", "text": "fine"}, item]})

    error = error_of(run(go()), 422)
    assert error["code"] == "invalid_request"
    (detail,) = error["details"]
    assert detail["item"] == 1 and detail["field"] == field
    assert re.search(message, detail["message"]), detail
    assert error["message"].startswith(f"items[1].{field}: ")


@pytest.mark.parametrize(
    "body, field, message",
    [
        (b"{not json", None, r"not valid JSON"),
        (b"", None, r"expected a JSON body"),
        ({"items": []}, "items", r"at least 1 item"),
        ({"texts": ["a"]}, "items", r"Field required"),
        ([{"task": "sentiment", "text": "a"}], None, r"valid dictionary"),
        ({"items": [{"task": "sentiment", "text": "a"}], "top_k": 0}, "top_k", r"greater than or equal to 1"),
        ({"items": [{"task": "sentiment", "text": "a"}], "return_probabilities": "maybe"}, "return_probabilities", r"valid boolean"),
        ({"items": "sentiment"}, "items", r"valid list"),
    ],
)
def test_malformed_body_is_a_422(predictor: Predictor, body: Any, field: str | None, message: str) -> None:
    async def go() -> httpx.Response:
        async with client_for(predictor) as client:
            return await post(client, body)

    error = error_of(run(go()), 422)
    detail = error["details"][0]
    assert detail["item"] is None and detail["field"] == field
    assert re.search(message, detail["message"]), detail


def test_all_bad_items_are_listed(predictor: Predictor) -> None:
    items = [{"task": "x", "text": "a"}, {"task": "sentiment", "text": "ok"}, {"task": "sentiment", "text": "y" * 50}]

    async def go() -> httpx.Response:
        async with client_for(predictor, max_text_chars=10) as client:
            return await post(client, {"items": items})

    error = error_of(run(go()), 422)  # a 422 problem outranks a 413 one
    assert [(d["item"], d["field"]) for d in error["details"]] == [(0, "task"), (2, "text")]
    assert "(and 1 more)" in error["message"]


async def chunks(chunk: bytes, n: int) -> AsyncIterator[bytes]:
    for _ in range(n):
        yield chunk


def test_size_limits_are_413(predictor: Predictor) -> None:
    async def go() -> list[httpx.Response]:
        async with client_for(predictor, max_items=3, max_text_chars=20, max_body_bytes=2000) as client:
            return [
                await post(client, {"items": [{"task": "sentiment", "text": "a"}] * 4}),
                await post(client, {"items": [{"task": "sentiment", "text": "ok"}, {"task": "pair", "text_a": "a", "text_b": "b" * 21}]}),
                await post(client, {"items": [{"task": "sentiment", "text": "z" * 3000}]}),
                await client.post("/v1/predict", content=chunks(b"x" * 100, 30), headers={"content-type": "application/json"}),
            ]

    items, text, body, streamed = run(go())
    error = error_of(items, 413)
    assert error["code"] == "too_large" and "too many items: 4 (limit 3 per request)" in error["message"]
    error = error_of(text, 413)
    assert error["details"] == [{"item": 1, "field": "text_b", "message": "text too long: 21 characters (limit 20)"}]
    assert error_of(items, 413)["details"] == [{"item": None, "field": "items", "message": "at most 3 items"}]
    assert "limit 2000 bytes" in error_of(body, 413)["message"]  # refused from Content-Length
    assert "limit 2000 bytes" in error_of(streamed, 413)["message"]  # chunked: refused while reading


def test_timeout_is_504_and_the_server_keeps_serving(predictor: Predictor, monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    real = batcher_mod.predict_mixed

    def stuck_on_marker(p: Predictor, items: list, *args: Any) -> list:
        if any("slowpoke" in str(ex.text) for _, ex in items):
            release.wait(30)  # holds the model thread until the test has seen the 504
        return real(p, items, *args)

    monkeypatch.setattr(batcher_mod, "predict_mixed", stuck_on_marker)

    async def go() -> tuple[httpx.Response, httpx.Response]:
        async with client_for(predictor, timeout_s=1.0) as client:
            slow = await post(client, {"items": [{"task": "sentiment", "text": "slowpoke"}]})
            release.set()
            return slow, await post(client, {"items": [{"task": "sentiment", "text": "the movie was good"}]})

    try:
        slow, after = run(go())
    finally:
        release.set()
    error = error_of(slow, 504)
    assert error["code"] == "timeout" and "timed out after 1 s" in error["message"]
    assert after.status_code == 200


def test_bad_requests_never_disturb_others_in_flight(predictor: Predictor, monkeypatch: pytest.MonkeyPatch) -> None:
    real = batcher_mod.predict_mixed

    def poison(p: Predictor, items: list, *args: Any) -> list:
        if any(ex.text == "poison" for _, ex in items):
            raise RuntimeError("the model choked on this item")
        return real(p, items, *args)

    monkeypatch.setattr(batcher_mod, "predict_mixed", poison)
    good = sample_items()
    expected = expected_for(predictor, good)

    async def go() -> list[httpx.Response]:
        async with client_for(predictor, max_batch_size=64, max_wait_ms=50) as client:
            bodies: list[Any] = [{"items": [it]} for it in good]
            bodies += [{"items": [{"task": "sentiment", "text": "poison"}]}, {"items": [{"task": "zzz", "text": "a"}]}, b"{", {"items": [{"task": "sentiment", "text": "q" * 5000}]}]
            responses = await asyncio.gather(*(post(client, b) for b in bodies))
            assert (await client.get("/healthz")).status_code == 200
            batches = client.app.state.metrics.batches.value()  # type: ignore[attr-defined]
            assert batches >= 2  # the failed mixed pass, then the retries one by one
            return list(responses)

    responses = run(go())
    for response, exp in zip(responses[: len(good)], expected):
        assert response.status_code == 200, response.text
        assert_matches(response.json()["results"][0], exp)
    poisoned, unknown, broken, too_long = responses[len(good) :]
    error = error_of(poisoned, 500)
    assert error["message"] == "prediction failed for items[0]: RuntimeError: the model choked on this item"
    assert error["details"] == [{"item": 0, "field": None, "message": "RuntimeError: the model choked on this item"}]
    assert error_of(unknown, 422)["details"][0]["field"] == "task"
    error_of(broken, 422)
    error_of(too_long, 413)


def test_full_queue_is_503(predictor: Predictor, monkeypatch: pytest.MonkeyPatch) -> None:
    entered, release = threading.Event(), threading.Event()
    real = batcher_mod.predict_mixed

    def held(p: Predictor, items: list, *args: Any) -> list:
        entered.set()
        release.wait(30)
        return real(p, items, *args)

    monkeypatch.setattr(batcher_mod, "predict_mixed", held)
    two = {"items": [{"task": "sentiment", "text": "a"}] * 2}

    async def go() -> tuple[httpx.Response, httpx.Response, httpx.Response]:
        async with client_for(predictor, max_queue=2, max_items=2, max_batch_size=1) as client:
            first = asyncio.create_task(post(client, two))
            while not entered.is_set():  # one item in the model, one waiting
                await asyncio.sleep(0.01)
            refused = await post(client, two)  # 1 waiting + 2 > 2
            release.set()
            return await first, refused, await post(client, two)

    try:
        first, refused, later = run(go())
    finally:
        release.set()
    assert first.status_code == 200 and later.status_code == 200
    error = error_of(refused, 503)
    assert error["code"] == "busy" and "1 item(s) waiting already and 2 more would pass the limit of 2" in error["message"]



def test_hard_prompts_are_shown_and_applied(predictor: Predictor) -> None:
    from dataclasses import replace

    tasks = [replace(info, prompt={"sentiment": "Review: {text}", "pair": "Film: {text}{sep}Verdict: {text_b}"}.get(name)) for name, info in predictor.tasks.items()]
    prompted = Predictor(predictor.model, predictor.tokenizer, tasks, predictor.settings)
    items = sample_items()

    async def go() -> tuple[dict[str, Any], dict[str, Any]]:
        async with client_for(prompted) as client:
            return (await client.get("/v1/tasks")).json(), (await post(client, {"items": items})).json()

    listing, answers = run(go())
    assert {t["name"]: t["prompt"] for t in listing["tasks"]} == {"sentiment": "Review: {text}", "pair": "Film: {text}{sep}Verdict: {text_b}", "score": None, "ner": None}
    for result, expected in zip(answers["results"], expected_for(prompted, items)):
        assert_matches(result, expected)
    unprompted = expected_for(predictor, items[:1])[0]
    assert answers["results"][0]["score"] != unprompted["score"], "the template made no difference"


def test_an_unexpected_error_is_a_json_500(predictor: Predictor, monkeypatch: pytest.MonkeyPatch) -> None:
    import promptmux.serve.app as app_mod

    def broken(*args: Any) -> dict[str, Any]:
        raise KeyError("a bug")

    monkeypatch.setattr(app_mod, "shape_result", broken)

    async def go() -> tuple[httpx.Response, httpx.Response]:
        async with client_for(predictor) as client:
            return await post(client, {"items": sample_items()[:1]}), await client.get("/healthz")

    response, health = run(go())
    error = error_of(response, 500)
    assert error["code"] == "internal" and "KeyError" in error["message"]
    assert health.status_code == 200
