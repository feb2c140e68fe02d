"""Embedding drift sees emoji: symbols the model's vocabulary lacks are spelled as their
Unicode names before encoding, so two different emoji answers no longer embed identically."""

from __future__ import annotations

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
