#!/usr/bin/env python3
"""Make the small GGUF fixtures that tests/unit/test-gguf.c reads.

Writes tests/fixtures/gguf/ with the `gguf` package (gguf-py, llama.cpp's own
writer) and numpy:

  type-<t>.gguf          one per tensor type t in f32 f16 bf16 q8_0 q4_0 q4_1
                         q4_k q5_k q6_k: tensor "w" [2, 512] (HF order; ne =
                         [512, 2]) quantized from known floats where gguf-py can
                         quantize (float types, Q8_0, Q4_0, Q4_1), and tensor "r"
                         [2, 512] made of random block bytes (finite f16 scales)
                         for every quantized type -- the only way to fill the
                         K-quants, which gguf-py cannot quantize.  type-f32.gguf
                         also holds "w3" [2, 3, 64] for the axis order.
  types-expected.safetensors
                         "<t>.w" / "<t>.r": the float32 values, from
                         gguf.quants.dequantize (an independent dequantizer).
  metadata.gguf          one key of every value type and an array of every
                         element type (strings too), general.alignment = 64,
                         tensors "a" [3] and "b" [2, 5] (F32, = arange).
  llama.gguf             tests/fixtures/llama converted as convert_hf_to_gguf.py
                         does: F32, GGUF tensor names, q/k rows permuted with
                         LlamaModel.permute, llama3 RoPE as rope_freqs.weight,
                         512 tokens "<t0>".."<t511>" (no llama.vocab_size).
  qwen2.gguf             tests/fixtures/qwen2: 2-D weights BF16 as stored, 1-D
                         tensors upcast to F32 (as the converter does), no
                         permutation, qwen2.vocab_size, tied embeddings.
  llama-perm.gguf        a tiny llama layer with q/k biases and Q8_0 q/k weights,
  llama-perm-expected.safetensors
                         its tensors in HF order (dequantized, un-permuted).

It also writes the fuzzing seed corpora tests/fuzz/corpus/fuzz-gguf/ (small
GGUF files: copies of the smaller fixtures plus a tiny qwen2 header with yarn
RoPE) and tests/fuzz/corpus/fuzz-safetensors/ (tiny F32/F16/BF16 files).

Deterministic (numpy default_rng seeds); needs gguf (0.19.0 used), numpy and
safetensors.  Usage: python3 tests/reference/make_gguf_fixtures.py [--out DIR]
"""

import argparse
import json
import math
import os
import struct

import gguf
import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import GGUFValueType as V
from safetensors.numpy import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.normpath(os.path.join(HERE, "..", "fixtures"))

# ---- HF checkpoint reading (numpy cannot hold BF16: keep it as uint16) ----


def read_safetensors(path):
    """name -> (dtype string, shape, raw little-endian bytes)."""
    with open(path, "rb") as f:
        blob = f.read()
    n = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8:8 + n])
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        a, b = e["data_offsets"]
        out[name] = (e["dtype"], e["shape"], blob[8 + n + a:8 + n + b])
    return out


def read_checkpoint(folder):
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    tensors = {}
    for fn in files:
        tensors.update(read_safetensors(os.path.join(folder, fn)))
    return tensors


def as_f32(dtype, shape, raw):
    if dtype == "F32":
        return np.frombuffer(raw, dtype=np.float32).reshape(shape).copy()
    if dtype == "BF16":
        u = np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16
        return u.view(np.float32).reshape(shape).copy()
    raise ValueError(dtype)


# ---- the llama.cpp conversion steps we mirror ----

HF_TO_GGUF_LAYER = {
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
HF_TO_GGUF_GLOBAL = {
    "model.embed_tokens": "token_embd",
    "model.norm": "output_norm",
    "lm_head": "output",
}


def gguf_name(hf):
    stem, suffix = hf.rsplit(".", 1)
    if stem in HF_TO_GGUF_GLOBAL:
        return f"{HF_TO_GGUF_GLOBAL[stem]}.{suffix}"
    parts = stem.split(".")
    assert parts[0] == "model" and parts[1] == "layers", hf
    return f"blk.{parts[2]}.{HF_TO_GGUF_LAYER['.'.join(parts[3:])]}.{suffix}"


def permute(w, n_head, n_head_kv=None):
    """LlamaModel.permute of convert_hf_to_gguf.py: HF rotate_half rows ->
    GGML's interleaved pairs, per head."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def llama3_rope_factors(cfg):
    """LlamaModel.generate_extra_tensors of convert_hf_to_gguf.py."""
    rs = cfg["rope_scaling"]
    base = cfg.get("rope_theta", 10000.0)
    dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    freqs = 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim)))
    factor = rs.get("factor", 8.0)
    low, high = rs.get("low_freq_factor", 1.0), rs.get("high_freq_factor", 4.0)
    old = rs.get("original_max_position_embeddings", 8192)
    low_wl, high_wl = old / low, old / high
    out = []
    for freq in freqs:
        wl = 2 * math.pi / float(freq)
        if wl < high_wl:
            out.append(1)
        elif wl > low_wl:
            out.append(factor)
        else:
            smooth = (old / wl - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def write(w, path):
    w.write_header_to_file(path=path)
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


# ---- fixtures ----

TYPES = ["f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q4_k", "q5_k", "q6_k"]
QTYPE = {"f32": T.F32, "f16": T.F16, "bf16": T.BF16, "q8_0": T.Q8_0, "q4_0": T.Q4_0,
         "q4_1": T.Q4_1, "q4_k": T.Q4_K, "q5_k": T.Q5_K, "q6_k": T.Q6_K}
# byte offsets of the f16 scale fields in a block, kept finite in "r"
F16_FIELDS = {T.Q8_0: [0], T.Q4_0: [0], T.Q4_1: [0, 2], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208]}
ROWS, COLS = 2, 512


def random_blocks(rng, qt, nblocks):
    bs, ts = gguf.GGML_QUANT_SIZES[qt]
    raw = rng.integers(0, 256, size=(nblocks, ts), dtype=np.uint8)
    for off in F16_FIELDS[qt]:
        # magnitudes from 2^-20 (f16 subnormal) to 2, both signs
        mag = np.exp2(rng.uniform(-20, 1, size=nblocks)).astype(np.float16)
        sign = np.where(rng.random(nblocks) < 0.2, -1, 1).astype(np.float16)
        raw[:, off:off + 2] = (mag * sign).astype(np.float16).view(np.uint8).reshape(nblocks, 2)
    return raw


def make_types(out):
    rng = np.random.default_rng(20240501)
    expected = {}
    for t in TYPES:
        qt = QTYPE[t]
        w = gguf.GGUFWriter(None, "test")
        data = rng.normal(0, 0.05, size=(ROWS, COLS)).astype(np.float32)
        data[0, :4] = [0.0, -0.0, 1e-6, -3.0]  # zeros, an f16 subnormal, a larger value
        if qt in (T.Q4_K, T.Q5_K, T.Q6_K):
            pass  # gguf-py has no quantizer for the K-quants: only "r"
        elif qt == T.F32:
            w.add_tensor("w", data)
            expected[f"{t}.w"] = data
        elif qt == T.F16:
            h = data.astype(np.float16)
            w.add_tensor("w", h)
            expected[f"{t}.w"] = h.astype(np.float32)
        else:
            q = gguf.quants.quantize(data, qt)
            w.add_tensor("w", q, raw_shape=q.shape, raw_dtype=qt)
            expected[f"{t}.w"] = gguf.quants.dequantize(q, qt).astype(np.float32)
        if qt in F16_FIELDS:
            bs, ts = gguf.GGML_QUANT_SIZES[qt]
            raw = random_blocks(rng, qt, ROWS * COLS // bs).reshape(ROWS, COLS // bs * ts)
            w.add_tensor("r", raw, raw_shape=raw.shape, raw_dtype=qt)
            expected[f"{t}.r"] = gguf.quants.dequantize(raw, qt).astype(np.float32)
        if qt == T.F32:
            w3 = np.arange(2 * 3 * 64, dtype=np.float32).reshape(2, 3, 64)
            w.add_tensor("w3", w3)
            expected[f"{t}.w3"] = w3
        write(w, os.path.join(out, f"type-{t}.gguf"))
    save_file({k: np.ascontiguousarray(v) for k, v in expected.items()},
              os.path.join(out, "types-expected.safetensors"))


def make_metadata(out):
    w = gguf.GGUFWriter(None, "test")
    w.add_custom_alignment(64)
    scalars = [("u8", 200, V.UINT8), ("i8", -100, V.INT8), ("u16", 60000, V.UINT16),
               ("i16", -30000, V.INT16), ("u32", 4000000000, V.UINT32), ("i32", -2000000000, V.INT32),
               ("f32", 1.5, V.FLOAT32), ("bool", True, V.BOOL), ("str", "h\u00e9llo", V.STRING),
               ("u64", 2**63 + 5, V.UINT64), ("i64", -2**62, V.INT64), ("f64", 0.1, V.FLOAT64)]
    for name, val, vt in scalars:
        w.add_key_value(f"test.{name}", val, vt)
    arrays = [("u8", [1, 2, 255], V.UINT8), ("i8", [-1, 0, 127], V.INT8),
              ("u16", [1, 65535], V.UINT16), ("i16", [-32768, 5], V.INT16),
              ("u32", [7, 4294967295], V.UINT32), ("i32", [-7, 2147483647], V.INT32),
              ("f32", [0.5, -2.25], V.FLOAT32), ("bool", [True, False, True], V.BOOL),
              ("str", ["a", "", "ccc", "\u00fc"], V.STRING), ("u64", [2**64 - 1], V.UINT64),
              ("i64", [-(2**63), 3], V.INT64), ("f64", [1e300, -0.125], V.FLOAT64)]
    for name, val, vt in arrays:
        w.add_key_value(f"test.arr.{name}", val, V.ARRAY, sub_type=vt)
    w.add_tensor("a", np.arange(3, dtype=np.float32))
    w.add_tensor("b", np.arange(10, dtype=np.float32).reshape(2, 5))
    write(w, os.path.join(out, "metadata.gguf"))


def make_llama(out):
    src = os.path.join(FIXTURES, "llama")
    with open(os.path.join(src, "config.json")) as f:
        cfg = json.load(f)
    with open(os.path.join(src, "generation_config.json")) as f:
        gen = json.load(f)
    n_head, n_kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // n_head
    w = gguf.GGUFWriter(None, "llama")
    w.add_name("moerun llama fixture")
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_rope_freq_base(cfg["rope_theta"])
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_rope_dimension_count(head_dim)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("llama")
    w.add_token_list([f"<t{i}>" for i in range(cfg["vocab_size"])])
    w.add_bos_token_id(gen["bos_token_id"])
    w.add_eos_token_id(gen["eos_token_id"])
    tensors = read_checkpoint(src)
    for name in sorted(tensors):
        x = as_f32(*tensors[name])
        if name.endswith(("q_proj.weight", "q_proj.bias")):
            x = permute(x, n_head, n_head)
        if name.endswith(("k_proj.weight", "k_proj.bias")):
            x = permute(x, n_head, n_kv)
        w.add_tensor(gguf_name(name), np.ascontiguousarray(x))
    w.add_tensor("rope_freqs.weight", llama3_rope_factors(cfg))
    write(w, os.path.join(out, "llama.gguf"))


def make_qwen2(out):
    src = os.path.join(FIXTURES, "qwen2")
    with open(os.path.join(src, "config.json")) as f:
        cfg = json.load(f)
    w = gguf.GGUFWriter(None, "qwen2")
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_rope_freq_base(cfg["rope_theta"])
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_vocab_size(cfg["vocab_size"])
    w.add_file_type(gguf.LlamaFileType.MOSTLY_BF16)
    w.add_bos_token_id(cfg["bos_token_id"])
    w.add_eos_token_id(cfg["eos_token_id"])
    tensors = read_checkpoint(src)
    for name in sorted(tensors):
        dtype, shape, raw = tensors[name]
        assert dtype == "BF16"
        if len(shape) == 1:  # the converter keeps 1-D tensors in F32
            w.add_tensor(gguf_name(name), as_f32(dtype, shape, raw))
        else:
            b = np.frombuffer(raw, dtype=np.uint8).reshape(shape[0], shape[1] * 2)
            w.add_tensor(gguf_name(name), b, raw_shape=b.shape, raw_dtype=T.BF16)
    write(w, os.path.join(out, "qwen2.gguf"))


def make_llama_perm(out):
    """q/k biases (F32) and Q8_0 q/k weights, permuted as the converter does;
    the expected file holds the HF-order tensors the reader must return."""
    rng = np.random.default_rng(7)
    n_head, n_kv, hd, hidden = 4, 2, 8, 64
    w = gguf.GGUFWriter(None, "llama")
    w.add_block_count(1)
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(32)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_vocab_size(16)
    expected = {}
    for proj, heads in (("q", n_head), ("k", n_kv)):
        hf_w = rng.normal(0, 1, size=(heads * hd, hidden)).astype(np.float32)
        q = gguf.quants.quantize(permute(hf_w, n_head, heads), T.Q8_0)
        w.add_tensor(f"blk.0.attn_{proj}.weight", q, raw_shape=q.shape, raw_dtype=T.Q8_0)
        deq = gguf.quants.dequantize(q, T.Q8_0).astype(np.float32)
        # un-permute by inverting the permutation on row indices
        rows = permute(np.arange(heads * hd), n_head, heads)
        hf_deq = np.empty_like(deq)
        hf_deq[rows] = deq
        expected[f"model.layers.0.self_attn.{proj}_proj.weight"] = hf_deq
        hf_b = rng.normal(0, 1, size=(heads * hd,)).astype(np.float32)
        w.add_tensor(f"blk.0.attn_{proj}.bias", permute(hf_b, n_head, heads))
        expected[f"model.layers.0.self_attn.{proj}_proj.bias"] = hf_b
    write(w, os.path.join(out, "llama-perm.gguf"))
    save_file(expected, os.path.join(out, "llama-perm-expected.safetensors"))


def write_safetensors(path, tensors, metadata=None):
    """tensors: name -> (dtype, shape, raw bytes); written by hand so BF16 works."""
    header, blob = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(blob), len(blob) + len(raw)]}
        blob += raw
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + blob)


def make_fuzz_corpus(fixtures, corpus):
    gdir = os.path.join(corpus, "fuzz-gguf")
    sdir = os.path.join(corpus, "fuzz-safetensors")
    os.makedirs(gdir, exist_ok=True)
    os.makedirs(sdir, exist_ok=True)
    for fn in ["metadata.gguf", "llama-perm.gguf", "type-bf16.gguf", "type-q4_0.gguf", "type-q4_1.gguf",
               "type-q8_0.gguf", "type-q4_k.gguf", "type-q5_k.gguf", "type-q6_k.gguf"]:
        with open(os.path.join(fixtures, fn), "rb") as src, open(os.path.join(gdir, fn), "wb") as dst:
            dst.write(src.read())
    w = gguf.GGUFWriter(None, "qwen2")
    w.add_block_count(1)
    w.add_embedding_length(32)
    w.add_feed_forward_length(64)
    w.add_head_count(2)
    w.add_vocab_size(4)
    w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
    w.add_rope_scaling_factor(4.0)
    w.add_rope_scaling_orig_ctx_len(64)
    w.add_token_list(["a", "b", "c", "d"])
    w.add_tensor("token_embd.weight", np.arange(128, dtype=np.float32).reshape(4, 32))
    w.add_tensor("blk.0.attn_q.bias", np.arange(32, dtype=np.float32).astype(np.float16))
    write(w, os.path.join(gdir, "qwen2-yarn.gguf"))
    f32 = np.arange(6, dtype=np.float32)
    write_safetensors(os.path.join(sdir, "f32.safetensors"),
                      {"a": ("F32", [2, 3], f32.tobytes()),
                       "h": ("F16", [4], np.array([1, -2, 0.5, 65504], dtype=np.float16).tobytes())},
                      metadata={"format": "pt"})
    write_safetensors(os.path.join(sdir, "bf16.safetensors"),
                      {"b": ("BF16", [2, 2, 2], (np.arange(8, dtype=np.float32).view(np.uint32) >> 16)
                             .astype(np.uint16).tobytes()),
                       "empty": ("F32", [0, 4], b""),
                       "ids": ("I64", [2], np.array([1, 2], dtype=np.int64).tobytes())})


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(FIXTURES, "gguf"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    make_types(args.out)
    make_metadata(args.out)
    make_llama(args.out)
    make_qwen2(args.out)
    make_llama_perm(args.out)
    make_fuzz_corpus(args.out, os.path.join(HERE, "..", "fuzz", "corpus"))
    total = 0
    for fn in sorted(os.listdir(args.out)):
        size = os.path.getsize(os.path.join(args.out, fn))
        total += size
        print(f"{size:>9}  {fn}")
    print(f"{total:>9}  total")


if __name__ == "__main__":
    main()
