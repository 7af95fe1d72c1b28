#!/bin/sh
# Run inside the debootstrap tree (chroot) once: a small, quiet Debian 12 that boots fast
# under TCG. Argument: the kernel version. Nothing of photo-ingest here (setup-image.sh).
set -eu
KVER=$1

echo photo-ingest-vm > /etc/hostname
printf '127.0.0.1 localhost\n127.0.1.1 photo-ingest-vm\n' > /etc/hosts
: > /etc/fstab                       # the root comes from the kernel command line
systemd-machine-id-setup >/dev/null  # a fixed id: no first-boot logic on every -snapshot boot
mkdir -p /etc/systemd/journald.conf.d
printf '[Journal]\nStorage=volatile\n' > /etc/systemd/journald.conf.d/vm-test.conf
# Nothing periodic may disturb a measurement.
systemctl mask apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer \
  e2scrub_reap.service fstrim.timer getty@tty1.service >/dev/null 2>&1

# Smaller image: no docs, locales, caches, and no drivers a VM never needs. kernel/block
# stays (sd_mod needs t10-pi from there, or no sdX ever appears).
rm -rf /usr/share/doc/* /usr/share/man/* /usr/share/info/* /usr/share/locale/* \
  /var/cache/apt/archives/*.deb /var/lib/apt/lists/*_Packages /var/log/*.log
cd /usr/lib/modules/"$KVER"/kernel
rm -rf drivers/gpu drivers/net drivers/media drivers/infiniband drivers/staging drivers/iio \
  drivers/isdn drivers/bluetooth drivers/mtd drivers/hwmon drivers/thunderbolt sound \
  net/wireless net/mac80211 net/bluetooth
cd /
depmod "$KVER"

# A 6.5 MB initrd with just what mounts the root (virtio disk, ext4) instead of 36 MB.
rm -rf /etc/initramfs-vm
cp -a /etc/initramfs-tools /etc/initramfs-vm
sed -i 's/^MODULES=.*/MODULES=list/' /etc/initramfs-vm/initramfs.conf
printf 'virtio_pci\nvirtio_blk\next4\n' > /etc/initramfs-vm/modules
rm -f /boot/initrd.img-*
mkinitramfs -d /etc/initramfs-vm -o /boot/initrd.vm "$KVER" 2>/dev/null
