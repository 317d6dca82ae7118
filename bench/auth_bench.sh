#!/usr/bin/env bash
# bench/auth_bench.sh - what signed requests and encryption at rest cost
# (docs/security.md): the fleet's round trip (executeCode of "1" in a warm session,
# through the dispatcher and a worker) on a keyless fleet, on a fleet with tenants whose
# every request is signed (HMAC-SHA256 by the client, verified by the dispatcher and
# again by the worker), and on a signed fleet that also seals what it keeps in Redis
# (AES-256-GCM: the stored reply of every call), one after the other, side by side.
#
# usage: bench/auth_bench.sh [--build DIR] [--runs N]   (as root: real sandboxes)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
build=$(dirname "$here")/build
runs=500
while (($#)); do
  case $1 in
  --build) build=$2; shift 2 ;;
  --runs) runs=$2; shift 2 ;;
  -h | --help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "auth_bench.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
out=$(mktemp -d /tmp/codeq-auth-bench.XXXXXX)
trap 'rm -rf "$out"' EXIT
for mode in keyless signed encrypted; do
  flag=()
  [[ $mode == signed ]] && flag=(--signed)
  [[ $mode == encrypted ]] && flag=(--signed --encrypted)
  echo "== $mode"
  "$here/fleet_bench.sh" --build "$build" --workers 1 "${flag[@]}" -- --only fleet \
    --runs "$runs" | tee "$out/$mode"
done
echo
echo "== the fleet's round trip, side by side (ms)"
printf '%-10s %s\n' "" "$(grep -m1 -E '^series' "$out/keyless")"
printf '%-10s %s\n' keyless "$(grep -m1 -E '^fleet:' "$out/keyless")"
printf '%-10s %s\n' signed "$(grep -m1 -E '^fleet:' "$out/signed")"
printf '%-10s %s\n' "+at rest" "$(grep -m1 -E '^fleet:' "$out/encrypted")"
