#!/usr/bin/env bash
# HTTP benchmark (agent/tests/http_bench.rs): export of an hour of 1080p25 4 Mbit/s to MP4 and
# Matroska by `kvs-edge-agent export` and over HTTP, next to `ffmpeg -f concat -c copy` of the
# same segment files (wall, CPU seconds, peak RSS); /api/v1/streams latency with 64 streams;
# idle RSS with the HTTP server on and off. Needs ffmpeg (libx264) and curl; the 1080p minute is
# encoded once into $BENCH_CACHE (default /tmp/kvs-bench-cache). About 2 GB of temporary space.
# Usage: bench/http/run.sh [--release]
set -euo pipefail
cd "$(dirname "$0")/../.."
profile=()
[ "${1:-}" = "--release" ] && profile=(--release)
cargo test "${profile[@]}" -p kvs-edge-agent --test http_bench -- --ignored --nocapture 2>&1 \
  | grep -E "^(export|api|idle|test result)|panicked"
