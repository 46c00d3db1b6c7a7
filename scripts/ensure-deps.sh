#!/usr/bin/env bash
# Install what a fresh Debian machine with Rust lacks to build and test
# steadfast. Idempotent and quiet when everything is already there.
set -euo pipefail

need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)      # libz-ng-sys (flate2) under Pingora
command -v cc >/dev/null 2>&1 || need+=(build-essential)
command -v python3 >/dev/null 2>&1 || need+=(python3)  # TLS upstream in tests
command -v openssl >/dev/null 2>&1 || need+=(openssl)  # throwaway CA in the TLS tests

if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}" >&2
  SUDO=""
  if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
