#!/usr/bin/env bash
# Validate the deployment assets (Dockerfile, k8s/, deploy/) offline; part
# of scripts/test, so CI runs it on every change. No cluster, no Docker
# engine, no network beyond PyPI and Debian packages; nothing is skipped.
#
# 1. Builds the release binary with scripts/build-release.sh, the very
#    script the Dockerfile's build stage runs.
# 2. Installs pinned checkers from PyPI into target/deploy-venv
#    (scripts/validate-deploy.requirements.txt) and systemd-analyze if absent.
# 3. Runs scripts/validate_deploy.py: every YAML parses; every Kubernetes
#    object validates against the bundled Kubernetes schemas (strict), the
#    PodMonitor against the prometheus-operator CRD model; both kustomizations
#    render (and match `kubectl kustomize` where kubectl exists); every
#    shipped steadfast config passes `steadfast check` with exactly the keys
#    its deployment provides; compose.yaml validates against the compose-spec
#    schema; the systemd unit passes `systemd-analyze verify` and agrees with
#    its config; the Dockerfile is wired to the image config and passes
#    hadolint; the shell scripts pass shellcheck.
#
# The behaviour checks (the image HEALTHCHECK command against a running
# binary, probe ports, grace periods, the upgrade/entrypoint scripts) are
# integration tests in tests/deploy.rs.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/build-release.sh target/dist >/dev/null

SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
apt_install() {
  echo "validate-deploy: installing $*" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
command -v systemd-analyze >/dev/null 2>&1 || apt_install systemd

venv=target/deploy-venv
req=scripts/validate-deploy.requirements.txt
stamp="$venv/.requirements.sha256"
want=$(sha256sum "$req" | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  rm -rf "$venv"
  if ! python3 -m venv "$venv" >/dev/null 2>&1; then
    rm -rf "$venv"
    apt_install python3-venv
    python3 -m venv "$venv"
  fi
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req"
  echo "$want" >"$stamp"
fi

exec "$venv/bin/python" scripts/validate_deploy.py --steadfast target/dist/steadfast "$@"
