#!/bin/sh
# Build a Debian source root tree. Inputs (env): DIR SUITE MIRROR INCLUDE POST HC_HOSTNAME HC_ADDR HC_PASSWORD
set -eu
export DEBIAN_FRONTEND=noninteractive LC_ALL=C
debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$DIR" "$MIRROR"
echo "$HC_HOSTNAME" > "$DIR/etc/hostname"
cat > "$DIR/etc/hosts" <<HOSTS
127.0.0.1	localhost
${HC_ADDR%/*}	$HC_HOSTNAME
::1	localhost ip6-localhost ip6-loopback
HOSTS
# Only where ifupdown is what configures the network.
if [ -e "$DIR/sbin/ifup" ]; then
cat > "$DIR/etc/network/interfaces" <<IFS
# The loopback network interface
auto lo
iface lo inet loopback

# The primary network interface
auto eth0
iface eth0 inet static
	address $HC_ADDR
IFS
fi
cat > "$DIR/etc/fstab" <<FSTAB
# <file system> <mount point> <type> <options> <dump> <pass>
/dev/sda1	/	ext4	errors=remount-ro	0	1
/dev/sda5	none	swap	sw	0	0
FSTAB
# The recipe's own step, on the finished base (its fstab included, which
# grub-legacy's update-grub reads), with the host's resolver.
if [ -n "${POST:-}" ]; then
  cp /etc/resolv.conf "$DIR/etc/resolv.conf"
  mount -t proc proc "$DIR/proc"
  mount --rbind /sys "$DIR/sys"
  mount --rbind /dev "$DIR/dev"
  sh -eux -c "$POST"
  umount -l "$DIR/dev" "$DIR/sys" "$DIR/proc"
fi
echo "nameserver 198.51.100.1" > "$DIR/etc/resolv.conf"
# GRUB 2's defaults, where its modules are (grub-legacy has none).
if [ -e "$DIR/usr/lib/grub/i386-pc/normal.mod" ] && [ ! -f "$DIR/etc/default/grub" ]; then
  mkdir -p "$DIR/etc/default"
  cat > "$DIR/etc/default/grub" <<GRUB
GRUB_DEFAULT=0
GRUB_TIMEOUT=5
GRUB_DISTRIBUTOR=\`lsb_release -i -s 2> /dev/null || echo Debian\`
GRUB_CMDLINE_LINUX_DEFAULT="quiet"
GRUB_CMDLINE_LINUX=""
GRUB
fi
echo "root:$HC_PASSWORD" | chroot "$DIR" chpasswd
sed -i -e 's/^#\?PermitRootLogin.*/PermitRootLogin yes/' -e 's/^#\?PasswordAuthentication.*/PasswordAuthentication yes/' "$DIR/etc/ssh/sshd_config"
grep -q '^PermitRootLogin yes' "$DIR/etc/ssh/sshd_config" || echo 'PermitRootLogin yes' >> "$DIR/etc/ssh/sshd_config"
grep -q '^PasswordAuthentication yes' "$DIR/etc/ssh/sshd_config" || echo 'PasswordAuthentication yes' >> "$DIR/etc/ssh/sshd_config"
mkdir -p "$DIR/run/sshd" "$DIR/root/.ssh"
chmod 700 "$DIR/root/.ssh"
ls "$DIR"/etc/ssh/ssh_host_*_key >/dev/null
chroot "$DIR" apt-get clean
rm -rf "$DIR"/var/lib/apt/lists/* "$DIR"/var/cache/apt/*.bin
