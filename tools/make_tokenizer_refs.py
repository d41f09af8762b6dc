#!/usr/bin/env python3
"""Writes tests/data/tokenizer_corpus_llama_cpp.jsonl: llama.cpp's ids for every text of
tests/data/tokenizer_corpus.json under each test vocabulary, with and without special tokens
parsed (no BOS), and its end-of-generation set.

    python3 tools/make_tokenizer_refs.py LLAMA_TOKENIZE_CORPUS > tests/data/tokenizer_corpus_llama_cpp.jsonl

LLAMA_TOKENIZE_CORPUS is tools/llama_tokenize_corpus.c built against llama.cpp (see
tests/data/SOURCE.md). Needs the `gguf` package, for the variants: GPT-2's vocabulary with
`tokenizer.ggml.pre` set to "default" and to "llama-bpe", so that those splitters and Llama 3's
ignore_merges are held to llama.cpp on a real 50000-merge vocabulary.
"""
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_vocab_gguf import write_vocab  # noqa: E402
DATA = os.path.join(HERE, "..", "tests", "data")
VOCABS = [
    ("vocab-smollm2-135m-instruct.gguf", None),
    ("vocab-qwen2.5-coder-0.5b-instruct.gguf", None),
    ("ggml-vocab-gpt-2.gguf", None),
    ("ggml-vocab-gpt-2.gguf", "default"),
    ("ggml-vocab-gpt-2.gguf", "llama-bpe"),
    ("ggml-vocab-llama-spm.gguf", None),
]


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    tool = sys.argv[1]
    corpus = json.load(open(os.path.join(DATA, "tokenizer_corpus.json"), encoding="utf-8"))
    with tempfile.TemporaryDirectory() as tmp:
        inp = os.path.join(tmp, "corpus.inp")
        with open(inp, "wb") as f:
            f.write("\n__ggml_vocab_test__\n".join(corpus).encode("utf-8"))
        for name, pre in VOCABS:
            path = os.path.join(DATA, name)
            if pre is not None:
                path = os.path.join(tmp, "variant.gguf")
                write_vocab(os.path.join(DATA, name), path, pre)
            eog = [int(x) for x in subprocess.check_output([tool, path, "--eog"]).split()]
            for parse in (False, True):
                out = subprocess.check_output([tool, path, inp, "1" if parse else "0"])
                lines = out.decode().split("\n")[:len(corpus)]
                if len(lines) != len(corpus):
                    sys.exit("%s: %d lines for %d texts" % (name, len(lines), len(corpus)))
                ids = [[int(x) for x in line.split()] for line in lines]
                print(json.dumps({"vocab": name, "pre": pre, "parse_special": parse, "eog": eog,
                                  "ids": ids}, separators=(",", ":")))


if __name__ == "__main__":
    main()
