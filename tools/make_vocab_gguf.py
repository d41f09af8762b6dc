#!/usr/bin/env python3
"""Writes a vocabulary-only GGUF: the tokenizer (and general.*) metadata of a model file, no tensors.

    python3 tools/make_vocab_gguf.py MODEL.gguf OUT.gguf

Needs the `gguf` package (pip install gguf==0.19.0 in a virtual environment). Every key under
`tokenizer.` and `general.` is copied with its type, in the file's order; `general.architecture`
is kept so that the result is a valid GGUF. The result tokenizes exactly as the model does (the
tokenizer reads nothing else) and is a few MB instead of hundreds, so tests can carry it
(tests/data/vocab-*.gguf, see tests/data/SOURCE.md).
"""
import sys

from gguf import GGUFReader, GGUFValueType, GGUFWriter


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    reader = GGUFReader(sys.argv[1])
    arch = reader.fields["general.architecture"].contents()
    writer = GGUFWriter(sys.argv[2], arch)
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue  # written by GGUFWriter itself
        if not key.startswith(("tokenizer.", "general.")):
            continue
        kind = field.types[0]
        if kind == GGUFValueType.ARRAY:
            writer.add_key_value(key, field.contents(), kind, sub_type=field.types[-1])
        else:
            writer.add_key_value(key, field.contents(), kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


if __name__ == "__main__":
    main()
