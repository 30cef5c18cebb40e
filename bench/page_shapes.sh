#!/usr/bin/env bash
# bench/page_shapes.sh — two shapes of the lab page's statement on PostgreSQL, timed with pgbench:
#   fenced  what Portico sends today for `Observation?patient=…&category=laboratory` (README,
#           "PostgreSQL query shapes"): the category check in a LATERAL subquery fenced with
#           OFFSET 0, the resources row in another, the bodies joined after the LIMIT;
#   flat    one level: the check as a WHERE EXISTS on the driver's rkey, the resources row and its
#           body joined before the LIMIT, ORDER BY the driver's rkey.
# Both return the same rows. Each transaction picks one of the benchmark's patients; `_count=10`
# (LIMIT 11) and the default page (LIMIT 51), alternated over three rounds.
#
# Usage: bench/page_shapes.sh [DATABASE] [PATHS_FILE]
#   DATABASE    a database loaded by bench/search (default bench_bulk_x1)
#   PATHS_FILE  a lab10.txt written by bench/search (default: the newest bench/results/search-*/postgres/lab10.txt)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DB="${1:-bench_bulk_x1}"
PATHS="${2:-$(ls -t "$HERE"/results/search-*/postgres/lab10.txt 2>/dev/null | head -n 1)}"
[ -f "$PATHS" ] || { echo "bench/page_shapes.sh: no lab10.txt (run bench/search first)" >&2; exit 2; }
PSQL=(psql -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -U postgres -d "$DB")
WORK="$(mktemp -d)"
trap '"${PSQL[@]}" -c "DROP TABLE IF EXISTS scratch_pids" >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT

sed 's/.*patient=\([^&]*\)&.*/\1/' "$PATHS" | awk '{print NR-1 "\t" $0}' > "$WORK/pids.tsv"
N=$(wc -l < "$WORK/pids.tsv")
"${PSQL[@]}" -c "DROP TABLE IF EXISTS scratch_pids" \
    -c "CREATE TABLE scratch_pids (n int PRIMARY KEY, pid text)" \
    -c "\\copy scratch_pids FROM '$WORK/pids.tsv'"

# The parameter keys Portico hashes `Observation.patient` and `Observation.category` to.
P_PATIENT=158889378865114954
P_CATEGORY=-6676323212859927531
DRIVER="SELECT DISTINCT x.rkey FROM idx_reference x WHERE x.p = $P_PATIENT AND ((x.tid = :pid)) ORDER BY x.rkey"
LAB="EXISTS (SELECT 1 FROM idx_token x WHERE x.rkey = %s AND x.p = $P_CATEGORY AND ((x.code = 'laboratory')))"
# shellcheck disable=SC2059
CHECK="SELECT r.rkey FROM (SELECT d.rkey) r WHERE TRUE AND $(printf "$LAB" r.rkey) OFFSET 0"
COLS="r.rkey, r.rtype, r.id, r.version, r.lu_ms"
HEAD="\\set n random(0, $((N - 1)))
SELECT pid FROM scratch_pids WHERE n = :n \\gset"
for limit in 11 51; do
    cat > "$WORK/fenced$limit.sql" <<SQL
$HEAD
SELECT $COLS, h.body FROM (SELECT $COLS, r.hid FROM ($DRIVER) d CROSS JOIN LATERAL ($CHECK) k CROSS JOIN LATERAL (SELECT $COLS, r.hid FROM resources r WHERE r.rkey = k.rkey AND r.rtype = 'Observation' AND r.deleted = 0 OFFSET 0) r ORDER BY d.rkey LIMIT $limit) r JOIN resource_history h ON h.hid = r.hid ORDER BY r.rkey;
SQL
    # shellcheck disable=SC2059
    cat > "$WORK/flat$limit.sql" <<SQL
$HEAD
SELECT $COLS, h.body FROM ($DRIVER) d CROSS JOIN LATERAL (SELECT $COLS, r.hid FROM resources r WHERE r.rkey = d.rkey AND r.rtype = 'Observation' AND r.deleted = 0 OFFSET 0) r JOIN resource_history h ON h.hid = r.hid WHERE $(printf "$LAB" d.rkey) ORDER BY d.rkey LIMIT $limit;
SQL
done
for round in 1 2 3; do
    for f in fenced11 flat11 fenced51 flat51; do
        tps=$(pgbench -n -M prepared -c 8 -j 2 -T 5 -f "$WORK/$f.sql" -h 127.0.0.1 -U postgres "$DB" 2>&1 | awk '/^tps = / {printf "%.0f", $3}')
        echo "round $round  $f  $tps tps"
    done
done
