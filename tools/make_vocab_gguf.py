#!/usr/bin/env python3
"""Writes a vocabulary-only GGUF: the tokenizer (and general.*) metadata of a model file, no tensors.

    python3 tools/make_vocab_gguf.py MODEL.gguf OUT.gguf [--pre NAME]

Needs the `gguf` package (pip install gguf==0.19.0 in a virtual environment). Every key under
`tokenizer.` and `general.` is copied with its type, in the file's order; `general.architecture`
is kept so that the result is a valid GGUF. The result tokenizes exactly as the model does (the
tokenizer reads nothing else) and is a few MB instead of hundreds, so tests can carry it
(tests/data/vocab-*.gguf, see tests/data/SOURCE.md). With --pre, `tokenizer.ggml.pre` is set to
NAME (the tests hold other pre-tokenizers to their references on a real vocabulary that way).
"""
import sys

from gguf import GGUFReader, GGUFValueType, GGUFWriter


def write_vocab(src, dst, pre=None):
    """The tokenizer and general metadata of src into dst, tokenizer.ggml.pre replaced by pre."""
    reader = GGUFReader(src)
    arch = reader.fields["general.architecture"].contents()
    writer = GGUFWriter(dst, arch)
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue  # written by GGUFWriter itself
        if not key.startswith(("tokenizer.", "general.")):
            continue
        value = pre if pre is not None and key == "tokenizer.ggml.pre" else field.contents()
        kind = field.types[0]
        if kind == GGUFValueType.ARRAY:
            writer.add_key_value(key, value, kind, sub_type=field.types[-1])
        else:
            writer.add_key_value(key, value, kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def main():
    args = sys.argv[1:]
    pre = None
    if len(args) == 4 and args[2] == "--pre":
        pre = args[3]
        args = args[:2]
    if len(args) != 2:
        sys.exit(__doc__)
    write_vocab(args[0], args[1], pre)


if __name__ == "__main__":
    main()
