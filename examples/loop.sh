#!/bin/sh
# loop.sh [N] [P]: N formulas run P at a time by `xargs -P`, each with --output-dir.
#
# Formula i counts to i (formulas/count.json.in); its results land in
# build/loop/count-i/ (record.json, _task_out.ware_id). Set FAIL_AT=i to
# make formula i fail: its job exits 1, `repeatr run` exits 20, nothing is
# written for it, the others still run, and xargs (so this script) fails.
#
# Environment: REPEATR (default "repeatr"), B (build dir), WH (warehouse dir).
# Needs build/rootfs.ware_id: run ./setup first (or `make build/rootfs.ware_id`).
set -eu
cd "$(dirname "$0")"
N=${1:-8}
P=${2:-4}
B=${B:-build}
WH=${WH:-$PWD/warehouse}
REPEATR=${REPEATR:-repeatr}
FAIL_AT=${FAIL_AT:-none}
export REPEATR

mkdir -p "$B/loop"
rootfs=$(cat "$B/rootfs.ware_id")
for i in $(seq 1 "$N"); do
    ./mkformula formulas/count.json.in "$B/loop/count-$i.json" \
        ROOTFS="$rootfs" WAREHOUSE="ca+file://$WH/" N="$i" FAIL_AT="$FAIL_AT"
done

# xargs exits 123 when any invocation exits 1-125 (repeatr: 20 = the job
# failed, 8 = cancelled, others = repeatr could not run it).
status=0
# --output-dir writes only on success and never deletes: clear old results first.
ls "$B"/loop/count-*.json | xargs -P "$P" -n 1 \
    sh -c 'rm -rf "${0%.json}" && $REPEATR run -q --output-dir "${0%.json}" "$0" > /dev/null' \
    || status=$?

for i in $(seq 1 "$N"); do
    if [ -f "$B/loop/count-$i/record.json" ]; then
        echo "count-$i: $(cat "$B/loop/count-$i/_task_out.ware_id")"
    else
        echo "count-$i: FAILED"
    fi
done
exit "$status"
