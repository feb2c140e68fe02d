"""Embedding drift sees emoji: symbols the model's vocabulary lacks are spelled as their
Unicode names before encoding, so two different emoji answers no longer embed identically."""

from __future__ import annotations

import numpy as np
import pytest

from lorawatch.monitors.embeddings import spell_symbols

VOCAB = {"a", "b", "©", "—", "€"}


def test_unknown_symbols_are_spelled_and_modifiers_dropped():
    assert spell_symbols("ok 😡", VOCAB) == "ok  pouting face "
    assert spell_symbols("👍🏽", VOCAB) == spell_symbols("👍", VOCAB) == " thumbs up sign "  # skin tone dropped
    assert spell_symbols("I ❤️ it", VOCAB) == "I  heavy black heart  it"  # VS16 dropped
    assert spell_symbols("© 5 € — 这", VOCAB) == "© 5 € — 这"  # known symbols and letters stay
    plain = "Plain ASCII text, untouched."
    assert spell_symbols(plain, VOCAB) is plain


@pytest.fixture(scope="module")
def embedder():
    from lorawatch.monitors.embeddings import Embedder

    return Embedder(device="cpu")


def test_different_emoji_answers_are_apart_and_a_skin_tone_is_not_a_change(embedder):
    from lorawatch.monitors.embeddings import cosine_distance

    a = embedder.encode(["😀👍", "Thanks! 🎉", "Great 👍"])
    b = embedder.encode(["😡🤬", "Thanks! 💩", "Great 👍🏽"])
    distance = cosine_distance(a, b)
    assert distance[0] > 0.3 and distance[1] > 0.3, distance  # were exactly 0: all one unknown token
    assert distance[2] < 1e-6, distance


def test_the_plain_transformers_path_gives_sentence_transformers_vectors(embedder):
    """The packaged MiniLM runs on plain transformers (no sentence-transformers import at start-up);
    its vectors are sentence-transformers' own: same tokens, truncation, padding and pooling."""
    from sentence_transformers import SentenceTransformer

    assert embedder.model is None  # the plain path was taken
    texts = [
        "Short.",
        "Your order ships tomorrow; the tracking number follows by e-mail.",
        "word " * 400,  # beyond the 256-token limit: truncated the same way
        "",
        "Ça coûte 5 € — 这是一个测试 — Привет",
    ]
    reference = SentenceTransformer(embedder.model_path, device="cpu", local_files_only=True).encode(
        texts, batch_size=2, convert_to_numpy=True, normalize_embeddings=True
    )
    ours = embedder.encode(texts, spell=False)
    assert ours.shape == reference.shape and ours.dtype == np.float32
    assert np.abs(ours - reference).max() < 1e-5, np.abs(ours - reference).max()


def _answers(n: int) -> list[str]:
    rng = np.random.default_rng(7)
    words = [
        "the",
        "order",
        "ships",
        "tomorrow",
        "refund",
        "account",
        "password",
        "thanks",
        "sorry",
        "please",
        "wait",
        "here",
    ]
    return [" ".join(rng.choice(words, size=int(rng.integers(1, 60)))) for _ in range(n)]


def test_vectors_come_back_in_the_texts_order_whatever_the_batches(embedder):
    """Texts are encoded longest first, in batches; each vector lands on its own text's row."""
    texts = _answers(150)
    whole = embedder._encode_plain(texts, batch_size=256)
    small = embedder._encode_plain(texts, batch_size=7)
    alone = np.stack([embedder._encode_plain([t])[0] for t in texts[:12]])
    assert np.abs(whole - small).max() < 1e-5
    assert np.abs(whole[:12] - alone).max() < 1e-5


@pytest.mark.gpu
def test_the_gpu_gives_the_cpus_vectors():
    """The outputs' embeddings on CUDA (where a canary run on a GPU makes them) are the CPU's,
    over more texts than one batch."""
    import os

    import torch

    from lorawatch.monitors.embeddings import Embedder

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    path = os.environ.get("LORAWATCH_TEST_EMBEDDING_MODEL")
    texts = _answers(300)  # five batches
    cpu = Embedder(path, device="cpu").encode(texts)
    gpu = Embedder(path, device="cuda").encode(texts)
    assert gpu.shape == cpu.shape and gpu.dtype == np.float32
    assert np.abs(gpu - cpu).max() < 1e-3, np.abs(gpu - cpu).max()
