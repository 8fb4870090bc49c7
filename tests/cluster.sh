#!/usr/bin/env bash
# Runs the README's five-agent cluster blocks as written (tests/tests/readme.rs checks that
# every line of them is here) and checks the answers: three servers bootstrap through gossip,
# two more join by `muster join` and become Raft voters, an event reaches all five. Then it
# kills the leader (a new one takes writes, the old one catches up on restart), kills an
# agent (failed everywhere, serfHealth critical) and makes one leave (left everywhere,
# removed from Raft). Uses 127.0.0.1-5: ports 8500, 8300, 8301 and 8302 on each.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "cluster: FAIL: $*" >&2; exit 1; }
for i in 1 2 3 4 5; do
  if (exec 3<>/dev/tcp/127.0.0.$i/8500) 2>/dev/null; then fail "127.0.0.$i:8500 is already in use"; fi
done
rm -rf /tmp/muster-1 /tmp/muster-2 /tmp/muster-3 /tmp/muster-4 /tmp/muster-5
stop_all() {
  local status=$?
  pkill -f 'muster agent -server .*-data-dir /tmp/muster-' 2>/dev/null || true
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

# Two more agents, joined by gossip.
for i in 4 5; do
  ./target/release/muster agent -server -data-dir /tmp/muster-$i \
    -bind 127.0.0.$i -client 127.0.0.$i -node s$i -dns-port -1 &
done
sleep 2
for i in 4 5; do
  for _ in $(seq 1 100); do curl -sf "127.0.0.$i:8500/v1/agent/self" >/dev/null && break; sleep 0.1; done
done
./target/release/muster join -http-addr 127.0.0.4:8500 127.0.0.1
./target/release/muster join -http-addr 127.0.0.5:8500 127.0.0.2
alive_on() { ./target/release/muster members -http-addr "127.0.0.$1:8500" -status alive | grep -c '127.0.0' || true; }
for _ in $(seq 1 100); do [ "$(alive_on 3)" = 5 ] && break; sleep 0.1; done
./target/release/muster members -http-addr 127.0.0.3:8500
[ "$(alive_on 3)" = 5 ] || fail "127.0.0.3 does not see five alive members"
./target/release/muster event -http-addr 127.0.0.5:8500 -name deploy v2
curl -s 127.0.0.1:8500/v1/event/list
echo
for i in 1 2 3 4 5; do
  for _ in $(seq 1 50); do curl -s "127.0.0.$i:8500/v1/event/list" | grep -q '"deploy"' && break; sleep 0.1; done
  curl -s "127.0.0.$i:8500/v1/event/list" | grep -q '"deploy"' || fail "the event did not reach 127.0.0.$i"
done
voters() { curl -s 127.0.0.1:8500/v1/operator/raft/configuration | grep -o '"Voter": *true' | wc -l; }
for _ in $(seq 1 150); do [ "$(voters)" = 5 ] && break; sleep 0.2; done
[ "$(voters)" = 5 ] || fail "the joined servers did not become Raft voters"

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

# kill -9 of an agent: failed on every other one, serfHealth critical.
pkill -9 -f "data-dir /tmp/muster-5 " || fail "could not kill s5"
status_of() { curl -s "127.0.0.$1:8500/v1/agent/members" | tr -d ' \n' | grep -o "\"Name\":\"$2\"[^}]*}[^}]*}" | grep -o '"Status":[0-9]' | cut -d: -f2; }
for _ in $(seq 1 300); do
  all=1
  for i in 1 2 3 4; do [ "$(status_of $i s5)" = 4 ] || all=0; done
  [ $all = 1 ] && break
  sleep 0.1
done
[ $all = 1 ] || fail "s5 is not failed on every other agent within 30 s"
curl -s '127.0.0.1:8500/v1/health/node/s5' | grep -q '"critical"' || sleep 2
curl -s '127.0.0.1:8500/v1/health/node/s5' | grep -q '"critical"' || fail "s5's serfHealth is not critical"

# A graceful leave: left everywhere, and out of Raft.
./target/release/muster leave -http-addr 127.0.0.4:8500 | grep -q 'Graceful leave complete' || fail "leave failed"
for _ in $(seq 1 100); do [ "$(status_of 1 s4)" = 3 ] && break; sleep 0.1; done
[ "$(status_of 1 s4)" = 3 ] || fail "s4 is not left"
for _ in $(seq 1 100); do curl -s 127.0.0.1:8500/v1/operator/raft/configuration | grep -q '127.0.0.4' || break; sleep 0.2; done
curl -s 127.0.0.1:8500/v1/operator/raft/configuration | grep -q '127.0.0.4' && fail "s4 is still in Raft after leaving"
echo "cluster: OK (five agents by gossip; leader $old killed, $new took over, the old one caught up; s5 failed, s4 left)"
