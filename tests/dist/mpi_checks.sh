#!/usr/bin/env bash
# Runs tests/dist/mpi_check.cpp's checks with two ranks: mpi_checks.sh CHECK_BINARY MPIEXEC WORK_DIR.
# stall and die must end the job with an error, quickly, rather than hang.
set -uo pipefail
binary=$1 mpiexec=$2 work=$3
rm -rf "$work" && mkdir -p "$work"
# Containers and CI often run as root, which OpenMPI refuses unless told.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
launch() { timeout 120 "$mpiexec" --oversubscribe -np 2 -x OMP_NUM_THREADS=1 -x MOTE_DIST_TIMEOUT_S "$@"; }
failed=0

for check in train buckets disagree; do
  export MOTE_DIST_TIMEOUT_S=60
  log="$work/$check.log"
  if launch "$binary" "$check" "$work/$check" >"$log" 2>&1 && grep -q "^ok: $check" "$log"; then
    grep "^ok: " "$log"
  else
    echo "FAILED: $check"; cat "$log"; failed=1
  fi
done

# A stalled peer: the waiting rank gives up after MOTE_DIST_TIMEOUT_S and names the call it waited on.
export MOTE_DIST_TIMEOUT_S=2
log="$work/stall.log"
start=$(date +%s)
launch "$binary" stall "$work/stall" >"$log" 2>&1
rc=$? elapsed=$(( $(date +%s) - start ))
if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && [ "$elapsed" -lt 30 ] && grep -q "waited 2 s for" "$log"; then
  echo "ok: stall: exit $rc after ${elapsed} s: $(grep -m1 'waited 2 s for' "$log")"
else
  echo "FAILED: stall (exit $rc after ${elapsed} s)"; cat "$log"; failed=1
fi

# A dead peer: the launcher ends the job with an error.
export MOTE_DIST_TIMEOUT_S=60
log="$work/die.log"
start=$(date +%s)
launch "$binary" die "$work/die" >"$log" 2>&1
rc=$? elapsed=$(( $(date +%s) - start ))
if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && [ "$elapsed" -lt 60 ]; then
  echo "ok: die: exit $rc after ${elapsed} s"
else
  echo "FAILED: die (exit $rc after ${elapsed} s)"; cat "$log"; failed=1
fi
exit "$failed"
