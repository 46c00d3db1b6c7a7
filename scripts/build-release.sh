#!/usr/bin/env bash
# Build the release binary. The container image's build stage (Dockerfile)
# and CI (scripts/validate-deploy.sh, called by scripts/test) both run this
# script, so what CI builds and smoke-tests is what the image ships.
#
#   scripts/build-release.sh [OUT_DIR]     # default: target/dist
#
# Leaves OUT_DIR/steadfast (stripped) and prints its version.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-target/dist}"

# Build dependencies: cmake for libz-ng-sys (under Pingora), a C compiler.
need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v cc >/dev/null 2>&1 || need+=(gcc libc6-dev)
command -v strip >/dev/null 2>&1 || need+=(binutils)
if [ ${#need[@]} -gt 0 ]; then
  echo "build-release: installing ${need[*]}" >&2
  SUDO=""
  if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# --locked: the image is built from exactly the committed Cargo.lock.
cargo build --release --locked --bin steadfast

mkdir -p "$out"
strip -o "$out/steadfast.tmp" target/release/steadfast
chmod 0755 "$out/steadfast.tmp"
mv -f "$out/steadfast.tmp" "$out/steadfast"
"$out/steadfast" --version
