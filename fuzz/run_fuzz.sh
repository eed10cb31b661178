#!/usr/bin/env bash
# run_fuzz.sh BINARY CORPUS WORKDIR SECONDS: fuzzes BINARY for SECONDS on a scratch copy of the
# committed CORPUS (new inputs land in WORKDIR/corpus, crash files in WORKDIR). Exit status
# non-zero on any crash, sanitizer report, leak or timeout of one input.
set -euo pipefail
bin=$1 corpus=$2 work=$3 secs=$4
rm -rf "$work" && mkdir -p "$work/corpus"
cp -r "$corpus"/. "$work/corpus/"
# One core (-workers/-jobs unset); inputs up to 64 KiB; 10 s per input at most.
exec "$bin" -max_total_time="$secs" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
  -print_final_stats=1 -artifact_prefix="$work/" "$work/corpus"
