#!/usr/bin/env bash
# The project's test command (README.md names it; .ci/run calls it). Installs the real peers the
# tests run against from Debian's packages, then checks formatting, lints and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
PACKAGES=(
  # Matroska oracles: ffprobe/ffmpeg, mkvinfo/mkvmerge
  ffmpeg mkvtoolnix
  # Quartz 2 (the schedule oracle) and a JDK to compile the oracle program
  libquartz2-java openjdk-17-jdk-headless tzdata
  # RTSP cameras: GStreamer's RTSP server through python3-gi
  python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-tools
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly
  # MQTT broker, and openssl for the test CA of the mutual-TLS (IoT Core) tests
  mosquitto openssl
  sqlite3
  # libfaketime: the agent's wall clock stepped, its monotonic clock left alone (clock_steps.rs)
  faketime
  # FUSE for the power-cut file system (tests/powercut, agent/tests/powercut_fs.rs)
  fuse3 libfuse3-3
  # A real browser for the page (agent/tests/http_export.rs), driven over WebDriver
  chromium chromium-driver
  # systemd-analyze verify/security and systemd-sysusers for the unit (tests/packaging/check.sh)
  systemd
)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The KVS ingest emulator (tests/kvs_emulator) verifies SigV4 with AWS's own botocore.
python3 -c 'import botocore' 2>/dev/null || python3 -m pip install -q botocore
# AWS Secrets Manager for the secrets tests (agent/tests/secrets_manager.rs).
python3 -c 'import moto' 2>/dev/null || python3 -m pip install -q "moto[server]"
# CloudWatch for the metrics test (agent/tests/cloudwatch_metrics.rs): LocalStack without Docker,
# pinned as ../shared/PEERS.md found it working (moto cannot answer the SDK's CBOR protocol).
python3 -c 'import localstack.runtime.main' 2>/dev/null || python3 -m pip install -q \
  "localstack-core[runtime]==4.13.1" pyopenssl==24.2.1 cryptography==43.0.3 "joserfc<1.1" \
  "service-identity<24.3" cbor2==5.6.5
# The Prometheus project's own text-format parser, the oracle of /metrics (agent/tests/http_api.rs).
python3 -c 'import prometheus_client' 2>/dev/null || python3 -m pip install -q prometheus-client
# The libfuse 3 binding of the power-cut file system (tests/powercut/powercut.py).
python3 -c 'import mfusepy' 2>/dev/null || python3 -m pip install -q mfusepy
# The real Greengrass IPC client, the oracle of the fake nucleus (tests/greengrass_ipc).
python3 -c 'import awsiot' 2>/dev/null || python3 -m pip install -q awsiotsdk

# Tests that need a peer fail (rather than skip) when it is missing under CI.
export CI="${CI:-true}"

cargo fmt --all --check
cargo clippy --locked --all-targets -- -D warnings
# The packaging: hadolint, the Dockerfile's release build and entrypoint, the systemd unit.
bash tests/packaging/check.sh
cargo test --locked --workspace
