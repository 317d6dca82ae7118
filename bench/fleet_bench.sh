#!/usr/bin/env bash
# bench/fleet_bench.sh - runs codeq-bench-fleet against a fleet of its own: one
# codeq-dispatcher and two codeq-worker daemons from a build directory, with a Redis
# key prefix, request topic and worker ids unique to this run (as tests/fleet does),
# so that it never sees another run's state or another fleet's requests.
#
# Kafka (127.0.0.1:19092) and Redis (127.0.0.1:16379) are used as they are when they
# answer; otherwise scripts/services starts them in a scratch directory and they are
# stopped again at the end. Services that were already running are never stopped.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
build=$repo/build
workers=2
max_sessions=48
warm_pool=1
keep_logs=false
signed=false
encrypted=false
bench_args=()

usage() {
  cat <<EOF
usage: bench/fleet_bench.sh [--build DIR] [--workers N] [--max-sessions N] [--warm-pool N]
                            [--signed] [--encrypted] [--keep-logs]
                            [-- codeq-bench-fleet options...]

Starts one codeq-dispatcher and N codeq-worker daemons (default 2) from DIR/bin
(default build/bin), waits for the workers' heartbeats in Redis, runs
codeq-bench-fleet against them, stops them, and deletes the run's Kafka topics, worker
consumer groups and Redis keys. Options after -- go to the benchmark, e.g.
-- --runs 1000 --sessions 64 --duration 20 (see codeq-bench-fleet --help).

  --build DIR         build directory with bin/codeq-worker, bin/codeq-dispatcher,
                      bin/codeq-bench-fleet (default: $repo/build)
  --workers N         worker daemons (default 2)
  --max-sessions N    sessions per worker (default 48; the benchmark's sessions plus one
                      must fit in N x workers)
  --warm-pool N       pre-started sandboxes per worker (default 1: every pooled kernel
                      imports numpy, pandas and matplotlib, ~1.2 s of CPU on refill)
  --signed            a fleet with tenants: a keys file (codeq tenant, codeq key) for the
                      daemons, and every request signed with a tenant key
                      (docs/security.md); bench/auth_bench.sh compares it with keyless
  --encrypted         the daemons get a master key: what they keep in Redis (files,
                      states, stored replies) is sealed with AES-256-GCM (docs/security.md)
  --keep-logs         keep the daemons' logs even when the run succeeds
  -h, --help          this text

Kafka at 127.0.0.1:19092 and Redis at 127.0.0.1:16379 are started with scripts/services
(in \$CODEQ_SERVICES_DIR or /var/tmp/codeq-services, and stopped afterwards) only if they
do not answer. Needs root (real sandboxes).
EOF
}

while (($#)); do
  case $1 in
  --build) build=$2; shift 2 ;;
  --workers) workers=$2; shift 2 ;;
  --max-sessions) max_sessions=$2; shift 2 ;;
  --warm-pool) warm_pool=$2; shift 2 ;;
  --keep-logs) keep_logs=true; shift ;;
  --signed) signed=true; shift ;;
  --encrypted) encrypted=true; shift ;;
  -h | --help) usage; exit 0 ;;
  --) shift; bench_args=("$@"); break ;;
  *) echo "fleet_bench.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

bin=$(cd "$build" && pwd)/bin
for exe in codeq codeq-worker codeq-dispatcher codeq-bench-fleet; do
  if [[ ! -x $bin/$exe ]]; then
    echo "fleet_bench.sh: $bin/$exe is missing; build first (cmake --build $build)" >&2
    exit 1
  fi
done

kafka_port=19092
redis_port=16379
brokers=127.0.0.1:$kafka_port
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

run=$(head -c 4 /dev/urandom | od -An -tx1 | tr -d ' \n')
logs=$(mktemp -d "/tmp/codeq-fleet-bench-$run.XXXXXX")
services_dir=
pids=()
worker_ids=()
status=1

cleanup() {
  # The daemons drain on SIGTERM; only the processes this script started are signalled.
  for pid in "${pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    for _ in $(seq 1 300); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  # This run's topics, worker groups and Redis keys: a shared broker slows down as
  # partitions pile up. The dispatchers' group is this run's too (one per request topic).
  if ((${#worker_ids[@]})); then
    local topics=$CODEQ_REQUEST_TOPIC,$CODEQ_DLQ_TOPIC groups=codeq-dispatchers.$CODEQ_REQUEST_TOPIC
    for id in "${worker_ids[@]}"; do
      topics+=,codeq.worker.$id
      groups+=,codeq-worker-$id
    done
    "$bin/codeq-bench-fleet" --brokers "$brokers" --delete-topics "$topics" \
      --delete-groups "$groups" || true
    redis-cli -p $redis_port --scan --pattern "${CODEQ_REDIS_PREFIX}*" |
      xargs -r -n 500 redis-cli -p $redis_port del >/dev/null || true
  fi
  if [[ -n $services_dir ]]; then
    "$repo/scripts/services" down --dir "$services_dir" || true
  fi
  if [[ $status -eq 0 && $keep_logs == false ]]; then
    rm -rf "$logs"
  else
    echo "fleet_bench.sh: daemon logs in $logs" >&2
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if ! port_open $kafka_port || ! port_open $redis_port; then
  # scripts/services' own default directory: the Kafka jars it resolves stay cached there.
  services_dir=${CODEQ_SERVICES_DIR:-/var/tmp/codeq-services}
  echo "fleet_bench.sh: Kafka or Redis not answering; starting them in $services_dir"
  "$repo/scripts/services" up --dir "$services_dir"
fi

export CODEQ_BROKERS=$brokers
export CODEQ_REDIS=127.0.0.1:$redis_port
export CODEQ_REDIS_PREFIX=codeq:bench$run:
export CODEQ_REQUEST_TOPIC=codeq.requests.bench$run
export CODEQ_DLQ_TOPIC=codeq.dlq.bench$run
export CODEQ_LOG_LEVEL=info
if $signed; then
  # The daemons read the keys file; the benchmark (the C client) signs with the key.
  export CODEQ_KEYS_FILE=$logs/keys
  "$bin/codeq" tenant create bench --keys "$CODEQ_KEYS_FILE" 2>/dev/null
  (umask 077 && "$bin/codeq" key create bench --keys "$CODEQ_KEYS_FILE" >"$logs/credentials" \
    2>/dev/null)
fi
if $encrypted; then
  export CODEQ_MASTER_KEY_FILE=$logs/master.key
  (umask 077 && openssl rand -hex 32 >"$CODEQ_MASTER_KEY_FILE")
fi

for i in $(seq 1 "$workers"); do
  id=bench$i-$run
  worker_ids+=("$id")
  "$bin/codeq-worker" --worker-id "$id" --max-sessions "$max_sessions" \
    --warm-pool "$warm_pool" --heartbeat-ms 500 >"$logs/$id.log" 2>&1 &
  pids+=($!)
done

# A dispatcher routes only to workers whose heartbeat it sees: start it after them.
deadline=$((SECONDS + 120))
for id in "${worker_ids[@]}"; do
  until [[ $(redis-cli -p $redis_port exists "${CODEQ_REDIS_PREFIX}worker:$id") == 1 ]]; do
    if ((SECONDS > deadline)); then
      echo "fleet_bench.sh: worker $id sent no heartbeat in 120 s; its log:" >&2
      tail -n 20 "$logs/$id.log" >&2
      exit 1
    fi
    for pid in "${pids[@]}"; do
      if ! kill -0 "$pid" 2>/dev/null; then
        echo "fleet_bench.sh: a worker exited; the workers' logs:" >&2
        tail -n 20 "$logs"/*.log >&2
        exit 1
      fi
    done
    sleep 0.1
  done
done
"$bin/codeq-dispatcher" >"$logs/dispatcher.log" 2>&1 &
pids+=($!)

echo "fleet_bench.sh: dispatcher + ${#worker_ids[@]} workers (max $max_sessions sessions," \
  "warm pool $warm_pool each), request topic $CODEQ_REQUEST_TOPIC"
set +e
if $signed; then
  export CODEQ_CREDENTIALS=$logs/credentials
fi
"$bin/codeq-bench-fleet" --brokers "$brokers" --request-topic "$CODEQ_REQUEST_TOPIC" \
  "${bench_args[@]}"
status=$?
set -e
exit $status
