#!/usr/bin/env bash
# The migration fault harness's long run (tests/Vmm.Tests/EndToEnd/MigrationFaultScheduleTests.cs): COUNT seeded
# schedules from FIRST, each a live migration (plain, copying its disk, copying it onto a target disk that fills up,
# or over several connections) with a cut link, a killed source or target, or a stalled target at a random protocol
# step, the invariants checked after each. Prints how many passed, and each failure's seed (rerun one
# with VMM_FAULT_SEEDS=SEED:1 and the same filter).
# With HARNESS=replication (or both, the default: migration, then replication) the replication harness runs too
# (tests/Vmm.Tests/EndToEnd/ReplicationFaultScheduleTests.cs): replication, failover and handover with a cut link, a
# killed or stalled primary or standby at a random step.
# Usage: [FIRST=1] [COUNT=100] [HARNESS=migration|replication|both] bench/fault-schedules.sh   (after scripts/test.sh has built everything once)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
first=${FIRST:-1}
count=${COUNT:-100}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
dotnet build Vmm.sln -c Release -v quiet -nologo >/dev/null
started=$(date +%s)
set +e
case ${HARNESS:-both} in
    migration) filter="FullyQualifiedName~MigrationFaultScheduleTests" ;;
    replication) filter="FullyQualifiedName~ReplicationFaultScheduleTests" ;;
    *) filter="FullyQualifiedName~MigrationFaultScheduleTests|FullyQualifiedName~ReplicationFaultScheduleTests" ;;
esac
VMM_FAULT_SEEDS="$first:$count" dotnet test tests/Vmm.Tests -c Release --no-build \
    --filter "$filter" --logger "console;verbosity=detailed" >"$log" 2>&1
set -e
echo "schedules $first..$((first + count - 1)), $(($(date +%s) - started)) s on $(nproc) cores, $(date -u +%F)"
grep -oE '(CutLink|KillSource|KillTarget|StallTarget|KillPrimary|KillStandby|StallStandby|StallPrimary) at [A-Za-z]+' "$log" | sort | uniq -c | sort -rn | sed 's/^/  /'
{ grep -oE '(plain|copying its disk onto a target disk that fills up|copying its disk|over [0-9]+ connections|with a handover) \(VMM_FAULT' "$log" || true; } |
    sed 's/ (VMM_FAULT//; s/over [0-9]* connections/over several connections/' | sort | uniq -c | sort -rn | sed 's/^/  /'
grep -E '^\s+(Passed|Failed|Total tests|Passed:|Failed:)' "$log" | grep -E 'Total|Passed:|Failed:' || true
grep -E '^\s+Failed Vmm' "$log" | sed -E 's/.*\.([A-Za-z]+)FaultScheduleTests\..*seed: ([0-9]+).*/  failed: \1 seed \2/' || true
