#!/usr/bin/env bash
# Installs the Debian 12 packages aha builds and tests with (as root; skips what is there).
set -euo pipefail
pkgs=(build-essential clang libclang-rt-14-dev meson ninja-build pkg-config
      libgrpc-dev protobuf-c-compiler libprotobuf-c-dev libuv1-dev libjansson-dev
      libpcre2-dev libutf8proc-dev libopenblas-dev
      python3 python3-grpcio python3-protobuf protobuf-compiler protobuf-compiler-grpc python3-numpy)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}" >&2
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
