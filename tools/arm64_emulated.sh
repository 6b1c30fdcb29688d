#!/usr/bin/env bash
# ARM64 proof on an x86_64 box: an arm64 Debian root file system run under QEMU user
# emulation, facetalk installed into it from aarch64 wheels only (no compiler in the
# rootfs), then the end-to-end render test run inside it. Called by `make arm64`.
#
# Needs root (debootstrap, chroot, binfmt_misc) and Debian's apt for debootstrap and
# qemu-user-static. Everything is built under $ARM64_DIR (default build/arm64);
# delete that folder to start over. Prints the wheels installed, the test's output
# (lip-sync figures of the emulated render) and the wall time of each step.
set -euo pipefail

cd "$(dirname "$0")/.."
ARM64_DIR=${ARM64_DIR:-build/arm64}
ROOTFS="$ARM64_DIR/rootfs"
SUITE=${ARM64_SUITE:-bookworm}
MIRROR=${ARM64_MIRROR:-http://deb.debian.org/debian}
REPORT="$ARM64_DIR/report.txt"

step() { printf '\n== %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }
now() { date +%s; }

[ "$(id -u)" = 0 ] || { echo "make arm64 needs root (debootstrap, chroot, binfmt_misc)"; exit 1; }
mkdir -p "$ARM64_DIR"
: > "$REPORT"
t_all=$(now)

step "host tools: debootstrap, qemu-user-static"
missing=""
command -v debootstrap >/dev/null || missing="$missing debootstrap"
[ -x /usr/libexec/qemu-binfmt/aarch64-binfmt-P ] || [ -x /usr/bin/qemu-aarch64-static ] || missing="$missing qemu-user-static"
if [ -n "$missing" ]; then
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
fi

step "binfmt_misc: run aarch64 binaries through qemu"
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
  # The F flag opens the interpreter now, so it also works inside the chroot.
  cat /usr/lib/binfmt.d/qemu-aarch64.conf > /proc/sys/fs/binfmt_misc/register
fi
grep -q enabled /proc/sys/fs/binfmt_misc/qemu-aarch64

step "arm64 root file system ($SUITE, debootstrap)"
t=$(now)
if [ ! -x "$ROOTFS/usr/bin/python3" ]; then
  rm -rf "$ROOTFS"
  debootstrap --arch=arm64 --variant=minbase \
    --include=python3,python3-venv,ca-certificates,espeak-ng \
    "$SUITE" "$ROOTFS" "$MIRROR"
fi
echo "rootfs: $(du -sh "$ROOTFS" | cut -f1), $(( $(now) - t )) s" | tee -a "$REPORT"
chroot "$ROOTFS" /usr/bin/uname -m | tee -a "$REPORT"
chroot "$ROOTFS" /usr/bin/python3 --version | tee -a "$REPORT"

step "facetalk wheel (pure Python, built on the host)"
rm -rf "$ARM64_DIR/dist"
python3 -m pip wheel -q --no-deps --no-build-isolation -w "$ARM64_DIR/dist" . 2>/dev/null \
  || python3 -m pip wheel -q --no-deps -w "$ARM64_DIR/dist" .
rm -rf "$ROOTFS/opt/facetalk"
mkdir -p "$ROOTFS/opt/facetalk"
cp "$ARM64_DIR"/dist/facetalk-*.whl "$ROOTFS/opt/facetalk/"
cp -r tests "$ROOTFS/opt/facetalk/tests"
cp pyproject.toml "$ROOTFS/opt/facetalk/"
cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
# pip inside the rootfs trusts what the host's pip trusts (a site proxy's CA included).
HOST_CA=${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}
cp -L "$HOST_CA" "$ROOTFS/etc/ssl/certs/host-ca-bundle.crt"

mounted=()
cleanup() {
  local i
  for (( i=${#mounted[@]}-1; i>=0; i-- )); do umount -l "${mounted[$i]}" 2>/dev/null || true; done
}
trap cleanup EXIT
for fs in proc sys dev; do
  if ! mountpoint -q "$ROOTFS/$fs"; then
    mount --rbind "/$fs" "$ROOTFS/$fs"
    mount --make-rslave "$ROOTFS/$fs"
    mounted+=("$ROOTFS/$fs")
  fi
done
# qemu-user (7.2) shows emulated programs the host's x86 /proc/cpuinfo, and ONNX
# Runtime's CPU detection (the cpuinfo library) crashes parsing it on aarch64. A real
# arm64 kernel shows its own format; give the chroot that (a Neoverse-N1-like core per
# host CPU) so the emulated run sees what an ARM server would.
{
  for (( i=0; i<$(nproc); i++ )); do
    printf 'processor\t: %d\nBogoMIPS\t: 50.00\n' "$i"
    printf 'Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp\n'
    printf 'CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x3\nCPU part\t: 0xd0c\nCPU revision\t: 1\n\n'
  done
} > "$ARM64_DIR/cpuinfo"
mount --bind "$ARM64_DIR/cpuinfo" "$ROOTFS/proc/cpuinfo"
mounted+=("$ROOTFS/proc/cpuinfo")

step "install facetalk + pytest from aarch64 wheels only (emulated pip)"
t=$(now)
[ "${ARM64_FRESH:-0}" = 1 ] && rm -rf "$ROOTFS/opt/venv"
chroot "$ROOTFS" /usr/bin/env -i HOME=/root PATH=/usr/bin:/bin \
    PIP_CERT=/etc/ssl/certs/host-ca-bundle.crt PIP_DEFAULT_TIMEOUT=180 /bin/sh -euc '
  [ -x /opt/venv/bin/python ] || python3 -m venv /opt/venv
  # facetalk itself always afresh; its dependencies are kept from an earlier run
  # (ARM64_FRESH=1 starts from an empty venv).
  /opt/venv/bin/pip install -q --disable-pip-version-check --no-deps --force-reinstall /opt/facetalk/facetalk-*.whl
  /opt/venv/bin/pip install -q --disable-pip-version-check --only-binary=:all: \
    /opt/facetalk/facetalk-*.whl "pytest>=8"
  /opt/venv/bin/pip list --format=freeze
' | tee "$ARM64_DIR/wheels.txt"
echo "install: $(( $(now) - t )) s" | tee -a "$REPORT"
echo "wheels: $(tr '\n' ' ' < "$ARM64_DIR/wheels.txt")" >> "$REPORT"

step "facetalk doctor (emulated)"
chroot "$ROOTFS" /usr/bin/env -i HOME=/root PATH=/opt/venv/bin:/usr/bin:/bin facetalk doctor | tee -a "$REPORT"

step "end-to-end render test under emulation"
t=$(now)
chroot "$ROOTFS" /usr/bin/env -i HOME=/root PATH=/opt/venv/bin:/usr/bin:/bin /bin/sh -euc '
  cd /opt/facetalk
  python -m pytest -q -p no:cacheprovider tests/engine/test_e2e.py
' 2>&1 | tee "$ARM64_DIR/e2e.log"
rc=${PIPESTATUS[0]}
echo "e2e test under emulation: exit $rc, $(( $(now) - t )) s: $(tail -n 1 "$ARM64_DIR/e2e.log")" | tee -a "$REPORT"

step "sync figures of an emulated render (facetalk demo, then facetalk eval)"
t=$(now)
chroot "$ROOTFS" /usr/bin/env -i HOME=/root PATH=/opt/venv/bin:/usr/bin:/bin /bin/sh -euc '
  facetalk demo -q -o /tmp/arm64-demo.mp4
  facetalk eval /tmp/arm64-demo.mp4
' 2>&1 | tee -a "$REPORT"
echo "demo render + eval under emulation: $(( $(now) - t )) s" | tee -a "$REPORT"
echo "total: $(( $(now) - t_all )) s" | tee -a "$REPORT"
exit "$rc"
