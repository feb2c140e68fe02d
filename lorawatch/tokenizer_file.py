"""A base model's tokenizer read from its folder with the ``tokenizers`` library alone.

What a canary run needs of a tokenizer (encode, decode, the chat template, the end and padding
tokens) is what transformers' fast tokenizer does on top of ``tokenizers``: this does the same
from ``tokenizer.json``, ``tokenizer_config.json`` and the chat template, without importing
transformers (its import took 10 to 16 s of a canary run's start-up on the H200). The chat
template renders as transformers renders it: a sandboxed Jinja environment with trimmed blocks,
``raise_exception``, ``strftime_now`` and a ``tojson`` that leaves HTML alone, given the
messages, ``add_generation_prompt`` and the special tokens. ``tests/test_direct_load.py``
compares both on every shipped canary prompt.

``unsupported`` says when a folder needs transformers' own tokenizer classes: a tokenizer that
is not byte-level BPE in ``tokenizer.json`` (SentencePiece files, WordPiece, ...), a
``tokenizer_class`` transformers builds differently, or a template this renderer cannot parse.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from lorawatch.inputs import file_identity

# The classes whose tokenizer.json transformers 5 uses as it is (no rebuilt normalizer or
# pre-tokenizer, no legacy prefix-space handling).
PLAIN_CLASSES = {"TokenizersBackend", "PreTrainedTokenizerFast", "GPT2Tokenizer", "GPT2TokenizerFast", "Qwen2Tokenizer"}
SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


def _read_json(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path.name} is not a JSON object")
    return data


def _token_text(value: Any) -> str | None:
    if isinstance(value, dict):  # an AddedToken written out
        value = value.get("content")
    return value if isinstance(value, str) else None


def _template(folder: Path, config: dict[str, Any]) -> str | None:
    path = folder / "chat_template.jinja"
    if path.is_file():
        return path.read_text(encoding="utf-8")
    template = config.get("chat_template")
    return template if isinstance(template, str) else None


# unsupported()'s verdicts by folder and the files' identities (inputs.file_identity): a canary
# run asks while planning and again while loading, and tokenizer.json (megabytes) is parsed once
_VERDICTS: dict[tuple, str | None] = {}


def _stamp(path: Path) -> tuple | None:
    try:
        return file_identity(path)
    except FileNotFoundError:
        return None


def unsupported(folder: Path) -> str | None:
    """Why the tokenizer in ``folder`` needs transformers, or None when ``FileTokenizer`` reads it."""
    try:
        key = (
            str(folder.resolve()),
            *(_stamp(folder / name) for name in ("tokenizer_config.json", "tokenizer.json", "chat_template.jinja")),
        )
    except OSError:  # a folder that cannot be looked at: said by the check below
        return _unsupported(folder)
    if key not in _VERDICTS:
        _VERDICTS[key] = _unsupported(folder)
    return _VERDICTS[key]


def _unsupported(folder: Path) -> str | None:
    try:
        config = _read_json(folder / "tokenizer_config.json")
        spec = _read_json(folder / "tokenizer.json")
    except FileNotFoundError as exc:
        return f"no {Path(str(exc.filename)).name}"
    except (OSError, ValueError) as exc:
        return f"unreadable tokenizer files: {exc}"
    cls = config.get("tokenizer_class")
    if cls not in PLAIN_CLASSES:
        return f"tokenizer_class {cls!r} is built by transformers"
    model = spec.get("model") or {}
    if model.get("type") != "BPE":
        return f"a {model.get('type')} tokenizer"
    if config.get("clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output"):
        return "decoding cleans up spaces"
    if any(key in config for key in ("split_special_tokens", "add_prefix_space", "legacy")):
        return "options transformers applies on top of tokenizer.json"
    template = _template(folder, config)
    if template is not None:
        try:
            _environment().from_string(template)
        except Exception as exc:  # noqa: BLE001 - any template this renderer cannot parse goes to transformers
            return f"its chat template: {exc}"
    return None


def _environment():
    # Deferred: jinja2 is needed only where a chat template is rendered.
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False) -> str:
        # as transformers: Jinja's own tojson escapes HTML characters
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(format: str) -> str:
        return datetime.now().strftime(format)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


class FileTokenizer:
    """The part of transformers' fast tokenizer a canary run uses, read from a model folder."""

    padding_side = "left"

    def __init__(self, folder: Path) -> None:
        # Deferred: tokenizers is needed only where a model is tokenized.
        from tokenizers import Tokenizer

        why = unsupported(folder)
        if why is not None:
            raise ValueError(f"{folder}: {why}")
        config = _read_json(folder / "tokenizer_config.json")
        self._tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        self.special_tokens = {key: text for key in SPECIAL_KEYS if (text := _token_text(config.get(key))) is not None}
        if "pad_token" not in self.special_tokens and "eos_token" in self.special_tokens:
            self.special_tokens["pad_token"] = self.special_tokens["eos_token"]  # as models.load_tokenizer does
        self.chat_template = _template(folder, config)
        self._compiled = _environment().from_string(self.chat_template) if self.chat_template else None

    def _id(self, key: str) -> int | None:
        text = self.special_tokens.get(key)
        return None if text is None else self._tokenizer.token_to_id(text)

    @property
    def eos_token(self) -> str | None:
        return self.special_tokens.get("eos_token")

    @property
    def pad_token(self) -> str | None:
        return self.special_tokens.get("pad_token")

    @property
    def eos_token_id(self) -> int | None:
        return self._id("eos_token")

    @property
    def pad_token_id(self) -> int | None:
        return self._id("pad_token")

    def __len__(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        encoding = self._tokenizer.encode(text, add_special_tokens=add_special_tokens)
        return {"input_ids": list(encoding.ids), "attention_mask": list(encoding.attention_mask)}

    def batch_decode(self, rows: list[list[int]], skip_special_tokens: bool = False) -> list[str]:
        # BPE: transformers does not clean up spaces around punctuation for these (unsupported() checks)
        return self._tokenizer.decode_batch(rows, skip_special_tokens=skip_special_tokens)

    def apply_chat_template(
        self, messages: list[dict[str, str]], tokenize: bool = False, add_generation_prompt: bool = False
    ) -> str:
        if self._compiled is None:
            raise ValueError("this tokenizer has no chat template")
        if tokenize:
            raise ValueError("render the template, then tokenize the text")
        return self._compiled.render(
            messages=[dict(m) for m in messages],
            tools=None,
            documents=None,
            add_generation_prompt=add_generation_prompt,
            **self.special_tokens,
        )
