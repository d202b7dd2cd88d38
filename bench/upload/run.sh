#!/usr/bin/env bash
# Upload benchmark: the agent's PutMedia client against the KVS ingest emulator over loopback,
# pacing off for 1 and 8 streams next to `curl -T` sending the same bytes, then pacing on
# (the measured fragment rate must be <= 5/s). Needs python3 + botocore and curl.
# Usage: bench/upload/run.sh [--release]
set -euo pipefail
cd "$(dirname "$0")/../.."
profile=()
[ "${1:-}" = "--release" ] && profile=(--release)
cargo test "${profile[@]}" -p kvs-edge-agent --test uploader_bench -- --ignored --nocapture \
  upload_benchmark 2>&1 | grep -E "^(pacing|test result)|panicked"
