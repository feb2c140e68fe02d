from __future__ import annotations

from pathlib import Path

import pytest

from lorawatch.monitors.dataset import load_dataset

ROOT = Path(__file__).resolve().parent.parent
SEGMENTS = {"customer_support", "finance", "healthcare", "media", "redteam"}


def test_the_core_canary_set_covers_five_segments_with_references():
    dataset = load_dataset(ROOT / "canary_data" / "core-v1.jsonl")
    assert len(dataset.prompts) >= 200
    assert set(dataset.segments) == SEGMENTS
    assert min(dataset.segments.values()) >= 40
    assert sum(p.reference is not None for p in dataset.prompts) >= 200
    assert any(p.messages is not None for p in dataset.prompts)
    redteam = [p for p in dataset.prompts if p.segment == "redteam"]
    assert any("pii-probe" in p.tags for p in redteam) and any("abuse" in p.tags for p in redteam)


def test_the_smoke_set_is_small_and_covers_every_segment():
    dataset = load_dataset(ROOT / "canary_data" / "smoke-v1.jsonl")
    assert len(dataset.prompts) == 20
    assert set(dataset.segments) == SEGMENTS


def test_the_readme_documents_the_shipped_sets():
    text = (ROOT / "canary_data" / "README.md").read_text()
    for name in ("core-v1.jsonl", "smoke-v1.jsonl", "reference", "messages", "sha256"):
        assert name in text


def test_the_dataset_id_is_the_sha256_of_the_content(tmp_path):
    import hashlib

    path = tmp_path / "d.jsonl"
    path.write_text('{"id": "a", "prompt": "hi"}\n')
    first = load_dataset(path)
    assert first.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    path.write_text('{"id": "a", "prompt": "hi!"}\n')
    assert load_dataset(path).sha256 != first.sha256


@pytest.mark.parametrize(
    "line,words",
    [
        (
            '{"id": "a", "prompt": "x", "messages": [{"role": "user", "content": "y"}]}',
            ['both "prompt" and "messages"'],
        ),
        (
            '{"id": "a", "messages": [{"role": "user", "content": "y"}, {"role": "assistant", "content": "z"}]}',
            ["last message"],
        ),
        ('{"id": "a", "messages": [{"role": "robot", "content": "y"}]}', ["needs a role"]),
        ('{"id": "a", "prompt": "x", "tags": "t"}', ['"tags" must be a list']),
        ('{"id": "a", "prompt": "x", "colour": 1}', ["unknown key(s) colour"]),
        ('{"prompt": "x"}', ['missing "id"']),
        ('["a"]', ["must be a JSON object"]),
        ('{"id": "a", "prompt": "  "}', ["non-empty string"]),
    ],
)
def test_each_malformed_line_is_named_with_file_and_line(tmp_path, line, words):
    from lorawatch.errors import DatasetError

    path = tmp_path / "d.jsonl"
    path.write_text('{"id": "ok", "prompt": "fine"}\n\n' + line + "\n")
    with pytest.raises(DatasetError) as info:
        load_dataset(path)
    assert str(info.value).startswith(f"{path}:3: ")
    for word in words:
        assert word in str(info.value)
