#!/usr/bin/env bash
# Runs the README's three-server cluster block as written (tests/tests/readme.rs checks that
# every line of it is here) and checks the answers, then kills the leader and checks that a
# new one takes writes and the old one catches up on restart. Uses 127.0.0.1-3, ports 8500
# and 8300 on each.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "cluster: FAIL: $*" >&2; exit 1; }
for i in 1 2 3; do
  if (exec 3<>/dev/tcp/127.0.0.$i/8500) 2>/dev/null; then fail "127.0.0.$i:8500 is already in use"; fi
done
rm -rf /tmp/muster-1 /tmp/muster-2 /tmp/muster-3
stop_all() {
  local status=$?
  pkill -f 'muster agent -server -bootstrap-expect 3 -data-dir /tmp/muster-' 2>/dev/null || true
  wait 2>/dev/null || true
  exit "$status"
}
trap stop_all EXIT

cargo build --release -p muster
for i in 1 2 3; do
  ./target/release/muster agent -server -bootstrap-expect 3 -data-dir /tmp/muster-$i \
    -bind 127.0.0.$i -client 127.0.0.$i -node s$i -dns-port -1 \
    -retry-join 127.0.0.1 -retry-join 127.0.0.2 -retry-join 127.0.0.3 &
done
sleep 3
leader() { curl -sf "127.0.0.$1:8500/v1/status/leader" | tr -d '"'; }
for _ in $(seq 1 100); do [ -n "$(leader 1 || true)" ] && break; sleep 0.2; done
[ -n "$(leader 1)" ] || fail "no leader after 23 s"
peers=$(./target/release/muster operator raft list-peers -http-addr 127.0.0.1:8500)
echo "$peers"
[ "$(echo "$peers" | grep -c '127.0.0')" = 3 ] || fail "list-peers does not show three servers"
[ "$(echo "$peers" | grep -c leader)" = 1 ] || fail "list-peers does not show one leader"
[ "$(curl -s -X PUT 127.0.0.2:8500/v1/kv/greeting -d hello      # any server takes writes
)" = true ] || fail "the write through 127.0.0.2 was not acknowledged"
[ "$(curl -s '127.0.0.3:8500/v1/kv/greeting?raw&consistent'      # any server serves linearizable reads
)" = hello ] || fail "127.0.0.3 does not read the write back"

old=$(leader 1)
old_ip=${old%:*}
n=${old_ip##*.}
pkill -9 -f "data-dir /tmp/muster-$n " || fail "could not kill the leader"
other=$(( n % 3 + 1 ))
for _ in $(seq 1 100); do
  [ "$(curl -s -X PUT 127.0.0.$other:8500/v1/kv/after -d failover)" = true ] && break
  sleep 0.1
done
new=$(leader $other)
[ -n "$new" ] && [ "$new" != "$old" ] || fail "no new leader after killing $old (now: '$new')"
./target/release/muster agent -server -bootstrap-expect 3 -data-dir /tmp/muster-$n \
  -bind 127.0.0.$n -client 127.0.0.$n -node s$n -dns-port -1 \
  -retry-join 127.0.0.1 -retry-join 127.0.0.2 -retry-join 127.0.0.3 &
for _ in $(seq 1 100); do
  [ "$(curl -s "127.0.0.$n:8500/v1/kv/after?raw&stale")" = failover ] && break
  sleep 0.2
done
[ "$(curl -s "127.0.0.$n:8500/v1/kv/after?raw&stale")" = failover ] || fail "the restarted server did not catch up"
echo "cluster: OK (leader $old killed, $new took over, the old one caught up)"
