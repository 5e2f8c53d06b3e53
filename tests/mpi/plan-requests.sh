#!/usr/bin/env bash
# The 12 requests the plan tests run (plan-matrix.sh, cluster/netns-generate.sh):
# prompt lengths 3..25, every third one sampled (temperature 0.8, top_p 0.9)
# with its own seed, max_tokens 6..10.  JSONL on stdout.
awk 'BEGIN {
  for (i = 0; i < 12; i++) {
    n = 3 + (i * 7) % 23; s = "";
    for (j = 0; j < n; j++) s = s (j ? "," : "") (3 + (i * 131 + j * 17) % 500);
    extra = (i % 3 == 2) ? ", \"temperature\": 0.8, \"top_p\": 0.9, \"seed\": " i : "";
    printf "{\"id\": \"r%d\", \"tokens\": [%s], \"max_tokens\": %d%s}\n", i, s, 6 + i % 5, extra;
  } }'
