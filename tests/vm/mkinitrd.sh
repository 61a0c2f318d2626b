#!/bin/sh
# Build the test VM's initramfs: static busybox + the modules needed to mount the host / over 9p.
set -eu
KDIR=${KDIR:-$(cd "$(dirname "$0")" && pwd)/kernel}
KVER=$(ls "$KDIR/lib/modules")
OUT=${1:-$(cd "$(dirname "$0")" && pwd)/initrd.cpio.gz}
W=$(mktemp -d)
mkdir -p "$W/bin" "$W/mods" "$W/proc" "$W/sys" "$W/dev" "$W/lower" "$W/upper" "$W/newroot"
cp /bin/busybox "$W/bin/busybox"
for a in sh mount mkdir insmod switch_root echo cat ln poweroff sleep tr grep cut cp uname rm; do ln -s busybox "$W/bin/$a"; done
M="$KDIR/lib/modules/$KVER/kernel"
n=0
for m in fs/netfs/netfs fs/fscache/fscache net/9p/9pnet fs/9p/9p drivers/virtio/virtio_ring drivers/virtio/virtio \
         drivers/virtio/virtio_pci_modern_dev drivers/virtio/virtio_pci_legacy_dev drivers/virtio/virtio_pci drivers/virtio/virtio_mmio \
         net/9p/9pnet_virtio fs/overlayfs/overlay; do
  n=$((n+1)); cp "$M/$m.ko" "$W/mods/$(printf %02d $n)-$(basename $m).ko"
done
cat > "$W/init" <<'EOI'
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in /mods/*.ko; do insmod $m || echo "initrd: insmod $m failed"; done
# host / read-only over 9p, with a tmpfs-backed overlay on top (writes stay in the guest)
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot /lower || { echo "initrd: 9p mount failed"; poweroff -f; }
mount -t tmpfs -o size=75% tmpfs /upper
mkdir -p /upper/u /upper/w
mount -t overlay -o lowerdir=/lower,upperdir=/upper/u,workdir=/upper/w overlay /newroot || { echo "initrd: overlay failed"; poweroff -f; }
mount --move /proc /newroot/proc; mount --move /sys /newroot/sys; mount --move /dev /newroot/dev
# guest kernel modules: host has none for this kernel; point /lib/modules/$KVER at the extracted package
mkdir -p /newroot/lib/modules && ln -sfn "$vkdir/lib/modules/$(uname -r)" "/newroot/lib/modules/$(uname -r)"
# rw job dir shared with the host (command in, rc out); optional extra files copied into the root overlay
if [ -n "$vjob" ]; then
  mkdir -p "/newroot$vjob" && mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 job "/newroot$vjob"
  [ -d "/newroot$vjob/rootfs" ] && cp -a "/newroot$vjob/rootfs/." /newroot/
fi
[ -n "$vtmpfs" ] && mount -t tmpfs -o mode=1777 tmpfs /newroot/tmp
rm -f /newroot/.dockerenv   # guest-only (overlay whiteout): let systemd see a VM, not a container
INIT=${vinit:-/bin/sh}
exec switch_root /newroot "$INIT"
EOI
chmod +x "$W/init"
(cd "$W" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1 > "$OUT")
rm -rf "$W"
ls -la "$OUT" >&2
