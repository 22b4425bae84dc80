#!/usr/bin/env python3
"""Makes jargon.txt, the character-level language-modelling text of examples/tasks/charlm.nn.

The source is the Jargon File 4.4.7 (Eric S. Raymond et al., public domain), as Debian's
package `jargon-text` ships it (/usr/share/doc/jargon-text/jargon.txt.gz; `apt-get
download jargon-text` and `dpkg-deb -x` fetch it without installing). Kept: the lexicon,
from its first entry (`:(TM):`) to its last (`:zorkmid:`). Each paragraph becomes one line; typographic quotes,
dashes and the pronunciation dots become ASCII; tables (box drawing) and any other
non-ASCII character are dropped, so every byte is printable ASCII or a newline.

    python3 make_jargon.py [path/to/jargon.txt.gz] > jargon.txt
"""

import gzip
import re
import sys

ASCII = {
    "\u201c": '"', "\u201d": '"', "\u2018": "'", "\u2019": "'", "\u00b4": "'",
    "\u00b7": "-", "\u2014": "--", "\u2013": "-", "\u2022": "*", "\u2192": "->",
    "\u00a0": " ", "\u00d7": "x", "\u2212": "-", "\u00a9": "(C)", "\u2122": "(TM)",
}
BOX = re.compile("[\u2500-\u257f]")


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "/usr/share/doc/jargon-text/jargon.txt.gz"
    with gzip.open(path, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    start = next(i for i, l in enumerate(lines) if l.strip() == ":(TM): //")
    end = next(i for i, l in enumerate(lines) if i > start and re.search(r"Part\sIII\.\sAppendices", l))
    paragraphs, current = [], []
    for line in lines[start:end]:
        if BOX.search(line):
            continue
        text = "".join(ASCII.get(c, c) for c in line.strip())
        text = "".join(c for c in text if " " <= c <= "~")
        if text:
            current.append(text)
        elif current:
            paragraphs.append(" ".join(current))
            current = []
    if current:
        paragraphs.append(" ".join(current))
    sys.stdout.write("\n".join(paragraphs) + "\n")


if __name__ == "__main__":
    main()
