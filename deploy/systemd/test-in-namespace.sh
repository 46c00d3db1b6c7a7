#!/bin/sh
# Manual test of deploy/systemd/steadfast.service under a real systemd,
# on a machine without one (CI containers, VMs whose PID 1 is not systemd).
# Not part of CI: it needs root, and it boots a whole systemd.
#
#   sudo deploy/systemd/test-in-namespace.sh [target/dist/steadfast]
#
# systemd runs as PID 1 of new pid/mount/net/uts/ipc namespaces, on an
# overlay of / whose writes land in a tmpfs, with private /tmp, /var/tmp,
# /run and a minimal /dev: nothing it does reaches the host's files. (A
# systemd booted against the host's own / would run systemd-tmpfiles and
# empty the host's /tmp.) The script refuses to start systemd unless a
# write test proves that isolation. Checks:
#   start -> active; reload (fd handoff) -> success, main PID moves to the
#   new process, unit stays active after the old one exits, /live never
#   fails meanwhile; reload with a broken config -> fails, nothing changes;
#   stop -> inactive after the drain.
# The unit gets one drop-in: PrivateDevices=no, because the namespace's
# /dev is a minimal tmpfs that PrivateDevices= cannot copy from.
set -eu

if [ "${1:-}" = "--inner" ]; then
  # Inside the namespaces: build the isolated root, then exec systemd or
  # the isolation self-test.
  mode=$2 bin=$3 repo=$4
  R=/mnt/sfroot
  mount -n -t tmpfs tmpfs /mnt
  mkdir -p /mnt/up /mnt/work $R
  mount -n -t overlay overlay -o lowerdir=/,upperdir=/mnt/up,workdir=/mnt/work $R
  mount -n -t proc proc $R/proc
  mount -n -t sysfs -o ro sysfs $R/sys
  mount -n -t cgroup2 none $R/sys/fs/cgroup
  mount -n -t tmpfs -o mode=755 tmpfs $R/dev
  for n in null zero full random urandom tty; do
    touch "$R/dev/$n"
    mount -n --bind "/dev/$n" "$R/dev/$n"
  done
  mkdir -p $R/dev/shm $R/dev/pts
  for d in dev/shm run tmp var/tmp; do mount -n -t tmpfs tmpfs "$R/$d"; done
  ip link set lo up
  install -m 0755 "$bin" "$repo/deploy/bin/steadfast-upgrade" $R/usr/local/bin/
  install -d -m 0755 $R/etc/steadfast
  install -m 0644 "$repo/deploy/systemd/steadfast.yaml" $R/etc/steadfast/steadfast.yaml
  install -m 0600 "$repo/deploy/systemd/steadfast.env.example" $R/etc/steadfast/steadfast.env
  install -m 0644 "$repo/deploy/systemd/steadfast.service" $R/etc/systemd/system/
  mkdir -p $R/etc/systemd/system/steadfast.service.d
  printf '[Service]\nPrivateDevices=no\n' >$R/etc/systemd/system/steadfast.service.d/test.conf
  # Units that would touch kernel-wide state (sysctl, binfmt, pstore, clock, udev).
  for u in systemd-sysctl.service systemd-binfmt.service proc-sys-fs-binfmt_misc.automount \
    proc-sys-fs-binfmt_misc.mount systemd-pstore.service systemd-timesyncd.service \
    systemd-modules-load.service systemd-udevd.service systemd-udev-trigger.service \
    systemd-hwdb-update.service kmod-static-nodes.service sys-kernel-debug.mount \
    sys-kernel-tracing.mount sys-kernel-config.mount sys-fs-fuse-connections.mount; do
    ln -sf /dev/null "$R/etc/systemd/system/$u"
  done
  printf '[Unit]\nDescription=steadfast unit test\nWants=systemd-journald.socket steadfast.service\n' \
    >$R/etc/systemd/system/steadfast-test.target
  cd $R
  mkdir -p .oldroot
  pivot_root . .oldroot
  cd /
  umount -n -l /.oldroot
  if [ "$mode" = isolation ]; then
    for f in /tmp/ISO /var/tmp/ISO /etc/ISO /ISO /run/ISO /dev/ISO "$repo/ISO"; do : >"${f}.$$.steadfast"; done
    exit 0
  fi
  exec env container=other /lib/systemd/systemd --system --unit=steadfast-test.target --log-target=journal
fi

[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 2; }
repo=$(cd "$(dirname "$0")/../.." && pwd)
bin=$(realpath "${1:-$repo/target/dist/steadfast}")
[ -x "$bin" ] || { echo "no binary at $bin (scripts/build-release.sh)" >&2; exit 2; }
self=$(realpath "$0")

# 1. Isolation self-test: markers written inside must not appear outside.
out=$(unshare --pid --fork --mount --net --uts --ipc --propagation private sh "$self" --inner isolation "$bin" "$repo" 2>&1) || {
  echo "cannot build the isolated root: $out" >&2
  exit 2
}
if ls /tmp/ISO.*.steadfast /var/tmp/ISO.*.steadfast /etc/ISO.*.steadfast /ISO.*.steadfast \
  /run/ISO.*.steadfast /dev/ISO.*.steadfast "$repo"/ISO.*.steadfast >/dev/null 2>&1; then
  echo "isolation broken: a write inside reached the host; not starting systemd" >&2
  exit 2
fi

# 2. Boot systemd in the namespaces.
unshare --pid --fork --mount --net --uts --ipc --propagation private sh "$self" --inner systemd "$bin" "$repo" \
  </dev/null >/dev/null 2>&1 &
sd=""
for _ in $(seq 1 100); do
  sd=$(pgrep -f "^/lib/systemd/systemd --system --unit=steadfast-test.target" || true)
  [ -n "$sd" ] && break
  sleep 0.1
done
[ -n "$sd" ] || { echo "systemd did not start" >&2; exit 2; }
trap 'kill -KILL "$sd" 2>/dev/null || true' EXIT
in_ns() { timeout 90 nsenter -t "$sd" -m -p -n -r -w "$@"; }
prop() { in_ns systemctl show -p "$1" --value steadfast; }

passed=0 failed=0
check() { # check DESCRIPTION COMMAND...: count and print the outcome; never exits
  desc=$1
  shift
  if "$@"; then passed=$((passed + 1)); echo "ok   $desc"; else failed=$((failed + 1)); echo "FAIL $desc"; fi
}
not() { ! "$@"; }
both() { [ "$1" = "$2" ] && [ "$3" = "$4" ]; }
for _ in $(seq 1 100); do
  st=$(in_ns systemctl is-system-running 2>/dev/null || true)
  case "$st" in running | degraded) break ;; esac
  sleep 0.2
done

check "start succeeds (ExecStartPre check, ExecStartPost waits for /ready)" in_ns systemctl start steadfast
check "start: active" test "$(prop ActiveState)" = active
first=$(prop MainPID)

# Constant /live load across two reloads.
# shellcheck disable=SC2016 # expanded by the inner shell
in_ns sh -c 'f=0; n=0; end=$(( $(date +%s) + 22 )); while [ "$(date +%s)" -lt $end ]; do
  c=$(curl -s -o /dev/null -w "%{http_code}" -m 2 http://127.0.0.1:9090/live); [ "$c" = 200 ] || f=$((f+1)); n=$((n+1)); done
  echo "$n $f"' >"/tmp/steadfast-unit-load.$$" 2>&1 &
load=$!
sleep 1
check "reload (fd handoff) succeeds" in_ns systemctl reload steadfast
second=$(prop MainPID)
check "reload: main PID moved $first -> $second" not test "$second" = "$first"
sleep 8
check "after the old process exited: still active (running)" both "$(prop ActiveState)" active "$(prop SubState)" running
check "old process $first has exited" not in_ns kill -0 "$first" 2>/dev/null
check "main PID is still $second" test "$(prop MainPID)" = "$second"
check "second reload succeeds" in_ns systemctl reload steadfast
third=$(prop MainPID)
check "second reload: main PID moved $second -> $third" not test "$third" = "$second"
wait "$load" || true
read -r n f <"/tmp/steadfast-unit-load.$$" || true
rm -f "/tmp/steadfast-unit-load.$$"
check "/live under two reloads: ${n:-0} requests, ${f:-?} failed" both "${f:-x}" 0 "$([ "${n:-0}" -gt 50 ] && echo y)" y

in_ns sh -c 'echo "bogus_key: 1" >>/etc/steadfast/steadfast.yaml'
check "reload with a broken config fails" not in_ns systemctl reload steadfast 2>/dev/null
check "... and changes nothing" both "$(prop MainPID)" "$third" "$(prop ActiveState)" active
in_ns sh -c 'sed -i "/^bogus_key/d" /etc/steadfast/steadfast.yaml'

t0=$(date +%s)
check "stop succeeds" in_ns systemctl stop steadfast
check "stop: inactive, result success, after $(($(date +%s) - t0)) s (drain_delay_ms 5000)" both "$(prop ActiveState)" inactive "$(prop Result)" success
check "no restart happened" test "$(prop NRestarts)" = 0

echo "systemd unit: $passed passed, $failed failed"
[ "$failed" = 0 ]
