#!/usr/bin/env bash
# The presentation's demo (shared/seed), run as the talk runs it with `consul` spelled
# `muster` and the config files from tests/demo/: two servers and a client agent of dc1
# and a server of dc2, all on 127.0.0.1 with their own ports, started from config files
# with -bind=127.0.0.1. Each talk command runs as written and its answer is checked; the
# steps after the talk's (an external service, answers across datacenters, a datacenter
# going down) are marked. Needs curl, dig and jq; uses ports 8300-8602 and 9300-9600.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "demo: FAIL: $*" >&2; exit 1; }
for tool in curl dig jq; do command -v "$tool" >/dev/null || fail "$tool is not installed"; done
for port in 8500 8501 8502 8600 9500; do
  if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then fail "port $port is already in use"; fi
done
rm -rf /tmp/muster-demo
logs=$(mktemp -d)
stop_all() {
  local status=$?
  [ "$status" = 0 ] || tail -n 20 "$logs"/*.log >&2 || true
  pkill -f 'muster agent -config-file=tests/demo/' 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$logs"
  exit "$status"
}
trap stop_all EXIT

cargo build -q --release -p muster
PATH="$PWD/target/release:$PATH"

# Uruchamiamy Consul (the talk's three agents, plus the second datacenter its 9500 queries).
muster agent -config-file=tests/demo/server1-config/server1.json -bind=127.0.0.1 >"$logs/server1.log" 2>&1 &
muster agent -config-file=tests/demo/server2-config/server2.json -bind=127.0.0.1 >"$logs/server2.log" 2>&1 &
muster agent -config-file=tests/demo/client-config/client.json -bind=127.0.0.1 >"$logs/client.log" 2>&1 &
muster agent -config-file=tests/demo/dc2-config/server-dc2.json -bind=127.0.0.1 >"$logs/dc2.log" 2>&1 &
for _ in $(seq 1 150); do
  [ "$(curl -s http://localhost:8500/v1/status/leader | tr -d '"')" != "" ] \
    && [ "$(curl -s http://localhost:9500/v1/catalog/datacenters | jq length 2>/dev/null)" = 2 ] && break
  sleep 0.2
done

out=$(muster info)
echo "$out"
grep -q 'server = false' <<<"$out" || fail "info on the client does not say server = false"
grep -q 'known_servers = 2' <<<"$out" || fail "info on the client does not know two servers"

out=$(muster members)
echo "$out"
[ "$(grep -c ' alive ' <<<"$out")" = 3 ] || fail "members does not show three alive agents"
[ "$(grep -c ' server ' <<<"$out")" = 2 ] || fail "members does not show two servers"
[ "$(grep -c ' client ' <<<"$out")" = 1 ] || fail "members does not show the client"

out=$(curl -s http://localhost:8500/v1/agent/members | jq .[])
[ "$(jq -s length <<<"$out")" = 3 ] || fail "agent/members: $out"

out=$(curl -s http://localhost:8500/v1/catalog/datacenters | jq .[])
[ "$(echo $out)" = '"dc1" "dc2"' ] || fail "datacenters seen from dc1: $out"
out=$(curl -s http://localhost:9500/v1/catalog/datacenters | jq .[])
[ "$(echo $out)" = '"dc2" "dc1"' ] || fail "datacenters seen from dc2: $out"

# Zapytania: the TCP-checked instance is passing, the TTL one stays critical until reported.
for _ in $(seq 1 50); do
  [ "$(curl -s 'http://localhost:8500/v1/health/service/animal-service?passing' | jq length)" = 1 ] && break
  sleep 0.2
done
out=$(dig @127.0.0.1 -p 8600 animal-service.service.consul)
grep -qE 'IN[[:space:]]+A[[:space:]]+127.0.0.1' <<<"$out" || fail "no A record: $out"
out=$(dig @127.0.0.1 -p 8600 animal-service.service.consul SRV)
grep -qE 'SRV[[:space:]]+1 1 8500 client.node.dc1.consul.' <<<"$out" || fail "no SRV record: $out"
[ "$(grep -cE '^animal-service.*IN[[:space:]]+SRV' <<<"$out")" = 1 ] || fail "the critical instance is in DNS: $out"

out=$(curl 127.0.0.1:8500/v1/agent/services)
[ "$(jq -c 'keys' <<<"$out")" = '["animal-1","animal-2"]' ] || fail "agent/services: $out"
out=$(curl http://localhost:8500/v1/catalog/service/animal-service)
[ "$(jq length <<<"$out")" = 2 ] || fail "catalog/service: $out"
out=$(curl -s http://localhost:8500/v1/health/service/animal-service | jq .[])
[ "$(jq -s length <<<"$out")" = 2 ] || fail "health/service: $out"
out=$(curl 'http://localhost:8500/v1/health/service/animal-service?passing')
[ "$(jq -r '.[].Service.ID' <<<"$out")" = animal-1 ] || fail "health/service?passing: $out"

# Rejestracja serwisu z palca (from the demo folder, where the talk's JSON files are).
cd tests/demo
out=$(curl -H PUT http://localhost:8500/v1/agent/service/register -d @register_redis.json)
[ -z "$out" ] || fail "register redis answered '$out'"
out=$(curl -H PUT http://localhost:8500/v1/agent/service/register -d @register_health.json)
[ -z "$out" ] || fail "register health answered '$out'"
out=$(curl -s http://localhost:8500/v1/agent/services | jq .[])
jq -e 'select(.ID == "redis1") | .Port == 6379' <<<"$out" >/dev/null || fail "redis1 not on the agent: $out"
sleep 0.5
out=$(curl -s http://localhost:8500/v1/health/service/redis | jq .[])
[ "$(jq -r '.Checks[] | select(.CheckID == "service:redis1") | .Status' <<<"$out")" = critical ] \
  || fail "redis1's TTL check is not critical before its first report: $out"
out=$(curl http://localhost:8500/v1/agent/check/pass/service:redis1)
[ -z "$out" ] || fail "check/pass answered '$out'"
sleep 0.5
[ "$(curl -s 'http://localhost:8500/v1/health/service/redis?passing' | jq length)" = 1 ] \
  || fail "redis1 is not passing after check/pass"
out=$(curl -H PUT http://localhost:8500/v1/agent/service/deregister/redis1)
[ -z "$out" ] || fail "deregister answered '$out'"
sleep 0.5
[ "$(curl -s http://localhost:8500/v1/catalog/service/redis | jq length)" = 0 ] || fail "redis1 still in the catalog"
cd ../..

# After the talk: an external service through the catalog, answered by the client's DNS.
out=$(curl -s -X PUT http://localhost:8500/v1/catalog/register \
  -d '{"Node": "partner", "Address": "10.1.2.3", "Service": {"Service": "billing", "Port": 443}}')
[ "$out" = true ] || fail "catalog/register answered '$out'"
out=$(dig @127.0.0.1 -p 8600 billing.service.consul SRV)
grep -qE 'SRV[[:space:]]+1 1 443 partner.node.dc1.consul.' <<<"$out" || fail "external service not in DNS: $out"

# After the talk: dc2 answers for dc1 (HTTP ?dc= and DNS .dc1.consul); KV stays per datacenter.
out=$(curl -s 'http://localhost:9500/v1/catalog/service/animal-service?dc=dc1')
[ "$(jq length <<<"$out")" = 2 ] || fail "?dc=dc1 from dc2: $out"
out=$(dig @127.0.0.1 -p 9600 animal-service.service.dc1.consul SRV)
grep -qE 'SRV[[:space:]]+1 1 8500 client.node.dc1.consul.' <<<"$out" || fail ".dc1.consul from dc2: $out"
[ "$(curl -s -X PUT -d here http://localhost:8500/v1/kv/where)" = true ] || fail "KV write in dc1"
[ "$(curl -s -o /dev/null -w '%{http_code}' http://localhost:9500/v1/kv/where)" = 404 ] || fail "dc1's key in dc2"
[ "$(curl -s 'http://localhost:9500/v1/kv/where?dc=dc1&raw')" = here ] || fail "dc1's key through ?dc=dc1"
out=$(curl -s -w ' %{http_code}' 'http://localhost:8500/v1/kv/where?dc=dc9')
[ "$out" = 'No path to datacenter 500' ] || fail "unknown datacenter: $out"

# After the talk: dc2 goes down; dc1 says so at once and keeps working.
pkill -9 -f 'muster agent -config-file=tests/demo/dc2-config/'
start=$(date +%s%N)
out=$(curl -s -w ' %{http_code}' 'http://localhost:8500/v1/kv/where?dc=dc2')
took=$(( ($(date +%s%N) - start) / 1000000 ))
[ "${out##* }" = 500 ] || fail "a datacenter that is down answered: $out"
[ "$took" -lt 3000 ] || fail "a datacenter that is down took ${took} ms to fail"
[ "$(curl -s 'http://localhost:8500/v1/kv/where?raw')" = here ] || fail "dc1 stopped working"
echo "demo: every step answered as the talk shows (dc2 down failed in ${took} ms: ${out% *})"
