#!/bin/sh
# Build a minimal busybox + dropbear source root (no GNU tar/find, no os-release).
# Inputs (env): DIR HC_HOSTNAME HC_ADDR HC_PASSWORD
set -eu
mkdir -p "$DIR"
cd "$DIR"
mkdir -p bin sbin usr/bin usr/sbin etc/dropbear etc/network root/.ssh tmp proc sys dev run var/log var/run home lib64
chmod 700 root root/.ssh
chmod 1777 tmp
cp /bin/busybox bin/busybox
chroot . /bin/busybox --install -s
cp /usr/sbin/dropbear usr/sbin/dropbear
for lib in $(ldd /usr/sbin/dropbear | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'); do
  mkdir -p ".$(dirname "$lib")"
  cp -L "$lib" ".$lib"
done
cat > etc/passwd <<P
root:x:0:0:root:/root:/bin/sh
P
cat > etc/group <<G
root:x:0:
G
HASH=$(chroot . /bin/busybox mkpasswd -m sha512 "$HC_PASSWORD")
echo "root:$HASH:19000:0:99999:7:::" > etc/shadow
chmod 640 etc/shadow
echo /bin/sh > etc/shells
echo "$HC_HOSTNAME" > etc/hostname
cat > etc/hosts <<H
127.0.0.1	localhost
${HC_ADDR%/*}	$HC_HOSTNAME
H
cat > etc/network/interfaces <<I
auto lo
iface lo inet loopback

auto eth0
iface eth0 inet static
	address $HC_ADDR
I
echo '/dev/hda1	/	ext3	defaults	0	1' > etc/fstab
dropbearkey -t rsa -f etc/dropbear/dropbear_rsa_host_key >/dev/null
dropbearkey -t ed25519 -f etc/dropbear/dropbear_ed25519_host_key >/dev/null
chroot . /usr/sbin/dropbear -V 2>&1 | grep -qi dropbear
