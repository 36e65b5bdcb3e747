#!/usr/bin/env bash
# deploy/docker/runtime-packages.sh maps executables to the packages owning the libraries they
# load (the runtime image installs exactly those). Checked against dpkg's own dependency data
# (dpkg-shlibdeps computed it when Debian built the package): for protoc-c, every package its
# package Depends on must be found, and nothing outside Depends and their Depends may be.
set -euo pipefail
root=${AHA_SOURCE_ROOT:?}
script=$root/deploy/docker/runtime-packages.sh
deps() { dpkg-query -W -f='${Depends}\n' "$1" | tr ',' '\n' | sed 's/(.*)//; s/|.*//; s/:any//; s/ //g' | grep -v '^$' | sort -u; }
got=$(sh "$script" /usr/bin/protoc-c)
echo "protoc-c needs: $(echo $got)"
direct=$(deps protobuf-c-compiler)
allowed=$( (echo "$direct"; for p in $direct; do deps "$p"; done) | sort -u)
for p in $direct; do grep -qx "$p" <<<"$got" || { echo "missing $p (protobuf-c-compiler Depends on it)"; exit 1; }; done
for p in $got; do grep -qx "$p" <<<"$allowed" || { echo "$p is not among the dependencies dpkg knows"; exit 1; }; done
sh "$script" "${AHA_BUILD_ROOT:?}/cli/aha-tool/aha-tool" >/dev/null
if sh "$script" /nonexistent/binary 2>/dev/null; then echo "accepted a missing file"; exit 1; fi
echo "ok"
