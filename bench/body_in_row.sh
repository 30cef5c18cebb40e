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
SCRATCH_TABLES=scratch_res
# shellcheck source=bench/lab_statement.sh
source "$(dirname "${BASH_SOURCE[0]}")/lab_statement.sh"
"${PSQL[@]}" \
    -c "CREATE TABLE scratch_res AS SELECT $COLS, r.deleted, r.hid, h.body FROM resources r JOIN resource_history h ON h.hid = r.hid" \
    -c "ALTER TABLE scratch_res ADD PRIMARY KEY (rkey)" -c "VACUUM ANALYZE scratch_res"

for limit in 11 51; do
    cat > "$WORK/history$limit.sql" <<SQL
$HEAD
$(fenced "$limit")
SQL
    cat > "$WORK/inrow$limit.sql" <<SQL
$HEAD
SELECT $COLS, r.body FROM ($DRIVER) d CROSS JOIN LATERAL ($CHECK) k CROSS JOIN LATERAL (SELECT $COLS, r.body FROM scratch_res r WHERE r.rkey = k.rkey AND r.rtype = 'Observation' AND r.deleted = 0 OFFSET 0) r ORDER BY d.rkey LIMIT $limit;
SQL
done
cat > "$WORK/pick.sql" <<SQL
$HEAD
SQL
run_pgbench 2 6 pick history11 inrow11 history51 inrow51
