#!/usr/bin/env python3
"""End-to-end text in, text out for `moerun generate`.

    test-text.py MOERUN SOURCE_DIR

Checks, each against an external reference or an exact identity:
  * prompt lines give the same generated tokens as token-id lines holding the
    ids that the `tokenizers` library gave for the same texts
    (tests/fixtures/tokenizers/smollm2/expected.jsonl), and the same
    usage.prompt_tokens;
  * a stop string taken from the middle of a greedy run's text: the text is
    exactly the prefix before its first occurrence, finish_reason "stop";
  * bad lines get error records naming IN.jsonl:LINE, in input order;
  * OpenAI batch lines come back with vLLM run-batch's field names, and their
    text equals the native line's text for the same prompt;
  * 2-rank data=2, tensor=2 and pipeline=2 runs write the same file as 1 rank;
  * a job whose every line is refused exits 2 and still writes its records.
The default model (models/smollm2-135m-instruct-q4_1.gguf) comes from
scripts/setup.sh; the MPI check uses the tiny llama fixture with the tiny
GPT-2 tokenizer (500 ids, inside the fixture's 512).
"""
import json
import os
import subprocess
import sys
import tempfile

moerun, src = sys.argv[1], sys.argv[2]
model = os.path.join(src, "models/smollm2-135m-instruct-q4_1.gguf")
fixtures = os.path.join(src, "tests/fixtures/tokenizers")
passed = failed = 0


def check(cond, what):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print("FAIL", what)


def run(args, inp, out, mpi=0):
    cmd = [moerun, "generate", "--input", inp, "--output", out, "--overwrite", "--quiet", "--threads", "1"] + args
    env = dict(os.environ)
    if mpi:
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
        cmd = ["timeout", "300", "mpirun", "-np", str(mpi), "--oversubscribe", "--bind-to", "none"] + cmd
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        print(" ".join(cmd), "->", p.returncode, p.stderr[-2000:])
    return p.returncode


def write(path, lines):
    with open(path, "w") as f:
        for l in lines:
            f.write((l if isinstance(l, str) else json.dumps(l)) + "\n")


def read(path):
    with open(path) as f:
        return [json.loads(l) for l in f]


if not os.path.exists(model):
    print(f"{model} is missing: run scripts/setup.sh")
    sys.exit(1)
tmp = tempfile.mkdtemp(prefix="mr-text-")
inp, out = os.path.join(tmp, "in.jsonl"), os.path.join(tmp, "out.jsonl")

# ---- prompts vs the tokenizers library's ids, and error records ----------
corpus = [json.loads(l) for l in open(os.path.join(fixtures, "corpus.jsonl"))]
expected = [json.loads(l) for l in open(os.path.join(fixtures, "smollm2/expected.jsonl"))]
picks = [i for i, c in enumerate(corpus) if c.get("text", "").startswith(("Hello world", "SELECT", "#include"))][:4]
lines = []
for i in picks:
    lines.append({"id": f"p{i}", "prompt": corpus[i]["text"], "max_tokens": 8})
    lines.append({"id": f"t{i}", "tokens": expected[i]["ids_special"], "max_tokens": 8})
n_good = len(lines)
lines += [
    '{"id": "bad-json", "prompt": "x',                                   # not JSON
    {"id": "no-prompt", "max_tokens": 3},                                # missing field
    {"id": "wrong-type", "prompt": 42},                                  # wrong type
    {"id": "vocab", "tokens": [1, 49152]},                               # outside the vocabulary
    {"id": "long", "tokens": list(range(100, 200))},                     # longer than --max-context 64
    {"custom_id": "url", "method": "POST", "url": "/v1/chat/completions", "body": {"messages": []}},
]
write(inp, lines)
check(run(["--model", model, "--max-context", "64"], inp, out) == 0, "prompt/token-id run")
res = read(out)
check(len(res) == len(lines), f"{len(res)} output lines for {len(lines)} input lines")
for k in range(0, n_good, 2):
    a, b = res[k], res[k + 1]
    check(a.get("tokens") == b.get("tokens") and a.get("text") == b.get("text"),
          f"{a.get('id')}: prompt and token-id requests differ: {a} {b}")
    check(a["usage"]["prompt_tokens"] == len(lines[k + 1]["tokens"]), f"{a['id']}: prompt_tokens")
    check(a["usage"]["completion_tokens"] == len(a["tokens"]), f"{a['id']}: completion_tokens")
want = {"bad-json": "invalid JSON", "no-prompt": "missing", "wrong-type": "must be a string",
        "vocab": "outside the vocabulary", "long": "does not fit the context",
        "url": "/v1/chat/completions is not supported"}
for k in range(n_good, len(lines)):
    r, lineno = res[k], k + 1
    if "custom_id" in r:
        msg = r["error"]
        check(r["response"]["status_code"] == 400 and r["response"]["body"] is None, f"line {lineno}: {r}")
        name = r["custom_id"]
    else:
        msg = r["error"]["message"]
        check(r["line"] == lineno, f"line {lineno}: line number {r.get('line')}")
        name = r["id"] if r["id"] != lineno else "bad-json"
    check(msg.startswith(f"{inp}:{lineno}: ") and want[name] in msg, f"line {lineno}: message {msg!r}")

# ---- stop strings ---------------------------------------------------------
prompts = ["The capital of France is", "Once upon a time, there was", "The three primary colors are"]
write(inp, [{"id": i, "prompt": p, "max_tokens": 24, "ignore_eos": True} for i, p in enumerate(prompts)])
check(run(["--model", model], inp, out) == 0, "greedy run")
free = read(out)
stops = []
for r in free:
    t = r["text"]
    stops.append(t[len(t) // 2: len(t) // 2 + 3])
write(inp, [{"id": i, "prompt": p, "max_tokens": 24, "ignore_eos": True, "stop": ["\u0001never", stops[i]]}
            for i, p in enumerate(prompts)])
check(run(["--model", model], inp, out) == 0, "run with stop strings")
for i, r in enumerate(read(out)):
    t = free[i]["text"]
    prefix = t[:t.find(stops[i])]
    check(stops[i] and r["text"] == prefix and r["finish_reason"] == "stop",
          f"stop {stops[i]!r}: got {r['text']!r} ({r['finish_reason']}), want {prefix!r}")
    check(r["tokens"] == free[i]["tokens"][:len(r["tokens"])], f"stop {stops[i]!r}: tokens are not a prefix")

# ---- OpenAI batch round trip ----------------------------------------------
batch = [{"custom_id": f"c{i}", "method": "POST", "url": "/v1/completions",
          "body": {"model": "smol", "prompt": p, "max_tokens": 24, "ignore_eos": True, "temperature": 0}}
         for i, p in enumerate(prompts)]
batch[1]["body"]["stop"] = stops[1]
write(inp, batch)
check(run(["--model", model], inp, out) == 0, "batch run")
for i, r in enumerate(read(out)):
    check(set(r) == {"id", "custom_id", "response", "error"} and r["custom_id"] == f"c{i}" and r["error"] is None,
          f"batch line {i + 1} envelope: {r}")
    resp = r["response"]
    check(resp["status_code"] == 200 and isinstance(resp["request_id"], str), f"batch line {i + 1}: {resp}")
    body = resp["body"]
    check(body["object"] == "text_completion" and body["model"] == "smol" and isinstance(body["created"], int)
          and isinstance(body["id"], str), f"batch line {i + 1} body: {body}")
    c = body["choices"][0]
    want_text = free[i]["text"][:free[i]["text"].find(stops[1])] if i == 1 else free[i]["text"]
    check(c["index"] == 0 and c["text"] == want_text and c["logprobs"] is None, f"batch line {i + 1} text: {c}")
    check(c["finish_reason"] == ("stop" if i == 1 else "length"), f"batch line {i + 1} finish_reason: {c}")
    check(c["stop_reason"] == (stops[1] if i == 1 else None), f"batch line {i + 1} stop_reason: {c}")
    u = body["usage"]
    check(u["prompt_tokens"] == free[i]["usage"]["prompt_tokens"] and
          u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"], f"batch line {i + 1} usage: {u}")

# ---- 2 ranks, data=2, same file as 1 rank ---------------------------------
fx = os.path.join(src, "tests/fixtures/llama")
tok = os.path.join(fixtures, "tiny-gpt2/tokenizer.json")
texts = [c["text"] for c in corpus if c.get("text") and len(c["text"]) < 60][20:32]
write(inp, [{"id": i, "prompt": t, "max_tokens": 6 + i % 4, "stop": "e" if i % 3 == 0 else None,
             "temperature": 0.8 if i % 2 else 0, "seed": i} for i, t in enumerate(texts)])
out2 = os.path.join(tmp, "out2.jsonl")
common = ["--model", fx, "--tokenizer", tok, "--ignore-eos", "--max-batch", "4", "--token-budget", "16"]
check(run(common, inp, out) == 0, "1-rank fixture run")
check(run(common + ["--data", "2"], inp, out2, mpi=2) == 0, "2-rank data=2 run")
same = open(out).read() == open(out2).read()
check(same and len(read(out)) == len(texts), "data=2 output differs from 1 rank")
for plan in (["--tensor", "2"], ["--pipeline", "2"]):
    check(run(common + plan, inp, out2, mpi=2) == 0, f"2-rank {plan} run")
    check(open(out).read() == open(out2).read(), f"{plan} output differs from 1 rank")

# ---- exit status 2 when every line got an error record ---------------------
write(inp, ['{"id": 1, "prompt": "x"}', '{broken'])
check(run(["--model", fx], inp, out) == 2, "all-error job must exit 2")
check([r["line"] for r in read(out)] == [1, 2], "all-error job still writes its error records")

subprocess.run(["rm", "-rf", tmp])
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
