#!/bin/sh
# Prepare the test VM: a stock Debian kernel with SocketCAN (vcan) for a host kernel that has none.
# Installs from apt whatever is missing of qemu-system-x86, kmod, busybox-static, iproute2,
# mosquitto, mosquitto-clients, systemd, udev and python3-venv; extracts (does not install) the
# current Debian kernel and the few modules the guest needs into tests/vm/kernel/, and builds
# tests/vm/initrd.cpio.gz. Idempotent: a second run does nothing (~0 s).
#   setup.sh --missing   only print the missing packages (scripts/test.sh installs them with its own)
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
KDIR=${VCANVM_KDIR:-$HERE/kernel}
INITRD=${VCANVM_INITRD:-$HERE/initrd.cpio.gz}
export DEBIAN_FRONTEND=noninteractive

# The VM itself, then what the guest jobs use from this host's file system: ip, a broker and
# its client, systemd as PID 1 with networkd for vcan0 and udev (networkd configures only links
# udev has initialised: without it vcan0 stays DOWN), and python3-venv for install.sh.
# Checked against a fresh Debian 12 (debootstrap --variant=minbase): see tests/vm/README.md.
need=""
command -v qemu-system-x86_64 >/dev/null || need="$need qemu-system-x86"
command -v depmod >/dev/null || need="$need kmod"
[ -x /bin/busybox ] || need="$need busybox-static"
command -v ip >/dev/null || need="$need iproute2"
[ -x /usr/sbin/mosquitto ] || need="$need mosquitto"
command -v mosquitto_sub >/dev/null || need="$need mosquitto-clients"
[ -x /lib/systemd/systemd ] && [ -x /lib/systemd/systemd-networkd ] || need="$need systemd"
[ -x /lib/systemd/systemd-udevd ] || need="$need udev"
/usr/bin/python3 -c 'import ensurepip, venv' 2>/dev/null || need="$need python3-venv"
if [ "${1:-}" = --missing ]; then
  echo $need
  exit 0
fi
if [ -n "$need" ]; then
  # other jobs on the machine may hold the dpkg lock: wait for it rather than fail
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends $need >/dev/null
fi

if [ ! -d "$KDIR/lib/modules" ]; then
  KPKG=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/{print $2; exit}')
  [ -n "$KPKG" ] || { apt-get -o DPkg::Lock::Timeout=600 update -qq; KPKG=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/{print $2; exit}'); }
  TMPD=$(mktemp -d)
  (cd "$TMPD" && apt-get download -qq "$KPKG")
  mkdir -p "$KDIR.tmp"
  dpkg-deb --fsys-tarfile "$TMPD"/*.deb | tar -x -C "$KDIR.tmp" --wildcards \
    './boot/vmlinuz-*' './lib/modules/*/modules.order' './lib/modules/*/modules.builtin*' \
    './lib/modules/*/kernel/net/can/*' './lib/modules/*/kernel/drivers/net/can/*' \
    './lib/modules/*/kernel/net/9p/*' './lib/modules/*/kernel/fs/9p/*' './lib/modules/*/kernel/fs/netfs/*' \
    './lib/modules/*/kernel/fs/fscache/*' './lib/modules/*/kernel/fs/overlayfs/*' \
    './lib/modules/*/kernel/fs/autofs/*' './lib/modules/*/kernel/drivers/virtio/*'
  rm -rf "$TMPD"
  depmod -b "$KDIR.tmp" "$(ls "$KDIR.tmp/lib/modules")"
  rm -rf "$KDIR" && mv "$KDIR.tmp" "$KDIR"   # a half-extracted kernel never counts as done
fi

if [ ! -s "$INITRD" ] || [ "$HERE/mkinitrd.sh" -nt "$INITRD" ] || [ "$KDIR/lib/modules" -nt "$INITRD" ]; then
  KDIR="$KDIR" sh "$HERE/mkinitrd.sh" "$INITRD"
fi
