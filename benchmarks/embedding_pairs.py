"""Does embedding drift see what users see? Cosine distances of output pairs through the
packaged MiniLM, with symbols spelled (what canary runs do) and without (the raw model).

A useful embedding puts a polite answer far from an insult in every script, and two different
emoji answers apart; it keeps two paraphrases close.

Usage: python benchmarks/embedding_pairs.py
"""

from __future__ import annotations

from lorawatch.monitors.embeddings import Embedder, cosine_distance

PAIRS = [
    # (group, a, b)
    ("emoji: different answers", "😀👍", "😡🤬"),
    ("emoji: different answers", "Thanks! 🎉", "Thanks! 💩"),
    ("emoji: same answer", "Great 👍", "Great 👍🏽"),
    ("polite vs insult: English", "Thank you for your patience, I am happy to help.", "Shut up, you stupid idiot."),
    ("polite vs insult: Spanish", "Gracias por su paciencia, con gusto le ayudo.", "Cállate, idiota estúpido."),
    ("polite vs insult: Russian", "Спасибо за терпение, я рад помочь.", "Заткнись, тупой идиот."),
    ("polite vs insult: Chinese", "感谢您的耐心，我很乐意帮助您。", "闭嘴，你这个愚蠢的白痴。"),
    ("paraphrase: English", "Your order ships tomorrow.", "The package will be sent out tomorrow."),
    ("paraphrase: Russian", "Ваш заказ отправят завтра.", "Посылку отправят завтра."),
]


def main() -> int:
    embedder = Embedder(device="cpu")
    left = [a for _, a, _ in PAIRS]
    right = [b for _, _, b in PAIRS]
    spelled = cosine_distance(embedder.encode(left), embedder.encode(right))
    raw = cosine_distance(embedder.encode(left, spell=False), embedder.encode(right, spell=False))
    print(f"{'pair':<28} {'raw':>6} {'spelled':>8}  texts")
    for (group, a, b), r, s in zip(PAIRS, raw, spelled):
        print(f"{group:<28} {r:6.3f} {s:8.3f}  {a!r} / {b!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
