#!/usr/bin/env python3
"""The keyboard-decoding data (after "Neural Networks for Text Correction and Completion
in Keyboard Decoding", Ghosh and Kristensson, 2017): misspelled words and the word meant.

`words.txt` holds 5,000 English words of 3 to 10 lowercase letters, drawn with a fixed seed
from Debian's `wamerican` (SCOWL, 2020.12.07; its copyright notice is `typos.COPYRIGHT`).
Each word gives six rows: the word itself, four training typos and one test typo, each
one to two edits made with a fixed seed from a QWERTY keyboard: a neighbouring key for a
letter, a neighbouring key inserted after one, a letter deleted, two letters swapped. A
row is the 12 letters as ids (a = 1 .. z = 26, 0 after the end), then the word's index.
The last 5,000 rows (one unseen typo per word) are the test split.

    python3 examples/data/make_typos.py                       # words.txt -> typos.csv
    python3 examples/data/make_typos.py --pick /usr/share/dict/american-english
"""

import argparse
import os
import random

HERE = os.path.dirname(os.path.abspath(__file__))
ROWS = ["qwertyuiop", "asdfghjkl", "zxcvbnm"]
WIDTH = 12


def neighbours():
    pos = {c: (r, i) for r, row in enumerate(ROWS) for i, c in enumerate(row)}
    near = {}
    for c, (r, i) in pos.items():
        near[c] = [d for d, (s, j) in pos.items() if d != c and abs(s - r) <= 1 and abs(j + 0.5 * s - i - 0.5 * r) <= 1.0]
    return near


def typo(word, rng, near):
    w = list(word)
    for _ in range(rng.choice([1, 1, 2])):
        kind = rng.randrange(4)
        k = rng.randrange(len(w))
        if kind == 0:
            w[k] = rng.choice(near[w[k]])
        elif kind == 1 and len(w) < WIDTH:
            w.insert(k + 1, rng.choice(near[w[k]]))
        elif kind == 2 and len(w) > 2:
            del w[k]
        elif len(w) > 1:
            k = min(k, len(w) - 2)
            w[k], w[k + 1] = w[k + 1], w[k]
    return "".join(w)


def row(text, label):
    ids = [ord(c) - ord("a") + 1 for c in text][:WIDTH]
    return ids + [0] * (WIDTH - len(ids)) + [label]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--pick", help="a word list to draw words.txt from")
    p.add_argument("--out", default=os.path.join(HERE, "typos.csv"), help="where to write the rows")
    a = p.parse_args()
    words_path = os.path.join(HERE, "words.txt")
    if a.pick:
        with open(a.pick) as f:
            cands = sorted({w.strip() for w in f if w.strip().isalpha() and w.strip().islower()
                            and w.strip().isascii() and 3 <= len(w.strip()) <= 10})
        words = sorted(random.Random(2017).sample(cands, 5000))
        with open(words_path, "w") as f:
            f.write("\n".join(words) + "\n")
    with open(words_path) as f:
        words = [w.strip() for w in f if w.strip()]
    near = neighbours()
    rng = random.Random(0)
    train, test = [], []
    for label, w in enumerate(words):
        train.append(row(w, label))
        seen = {w}
        made = []
        while len(made) < 5:
            t = typo(w, rng, near)
            if t not in seen:
                seen.add(t)
                made.append(t)
        train.extend(row(t, label) for t in made[:4])
        test.append(row(made[4], label))
    rng.shuffle(train)
    with open(a.out, "w") as f:
        f.write(",".join([f"c{i}" for i in range(WIDTH)] + ["label"]) + "\n")
        for r in train + test:
            f.write(",".join(map(str, r)) + "\n")


if __name__ == "__main__":
    main()
