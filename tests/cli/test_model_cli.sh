#!/bin/sh
# test_model_cli.sh — `tessera model inspect | synth` end to end: the bundled model inspects,
# a synthetic tiny model is written and inspected, and bad flags or paths exit 2 with one line
# "tessera model: ..." on stderr.
# usage: test_model_cli.sh TESSERA_BINARY SOURCE_DIR WORK_DIR
set -u
TESSERA=$1
SRC=$2
WORK=$3
mkdir -p "$WORK"
failures=0

fail() {
    echo "FAIL: $*" >&2
    failures=$((failures + 1))
}

# expect CODE NEEDLE -- ARGS...: runs tessera ARGS, checks the exit code and that stdout+stderr
# contain NEEDLE (empty: no check); on a usage or runtime error stderr must be one line.
expect() {
    code=$1
    needle=$2
    shift 3
    "$TESSERA" "$@" >"$WORK/out" 2>"$WORK/err"
    got=$?
    if [ "$got" != "$code" ]; then
        fail "tessera $*: exit $got, expected $code"
        sed 's/^/    /' "$WORK/err" >&2
        return
    fi
    if [ -n "$needle" ] && ! grep -qF -- "$needle" "$WORK/out" "$WORK/err"; then
        fail "tessera $*: output lacks '$needle'"
        sed 's/^/    /' "$WORK/out" "$WORK/err" | head -20 >&2
    fi
    if [ "$code" != 0 ] && [ "$(wc -l <"$WORK/err")" != 1 ]; then
        fail "tessera $*: expected one line on stderr"
        sed 's/^/    /' "$WORK/err" >&2
    fi
}

MODEL=$SRC/models/stories260K/stories260K-f32.gguf

# inspect the bundled model
expect 0 "hyper-parameters: vocab 512, context 128, dim 64, layers 5, ff 172," -- model inspect "$MODEL"
expect 0 "heads 8, kv heads 4, head dim 8" -- model inspect "$MODEL"
expect 0 "blk.4.ffn_down.weight            f32   [172, 64]" -- model inspect "$MODEL"
expect 0 "total: 48 tensors, 292800 parameters" -- model inspect "$MODEL"
expect 0 "tokenizer.ggml.model" -- model inspect --metadata "$SRC/models/stories260K/stories260K-f16.gguf"
expect 0 '"n_layers":5' -- model inspect --json "$MODEL"
if command -v python3 >/dev/null 2>&1; then
    "$TESSERA" model inspect --json --metadata "$MODEL" | python3 -c '
import json, sys
d = json.load(sys.stdin)
assert d["hparams"]["n_kv_heads"] == 4 and d["hparams"]["n_vocab"] == 512, d["hparams"]
assert len(d["tensors"]) == 48 and d["totals"]["parameters"] == 292800
assert d["metadata"]["tokenizer.ggml.tokens"] == {"array_of": "string", "length": 512}
' || fail "inspect --json is not the expected JSON"
fi
# a vocab-only file is described, not refused
expect 0 "architecture: gpt2" -- model inspect "$SRC/tests/data/ggml-vocab-gpt-2.gguf"

# synth the tiny shape, then inspect it
rm -f "$WORK/tiny.gguf"
expect 0 "wrote $WORK/tiny.gguf: shape tiny, q8_0 weights" -- model synth --shape tiny --type q8_0 --seed 7 -o "$WORK/tiny.gguf"
expect 0 "dim 64, layers 2, ff 128," -- model inspect "$WORK/tiny.gguf"
expect 0 "blk.1.ffn_down.weight            q8_0  [128, 64]" -- model inspect "$WORK/tiny.gguf"
expect 0 "output tied to the embedding" -- model inspect "$WORK/tiny.gguf"
# explicit dims (and --vocab-from a 512-token vocab)
expect 0 "shape custom, f32 weights" -- model synth --dim 32 --layers 1 --heads 2 --kv-heads 1 --ff 64 \
    --vocab 512 --ctx 64 --type f32 --vocab-from "$MODEL" -o "$WORK/custom.gguf"
expect 0 "vocab 512, context 64, dim 32, layers 1, ff 64," -- model inspect "$WORK/custom.gguf"
# a named shape with an override
expect 0 "shape custom" -- model synth --shape tiny --layers 1 --vocab-from none --vocab 100 -o "$WORK/custom.gguf"
expect 0 "layers 1" -- model inspect "$WORK/custom.gguf"

# help
expect 0 "tessera model inspect MODEL" -- model --help
expect 0 "--json" -- model inspect --help
expect 0 "--vocab-from" -- model synth --help

# usage errors: exit 2, one line
expect 2 "tessera model: missing subcommand" -- model
expect 2 "tessera model: unknown subcommand 'frobnicate'" -- model frobnicate
expect 2 "tessera model: inspect: missing MODEL" -- model inspect
expect 2 "tessera model: unknown flag '--bogus'" -- model inspect --bogus "$MODEL"
expect 2 "tessera model: $WORK/nope.gguf: No such file or directory" -- model inspect "$WORK/nope.gguf"
expect 2 "tessera model: synth: missing -o OUT.gguf" -- model synth --shape tiny
expect 2 "tessera model: unknown shape 'huge'" -- model synth --shape huge -o "$WORK/x.gguf"
expect 2 "missing --layers" -- model synth --dim 64 -o "$WORK/x.gguf"
expect 2 "unknown type 'q3'" -- model synth --shape tiny --type q3 -o "$WORK/x.gguf"
expect 2 "--dim: expected an integer" -- model synth --dim abc -o "$WORK/x.gguf"
expect 2 "dim 64 is not a multiple of heads 3" -- model synth --shape tiny --heads 3 -o "$WORK/x.gguf"
expect 2 "vocabulary has 32000 tokens, but shape 'custom' needs 512" -- model synth --shape tiny --vocab 512 -o "$WORK/x.gguf"
expect 2 "no-such-dir/x.gguf" -- model synth --shape tiny -o "$WORK/no-such-dir/x.gguf"
[ -e "$WORK/x.gguf" ] && fail "a failed synth left $WORK/x.gguf behind"

# a file that is not a model: runtime failure, exit 1, naming the file
printf 'not a model at all' >"$WORK/text.gguf"
expect 1 "tessera model: $WORK/text.gguf: not a GGUF file" -- model inspect "$WORK/text.gguf"
# a Llama file with a tensor of the wrong shape (synth writes ff 64, we claim 96 in a copy)
expect 0 "" -- model synth --shape tiny --vocab-from none --vocab 64 -o "$WORK/small.gguf"
python3 - "$WORK/small.gguf" "$WORK/broken.gguf" <<'PY' || true
import struct, sys
data = bytearray(open(sys.argv[1], 'rb').read())
key = b'llama.feed_forward_length'
at = data.find(key) + len(key) + 4
struct.pack_into('<I', data, at, 96)
open(sys.argv[2], 'wb').write(data)
PY
if [ -e "$WORK/broken.gguf" ]; then
    expect 1 "tensor 'blk.0.ffn_gate.weight': shape [64, 128], expected [64, 96]" -- model inspect "$WORK/broken.gguf"
fi

rm -f "$WORK/tiny.gguf" "$WORK/custom.gguf" "$WORK/small.gguf" "$WORK/broken.gguf" "$WORK/text.gguf" \
    "$WORK/out" "$WORK/err"
if [ "$failures" != 0 ]; then
    echo "$failures failed" >&2
    exit 1
fi
echo "all passed"
