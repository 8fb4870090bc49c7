#!/usr/bin/env bash
# Runs the README's walkthrough exactly as written (each `run` line is a README line, and
# tests/tests/readme.rs checks they match) and checks what each step answers.
# Needs curl, dig and python3; uses the default ports 8500 and 8600.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "walkthrough: FAIL: $*" >&2; exit 1; }
for tool in curl dig python3; do command -v "$tool" >/dev/null || fail "$tool is not installed"; done
for port in 8500 8600; do
  if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then fail "port $port is already in use"; fi
done

log=$(mktemp)
# Started from a subshell so it is not a job of this shell: `kill %1` below must mean the web
# server, as it does in the README (where the agent runs in another terminal).
agent=$( (cargo run --release -p muster -- agent -dev >"$log" 2>&1 & echo $!) )
stop_agent() {
  local status=$?
  # Not a child of this shell, so `wait` cannot be used: poll until it is gone.
  kill "$agent" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$agent" 2>/dev/null || break; sleep 0.1; done
  rm -f "$log"
  exit "$status"
}
trap stop_agent EXIT
for _ in $(seq 1 600); do
  curl -sf http://127.0.0.1:8500/v1/status/leader >/dev/null 2>&1 && break
  kill -0 $agent 2>/dev/null || { cat "$log"; fail "the agent exited"; }
  sleep 0.5
done

out=$(curl -s -X PUT -d 'hello' http://127.0.0.1:8500/v1/kv/greeting)
[ "$out" = "true" ] || fail "PUT answered '$out'"
out=$(curl -s http://127.0.0.1:8500/v1/kv/greeting?raw)
[ "$out" = "hello" ] || fail "GET ?raw answered '$out'"

python3 -m http.server 9000 --bind 127.0.0.1 >/dev/null 2>&1 &
out=$(curl -s -X PUT -d '{"Name": "web", "Port": 9000, "Check": {"HTTP": "http://127.0.0.1:9000/", "Interval": "1s"}}' http://127.0.0.1:8500/v1/agent/service/register)
[ -z "$out" ] || fail "register answered '$out'"
sleep 2
out=$(dig @127.0.0.1 -p 8600 web.service.consul SRV)
grep -q 'status: NOERROR' <<<"$out" || fail "SRV while healthy: $out"
grep -qE 'SRV[[:space:]]+1 1 9000 ' <<<"$out" || fail "no SRV record for port 9000: $out"

kill %1
sleep 3
out=$(dig @127.0.0.1 -p 8600 web.service.consul SRV)
grep -q 'status: NXDOMAIN' <<<"$out" || fail "SRV after the check failed: $out"
echo "walkthrough: all steps answered as the README says"
