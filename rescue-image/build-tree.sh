#!/bin/sh
# Build the rescue image's root tree (run by `hotclone rescue build` in a
# private mount namespace). Inputs (env): TREE OUT SUITE MIRROR PACKAGES
# MODULES FILES (a directory holding rc, inittab and udhcpc) and PRISTINE
# (where the plain debootstrap of this package set is cached). Writes the tree at $TREE, the kernel at $OUT/vmlinuz
# and the kernel release at $OUT/kernel-release.
set -eu
export DEBIAN_FRONTEND=noninteractive LC_ALL=C
# debootstrap once per package set; the rest of the recipe starts from a
# copy of that pristine tree.
if [ ! -d "$PRISTINE" ]; then
  rm -rf "$PRISTINE.tmp"
  debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$PRISTINE.tmp" "$MIRROR"
  mv "$PRISTINE.tmp" "$PRISTINE"
fi
rm -rf "$TREE"
cp -a "$PRISTINE" "$TREE"

KVER=$(ls "$TREE/lib/modules" | sort -V | tail -n 1)
cp "$TREE/boot/vmlinuz-$KVER" "$OUT/vmlinuz"
echo "$KVER" > "$OUT/kernel-release"

# Modules: keep the listed ones and what they depend on, nothing else.
keep="$OUT/modules.keep"
: > "$keep"
mkdir -p "$TREE/etc/hotclone"
: > "$TREE/etc/hotclone/modules"
for m in $MODULES; do
  deps=$(chroot "$TREE" modprobe -S "$KVER" --show-depends "$m") || {
    echo "build-tree: module $m is not in kernel $KVER" >&2; exit 1; }
  echo "$deps" | awk '$1 == "insmod" { print $2 }' >> "$keep"
  echo "$m" >> "$TREE/etc/hotclone/modules"
done
find "$TREE/lib/modules/$KVER/kernel" -name '*.ko*' | while read -r ko; do
  grep -qxF "${ko#"$TREE"}" "$keep" || rm -f "$ko"
done
find "$TREE/lib/modules/$KVER/kernel" -type d -empty -delete
chroot "$TREE" depmod "$KVER"

# What a RAM-only rescue system does not need.
rm -rf "$TREE"/boot/* "$TREE"/usr/share/doc/* "$TREE"/usr/share/man/* \
  "$TREE"/usr/share/info/* "$TREE"/usr/share/locale/* "$TREE"/usr/share/lintian \
  "$TREE"/var/cache/apt/* "$TREE"/var/lib/apt/lists/* "$TREE"/var/log/* \
  "$TREE"/usr/share/zoneinfo/right "$TREE"/usr/share/zoneinfo/posix \
  "$TREE"/usr/lib/x86_64-linux-gnu/gconv "$TREE"/usr/share/i18n
rm -f "$TREE"/etc/dropbear/dropbear_*_host_key "$TREE"/etc/ssh/ssh_host_*
# Dependencies it never runs: python3 and ICU serve only xfs_scrub (mkfs.xfs
# and xfs_repair need neither); udev's hardware database serves udevd, which
# does not run here; apt and perl serve package management.
rm -rf "$TREE"/usr/lib/python3* "$TREE"/usr/bin/python3* "$TREE"/usr/share/python3 \
  "$TREE"/usr/lib/x86_64-linux-gnu/libicu* "$TREE"/usr/sbin/xfs_scrub* \
  "$TREE"/usr/lib/udev/hwdb.* "$TREE"/usr/lib/udev/hwdb.d \
  "$TREE"/usr/lib/apt "$TREE"/usr/bin/apt* "$TREE"/usr/lib/x86_64-linux-gnu/libapt-* \
  "$TREE"/usr/bin/perl* "$TREE"/usr/lib/x86_64-linux-gnu/perl-base "$TREE"/usr/share/perl5

# What the target side runs must still be there and find its libraries.
for tool in sh dropbear dropbearconvert dropbearkey busybox mount umount losetup \
  partx sfdisk blkid blockdev mke2fs e2fsck tune2fs mkfs.xfs xfs_repair mkfs.vfat \
  mkswap lvm mdadm modprobe ip arping unshare chroot cp sync grub-install udevadm; do
  path=$(chroot "$TREE" sh -c "command -v $tool") || { echo "build-tree: $tool is missing" >&2; exit 1; }
  if chroot "$TREE" ldd "$path" 2>/dev/null | grep -q 'not found'; then
    echo "build-tree: $tool lacks libraries:" >&2
    chroot "$TREE" ldd "$path" | grep 'not found' >&2
    exit 1
  fi
done

# busybox applets for commands the Debian set lacks (ps, free, vi, ...).
for applet in $(chroot "$TREE" busybox --list); do
  for d in bin sbin usr/bin usr/sbin; do
    [ -e "$TREE/$d/$applet" ] && continue 2
  done
  ln -s /bin/busybox "$TREE/usr/bin/$applet"
done

# Boot: busybox init runs our rc, then supervises dropbear.
printf '#!/bin/sh\nexec /bin/busybox init\n' > "$TREE/init"
chmod 755 "$TREE/init"
cp "$FILES/rc" "$FILES/udhcpc" "$TREE/etc/hotclone/"
chmod 755 "$TREE/etc/hotclone/rc" "$TREE/etc/hotclone/udhcpc"
cp "$FILES/inittab" "$TREE/etc/inittab"
echo hotclone-rescue > "$TREE/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\thotclone-rescue\n' > "$TREE/etc/hosts"
mkdir -p "$TREE/root/.ssh" "$TREE/etc/dropbear" "$TREE/mnt/target"
chmod 700 "$TREE/root" "$TREE/root/.ssh"
# No passwords: only the key injected at launch (or on the command line) opens it.
chroot "$TREE" passwd -l root >/dev/null
