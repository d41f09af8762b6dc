#!/usr/bin/env python3
"""Writes tests/data/nfc_cases.tsv: texts and their NFC form by Python's unicodedata, one
"TEXT<TAB>NFC" line each, for tests/unit/test_tokenizer_nfc.c.

    python3 tools/gen_nfc_cases.py > tests/data/nfc_cases.tsv

Random strings (fixed seed) of combining marks of many classes, letters with decompositions,
composition exclusions, two-starter compositions (Indic vowel signs), Hangul jamo and syllables;
then every code point that has a decomposition, 50 to a line, as they are and in NFD. Use the
Python that generated tokenizer/nfc_data.c (the same Unicode version).
"""
import random
import sys
import unicodedata


def main():
    random.seed(7)
    marks = list(range(0x300, 0x370)) + [0x0323, 0x0328, 0x031B, 0x0345, 0x05B0, 0x0591, 0x093C,
                                         0x094D, 0x0E38, 0x0F71, 0x0F72, 0x0F74, 0x302A, 0x3099,
                                         0x1DC0, 0x20D0, 0x1D165, 0x1D16D]
    letters = [ord(c) for c in "aeiouAEIOUcnsyzCNSYZ"] + [
        0xE9, 0xC5, 0x212B, 0x1E9B, 0x0958, 0x2ADC, 0xFB1D, 0x0F73, 0x1F80, 0x0B47, 0x0B3E, 0x0CC6,
        0x0CC2, 0x0CD5, 0x09C7, 0x09BE, 0x0DD9, 0x0DCF, 0x1025, 0x102E, 0x3046, 0x304B, 0x30AB]
    jamo = (list(range(0x1100, 0x1113)) + list(range(0x1161, 0x1176)) +
            list(range(0x11A8, 0x11C3)) + [0xAC00, 0xAC01, 0xD7A3, 0xAC1C])
    texts = []
    for _ in range(4000):
        pool = [marks, letters, jamo, [0x20, 0x41, 0x4E00]]
        texts.append("".join(chr(random.choice(random.choice(pool)))
                             for _ in range(random.randint(1, 12))))
    cps = [c for c in range(0x110000)
           if not 0xD800 <= c <= 0xDFFF and unicodedata.decomposition(chr(c))]
    for i in range(0, len(cps), 50):
        chunk = "".join(chr(c) for c in cps[i:i + 50])
        texts += [chunk, unicodedata.normalize("NFD", chunk)]
    breaks = ("\n", "\r", "\t", "\x85", "\u2028", "\u2029")
    out = sys.stdout.buffer
    for text in texts:
        if any(b in text for b in breaks):
            continue
        out.write(("%s\t%s\n" % (text, unicodedata.normalize("NFC", text))).encode("utf-8"))


if __name__ == "__main__":
    main()
