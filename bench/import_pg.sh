#!/usr/bin/env bash
# bench/import_pg.sh — `portico import` of the whole fixture set into PostgreSQL, for one or more
# binaries run alternately (the machine drifts): each load goes into a new database after a
# CHECKPOINT, so no load pays for the previous one's writes. Prints each load's summary line.
#
# Usage: bench/import_pg.sh [--rounds 3] BIN [BIN…]
#   (fixtures: $PORTICO_FIXTURES, default ../shared/fixtures/synthea-r4; database imp_bench,
#   dropped at the end)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
FIXTURES="${PORTICO_FIXTURES:-$HERE/../../shared/fixtures/synthea-r4}"
ROUNDS=3
if [ "${1:-}" = --rounds ]; then ROUNDS="$2"; shift 2; fi
[ $# -ge 1 ] || { sed -n '2,9p' "$0"; exit 2; }
[ -d "$FIXTURES" ] || { echo "bench/import_pg.sh: no fixtures at $FIXTURES" >&2; exit 2; }
PSQL=(psql -q -h 127.0.0.1 -U postgres -d postgres)
trap '"${PSQL[@]}" -c "DROP DATABASE IF EXISTS imp_bench" >/dev/null 2>&1 || true' EXIT
for round in $(seq 1 "$ROUNDS"); do
    for bin in "$@"; do
        "${PSQL[@]}" -c "DROP DATABASE IF EXISTS imp_bench" -c "CREATE DATABASE imp_bench" -c "CHECKPOINT" 2>/dev/null
        line=$("$bin" import --quiet --database-url postgres://postgres@127.0.0.1:5432/imp_bench "$FIXTURES" | grep imported)
        echo "round $round  $bin  $line"
    done
done
