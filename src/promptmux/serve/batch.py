"""Batch prediction from a JSONL/CSV/TSV file to JSONL: streamed, bounded memory, atomic output."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from promptmux.config.schema import DataConfig
from promptmux.errors import DataError
from promptmux.prompts.rules import meta_fields
from promptmux.serve.predictor import Predictor
from promptmux.tasks.readers import BadRow, read_records

FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".tsv": "tsv"}


def predict_file(
    predictor: Predictor,
    task: str,
    input_path: str | Path,
    output_path: str | Path,
    text_field: str = "text",
    text_b_field: str | None = None,
    chunk_size: int = 1024,
    batch_size: int = 64,
) -> int:
    """Predict every row of `input_path`; write one JSON line per row to `output_path`.

    Rows are read and predicted `chunk_size` at a time, so memory stays bounded for any file size.
    The output appears only when complete (written to a temporary file, then renamed): a failure
    halfway leaves no partial file and never touches an existing output. Returns the row count.
    """
    input_path, output_path = Path(input_path), Path(output_path)
    fmt = FORMATS.get(input_path.suffix.lower())
    if fmt is None:
        raise DataError(f"{input_path}: cannot tell the format; use .jsonl, .csv or .tsv")
    info = predictor.task(task)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{output_path.name}.", dir=output_path.parent)
    count = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            for rows, inputs, metas in _chunks(predictor, task, input_path, fmt, text_field, text_b_field, info.type, chunk_size):
                try:
                    extra = {} if metas is None else {"meta": metas}  # only tasks with field rules
                    preds = predictor.predict(task, inputs, batch_size=batch_size, **extra)
                except DataError as e:
                    raise DataError(f"{input_path} rows {rows[0]}-{rows[-1]}: {e}") from None
                for row, pred in zip(rows, preds):
                    out.write(json.dumps({"row": row, **pred}, ensure_ascii=False) + "\n")
                count += len(rows)
        os.replace(tmp, output_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return count


def _text(path: Path, row: int, record: dict, field: str) -> str:
    value = record[field]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):  # e.g. a JSON null or list, which str() would turn into "None"
        raise DataError(f"{path} row {row}, field {field!r}: expected text, got {type(value).__name__}")
    return value


def _chunks(predictor: Predictor, task: str, path: Path, fmt: str, text_field: str, text_b_field: str | None, task_type: str, size: int) -> Iterator[tuple[list[int], list, list | None]]:
    rows: list[int] = []
    inputs: list = []
    # Prompt rules on metadata fields read them from the same rows (`field` conditions).
    fields = meta_fields(predictor.task(task).rules or ())
    metas: list | None = [] if fields else None
    for row, record in read_records(fmt, str(path), DataConfig(format=fmt), context=str(path)):
        if isinstance(record, BadRow):
            raise DataError(f"{path} row {row}: {record.reason}")
        if text_field not in record:
            raise DataError(f"{path} row {row}: missing field {text_field!r} (set --text-field)")
        if text_b_field is not None:
            if text_b_field not in record:
                raise DataError(f"{path} row {row}: missing field {text_b_field!r}")
            text = (_text(path, row, record, text_field), _text(path, row, record, text_b_field))
        elif task_type != "token":
            text = _text(path, row, record, text_field)
        else:
            text = record[text_field]
        meta = {f: record[f] for f in fields if f in record} if fields else None
        try:  # checked here, where the row number is known
            predictor.example(task, text, meta)
        except DataError as e:
            raise DataError(f"{path} row {row}: {e}") from None
        rows.append(row)
        inputs.append(text)
        if metas is not None:
            metas.append(meta)
        if len(rows) == size:
            yield rows, inputs, metas
            rows, inputs, metas = [], [], [] if fields else None
    if rows:
        yield rows, inputs, metas
