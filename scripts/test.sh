#!/usr/bin/env bash
# Installs what is missing, builds with clang under AddressSanitizer + UBSan with warnings as
# errors, and runs every test (unit, integration, bounded fuzz runs). Last line:
# "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh || { echo "dependency install failed"; echo "0 passed, 1 failed"; exit 1; }
B=${AHA_TEST_BUILD:-build-test}
if [ ! -f "$B/build.ninja" ]; then
  CC=clang meson setup "$B" --buildtype=debugoptimized -Dwerror=true \
    -Db_sanitize=address,undefined -Db_lundef=false -Dfuzz=enabled >"$B.setup.log" 2>&1 ||
    { cat "$B.setup.log"; echo "0 passed, 1 failed"; exit 1; }
fi
if ! ninja -C "$B" >"$B.build.log" 2>&1; then
  tail -60 "$B.build.log"; echo "build failed"; echo "0 passed, 1 failed"; exit 1
fi
meson test -C "$B" --no-rebuild --print-errorlogs --num-processes "${AHA_TEST_JOBS:-2}" \
  --suite unit --suite integration --suite fuzz "$@"
rc=$?
python3 - "$B/meson-logs/testlog.json" <<'PY'
import json, sys
ok = bad = 0
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r.get("result") in ("OK", "EXPECTEDFAIL"): ok += 1
    elif r.get("result") == "SKIP": pass
    else: bad += 1; print("FAILED:", r.get("name"), r.get("result"))
print(f"{ok} passed, {bad} failed")
PY
exit $rc
