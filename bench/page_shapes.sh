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
# shellcheck source=bench/lab_statement.sh
source "$(dirname "${BASH_SOURCE[0]}")/lab_statement.sh"
for limit in 11 51; do
    cat > "$WORK/fenced$limit.sql" <<SQL
$HEAD
$(fenced "$limit")
SQL
    # shellcheck disable=SC2059
    cat > "$WORK/flat$limit.sql" <<SQL
$HEAD
SELECT $COLS, h.body FROM ($DRIVER) d CROSS JOIN LATERAL (SELECT $COLS, r.hid FROM resources r WHERE r.rkey = d.rkey AND r.rtype = 'Observation' AND r.deleted = 0 OFFSET 0) r JOIN resource_history h ON h.hid = r.hid WHERE $(printf "$LAB" d.rkey) ORDER BY d.rkey LIMIT $limit;
SQL
done
run_pgbench 3 5 fenced11 flat11 fenced51 flat51
