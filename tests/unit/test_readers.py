"""Record readers: every format, row numbering, malformed rows and missing files."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from promptmux.config.schema import DataConfig
from promptmux.errors import DataError
from promptmux.tasks.readers import WHOLE, BadRow, read_records, read_source, split_alias


def rows(fmt: str, path: Path | str, split: str | None = None, **cfg: object) -> list:
    return list(read_records(fmt, str(path), DataConfig(**cfg), split=split))


def write_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str) -> str:
    """Write an importable module with a unique name (so no test sees another's cached module)."""
    name = f"pm_data_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(body, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


# --- csv / tsv -------------------------------------------------------------------------------------


def test_csv_with_header_numbers_rows_by_line(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text('text,label\nhello,1\n"multi\nline",0\nbye,1\n', encoding="utf-8")
    got = rows("csv", path)
    assert got == [
        (2, {"text": "hello", "label": "1"}),
        (3, {"text": "multi\nline", "label": "0"}),
        (5, {"text": "bye", "label": "1"}),
    ]


def test_tsv_headerless_with_columns(tmp_path: Path) -> None:
    path = tmp_path / "cola.tsv"
    path.write_text("gj04\t1\t\tOur friends won't buy this.\ngj04\t0\t*\tThey drank the pub.\n")
    columns = ["source", "label", "orig_mark", "sentence"]
    got = rows("tsv", path, header=False, columns=columns, quoting="none")
    first = {"source": "gj04", "label": "1", "orig_mark": "", "sentence": "Our friends won't buy this."}
    assert got[0] == (1, first)
    assert got[1][0] == 2 and got[1][1]["orig_mark"] == "*"


def test_headerless_without_columns_gets_positional_names(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("1,World,Some text\n")
    assert rows("csv", path, header=False) == [(1, {"col0": "1", "col1": "World", "col2": "Some text"})]


def test_quote_none_reads_unbalanced_quotes(tmp_path: Path) -> None:
    path = tmp_path / "mrpc.tsv"
    path.write_text('label\ts1\ts2\n1\the said "yes\tno quote here\n0\tplain\t"x"\n')
    got = rows("tsv", path, quoting="none")
    assert [r for _, r in got] == [
        {"label": "1", "s1": 'he said "yes', "s2": "no quote here"},
        {"label": "0", "s1": "plain", "s2": '"x"'},
    ]
    # With minimal quoting the unbalanced quote swallows the rest of the file: a different record.
    assert rows("tsv", path, quoting="minimal") != got


def test_bom_is_stripped_by_default(tmp_path: Path) -> None:
    path = tmp_path / "bom.tsv"
    path.write_bytes("\ufeffQuality\t#1 String\n1\tA sentence.\n".encode("utf-8"))
    assert rows("tsv", path) == [(2, {"Quality": "1", "#1 String": "A sentence."})]


def test_custom_separator_and_encoding(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_bytes("text;label\ncafé;1\n".encode("latin-1"))
    got = rows("csv", path, separator=";", encoding="latin-1")
    assert got == [(2, {"text": "café", "label": "1"})]


def test_wrong_column_count_is_a_bad_row_and_reading_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "a.tsv"
    path.write_text("text\tlabel\ngood\t1\nonly-one\ngood again\t0\n")
    got = rows("tsv", path)
    assert got[0] == (2, {"text": "good", "label": "1"})
    assert got[1] == (3, BadRow("expected 2 columns, got 1"))
    assert got[2] == (4, {"text": "good again", "label": "0"})


def test_wrong_encoding_names_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_bytes(b"text,label\n\xa315m,1\n")
    with pytest.raises(DataError, match=r"a\.csv.*line 2.*data\.encoding"):
        rows("csv", path)


def test_columns_must_match_header_width(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="columns"):
        rows("csv", path, columns=["x", "y", "z"])


# --- jsonl -----------------------------------------------------------------------------------------


def test_jsonl_skips_blank_lines_and_flags_invalid_json(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text('{"text": "a", "label": 1}\n\n{not json}\n[1, 2]\n{"text": "b", "label": 0}\n')
    got = rows("jsonl", path)
    assert got[0] == (1, {"text": "a", "label": 1})
    assert got[1][0] == 3 and isinstance(got[1][1], BadRow) and "invalid JSON" in got[1][1].reason
    assert got[2][0] == 4 and isinstance(got[2][1], BadRow) and "JSON object" in got[2][1].reason
    assert got[3] == (5, {"text": "b", "label": 0})


# --- parquet ---------------------------------------------------------------------------------------


def test_parquet_rows_as_dicts(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "a.parquet"
    table = pa.table({"text": ["x", "y", "z"], "label": [0, 1, 0], "tags": [["O"], ["B-PER"], ["O"]]})
    pq.write_table(table, path, row_group_size=2)
    got = rows("parquet", path)
    assert got == [
        (0, {"text": "x", "label": 0, "tags": ["O"]}),
        (1, {"text": "y", "label": 1, "tags": ["B-PER"]}),
        (2, {"text": "z", "label": 0, "tags": ["O"]}),
    ]


def test_not_a_parquet_file(tmp_path: Path) -> None:
    path = tmp_path / "a.parquet"
    path.write_text("nope")
    with pytest.raises(DataError, match="parquet"):
        rows("parquet", path)


# --- datasets --------------------------------------------------------------------------------------


def test_datasets_folder(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"text": ["a", "b"], "label": [1, 0]}).save_to_disk(str(tmp_path / "ds"))
    got = rows("datasets", tmp_path / "ds")
    assert got == [(0, {"text": "a", "label": 1}), (1, {"text": "b", "label": 0})]


def test_datasets_dict_split_picks_and_aliases(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    dd = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"text": ["a", "b"], "label": [1, 0]}),
            "validation": datasets.Dataset.from_dict({"text": ["c"], "label": [1]}),
        }
    )
    dd.save_to_disk(str(tmp_path / "dd"))
    assert rows("datasets", tmp_path / "dd", split="dev") == [(0, {"text": "c", "label": 1})]
    with pytest.raises(DataError, match="several splits"):
        rows("datasets", tmp_path / "dd")
    with pytest.raises(DataError, match="no 'test' split"):
        rows("datasets", tmp_path / "dd", split="test")
    streams = read_source("datasets", str(tmp_path / "dd"), DataConfig())
    assert sorted(streams) == ["dev", "train"]
    assert [r["text"] for _, r in streams["train"]] == ["a", "b"]


def test_not_a_datasets_folder(tmp_path: Path) -> None:
    pytest.importorskip("datasets")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="save_to_disk"):
        rows("datasets", tmp_path / "empty")


# --- conll -----------------------------------------------------------------------------------------

CONLL = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC


Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER
-DOCSTART- -X- -X- O

BRUSSELS NNP B-NP B-LOC
"""


def test_conll_sentences_with_docstart_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "train.txt"
    path.write_text(CONLL)
    got = rows("conll", path)
    assert [n for n, _ in got] == [3, 8, 12]
    assert got[0][1] == {
        "tokens": ["EU", "rejects", "German"],
        "pos": ["NNP", "VBZ", "JJ"],
        "chunk": ["B-NP", "B-VP", "B-NP"],
        "ner": ["B-ORG", "O", "B-MISC"],
    }
    assert got[1][1]["ner"] == ["B-PER", "I-PER"]
    assert got[2][1]["tokens"] == ["BRUSSELS"]


def test_conll_other_widths_and_columns(tmp_path: Path) -> None:
    path = tmp_path / "a.conll"
    path.write_text("John\tB-PER\nruns\tO\n\nHi\tO\n")
    assert rows("conll", path) == [
        (1, {"tokens": ["John", "runs"], "col1": ["B-PER", "O"]}),
        (4, {"tokens": ["Hi"], "col1": ["O"]}),
    ]
    named = rows("conll", path, columns=["words", "tags"])
    assert named[0][1] == {"words": ["John", "runs"], "tags": ["B-PER", "O"]}


def test_conll_ragged_line_spoils_only_its_sentence(tmp_path: Path) -> None:
    path = tmp_path / "a.conll"
    path.write_text("a X O\nb X\nc X O\n\nd X O\n")
    got = rows("conll", path)
    assert got[0][0] == 1 and isinstance(got[0][1], BadRow) and "line 2" in got[0][1].reason
    assert got[1] == (5, {"tokens": ["d"], "col1": ["X"], "col2": ["O"]})


# --- callable --------------------------------------------------------------------------------------


def test_callable_returning_a_list_gets_kwargs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mod = write_module(
        tmp_path,
        monkeypatch,
        "def make(n=1):\n    return [{'text': f't{i}', 'label': i % 2} for i in range(n)] + ['oops']\n",
    )
    got = rows("callable", f"{mod}:make", kwargs={"n": 2})
    assert got[:2] == [(0, {"text": "t0", "label": 0}), (1, {"text": "t1", "label": 1})]
    assert got[2][0] == 2 and isinstance(got[2][1], BadRow)
    assert list(read_source("callable", f"{mod}:make", DataConfig()).keys()) == [WHOLE]


def test_callable_returning_splits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mod = write_module(
        tmp_path,
        monkeypatch,
        "def make():\n"
        "    return {'train': [{'text': 'a', 'label': 0}],\n"
        "            'validation': iter([{'text': 'b', 'label': 1}])}\n",
    )
    assert rows("callable", f"{mod}:make", split="dev") == [(0, {"text": "b", "label": 1})]
    streams = read_source("callable", f"{mod}:make", DataConfig())
    assert {k: list(v) for k, v in streams.items()} == {
        "train": [(0, {"text": "a", "label": 0})],
        "dev": [(0, {"text": "b", "label": 1})],
    }


def test_callable_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    body = "def nothing():\n    return None\n\ndef dev_only():\n    return {'dev': []}\n"
    mod = write_module(tmp_path, monkeypatch, body)
    with pytest.raises(DataError, match="cannot import 'no_such_module_xyz'"):
        rows("callable", "no_such_module_xyz:f")
    with pytest.raises(DataError, match="no function 'missing'"):
        rows("callable", f"{mod}:missing")
    with pytest.raises(DataError, match="returned NoneType"):
        rows("callable", f"{mod}:nothing")
    with pytest.raises(DataError, match="no 'train' split"):
        read_source("callable", f"{mod}:dev_only", DataConfig())


# --- shared behaviour ------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "parquet", "conll", "datasets"])
def test_missing_file_names_key_and_path(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / "nope" / "train.x"
    with pytest.raises(DataError, match=r"tasks\.t\.data\.train: file not found: .*nope"):
        list(read_records(fmt, str(path), DataConfig(), context="tasks.t.data.train"))


def test_unknown_format() -> None:
    with pytest.raises(DataError, match="unknown data format"):
        read_records("xml", "x", DataConfig())


def test_split_alias() -> None:
    assert [split_alias(s) for s in ("train", "validation", "valid", "dev", "test", "other")] == [
        "train",
        "dev",
        "dev",
        "dev",
        "test",
        None,
    ]


def test_readers_stream_lazily(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text("".join(json.dumps({"text": str(i)}) + "\n" for i in range(1000)))
    it = read_records("jsonl", str(path), DataConfig())
    assert next(it) == (1, {"text": "0"})


def test_datasets_not_installed_gives_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    (tmp_path / "ds").mkdir()
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(DataError, match=r"pip install 'promptmux\[datasets\]'"):
        rows("datasets", tmp_path / "ds")
