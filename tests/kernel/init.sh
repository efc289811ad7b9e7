#!/bin/busybox sh
# /init of the kernel tier's initramfs (busybox only). Loads the modules listed in
# /modules.order, mounts the host's / (9p, read-only) under a tmpfs overlay, mounts the
# results share, and hands over to the guest main program (AIOTMC_* come from the
# kernel command line).
B=/bin/busybox
$B mkdir -p /proc /sys /dev /lower /rw /newroot
$B mount -t proc proc /proc
$B mount -t sysfs sysfs /sys
$B mount -t devtmpfs devtmpfs /dev
for m in $($B cat /modules.order); do
    $B insmod "/lib/modules/$m" || echo "aiotmc-init: insmod $m failed"
done
$B mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=524288,cache=loose hostroot /lower \
    || { echo "aiotmc-init: cannot mount the host root"; $B poweroff -f; }
$B mount -t tmpfs -o size=512m tmpfs /rw
$B mkdir -p /rw/upper /rw/work
$B mount -t overlay overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work /newroot \
    || { echo "aiotmc-init: overlay failed"; $B poweroff -f; }
$B mkdir -p /newroot/mnt/aiotmc-results /newroot/run
$B mount -t 9p -o trans=virtio,version=9p2000.L,msize=524288 results /newroot/mnt/aiotmc-results
# /tmp stays the overlay's (host /tmp read-through, writes in tmpfs): the checkout may
# live under the host's /tmp, as CI clones do.
$B mount -t tmpfs tmpfs /newroot/run
$B mount --move /dev /newroot/dev
$B mount --move /proc /newroot/proc
$B mount --move /sys /newroot/sys
exec $B switch_root /newroot "$AIOTMC_PYTHON" "$AIOTMC_MAIN"
