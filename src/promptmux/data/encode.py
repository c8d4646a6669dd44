"""Tokenize examples once into flat numpy arrays, with an on-disk cache.

A split is stored column-wise: all token ids concatenated plus offsets, so a 67k-row split is a
handful of arrays (fast to cache, cheap to slice) instead of 67k Python lists.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from promptmux.tasks.spec import Example

log = logging.getLogger("promptmux.data")
CACHE_VERSION = 1


@dataclass
class Encoded:
    """Token ids (and labels) of one task split.

    Row i's tokens are `ids[offsets[i]:offsets[i+1]]`. Token tasks also keep each word's first
    token position in `word_starts[word_offsets[i]:word_offsets[i+1]]` and word-level tags in
    `labels` with the same offsets; words cut off by `max_length` are not in those arrays.
    """

    task_type: str
    ids: np.ndarray
    offsets: np.ndarray
    type_ids: np.ndarray | None = None
    labels: np.ndarray | None = None
    word_starts: np.ndarray | None = None
    word_offsets: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def n_tokens(self) -> int:
        return int(self.offsets[-1])


def encode_examples(
    examples: list[Example],
    tokenizer,
    task_type: str,
    max_length: int,
    n_labels: int,
    cache_dir: str | os.PathLike | None = None,
) -> Encoded:
    """Tokenize `examples` (reusing a cached result for identical input when `cache_dir` is set)."""
    path = None
    if cache_dir is not None:
        key = _cache_key(examples, tokenizer, task_type, max_length, n_labels)
        path = Path(cache_dir) / f"{key}.npz"
        if path.is_file():
            try:
                return _load(path, task_type)
            except Exception as e:  # a corrupt cache entry is rebuilt, never trusted
                log.warning("ignoring unreadable cache file %s (%s)", path, e)
    enc = _encode(examples, tokenizer, task_type, max_length, n_labels)
    if path is not None:
        _save(path, enc)
    return enc


def _encode(examples: list[Example], tokenizer, task_type: str, max_length: int, n_labels: int) -> Encoded:
    labeled = bool(examples) and examples[0].label is not None
    if task_type == "token":
        words = [list(ex.text) for ex in examples]
        out = tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_length)
        starts: list[int] = []
        word_offsets = [0]
        tags: list[int] = []
        for i, ex in enumerate(examples):
            seen = -1
            n = 0
            for pos, w in enumerate(out.word_ids(i)):
                if w is not None and w != seen:
                    starts.append(pos)
                    seen = w
                    n += 1
            if labeled:
                tags.extend(ex.label[:n])
            word_offsets.append(word_offsets[-1] + n)
        ids, offsets = _flatten(out["input_ids"])
        return Encoded(
            task_type,
            ids,
            offsets,
            labels=np.asarray(tags, dtype=np.int64) if labeled else None,
            word_starts=np.asarray(starts, dtype=np.int32),
            word_offsets=np.asarray(word_offsets, dtype=np.int64),
        )
    texts = [ex.text for ex in examples]
    pairs = [ex.text_b for ex in examples]
    has_pair = any(p is not None for p in pairs)
    if has_pair:
        out = tokenizer(texts, [p or "" for p in pairs], truncation=True, max_length=max_length)
    else:
        out = tokenizer(texts, truncation=True, max_length=max_length)
    ids, offsets = _flatten(out["input_ids"])
    type_ids = None
    if has_pair and "token_type_ids" in out:
        type_ids, _ = _flatten(out["token_type_ids"], dtype=np.int8)
    labels = None
    if labeled:
        if task_type == "classification":
            labels = np.asarray([ex.label for ex in examples], dtype=np.int64)
        elif task_type == "regression":
            labels = np.asarray([ex.label for ex in examples], dtype=np.float32)
        elif task_type == "multilabel":
            labels = np.zeros((len(examples), n_labels), dtype=np.float32)
            for i, ex in enumerate(examples):
                labels[i, list(ex.label)] = 1.0
    return Encoded(task_type, ids, offsets, type_ids=type_ids, labels=labels)


def _flatten(rows: list[list[int]], dtype=np.int32) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum([len(r) for r in rows], out=offsets[1:])
    flat = np.fromiter((t for r in rows for t in r), dtype=dtype, count=int(offsets[-1]))
    return flat, offsets


def _cache_key(examples: list[Example], tokenizer, task_type: str, max_length: int, n_labels: int) -> str:
    h = hashlib.sha1()
    h.update(f"v{CACHE_VERSION}|{task_type}|{max_length}|{n_labels}|{type(tokenizer).__name__}".encode())
    h.update(_tokenizer_digest(tokenizer))
    for ex in examples:
        h.update(repr((ex.text, ex.text_b, ex.label)).encode())
        h.update(b"\x00")
    return h.hexdigest()


# Serialising a fast tokenizer's rules costs ~0.1 s; a run encodes every task split with the same
# tokenizer, so its digest is computed once per tokenizer object.
_DIGESTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _tokenizer_digest(tokenizer) -> bytes:
    try:
        return _DIGESTS[tokenizer]
    except (KeyError, TypeError):
        pass
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        # Each call of a fast tokenizer leaves its truncation/padding settings in the backend; they
        # are not part of the vocabulary and rules (max_length is in the key already), so leaving
        # them in would make the key depend on whatever the tokenizer did last.
        spec = json.loads(backend.to_str())
        spec.pop("truncation", None)
        spec.pop("padding", None)
        ident = json.dumps(spec)
    else:
        ident = repr(sorted(tokenizer.get_vocab().items()))
    digest = hashlib.sha1(ident.encode()).digest()
    with contextlib.suppress(TypeError):  # objects that take no weak reference are simply not memoised
        _DIGESTS[tokenizer] = digest
    return digest


def _save(path: Path, enc: Encoded) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {k: v for k, v in vars(enc).items() if isinstance(v, np.ndarray)}
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp.npz")
    os.close(fd)
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)  # atomic: concurrent ranks never see a half-written file
    except OSError as e:
        log.warning("could not write tokenization cache %s (%s)", path, e)
        Path(tmp).unlink(missing_ok=True)


def _load(path: Path, task_type: str) -> Encoded:
    with np.load(path) as z:
        return Encoded(task_type, **{k: z[k] for k in z.files})


def default_cache_dir() -> Path:
    return Path(os.environ.get("PROMPTMUX_CACHE", Path.home() / ".cache" / "promptmux")) / "encoded"
