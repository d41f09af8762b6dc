#!/usr/bin/env python3
"""Writes a Hugging Face fast tokenizer (tokenizer.json + tokenizer_config.json) for a GGUF vocabulary.

    python3 tools/make_hf_tokenizer.py MODEL.gguf OUTDIR

Needs the `tokenizers` and `gguf` packages (in a virtual environment). The tokenizer is built with
the `tokenizers` package itself (its Tokenizer.save writes tokenizer.json), in the layout the
model's own upstream repository uses for its family, so that it is an independent reference for
Tessera's tokenizer.json reader and for its GGUF tokenizer:

  tokenizer.ggml.model  pre          layout
  gpt2                  gpt-2        BPE, ByteLevel pre-tokenizer (GPT-2 regex) and decoder
  gpt2                  smollm       BPE, Sequence[Digits(individual), ByteLevel] (SmolLM2)
  gpt2                  qwen2        BPE, NFC normalizer, Sequence[Split(Qwen2 regex), ByteLevel]
  gpt2                  llama-bpe    BPE (ignore_merges), Sequence[Split(Llama 3 regex), ByteLevel],
                                     BOS added by a TemplateProcessing post-processor
  llama                 (any)        SentencePiece-style BPE (Llama 2, Mistral, TinyLlama): byte
                                     fallback, Prepend("▁") + Replace(" ", "▁") normalizer, merges
                                     derived from the scores as transformers' LlamaConverter does

Tokens of type control become special added tokens, user-defined ones non-special added tokens;
unused tokens (the padding of Qwen's embedding) are left out. tokenizer_config.json carries
bos/eos/unk, add_bos_token and the chat template from the GGUF metadata.
"""
import json
import os
import sys

from gguf import GGUFReader
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers
from tokenizers import pre_tokenizers, processors

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_REGEX = LLAMA3_REGEX.replace(r"\p{N}{1,3}", r"\p{N}")


def field(reader, key, default=None):
    f = reader.fields.get(key)
    return default if f is None else f.contents()


def spm_merges(tokens, scores):
    """transformers' SentencePieceExtractor: every split of a piece into two pieces, ordered by the
    piece's score (highest first), ties by the ids of the halves."""
    vocab = {t: i for i, t in enumerate(tokens)}
    merges = []
    for piece, score in zip(tokens, scores):
        local = []
        for k in range(1, len(piece)):
            left, right = piece[:k], piece[k:]
            if left in vocab and right in vocab:
                local.append((left, right, score))
        local.sort(key=lambda m: (vocab[m[0]], vocab[m[1]]))
        merges.extend(local)
    merges.sort(key=lambda m: m[2], reverse=True)
    return [(m[0], m[1]) for m in merges]


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    reader = GGUFReader(sys.argv[1])
    out = sys.argv[2]
    kind = field(reader, "tokenizer.ggml.model")
    pre = field(reader, "tokenizer.ggml.pre", "default")
    tokens = field(reader, "tokenizer.ggml.tokens")
    types = field(reader, "tokenizer.ggml.token_type", [NORMAL] * len(tokens))
    scores = field(reader, "tokenizer.ggml.scores", [0.0] * len(tokens))

    def special_text(key):
        i = field(reader, "tokenizer.ggml.%s_token_id" % key)
        return tokens[i] if i is not None and 0 <= i < len(tokens) else None

    bos, eos, unk = special_text("bos"), special_text("eos"), special_text("unknown")
    kept = [i for i in range(len(tokens)) if types[i] != UNUSED]
    if kept != list(range(len(kept))):
        sys.exit("%s: unused tokens in the middle of the vocabulary" % sys.argv[1])
    vocab = {tokens[i]: i for i in kept}

    if kind == "gpt2":
        merges = [tuple(m.split(" ", 1)) for m in field(reader, "tokenizer.ggml.merges")]
        bpe = models.BPE(vocab, merges, ignore_merges=(pre == "llama-bpe"))
        tok = Tokenizer(bpe)
        if pre == "gpt-2":
            tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        elif pre == "smollm":
            tok.pre_tokenizer = pre_tokenizers.Sequence([
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
        elif pre in ("qwen2", "llama-bpe"):
            regex = QWEN2_REGEX if pre == "qwen2" else LLAMA3_REGEX
            tok.pre_tokenizer = pre_tokenizers.Sequence([
                pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
            if pre == "qwen2":
                tok.normalizer = normalizers.NFC()
        else:
            sys.exit("%s: no layout for pre-tokenizer '%s'" % (sys.argv[1], pre))
        tok.decoder = decoders.ByteLevel()
        add_bos = field(reader, "tokenizer.ggml.add_bos_token", pre == "llama-bpe")
    elif kind == "llama":
        merges = spm_merges(tokens, scores)
        tok = Tokenizer(models.BPE(vocab, merges, unk_token=unk, fuse_unk=True, byte_fallback=True))
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"),
                                               normalizers.Replace(" ", "\u2581")])
        tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(),
                                         decoders.Fuse(), decoders.Strip(" ", 1, 0)])
        add_bos = field(reader, "tokenizer.ggml.add_bos_token", True)
    else:
        sys.exit("%s: tokenizer '%s' has no layout here" % (sys.argv[1], kind))

    added = [AddedToken(tokens[i], special=types[i] != USER_DEFINED, normalized=False)
             for i in kept if types[i] in (CONTROL, USER_DEFINED, UNKNOWN)]
    tok.add_special_tokens([a for a in added if a.special])
    tok.add_tokens([a for a in added if not a.special])
    if add_bos and bos is not None:
        tok.post_processor = processors.TemplateProcessing(
            single="%s $A" % bos, pair="%s $A %s $B" % (bos, bos),
            special_tokens=[(bos, vocab[bos])])
    elif kind == "gpt2":
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    for text in added:
        if tok.token_to_id(text.content) != vocab[text.content]:
            sys.exit("%s: added token '%s' got another id" % (sys.argv[1], text.content))

    os.makedirs(out, exist_ok=True)
    tok.save(os.path.join(out, "tokenizer.json"))
    config = {
        "add_bos_token": bool(add_bos),
        "add_eos_token": False,
        "bos_token": bos,
        "eos_token": eos,
        "unk_token": unk,
        "clean_up_tokenization_spaces": False,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "added_tokens_decoder": {
            str(vocab[a.content]): {"content": a.content, "lstrip": False, "normalized": False,
                                    "rstrip": False, "single_word": False, "special": a.special}
            for a in added},
    }
    template = field(reader, "tokenizer.chat_template")
    if template is not None:
        config["chat_template"] = template
    with open(os.path.join(out, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, ensure_ascii=False, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
