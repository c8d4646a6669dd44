"""Record readers: stream rows out of csv/tsv, jsonl, parquet, `datasets` folders, CoNLL files and
Python callables, each as `(row_number, record)`.

Readers do not judge a record's content (that is `tasks.build`'s job); they only report rows that
cannot be parsed at all as a `BadRow`, so the caller's `on_bad_row` policy decides whether to stop
or skip, and the stream goes on after a malformed line.
"""

from __future__ import annotations

import csv
import importlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from promptmux.config.schema import DataConfig
from promptmux.errors import DataError

__all__ = ["WHOLE", "BadRow", "Row", "read_records", "read_source", "split_alias"]


@dataclass(frozen=True, slots=True)
class BadRow:
    """A row that could not be parsed into a record (wrong column count, invalid JSON, ...)."""

    reason: str


Row = tuple[int, dict[str, Any] | BadRow]

# Key of `read_source`'s answer for a single source that still has to be carved into splits.
WHOLE = "all"

_SPLIT_ALIASES = {
    "train": "train",
    "dev": "dev",
    "validation": "dev",
    "valid": "dev",
    "test": "test",
}
_CONLL_DEFAULT = ("tokens", "pos", "chunk", "ner")
_PARQUET_BATCH = 4096


def split_alias(name: str) -> str | None:
    """Map a split name as data sources spell it to ours: validation/valid -> dev.

    Args:
        name: a split name such as "train", "validation" or "dev".

    Returns:
        "train", "dev" or "test", or None for a name that is none of them.
    """
    return _SPLIT_ALIASES.get(name)


def read_records(
    fmt: str,
    source: str,
    data_cfg: DataConfig,
    split: str | None = None,
    context: str = "data",
) -> Iterator[Row]:
    """Stream the records of one file (or folder, or callable) as `(row_number, record)`.

    Row numbers are what a user would look for: the 1-based line number for csv/tsv (header
    included, so the first data row under a header is 2), jsonl, and CoNLL (the line a sentence
    starts on); the 0-based row index for parquet, `datasets` folders and callables. A row that
    cannot be parsed is yielded as a `BadRow` in place of the record.

    Args:
        fmt: one of csv, tsv, jsonl, parquet, datasets, conll, callable.
        source: a file or folder path, or `module:function` for a callable.
        data_cfg: the task's data section (separator, quoting, encoding, header, columns, kwargs).
        split: picks the sub-dataset of a `DatasetDict` folder, or the split of a callable that
            returns a dict of splits ("dev" also finds "validation").
        context: names the config key in error messages, e.g. "tasks.sst2.data.train".

    Returns:
        An iterator of `(row_number, record_or_BadRow)`.

    Raises:
        DataError: the file is missing or unreadable, the callable cannot be imported, or the
            requested split does not exist.
    """
    if fmt in ("csv", "tsv"):
        return _read_delimited(fmt, _existing(source, context), data_cfg, context)
    if fmt == "jsonl":
        return _read_jsonl(_existing(source, context), data_cfg, context)
    if fmt == "parquet":
        return _read_parquet(_existing(source, context), context)
    if fmt == "conll":
        return _read_conll(_existing(source, context), data_cfg, context)
    if fmt == "datasets":
        ds = _load_from_disk(_existing(source, context), context)
        if _is_dataset_dict(ds):
            if split is None:
                raise DataError(
                    f"{context}: {source} holds several splits ({', '.join(ds)}); give data.path "
                    "to use them all, or point at one split's folder"
                )
            ds = _pick_split(ds, split, source, context)
        return _iter_dataset(ds)
    if fmt == "callable":
        result = _call(source, data_cfg.kwargs, context)
        if isinstance(result, Mapping):
            if split is None:
                raise DataError(
                    f"{context}: {source} returned a dict of splits; expected one list of records"
                )
            return _iter_dicts(_pick_split(result, split, source, context))
        return _iter_dicts(result)
    raise DataError(f"{context}: unknown data format {fmt!r}")


def read_source(
    fmt: str, source: str, data_cfg: DataConfig, context: str = "data"
) -> dict[str, Iterator[Row]]:
    """Stream a single source (`data.path` or `data.callable`), keeping any splits it holds.

    Args:
        fmt: the data format.
        source: a path, or `module:function` for a callable.
        data_cfg: the task's data section.
        context: names the config key in error messages.

    Returns:
        `{"train": rows, "dev": rows, "test": rows}` (those present) for a `DatasetDict` folder or a
        callable that returns a dict of splits; `{WHOLE: rows}` for one stream to carve splits from.

    Raises:
        DataError: as `read_records`, or a split dict without a train split.
    """
    if fmt == "callable":
        result = _call(source, data_cfg.kwargs, context)
        if isinstance(result, Mapping):
            splits = _our_splits(result, source, context)
            return {ours: _iter_dicts(rows) for ours, rows in splits.items()}
        return {WHOLE: _iter_dicts(result)}
    if fmt == "datasets":
        ds = _load_from_disk(_existing(source, context), context)
        if _is_dataset_dict(ds):
            splits = _our_splits(ds, source, context)
            return {ours: _iter_dataset(sub) for ours, sub in splits.items()}
        return {WHOLE: _iter_dataset(ds)}
    return {WHOLE: read_records(fmt, source, data_cfg, context=context)}


def _existing(source: str, context: str) -> Path:
    path = Path(source)
    if not path.exists():
        raise DataError(f"{context}: file not found: {path}")
    return path


def _our_splits(splits: Mapping[str, Any], source: str, context: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in splits.items():
        ours = split_alias(str(name))
        if ours is None:
            # A DatasetDict may carry extra splits (e.g. "unsupervised"); they are not ours to use.
            continue
        if ours in out:
            raise DataError(f"{context}: {source} has two splits that both mean {ours!r}")
        out[ours] = value
    if "train" not in out:
        have = ", ".join(map(str, splits))
        raise DataError(f"{context}: {source} has splits {have} but no 'train' split")
    return out


def _pick_split(splits: Mapping[str, Any], split: str, source: str, context: str) -> Any:
    for name, value in splits.items():
        if name == split or split_alias(str(name)) == split_alias(split):
            return value
    have = ", ".join(map(str, splits))
    raise DataError(f"{context}: {source} has no {split!r} split; it has {have}")


def _read_delimited(fmt: str, path: Path, cfg: DataConfig, context: str) -> Iterator[Row]:
    separator = cfg.separator or ("\t" if fmt == "tsv" else ",")
    quoting = csv.QUOTE_NONE if cfg.quoting == "none" else csv.QUOTE_MINIMAL
    # newline="" lets the csv module see line endings inside quoted fields, as it requires.
    with open(path, encoding=cfg.encoding, newline="") as f:
        reader = csv.reader(f, delimiter=separator, quoting=quoting, strict=False)
        names: list[str] | None = list(cfg.columns) if cfg.columns else None
        last_line = 0
        try:
            if cfg.header:
                header = next(reader, None)
                last_line = reader.line_num
                if header is None:
                    return
                if names is None:
                    names = [h.strip() for h in header]
                elif len(names) != len(header):
                    raise DataError(
                        f"{context}: {path}: data.columns names {len(names)} columns but the "
                        f"header has {len(header)}"
                    )
            for values in reader:
                # A quoted field may span lines; the row starts on the line after the last one.
                start, last_line = last_line + 1, reader.line_num
                if not values:
                    continue  # a blank line is no row
                if names is None:
                    names = [f"col{i}" for i in range(len(values))]
                if len(values) != len(names):
                    yield start, BadRow(f"expected {len(names)} columns, got {len(values)}")
                    continue
                yield start, dict(zip(names, values))
        except UnicodeDecodeError as e:
            raise _encoding_error(path, cfg.encoding, e, context) from None
        except csv.Error as e:
            raise DataError(f"{context}: {path} line {reader.line_num}: {e}") from None


def _encoding_error(path: Path, encoding: str, err: UnicodeDecodeError, context: str) -> DataError:
    # Text files decode in chunks, so the error's offset says nothing about the line; find the
    # first line that does not decode (only on this error path, so the second read costs nothing).
    where = ""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                raw.decode(encoding)
            except UnicodeDecodeError:
                where = f" line {number}"
                break
    return DataError(
        f"{context}: {path}{where}: not valid {encoding} ({err.reason}); set data.encoding"
    )


def _read_jsonl(path: Path, cfg: DataConfig, context: str) -> Iterator[Row]:
    with open(path, encoding=cfg.encoding) as f:
        try:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    yield number, BadRow(f"invalid JSON ({e.msg} at column {e.colno})")
                    continue
                if not isinstance(record, dict):
                    yield number, BadRow(f"expected a JSON object, got {type(record).__name__}")
                    continue
                yield number, record
        except UnicodeDecodeError as e:
            raise _encoding_error(path, cfg.encoding, e, context) from None


def _read_parquet(path: Path, context: str) -> Iterator[Row]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for a file that is not parquet
        raise DataError(f"{context}: {path}: cannot read as parquet ({e})") from None
    index = 0
    for batch in pf.iter_batches(batch_size=_PARQUET_BATCH):
        for record in batch.to_pylist():
            yield index, record
            index += 1


def _read_conll(path: Path, cfg: DataConfig, context: str) -> Iterator[Row]:
    with open(path, encoding=cfg.encoding) as f:
        try:
            yield from _conll_sentences(f, list(cfg.columns) if cfg.columns else None)
        except UnicodeDecodeError as e:
            raise _encoding_error(path, cfg.encoding, e, context) from None


def _conll_sentences(lines: Iterable[str], names: list[str] | None) -> Iterator[Row]:
    rows: list[list[str]] = []
    start = 0
    bad: str | None = None
    for number, line in enumerate(lines, start=1):
        parts = line.split()
        if not parts or parts[0] == "-DOCSTART-":
            if rows or bad is not None:
                yield _sentence(start, rows, names, bad)
            rows, bad = [], None
            continue
        if names is None:
            width = len(parts)
            extra = [f"col{i}" for i in range(1, width)]
            names = list(_CONLL_DEFAULT) if width == 4 else ["tokens", *extra]
        if not rows and bad is None:
            start = number
        if len(parts) != len(names):
            # Keep reading to the sentence's end so the next sentence starts clean.
            bad = bad or f"line {number}: expected {len(names)} columns, got {len(parts)}"
            continue
        rows.append(parts)
    if rows or bad is not None:
        yield _sentence(start, rows, names, bad)


def _sentence(start: int, rows: list[list[str]], names: list[str] | None, bad: str | None) -> Row:
    if bad is not None or names is None:
        return start, BadRow(bad or "no columns")
    return start, {name: [r[i] for r in rows] for i, name in enumerate(names)}


def _load_from_disk(path: Path, context: str) -> Any:
    try:
        import datasets
    except ImportError:
        raise DataError(
            f"{context}: reading a `datasets` folder needs the datasets package: "
            "pip install 'promptmux[datasets]'"
        ) from None
    try:
        return datasets.load_from_disk(str(path))
    except FileNotFoundError as e:
        raise DataError(
            f"{context}: {path} is not a folder written by datasets save_to_disk ({e})"
        ) from None


def _is_dataset_dict(ds: Any) -> bool:
    import datasets

    return isinstance(ds, datasets.DatasetDict)


def _iter_dataset(ds: Any) -> Iterator[Row]:
    index = 0
    # Batched iteration is several times faster than row-by-row access on Arrow-backed datasets.
    for batch in ds.with_format(None).iter(batch_size=1024):
        keys = list(batch)
        for values in zip(*(batch[k] for k in keys)):
            yield index, dict(zip(keys, values))
            index += 1


def _call(spec: str, kwargs: Mapping[str, Any], context: str) -> Any:
    module_name, _, func_name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise DataError(f"{context}: cannot import {module_name!r} for {spec!r}: {e}") from None
    func: Callable[..., Any] | None = getattr(module, func_name, None)
    if not callable(func):
        raise DataError(f"{context}: {module_name!r} has no function {func_name!r}")
    result = func(**kwargs)
    if not isinstance(result, (Mapping, Iterable)) or isinstance(result, (str, bytes)):
        raise DataError(
            f"{context}: {spec} returned {type(result).__name__}; expected an iterable of dicts "
            "or a dict of split name -> iterable of dicts"
        )
    return result


def _iter_dicts(records: Iterable[Any]) -> Iterator[Row]:
    for index, record in enumerate(records):
        if isinstance(record, Mapping):
            yield index, dict(record)
        else:
            yield index, BadRow(f"expected a dict, got {type(record).__name__}")
