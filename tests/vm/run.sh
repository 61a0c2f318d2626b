#!/bin/sh
# Usage: tests/vm/run.sh 'shell command'
# Runs the command as root in a throw-away qemu VM (TCG) whose root is a tmpfs overlay of this
# host's / (read-only underneath), with a real SocketCAN kernel. Exit status = the command's,
# 125 if the VM hung past VCANVM_TIMEOUT (default 600 s). The serial console goes to stdout.
#
# VCANVM_JOB=DIR   use DIR as the job folder and keep it: the guest sees it read-write at
#                  /vcanvm-job (copy result files there); DIR/rootfs/ is copied over the guest's /
#                  before init starts. Without it a temporary folder is used and deleted.
# VCANVM_SYSTEMD=1 boot systemd as PID 1 (~35 s more) and run the command as a oneshot unit,
#                  with systemd-networkd creating vcan0 from the project's systemd/vcan0.netdev.
#                  The guest boots into vcanvm.target, which starts the job, udev and networkd
#                  and none of the services this host enabled (they are masked in the guest):
#                  a host with mosquitto or postgresql enabled boots the guest as fast as one
#                  without. VCANVM_UNITS='a.service ...' keeps host-enabled units startable.
#                  The job folder gets boot_s (guest uptime when the job started) and, after
#                  the command, units-started.txt (every unit systemd started this boot).
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
KDIR=${VCANVM_KDIR:-$HERE/kernel}
KVER=$(ls "$KDIR/lib/modules")
INITRD=${VCANVM_INITRD:-$HERE/initrd.cpio.gz}
if [ -n "${VCANVM_JOB:-}" ]; then
  JOB=$VCANVM_JOB; KEEP=1; mkdir -p "$JOB"; rm -f "$JOB/rc"
else
  JOB=$(mktemp -d /tmp/vcanvm-job.XXXXXX); KEEP=0
fi
JOB=$(cd "$JOB" && pwd)
printf '%s\n' "$1" > "$JOB/cmd"; pwd > "$JOB/cwd"
APPEND="console=ttyS0 panic=-1 quiet loglevel=3 vkdir=$KDIR vjob=/vcanvm-job"
if [ "${VCANVM_SYSTEMD:-0}" = 1 ]; then
  R=$JOB/rootfs/etc/systemd
  mkdir -p "$R/system" "$R/system.control" "$R/network" "$JOB/rootfs/etc/tmpfiles.d"
  cat > "$JOB/run.sh" <<'EOS'
J=$(dirname "$0")
read -r up _ < /proc/uptime; echo "$up" > "$J/boot_s"
sh "$J/cmd"; rc=$?
# every unit systemd began to start (or listen on) this boot; `systemctl show '*'` takes a minute
journalctl -b _PID=1 MESSAGE_ID=7d4958e842da4a758f6c1cdc7b36dcc5 MESSAGE_ID=39f53479d3a045ac8e11786248231fbf \
  -o cat --output-fields=UNIT | sort -u > "$J/units-started.txt" 2>&1
echo "$rc" > "$J/rc"; echo "VCANVM_EXIT=$rc"
EOS
  # The guest's own default target: the job, networkd (vcan0) and the basics systemd needs,
  # not multi-user.target, whose wants are whatever this host enabled.
  cat > "$R/system/vcanvm.target" <<EOU
[Unit]
Description=vcanvm: the job and what it needs
Requires=sysinit.target
Wants=sockets.target systemd-networkd.service vcanvm-job.service
After=sysinit.target sockets.target
AllowIsolate=yes
EOU
  cat > "$R/system/vcanvm-job.service" <<EOU
[Unit]
Description=vcanvm job
After=sysinit.target sockets.target systemd-networkd.service
[Service]
Type=oneshot
WorkingDirectory=$(pwd)
Environment=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
StandardInput=null
StandardOutput=tty
StandardError=inherit
TTYPath=/dev/ttyS0
TimeoutStartSec=infinity
ExecStart=/bin/sh /vcanvm-job/run.sh
ExecStopPost=/bin/systemctl poweroff --no-block
EOU
  # Units this host enabled may still hang off sysinit.target or sockets.target (or be pulled
  # by something): mask every one the harness does not use. system.control/ ranks above
  # /etc/systemd/system, so a host unit file of the same name is hidden, not overwritten.
  for link in /etc/systemd/system/*.wants/* /etc/systemd/system/*.requires/*; do
    u=${link##*/}
    case $u in
      *.target|systemd-networkd*|systemd-udevd*|systemd-journald*|vcanvm*|'*') continue ;;
    esac
    case " ${VCANVM_UNITS:-} " in *" $u "*) continue ;; esac
    ln -sf /dev/null "$R/system.control/$u"
  done
  # keep the host's /tmp (snapshot) visible: don't let systemd-tmpfiles wipe it at boot
  : > "$JOB/rootfs/etc/tmpfiles.d/tmp.conf"
  # no gettys: they would vhangup the serial console we print to
  for u in serial-getty@ttyS0.service console-getty.service getty@tty1.service; do
    ln -sf /dev/null "$R/system/$u"
  done
  # vcan0 the way a developer machine gets it: the project's systemd-networkd files
  cp "$REPO/systemd/vcan0.netdev" "$REPO/systemd/vcan0.network" "$R/network/"
  APPEND="$APPEND vinit=/lib/systemd/systemd systemd.unit=vcanvm.target systemd.show_status=0"
else
  APPEND="$APPEND vinit=$HERE/guest-init.sh"
fi
# TCG only: KVM on this kind of host does not run stock kernels and hangs.
timeout "${VCANVM_TIMEOUT:-600}" qemu-system-x86_64 -M q35 -accel "${VCANVM_ACCEL:-tcg,thread=multi}" \
  -cpu "${VCANVM_CPU:-max}" -smp "${VCANVM_CPUS:-2}" -m "${VCANVM_MEM:-1024}" \
  -nographic -no-reboot -nodefaults -serial stdio -net none \
  -kernel "$KDIR/boot/vmlinuz-$KVER" -initrd "$INITRD" \
  -fsdev local,id=r,path=/,security_model=none,readonly=on,multidevs=remap -device virtio-9p-pci,fsdev=r,mount_tag=hostroot \
  -fsdev local,id=j,path="$JOB",security_model=none -device virtio-9p-pci,fsdev=j,mount_tag=job \
  -append "$APPEND" </dev/null || true
rc=$(cat "$JOB/rc" 2>/dev/null || echo 125)
[ "$KEEP" = 1 ] || rm -rf "$JOB"
exit "$rc"
