"""The document layer (nas/document.py): the rules every versioned JSON format shares, and that the
spec, the detector spec, the latency table and the ground truth all read by them."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import nas.document as document
from nas.document import (DocumentError, JSONSyntaxError, check_format, load_json, parse_json, read_text,
                          write_json)
from nas.spec import Spec, SpecError

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("text, reason", [
    ('{"a": NaN}', "not valid JSON: NaN is not allowed"),
    ('{"a": Infinity}', "not valid JSON: Infinity is not allowed"),
    ('[-Infinity]', "not valid JSON: -Infinity is not allowed"),
    ('{"a": 1, "a": 2}', "not valid JSON: duplicate key 'a'"),
    ('{"a": }', "not valid JSON: Expecting value at line 1 column 7"),
    ("[" * 100_000 + "]" * 100_000, "not valid JSON: nested too deeply"),
])
def test_strict_json_refuses_what_the_formats_refuse(text, reason):
    with pytest.raises(JSONSyntaxError) as info:
        parse_json(text)
    assert str(info.value) == reason and info.value.path == ""
    assert info.value.detail == reason.removeprefix("not valid JSON: ")


def test_a_file_over_the_size_limit_is_refused_before_it_is_parsed(tmp_path, monkeypatch):
    p = tmp_path / "big.json"
    p.write_text('{"a": "' + "x" * 100 + '"}')
    monkeypatch.setattr(document, "MAX_BYTES", 50)
    with pytest.raises(DocumentError, match=r"^cannot read .*big\.json: larger than 0 MiB$"):
        read_text(p)
    monkeypatch.setattr(document, "MAX_BYTES", 2**20)
    assert load_json(p) == {"a": "x" * 100}


def test_unreadable_and_non_utf8_files_are_one_error_naming_the_file(tmp_path):
    with pytest.raises(DocumentError, match=r"^cannot read table .*absent\.json: No such file or directory$"):
        read_text(tmp_path / "absent.json", "table")
    (tmp_path / "latin1.json").write_bytes(b'{"a": "\xe9"}')
    with pytest.raises(DocumentError, match=r"^cannot read .*latin1\.json: 'utf-8' codec"):
        read_text(tmp_path / "latin1.json")
    (tmp_path / "cut.json").write_text('{"a": ')
    with pytest.raises(DocumentError, match=r"cut\.json: not valid JSON: Expecting value at line 1 column 7$"):
        load_json(tmp_path / "cut.json")


@pytest.mark.parametrize("doc, path, reason", [
    ({"format": "other", "version": 1}, "format", 'must be "kind", got "other" (hint)'),
    ({"version": 1}, "format", 'must be "kind", got null (hint)'),
    ({"format": "kind", "version": "1"}, "version", 'must be an integer, got "1"'),
    ({"format": "kind", "version": True}, "version", "must be an integer, got true"),
    ({"format": "kind", "version": -1}, "version", "must be in [0, 1000000], got -1"),
    ({"format": "kind", "version": 2}, "version", "unsupported version 2 (this toolkit reads version 1)"),
])
def test_format_and_version(doc, path, reason):
    with pytest.raises(DocumentError) as info:
        check_format(doc, "kind", 1, hint=" (hint)")
    assert (info.value.path, info.value.reason) == (path, reason)
    assert str(info.value) == f"{path}: {reason}"


def test_format_check_accepts_its_own_and_raises_the_callers_error():
    assert check_format({"format": "kind", "version": 1.0}, "kind", 1) == 1
    with pytest.raises(SpecError, match=r"^version: unsupported version 3"):
        check_format({"format": "kind", "version": 3}, "kind", 1, error=SpecError)
    assert issubclass(SpecError, DocumentError)  # one error type to catch for every format


def test_write_json_is_atomic_and_refuses_nan(tmp_path):
    p = tmp_path / "d.json"
    write_json(p, {"a": [1, 2]}, indent=1)
    assert p.read_text() == '{\n "a": [\n  1,\n  2\n ]\n}\n'
    with pytest.raises(ValueError):
        write_json(p, {"a": float("nan")})
    assert json.loads(p.read_text()) == {"a": [1, 2]}  # the old file, whole
    assert [q.name for q in tmp_path.iterdir()] == ["d.json"]  # no temporary file left behind


def _oversized(tmp_path, monkeypatch, text: str):
    p = tmp_path / "doc.json"
    p.write_text(text)
    monkeypatch.setattr(document, "MAX_BYTES", len(text.encode()) - 1)
    return p


def test_every_format_reads_by_the_same_rules(tmp_path, monkeypatch):
    from nas.detection import DetectorSpec
    from nas.latency import LatencyTable, TableError
    from nas.presets import load_preset
    from scaling.detection import published_detector

    spec_text = load_preset("efficientnet-b0").to_json()
    with pytest.raises(SpecError, match="larger than"):
        Spec.load(_oversized(tmp_path, monkeypatch, spec_text))
    with pytest.raises(SpecError, match="larger than"):
        DetectorSpec.load(_oversized(tmp_path, monkeypatch, published_detector("efficientdet-d0").to_json()))
    monkeypatch.undo()
    table = LatencyTable.load(ROOT / "results" / "latency" / "lat-cpu.json").to_dict()
    text = json.dumps(table)
    with pytest.raises(TableError, match="larger than"):
        LatencyTable.load(_oversized(tmp_path, monkeypatch, text))
    monkeypatch.undo()
    # duplicate keys: refused by the spec, the detector and (now) the latency table alike
    dup = '{"format": "nas-latency-table", ' + text[1:]
    (tmp_path / "dup.json").write_text(dup)
    with pytest.raises(TableError, match=r"dup\.json: not a valid latency table \(not JSON: duplicate key 'format'\)"):
        LatencyTable.load(tmp_path / "dup.json")
    with pytest.raises(TableError, match=r'^format: must be "nas-latency-table", got "nas-spec" \(is this a latency'):
        LatencyTable.from_dict({**table, "format": "nas-spec"})


def test_the_ground_truth_is_read_by_the_document_rules(tmp_path):
    import sys

    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from _rows import read_ground_truth
    finally:
        sys.path.pop(0)
    doc = read_ground_truth(ROOT / "results" / "ground_truth" / "table.json")
    assert doc["format"] == "nas-ground-truth" and doc["rows"]
    (tmp_path / "t.json").write_text(json.dumps({**doc, "version": 2}))
    with pytest.raises(DocumentError, match="unsupported version 2"):
        read_ground_truth(tmp_path / "t.json")
