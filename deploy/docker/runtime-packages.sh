#!/bin/sh
# Prints the Debian/Ubuntu packages that own the shared libraries the given executables load,
# one per line, sorted. The runtime image installs exactly these, so it carries no build tools
# and no library a binary does not use, and the list follows the distribution's package names
# (libgrpc29 on Debian 12, libgrpc29t64 on Ubuntu 24.04) without being written by hand.
# Libraries no package owns (a toolkit copied in by hand) are an error: the image would lack them.
set -eu
[ "$#" -gt 0 ] || { echo "usage: runtime-packages.sh EXECUTABLE..." >&2; exit 2; }
for exe in "$@"; do
  [ -f "$exe" ] || { echo "runtime-packages.sh: $exe: no such file" >&2; exit 1; }
done
libs=$(for exe in "$@"; do
  # libcuda and libnvidia-ml come from the host driver (the NVIDIA container toolkit mounts
  # them), never from the image.
  ldd "$exe" | awk '$1 ~ /^lib(cuda|nvidia-ml)\.so/ { next }
                    /=> not found/ { print "MISSING:" $1; next } /=> \// { print $3 }'
done | sort -u)
status=0
for lib in $libs; do
  case "$lib" in MISSING:*) echo "runtime-packages.sh: ${lib#MISSING:} not found" >&2; status=1; continue;; esac
  real=$(readlink -f "$lib")
  # dpkg records the path a package shipped, which on merged-/usr systems may be /lib/... or
  # /usr/lib/...; try the path as ldd gave it, its target, and both spellings.
  pkg=""
  for p in "$lib" "$real" "/usr${lib#/usr}" "${lib#/usr}" "/usr${real#/usr}" "${real#/usr}"; do
    pkg=$(dpkg-query -S "$p" 2>/dev/null | head -n1 | cut -d: -f1) && [ -n "$pkg" ] && break
  done
  if [ -z "$pkg" ]; then echo "runtime-packages.sh: no package owns $lib" >&2; status=1; continue; fi
  echo "$pkg"
done | sort -u
exit $status
