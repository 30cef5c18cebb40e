#!/usr/bin/env bash
# bench/body_in_row.sh — would keeping the current body in the `resources` row make the lab page's
# statement cheaper on PostgreSQL? Runs the statement Portico sends for
# `Observation?patient=…&category=laboratory` (a driven page, see README "PostgreSQL query shapes")
# against today's tables (body read from `resource_history`) and against a scratch copy of
# `resources` holding the current body, with pgbench, for `_count=10` (LIMIT 11) and the default
# page (LIMIT 51); each transaction picks one of the benchmark's patients. The scratch tables are
# dropped at the end.
#
# Usage: bench/body_in_row.sh [DATABASE] [PATHS_FILE]
#   DATABASE    a database loaded by bench/search (default bench_bulk_x1)
#   PATHS_FILE  a lab10.txt written by bench/search (default: the newest bench/results/search-*/postgres/lab10.txt)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DB="${1:-bench_bulk_x1}"
PATHS="${2:-$(ls -t "$HERE"/results/search-*/postgres/lab10.txt 2>/dev/null | head -n 1)}"
[ -f "$PATHS" ] || { echo "bench/body_in_row.sh: no lab10.txt (run bench/search first)" >&2; exit 2; }
PSQL=(psql -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -U postgres -d "$DB")
WORK="$(mktemp -d)"
trap '"${PSQL[@]}" -c "DROP TABLE IF EXISTS scratch_pids, scratch_res" >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT

sed 's/.*patient=\([^&]*\)&.*/\1/' "$PATHS" | awk '{print NR-1 "\t" $0}' > "$WORK/pids.tsv"
N=$(wc -l < "$WORK/pids.tsv")
"${PSQL[@]}" -c "DROP TABLE IF EXISTS scratch_pids, scratch_res" \
    -c "CREATE TABLE scratch_pids (n int PRIMARY KEY, pid text)" \
    -c "\\copy scratch_pids FROM '$WORK/pids.tsv'" \
    -c "CREATE TABLE scratch_res AS SELECT r.rkey, r.rtype, r.id, r.version, r.lu_ms, r.deleted, r.hid, h.body FROM resources r JOIN resource_history h ON h.hid = r.hid" \
    -c "ALTER TABLE scratch_res ADD PRIMARY KEY (rkey)" -c "VACUUM ANALYZE scratch_res"

# The parameter keys Portico hashes `Observation.patient` and `Observation.category` to.
P_PATIENT=158889378865114954
P_CATEGORY=-6676323212859927531
DRIVER="SELECT DISTINCT x.rkey FROM idx_reference x WHERE x.p = $P_PATIENT AND ((x.tid = :pid)) ORDER BY x.rkey"
CHECK="SELECT r.rkey FROM (SELECT d.rkey) r WHERE TRUE AND EXISTS (SELECT 1 FROM idx_token x WHERE x.rkey = r.rkey AND x.p = $P_CATEGORY AND ((x.code = 'laboratory'))) OFFSET 0"
for limit in 11 51; do
    cat > "$WORK/history$limit.sql" <<SQL
\\set n random(0, $((N - 1)))
SELECT pid FROM scratch_pids WHERE n = :n \\gset
SELECT r.rkey, r.rtype, r.id, r.version, r.lu_ms, h.body FROM (SELECT r.rkey, r.rtype, r.id, r.version, r.lu_ms, r.hid FROM ($DRIVER) d CROSS JOIN LATERAL ($CHECK) k CROSS JOIN LATERAL (SELECT r.rkey, r.rtype, r.id, r.version, r.lu_ms, r.hid FROM resources r WHERE r.rkey = k.rkey AND r.rtype = 'Observation' AND r.deleted = 0 OFFSET 0) r ORDER BY d.rkey LIMIT $limit) r JOIN resource_history h ON h.hid = r.hid ORDER BY r.rkey;
SQL
    cat > "$WORK/inrow$limit.sql" <<SQL
\\set n random(0, $((N - 1)))
SELECT pid FROM scratch_pids WHERE n = :n \\gset
SELECT r.rkey, r.rtype, r.id, r.version, r.lu_ms, r.body FROM ($DRIVER) d CROSS JOIN LATERAL ($CHECK) k CROSS JOIN LATERAL (SELECT r.rkey, r.rtype, r.id, r.version, r.lu_ms, r.body FROM scratch_res r WHERE r.rkey = k.rkey AND r.rtype = 'Observation' AND r.deleted = 0 OFFSET 0) r ORDER BY d.rkey LIMIT $limit;
SQL
done
cat > "$WORK/pick.sql" <<SQL
\\set n random(0, $((N - 1)))
SELECT pid FROM scratch_pids WHERE n = :n \\gset
SQL
for round in 1 2; do
    for f in pick history11 inrow11 history51 inrow51; do
        tps=$(pgbench -n -M prepared -c 8 -j 2 -T 6 -f "$WORK/$f.sql" -h 127.0.0.1 -U postgres "$DB" 2>&1 | awk '/^tps = / {printf "%.0f", $3}')
        echo "round $round  $f  $tps tps"
    done
done
