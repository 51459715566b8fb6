# Shared by the e2e test scripts (sourced): run_test NAME FUNCTION runs one test in its own
# output capture and counts it; a test fails by returning non-zero (`fail MESSAGE`) and skips
# with `skip REASON` (exit 77). ONLY (first script argument) selects tests by name substring.
passed=0 failed=0 skipped=0

run_test() {
  local name=$1 fn=$2 start out rc
  [[ -z ${ONLY:-} || $name == *"$ONLY"* ]] || return 0
  start=$(date +%s)
  out=$("$fn" 2>&1)
  rc=$?
  if ((rc == 77)); then
    skipped=$((skipped + 1)); echo "SKIP $name: ${out##*$'\n'}"
  elif ((rc == 0)); then
    passed=$((passed + 1)); echo "ok   $name ($(($(date +%s) - start)) s)"
  else
    failed=$((failed + 1)); echo "FAIL $name ($(($(date +%s) - start)) s)"; sed 's/^/     | /' <<<"$out" | tail -n 40
  fi
}

skip() { echo "$*"; exit 77; }
fail() { echo "$*"; exit 1; }
