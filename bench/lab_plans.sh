#!/usr/bin/env bash
# bench/lab_plans.sh — two questions about the lab page's statement on PostgreSQL
# (`Observation?patient=…&category=laboratory`, LIMIT 11 and 51), timed with pgbench:
#   1. does PostgreSQL re-plan it on every execution? The statement as Portico sends it under
#      plan_cache_mode auto (what the server runs), force_generic_plan and force_custom_plan,
#      beside a trivial statement (`one`: the floor of a pgbench transaction here);
#   2. what would a driver scoped to the patient buy? A scratch index on idx_token
#      (p, code, patient_id, rkey) drives from the patient's lab tokens, the patient reference
#      becoming the check (`patient11`/`patient51`). patient_id is the first patient whose
#      compartment holds the resource, so this form is exact only where that is the patient the
#      search names; it is measured here, not used by Portico.
# Usage: bench/lab_plans.sh [DATABASE] [PATHS_FILE] (as bench/page_shapes.sh). The scratch
# index and tables are dropped at the end.
# shellcheck source=bench/lab_statement.sh
source "$(dirname "${BASH_SOURCE[0]}")/lab_statement.sh"
trap '"${PSQL[@]}" -c "DROP INDEX IF EXISTS scratch_token_patient" -c "DROP TABLE IF EXISTS $SCRATCH_TABLES" >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT
for limit in 11 51; do
    printf '%s\n%s\n' "$HEAD" "$(fenced "$limit")" > "$WORK/fenced$limit.sql"
    # shellcheck disable=SC2059
    cat > "$WORK/patient$limit.sql" <<SQL
$HEAD
SELECT $COLS, h.body FROM (SELECT $COLS, r.hid FROM (SELECT DISTINCT t.rkey FROM idx_token t WHERE t.p = $P_CATEGORY AND t.code = 'laboratory' AND t.patient_id = :pid ORDER BY t.rkey) d CROSS JOIN LATERAL (SELECT r.rkey FROM (SELECT d.rkey) r WHERE EXISTS (SELECT 1 FROM idx_reference x WHERE x.rkey = r.rkey AND x.p = $P_PATIENT AND x.tid = :pid) OFFSET 0) k CROSS JOIN LATERAL (SELECT $COLS, r.hid FROM resources r WHERE r.rkey = k.rkey AND r.rtype = 'Observation' AND r.deleted = 0 OFFSET 0) r ORDER BY d.rkey LIMIT $limit) r JOIN resource_history h ON h.hid = r.hid ORDER BY r.rkey;
SQL
done
printf '%s\nSELECT 1;\n' "$HEAD" > "$WORK/one.sql"
for mode in auto force_generic_plan force_custom_plan; do
    echo "plan_cache_mode = $mode"
    PGOPTIONS="-c plan_cache_mode=$mode" run_pgbench 1 5 fenced11 fenced51 one
done
"${PSQL[@]}" -c "CREATE INDEX scratch_token_patient ON idx_token (p, code, patient_id, rkey)" -c "ANALYZE idx_token"
# Both forms must give the same page for every benchmark patient (here, where each lab result's
# first compartment patient is its subject).
for n in $(seq 0 $((N - 1))); do
    pid=$("${PSQL[@]}" -Atc "SELECT pid FROM scratch_pids WHERE n = $n")
    for form in fenced patient; do
        tail -n 1 "$WORK/${form}51.sql" | sed "s/:pid/'$pid'/g" | "${PSQL[@]}" -At | md5sum > "$WORK/$form.md5"
    done
    cmp -s "$WORK/fenced.md5" "$WORK/patient.md5" || { echo "patient $pid: the two forms differ" >&2; exit 1; }
done
echo "driver scoped to the patient ($N patients, same pages)"
run_pgbench 2 5 fenced11 patient11 fenced51 patient51
