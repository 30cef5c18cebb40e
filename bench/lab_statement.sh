# bench/lab_statement.sh — sourced by bench/body_in_row.sh, bench/page_shapes.sh and bench/lab_plans.sh, which time
# variants of the lab page's statement (`Observation?patient=…&category=laboratory`) with pgbench.
# Sets DB, PSQL, WORK, the patients of the latest bench/search run in table scratch_pids (N of
# them), the statement's parts (DRIVER, CHECK, LAB, COLS; fenced), HEAD (a pgbench script's first lines:
# pick a patient as :pid) and run_pgbench. SCRATCH_TABLES names the tables dropped on exit.
# Arguments of the sourcing script: [DATABASE] [PATHS_FILE] (see its usage).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DB="${1:-bench_bulk_x1}"
PATHS="${2:-$(ls -t "$HERE"/results/search-*/postgres/lab10.txt 2>/dev/null | head -n 1)}"
[ -f "$PATHS" ] || { echo "$(basename "$0"): no lab10.txt (run bench/search first)" >&2; exit 2; }
PSQL=(psql -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -U postgres -d "$DB")
SCRATCH_TABLES="scratch_pids${SCRATCH_TABLES:+, $SCRATCH_TABLES}"
WORK="$(mktemp -d)"
trap '"${PSQL[@]}" -c "DROP TABLE IF EXISTS $SCRATCH_TABLES" >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT

sed 's/.*patient=\([^&]*\)&.*/\1/' "$PATHS" | awk '{print NR-1 "\t" $0}' > "$WORK/pids.tsv"
N=$(wc -l < "$WORK/pids.tsv")
"${PSQL[@]}" -c "DROP TABLE IF EXISTS $SCRATCH_TABLES" \
    -c "CREATE TABLE scratch_pids (n int PRIMARY KEY, pid text)" \
    -c "\\copy scratch_pids FROM '$WORK/pids.tsv'"

# The parameter keys Portico hashes `Observation.patient` and `Observation.category` to.
P_PATIENT=158889378865114954
P_CATEGORY=-6676323212859927531
DRIVER="SELECT DISTINCT x.rkey FROM idx_reference x WHERE x.p = $P_PATIENT AND ((x.tid = :pid)) ORDER BY x.rkey"
# The category check on the row whose key is printf's argument.
LAB="EXISTS (SELECT 1 FROM idx_token x WHERE x.rkey = %s AND x.p = $P_CATEGORY AND ((x.code = 'laboratory')))"
# shellcheck disable=SC2059
CHECK="SELECT r.rkey FROM (SELECT d.rkey) r WHERE TRUE AND $(printf "$LAB" r.rkey) OFFSET 0"
COLS="r.rkey, r.rtype, r.id, r.version, r.lu_ms"
HEAD="\\set n random(0, $((N - 1)))
SELECT pid FROM scratch_pids WHERE n = :n \\gset"

# fenced LIMIT: the statement Portico sends for the page (README, "PostgreSQL query shapes").
fenced() {
    echo "SELECT $COLS, h.body FROM (SELECT $COLS, r.hid FROM ($DRIVER) d CROSS JOIN LATERAL ($CHECK) k CROSS JOIN LATERAL (SELECT $COLS, r.hid FROM resources r WHERE r.rkey = k.rkey AND r.rtype = 'Observation' AND r.deleted = 0 OFFSET 0) r ORDER BY d.rkey LIMIT $1) r JOIN resource_history h ON h.hid = r.hid ORDER BY r.rkey;"
}

# run_pgbench ROUNDS SECONDS NAME…: each $WORK/NAME.sql in turn, ROUNDS times; prints tps.
run_pgbench() {
    local rounds="$1" seconds="$2" round f tps
    shift 2
    for round in $(seq 1 "$rounds"); do
        for f in "$@"; do
            tps=$(pgbench -n -M prepared -c 8 -j 2 -T "$seconds" -f "$WORK/$f.sql" -h 127.0.0.1 -U postgres "$DB" 2>&1 | awk '/^tps = / {printf "%.0f", $3}')
            echo "round $round  $f  $tps tps"
        done
    done
}
