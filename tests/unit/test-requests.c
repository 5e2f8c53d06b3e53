/* Request lines and result lines (runtime/requests*.c, tokenizer-model.c):
 * both input formats, error records by line number, text prompts against
 * the ids of the `tokenizers` library (tests/fixtures/tokenizers), the GGUF
 * tokenizer of the default model against the same ids, and stop strings
 * (the text must be exactly the prefix before the first occurrence). */
#define _GNU_SOURCE
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "runtime/requests.h"
#include "runtime/tokenizer-model.h"

#define FIXTURES "tests/fixtures/tokenizers"
#define SMOLLM2_GGUF "models/smollm2-135m-instruct-q4_1.gguf"

static mr_tokenizer *load_json(const char *name) {
    char rel[256];
    snprintf(rel, sizeof rel, FIXTURES "/%s/tokenizer.json", name);
    mr_tokenizer *t = NULL;
    if (mr_tokenizer_load_json(&t, mr_test_src(rel)) != MR_OK) fprintf(stderr, "%s\n", mr_last_error());
    return t;
}

static json_t *parse_and_format(const char *line, const mr_tokenizer *tok, int lineno, mr_request_api api) {
    mr_request_defaults d = {.max_tokens = 7, .sample = {.top_p = 1}, .tok = tok};
    mr_request r = {.line = lineno, .api = api};
    json_t *o = NULL;
    if (mr_request_parse(&r, line, &d) == MR_OK) {
        mr_format_info info = {.input = "IN.jsonl", .model = "m", .created = 5};
        char *s = mr_request_format(&r, &info);
        json_error_t e;
        o = s ? json_loads(s, 0, &e) : NULL;
        free(s);
    }
    mr_request_clear(&r);
    return o;
}

/* An error record for `line` whose message names IN.jsonl:LINE and `want`. */
static void want_error(const char *line, const mr_tokenizer *tok, mr_request_api api, const char *want) {
    json_t *o = parse_and_format(line, tok, 7, api);
    CHECK(o != NULL, "no result line for %s", line);
    if (!o) return;
    const char *msg;
    if (api == MR_API_COMPLETIONS || json_object_get(o, "custom_id")) {
        msg = json_string_value(json_object_get(o, "error"));
        json_t *resp = json_object_get(o, "response");
        CHECK(json_integer_value(json_object_get(resp, "status_code")) == 400, "%s: status_code not 400", line);
        CHECK(json_is_null(json_object_get(resp, "body")), "%s: error record with a body", line);
    } else {
        msg = json_string_value(json_object_get(json_object_get(o, "error"), "message"));
        CHECK(json_integer_value(json_object_get(o, "line")) == 7, "%s: line number missing", line);
    }
    CHECK(msg && !strncmp(msg, "IN.jsonl:7: ", 12) && mr_test_contains(msg, want), "%s: want an error '%s', got %s",
          line, want, msg ? msg : "(none)");
    json_decref(o);
}

static void error_records(const mr_tokenizer *tok) {
    const mr_request_api N = MR_API_NATIVE, C = MR_API_COMPLETIONS;
    want_error("{\"id\": \"a\", \"tokens\": [1, 2", tok, N, "invalid JSON");
    want_error("{\"id\": \"a\", \"tokens\": [1, 2", tok, C, "invalid JSON"); /* answered in the file's format */
    want_error("[1, 2]", tok, N, "expected a JSON object");
    want_error("{\"id\": \"a\"}", tok, N, "missing \"prompt\"");
    want_error("{\"id\": \"a\", \"prompt\": 5}", tok, N, "\"prompt\" must be a string");
    want_error("{\"id\": \"a\", \"tokens\": \"x\"}", tok, N, "\"tokens\" must be a list");
    want_error("{\"id\": \"a\", \"tokens\": [1, -3]}", tok, N, "\"tokens\"[1] is not a token id");
    want_error("{\"id\": \"a\", \"prompt\": \"x\", \"tokens\": [1]}", tok, N, "not both");
    want_error("{\"id\": \"a\", \"prompt\": [\"x\", \"y\"]}", tok, N, "one prompt per line");
    want_error("{\"id\": \"a\", \"prompt\": \"x\", \"max_tokens\": 0}", tok, N, "max_tokens");
    want_error("{\"id\": \"a\", \"prompt\": \"x\", \"temperature\": \"hot\"}", tok, N, "temperature");
    want_error("{\"id\": \"a\", \"prompt\": \"x\", \"stop\": 3}", tok, N, "\"stop\" must be");
    want_error("{\"id\": \"a\", \"prompt\": \"x\", \"stop\": [\"\"]}", tok, N, "empty");
    want_error("{\"id\": \"a\", \"prompt\": \"x\"}", NULL, N, "no tokenizer");
    want_error("{\"id\": \"a\", \"tokens\": [1], \"stop\": \".\"}", NULL, N, "need a tokenizer");
    want_error("{\"custom_id\": \"c\", \"method\": \"POST\", \"url\": \"/v1/embeddings\", \"body\": {}}", tok, N,
               "URL /v1/embeddings is not supported");
    want_error("{\"method\": \"POST\", \"url\": \"/v1/completions\", \"body\": {\"prompt\": \"x\"}}", tok, N,
               "custom_id");
    want_error("{\"custom_id\": \"c\", \"url\": \"/v1/completions\", \"body\": {\"model\": \"m\"}}", tok, N,
               "body.prompt");
    want_error("{\"custom_id\": \"c\", \"url\": \"/v1/completions\", \"body\": {\"prompt\": \"x\", \"n\": 2}}", tok, N,
               "body.n");
    want_error("{\"custom_id\": \"c\", \"url\": \"/v1/completions\", \"body\": {\"prompt\": \"x\", \"stream\": true}}",
               tok, N, "stream");
    want_error("{\"custom_id\": \"c\", \"method\": \"GET\", \"url\": \"/v1/completions\", \"body\": {\"prompt\": \"x\"}}",
               tok, N, "POST");
}

/* Parsed fields of good lines in both formats. */
static void good_lines(const mr_tokenizer *tok) {
    mr_request_defaults d = {.max_tokens = 7, .sample = {.top_p = 1}, .tok = tok};
    mr_request r = {.line = 3};
    const char *native = "{\"id\": 4, \"prompt\": \"Hello world\", \"max_tokens\": 3, \"temperature\": 0.5, "
                         "\"top_p\": 0.9, \"top_k\": 5, \"seed\": 11, \"stop\": [\"a\", \"bc\"], "
                         "\"stop_token_ids\": [9], \"ignore_eos\": true}";
    CHECK(mr_request_parse(&r, native, &d) == MR_OK && r.finish == MR_FINISH_NONE, "native: %s",
          r.error ? r.error : mr_last_error());
    CHECK(r.api == MR_API_NATIVE && !strcmp(r.id_json, "4") && r.max_tokens == 3 && r.sample.top_k == 5 &&
              r.sample.seed == 11 && r.ignore_eos && r.n_stop_ids == 1 && r.stop_ids[0] == 9 && r.n_stop == 2 &&
              !strcmp(r.stop[1], "bc") && r.sample.temperature == 0.5f && r.sample.top_p == 0.9f,
          "native fields parsed wrongly");
    mr_request_clear(&r);
    r = (mr_request){.line = 4};
    const char *batch = "{\"custom_id\": \"req-1\", \"method\": \"POST\", \"url\": \"/v1/completions\", \"body\": "
                        "{\"model\": \"smol\", \"prompt\": \"Hello\", \"max_tokens\": 2, \"stop\": \"x\", "
                        "\"top_k\": -1, \"logprobs\": null}}";
    CHECK(mr_request_parse(&r, batch, &d) == MR_OK && r.finish == MR_FINISH_NONE, "batch: %s",
          r.error ? r.error : mr_last_error());
    CHECK(r.api == MR_API_COMPLETIONS && !strcmp(r.id_json, "\"req-1\"") && !strcmp(r.model, "smol") &&
              r.max_tokens == 2 && r.n_stop == 1 && r.sample.top_k == 0 && r.n_prompt > 0,
          "batch fields parsed wrongly");
    /* A finished request in the batch output format, field by field. */
    r.out = malloc(2 * sizeof(int32_t));
    r.out[0] = 1, r.out[1] = 2, r.n_out = 2;
    r.text = strdup("hi");
    r.n_text = 2;
    r.finish = MR_FINISH_STOP;
    r.stop_hit = 1;
    mr_format_info info = {.input = "IN.jsonl", .model = "default", .created = 1700000000};
    char *s = mr_request_format(&r, &info);
    json_error_t e;
    json_t *o = s ? json_loads(s, 0, &e) : NULL;
    json_t *resp = json_object_get(o, "response"), *body = json_object_get(resp, "body");
    json_t *c0 = json_array_get(json_object_get(body, "choices"), 0), *u = json_object_get(body, "usage");
    CHECK(o && json_is_string(json_object_get(o, "id")) &&
              !strcmp(json_string_value(json_object_get(o, "custom_id")), "req-1") &&
              json_is_null(json_object_get(o, "error")) &&
              json_integer_value(json_object_get(resp, "status_code")) == 200 &&
              json_is_string(json_object_get(resp, "request_id")),
          "batch envelope: %s", s);
    CHECK(!strcmp(json_string_value(json_object_get(body, "object")), "text_completion") &&
              !strcmp(json_string_value(json_object_get(body, "model")), "smol") &&
              json_integer_value(json_object_get(body, "created")) == 1700000000 &&
              json_is_string(json_object_get(body, "id")),
          "completion object: %s", s);
    CHECK(c0 && json_integer_value(json_object_get(c0, "index")) == 0 &&
              !strcmp(json_string_value(json_object_get(c0, "text")), "hi") &&
              !strcmp(json_string_value(json_object_get(c0, "finish_reason")), "stop") &&
              !strcmp(json_string_value(json_object_get(c0, "stop_reason")), "x") &&
              json_is_null(json_object_get(c0, "logprobs")),
          "choice: %s", s);
    CHECK(json_integer_value(json_object_get(u, "prompt_tokens")) == r.n_prompt &&
              json_integer_value(json_object_get(u, "completion_tokens")) == 2 &&
              json_integer_value(json_object_get(u, "total_tokens")) == r.n_prompt + 2,
          "usage: %s", s);
    json_decref(o);
    free(s);
    mr_request_clear(&r);
}

/* Corpus texts as "prompt" lines give exactly the ids (with special tokens:
 * what add_special_tokens=True gives) that `tokenizers` gave. */
static int prompt_ids(const char *name, const mr_tokenizer *tok) {
    FILE *fc = fopen(mr_test_src(FIXTURES "/corpus.jsonl"), "r");
    char rel[256];
    snprintf(rel, sizeof rel, FIXTURES "/%s/expected.jsonl", name);
    FILE *fe = fopen(mr_test_src(rel), "r");
    CHECK(fc && fe, "cannot open the %s fixtures", name);
    if (!fc || !fe) return 0;
    char *lc = NULL, *le = NULL;
    size_t cc = 0, ce = 0;
    int n = 0, bad = 0, checked = 0;
    mr_request_defaults d = {.max_tokens = 1, .sample = {.top_p = 1}, .tok = tok};
    while (getline(&lc, &cc, fc) > 0 && getline(&le, &ce, fe) > 0) {
        json_error_t e;
        json_t *c = json_loads(lc, 0, &e), *x = json_loads(le, 0, &e);
        if (!json_object_get(c, "text")) { /* raw bytes ("hex"): JSON cannot carry them */
            json_decref(c);
            json_decref(x);
            n++;
            continue;
        }
        json_t *line = json_object();
        json_object_set(line, "prompt", json_object_get(c, "text"));
        char *s = json_dumps(line, JSON_COMPACT);
        mr_request r = {.line = n + 1};
        checked++;
        json_t *want = json_object_get(x, "ids_special");
        int ok = s && mr_request_parse(&r, s, &d) == MR_OK && r.finish != MR_FINISH_ERROR &&
                 (size_t)r.n_prompt == json_array_size(want);
        for (int i = 0; ok && i < r.n_prompt; i++) ok = r.prompt[i] == json_integer_value(json_array_get(want, i));
        if (!ok && bad++ < 3) fprintf(stderr, "%s: corpus line %d: prompt ids differ from tokenizers'\n", name, n + 1);
        n++;
        mr_request_clear(&r);
        free(s);
        json_decref(line);
        json_decref(c);
        json_decref(x);
    }
    CHECK(bad == 0 && checked > 250, "%s: %d of %d prompts tokenized differently", name, bad, checked);
    printf("%s: %d prompts give the ids of tokenizers\n", name, checked);
    free(lc);
    free(le);
    fclose(fc);
    fclose(fe);
    return n;
}

/* Push the ids of `text` one by one with a stop string taken from its
 * middle: the text must stop right before the first occurrence. */
static void stop_strings(const mr_tokenizer *tok) {
    const char *texts[] = {"The quick brown fox jumps over the lazy dog. The dog sleeps; the fox runs away.",
                           "Hello world, hello again world!\n\nAnd a last line of text here."};
    int checked = 0;
    for (int k = 0; k < 2; k++) {
        int32_t *ids = NULL;
        int n = 0;
        CHECK(mr_tokenizer_encode(tok, texts[k], strlen(texts[k]), 0, &ids, &n) == MR_OK, "encode");
        size_t len = strlen(texts[k]);
        for (size_t at = 1; at + 3 < len; at += 5) {
            for (size_t sl = 1; sl <= 7 && at + sl <= len; sl += 3) {
                char stop[16];
                memcpy(stop, texts[k] + at, sl);
                stop[sl] = 0;
                size_t want = (size_t)(strstr(texts[k], stop) - texts[k]);
                mr_request r = {0};
                r.stop = malloc(2 * sizeof(char *));
                r.stop[0] = strdup("\x01never");
                r.stop[1] = strdup(stop);
                r.n_stop = 2;
                mr_tokenizer_stream_init(&r.stream, tok, 1);
                int i = 0;
                for (; i < n && r.finish == MR_FINISH_NONE; i++) mr_request_text_push(&r, tok, ids[i]);
                mr_request_text_finish(&r, tok);
                CHECK(r.finish == MR_FINISH_STOP && r.stop_hit == 2 && r.n_text == want &&
                          !memcmp(r.text, texts[k], want),
                      "stop '%s' in text %d: got %zu bytes '%s', want %zu", stop, k, r.n_text, r.text ? r.text : "",
                      want);
                mr_request_clear(&r);
                checked++;
            }
        }
        /* No stop string: the whole text comes back. */
        mr_request r = {0};
        mr_tokenizer_stream_init(&r.stream, tok, 1);
        for (int i = 0; i < n; i++) mr_request_text_push(&r, tok, ids[i]);
        mr_request_text_finish(&r, tok);
        CHECK(r.finish == MR_FINISH_NONE && r.n_text == len && !memcmp(r.text, texts[k], len), "full text differs");
        mr_request_clear(&r);
        free(ids);
    }
    printf("stop strings: %d cases\n", checked);
}

int main(void) {
    mr_tokenizer *tiny = load_json("tiny-gpt2"), *smol = load_json("smollm2");
    CHECK(tiny && smol, "tokenizer fixtures");
    if (!tiny || !smol) return mr_test_summary();
    error_records(tiny);
    good_lines(tiny);
    prompt_ids("smollm2", smol);
    prompt_ids("tiny-gpt2", tiny);
    stop_strings(smol);
    stop_strings(tiny);
    /* The default model's GGUF tokenizer gives the ids of tokenizer.json. */
    const char *gguf = mr_test_src(SMOLLM2_GGUF);
    FILE *f = fopen(gguf, "rb");
    CHECK(f != NULL, "%s is missing: run scripts/setup.sh", gguf);
    if (f) {
        fclose(f);
        mr_tokenizer *g = NULL;
        CHECK(mr_tokenizer_load_for_model(&g, gguf, NULL) == MR_OK && g, "GGUF tokenizer: %s", mr_last_error());
        if (g) prompt_ids("smollm2", g);
        mr_tokenizer_free(g);
    }
    /* A HF folder without tokenizer.json: no tokenizer, no error. */
    mr_tokenizer *none = (mr_tokenizer *)1;
    CHECK(mr_tokenizer_load_for_model(&none, mr_test_src("tests/fixtures/llama"), NULL) == MR_OK && !none,
          "fixture folder without tokenizer.json");
    mr_tokenizer *bad = NULL;
    CHECK(mr_tokenizer_load_for_model(&bad, mr_test_src("tests/fixtures/llama"), "/nonexistent/tokenizer.json") !=
                  MR_OK && mr_test_contains(mr_last_error(), "/nonexistent/tokenizer.json"),
          "a missing --tokenizer file is an error naming it: %s", mr_last_error());
    mr_tokenizer_free(tiny);
    mr_tokenizer_free(smol);
    return mr_test_summary();
}
