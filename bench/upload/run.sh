#!/usr/bin/env bash
# Upload benchmark: the agent's PutMedia client against the KVS ingest emulator over loopback.
#   throughput: pacing off for 1 and 8 streams next to `curl -T` sending the same bytes, then
#               pacing on (the measured fragment rate must be <= 5/s);
#   live:       one stream appended at real time (a 2 s fragment every 2 s) uploaded by one
#               long-lived session for BENCH_LIVE_SECS (default 300) seconds: commit -> PERSISTED
#               latency, PutMedia requests per hour, lost/duplicated (must be 0);
#   capped:     one stream under uploader.max_kbps caps of 1, 4 and 16 Mbit/s (achieved against
#               requested, at the emulator), then live for BENCH_LIVE_BACKLOG_SECS (60) with a
#               ten-minute backlog pending (commit -> PERSISTED).
# Needs python3 + botocore and curl.
# Usage: bench/upload/run.sh [--release] [--mode throughput|live|capped|all]   (or BENCH_MODE=...; default all)
set -euo pipefail
cd "$(dirname "$0")/../.."
profile=()
mode="${BENCH_MODE:-all}"
while [ $# -gt 0 ]; do
  case "$1" in
    --release) profile=(--release) ;;
    --mode) mode="$2"; shift ;;
    *) echo "usage: $0 [--release] [--mode throughput|live|capped|all]" >&2; exit 2 ;;
  esac
  shift
done
case "$mode" in
  throughput) tests=(upload_benchmark --exact) ;;
  live) tests=(live_upload_benchmark --exact) ;;
  capped) tests=(capped_upload_benchmark --exact) ;;
  all) tests=(--test-threads=1) ;;
  *) echo "unknown mode $mode" >&2; exit 2 ;;
esac
cargo test "${profile[@]}" -p kvs-edge-agent --test uploader_bench -- --ignored --nocapture \
  "${tests[@]}" 2>&1 | sed -E 's/^test [a-z_]+ \.\.\. //' | grep -E "^(pacing|live|capped|test result)|panicked"
