# Tokenizers (tokenizer/): llama.cpp's vectors for stories260K, Llama 2 SPM and GPT-2 BPE, the real
# models (SmolLM2, Qwen2.5-Coder: tokenize lines, prompt ids, end of generation),
# decoding and streaming, broken metadata, the pre-tokenizer regexes, and `tessera tokenize`.
ts_add_test(NAME test_tokenizer SOURCES unit/test_tokenizer.c LIBS ts_tokenizer LABELS unit)
ts_add_test(NAME test_tokenizer_pretok SOURCES unit/test_tokenizer_pretok.c LIBS ts_tokenizer
            LABELS unit)
ts_add_test(NAME test_tokenizer_real SOURCES unit/test_tokenizer_real.c LIBS ts_tokenizer
            LABELS unit)

# `tessera tokenize`, run as a user would (the test runs the built binary).
ts_add_test(NAME test_tokenize_cli SOURCES cli/test_tokenize_cli.c LABELS unit)
add_dependencies(test_tokenize_cli tessera)
