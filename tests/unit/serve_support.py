"""Shared by the serving tests: train a tiny four-task bundle, run the app in-process or on a port."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import tiny_config, write_tasks

from promptmux.config import config_from_dict
from promptmux.serve.app import create_app
from promptmux.serve.predictor import Predictor
from promptmux.serve.schemas import ServeSettings
from promptmux.train.trainer import train

# One task per input kind: a text, a text pair, a value, tags.
SERVE_TASKS = ["sentiment", "pair", "score", "ner"]


def train_bundle(backbone: Path, folder: Path, steps: int = 100) -> Path:
    """Train the tiny model on the four tasks; returns the run folder."""
    tasks = write_tasks(folder, SERVE_TASKS, n_train=120, n_dev=16)
    raw = tiny_config(backbone, tasks, folder / "run", train={"max_steps": steps, "eval_every": steps})
    train(config_from_dict(raw, base_dir=folder))
    return folder / "run"


@pytest.fixture(scope="module")
def bundle(tiny_backbone: Path, tmp_path_factory: pytest.TempPathFactory, single_thread: None) -> Path:
    """The tiny four-task run folder, trained once per test module."""
    return train_bundle(tiny_backbone, tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def predictor(bundle: Path) -> Predictor:
    return Predictor.from_pretrained(bundle)


def expected_for(predictor: Predictor, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What `Predictor.predict` says for each item, one at a time."""
    return [predictor.predict(it["task"], [predictor_input(it)])[0] for it in items]


async def post(client: httpx.AsyncClient, body: Any) -> httpx.Response:
    """POST /v1/predict with a JSON value, or raw bytes/text as the body."""
    if isinstance(body, (bytes, str)):
        return await client.post("/v1/predict", content=body, headers={"content-type": "application/json"})
    return await client.post("/v1/predict", json=body)


def sample_items() -> list[dict[str, Any]]:
    """Items of every task, interleaved, as a client would send them."""
    return [
        {"task": "sentiment", "text": "the movie was great fun"},
        {"task": "ner", "text": "john works in paris city"},
        {"task": "pair", "text_a": "the film was long", "text_b": "it was awful"},
        {"task": "score", "text": "the plot was boring"},
        {"task": "sentiment", "text": "the movie was awful and boring"},
        {"task": "pair", "text_a": "the film", "text_b": "it was the best"},
        {"task": "score", "text": "the plot was good really"},
        {"task": "ner", "text": "mary and john in london"},
    ]


def predictor_input(item: dict[str, Any]) -> Any:
    return (item["text_a"], item["text_b"]) if "text_a" in item else item["text"]


def assert_matches(result: dict[str, Any], expected: dict[str, Any], tol: float = 1e-4) -> None:
    """An API result agrees with `Predictor.predict` for the same item."""
    if "label" in expected:
        assert result["label"] == expected["label"]
        assert abs(result["score"] - expected["score"]) < tol
    elif "labels" in expected:
        assert result["labels"] == expected["labels"]
    elif "value" in expected:
        assert abs(result["value"] - expected["value"]) < tol
    else:
        assert [t["tag"] for t in result["tokens"]] == [t["tag"] for t in expected["tokens"]]
        assert [t["word"] for t in result["tokens"]] == [t["word"] for t in expected["tokens"]]
        assert result["entities"] == expected["entities"]


@asynccontextmanager
async def client_for(predictor: Predictor, **settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client talking to the app in-process; the batcher is stopped afterwards."""
    app = create_app(predictor, ServeSettings(**settings))
    # Like a real server: an unhandled error becomes the 500 answer rather than a test crash.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=30) as client:
            client.app = app  # type: ignore[attr-defined]  (tests read metrics and state)
            yield client
    finally:
        await app.state.batcher.stop()
        app.state.batcher.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def live_server(predictor: Predictor, **settings: Any) -> Iterator[str]:
    """A real uvicorn server on a loopback port, in a thread; yields its base URL."""
    import uvicorn

    app = create_app(predictor, ServeSettings(**settings))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"uvicorn did not start on 127.0.0.1:{port}")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def run(coro: Any) -> Any:
    return asyncio.run(coro)
