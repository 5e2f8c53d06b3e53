#!/usr/bin/env python3
"""The GPU benchmark table: bench-engine rows (--json) beside their floors
and beside transformers' rows (hf-generate.py --json) of the same model,
weights, phase and batch, as markdown.

  bench/engine-table.py FILE.json...      # any mix of the two programs' files

A moerun row gives its time (prefill: ms per forward of batch x prompt
tokens; decode: ms per step), tokens/s, the floor of the same run (ms, and
which bound: mem = bytes read / bandwidth, gemm = FLOPs / GEMM rate) and
time / floor; a transformers row of the same key gives its time and
tokens/s, and the last column is transformers' time / moerun's (above 1:
moerun is faster).  Rows without a partner keep "-" there.  "bf16 (held as
fp32)": the run asked for bf16 weights but the model held 4 bytes a
parameter (its bf16 storage was not in effect).
"""
import json
import os
import sys


def key(r):
    return (os.path.basename(os.path.normpath(r["model"])), r["weights"], r["phase"], r["batch"])


def ms(r):
    return r["step_ms"] if r["phase"] == "decode" else r["seconds"] * 1e3


def main(paths):
    if not paths:
        print(__doc__, file=sys.stderr)
        return 2
    ours, hf, devices, floors = {}, {}, set(), set()
    for p in paths:
        with open(p) as f:
            rows = json.load(f)
        for r in rows:
            if r.get("phase") not in ("prefill", "decode"):
                continue
            if r.get("engine") == "transformers":
                hf[key(r)] = r
            else:
                ours[key(r)] = r
                g = r["gemm_floor_gflops"]
                rate = f"{g / 1e3:.1f} TFLOP/s" if g >= 1e3 else f"{g:.1f} GFLOP/s"
                floors.add(f"{r['mem_floor']} {r['mem_floor_gbs']:.0f} GB/s; {r['gemm_floor']} {rate}")
            devices.add(r["device"])
    print("Device: " + "; ".join(sorted(devices)))
    print()
    print("Floors (measured in each bench-engine run): " + " | ".join(sorted(floors)))
    print()
    print("| model | weights | phase | batch | moerun ms | moerun tok/s | floor ms (bound) | x floor "
          "| transformers ms | transformers tok/s | transformers / moerun |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    keys = sorted(set(ours) | set(hf), key=lambda k: (k[0], k[1], k[2] != "prefill", k[3]))
    for k in keys:
        o, h = ours.get(k), hf.get(k)
        model, weights, phase, batch = k
        if phase == "prefill":
            r = o or h
            batch = f"{batch}x{r['prompt']}"
        held_fp32 = o and weights == "bf16" and o.get("weight_bytes_per_param", 0) > 3.0
        cells = [model, weights + (" (held as fp32)" if held_fp32 else ""), phase, str(batch)]
        if o:
            cells += [f"{ms(o):.2f}", f"{o['tokens_per_s']:.0f}", f"{o['floor_ms']:.2f} ({o['floor_bound']})",
                      f"{o['ratio']:.2f}"]
        else:
            cells += ["-"] * 4
        if h:
            cells += [f"{ms(h):.2f}", f"{h['tokens_per_s']:.0f}", f"{ms(h) / ms(o):.2f}" if o else "-"]
        else:
            cells += ["-"] * 3
        print("| " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
