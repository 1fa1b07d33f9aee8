//! The one shell script the probe runs on the source.
//!
//! It is plain POSIX sh that works under dash, bash 3 (RHEL 5) and busybox
//! ash, and uses only what a server already has. It never writes anything.
//! Every piece of output is framed by a marker line so that one round trip
//! collects everything and the parsers never see a command's output mixed
//! with another's:
//!
//! ```text
//! @@hotclone@@ file /etc/os-release      (contents follow)
//! @@hotclone@@ cmd uname-r               (stdout follows)
//! @@hotclone@@ status 0                  (exit status of that command)
//! ```
//!
//! A missing file produces no section; a missing command produces a section
//! with a non-zero status. Nothing here fails the probe: the parsers decide
//! what an absent section means.

/// The marker that starts every framing line.
pub const MARKER: &str = "@@hotclone@@";

/// Files read verbatim when readable.
pub const FILES: &[&str] = &[
    "/etc/os-release",
    "/usr/lib/os-release",
    "/etc/debian_version",
    "/etc/redhat-release",
    "/etc/SuSE-release",
    "/etc/lsb-release",
    "/etc/hostname",
    "/etc/HOSTNAME",
    "/etc/sysconfig/network",
    "/etc/resolv.conf",
    "/etc/fstab",
    "/proc/mounts",
    "/proc/partitions",
    "/proc/mdstat",
    "/proc/swaps",
    "/proc/meminfo",
    "/proc/cpuinfo",
    "/etc/default/grub",
    "/etc/selinux/config",
];

/// Paths whose existence matters (bootloader configs, network config files).
pub const PRESENCE_GLOBS: &str = "/boot/grub/grub.cfg /boot/grub/menu.lst /boot/grub/grub.conf \
/boot/grub2/grub.cfg /etc/grub.conf /etc/lilo.conf /boot/extlinux/extlinux.conf /boot/extlinux.conf \
/extlinux.conf /boot/syslinux/syslinux.cfg /boot/efi/EFI /sys/firmware/efi \
/usr/sbin/grub-install /usr/sbin/grub2-install /sbin/grub-install /sbin/grub /usr/sbin/grub \
/sbin/lilo /usr/sbin/extlinux /etc/inittab /sbin/initctl /run/systemd/system \
/etc/network/interfaces /etc/network/interfaces.d/* /etc/sysconfig/network-scripts/ifcfg-* \
/etc/sysconfig/network/ifcfg-* /etc/netplan/*.yaml /etc/NetworkManager/system-connections/* \
/etc/systemd/network/*.network /etc/udev/rules.d/70-persistent-net.rules";

/// The probe script, sent on the remote shell's stdin.
pub fn script() -> String {
    let mut s = String::new();
    s.push_str(
        r#"LC_ALL=C; export LC_ALL
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH; export PATH
M='@@hotclone@@'
# run NAME CMD...: stdout only.  run2 NAME CMD...: stdout and stderr.
run() { n=$1; shift; echo "$M cmd $n"; "$@" 2>/dev/null; echo "$M status $?"; }
run2() { n=$1; shift; echo "$M cmd $n"; "$@" 2>&1; echo "$M status $?"; }
"#,
    );
    s.push_str("for f in");
    for f in FILES {
        s.push(' ');
        s.push_str(f);
    }
    s.push_str(
        r#"; do
  if [ -r "$f" ] && [ -f "$f" ]; then echo "$M file $f"; cat "$f" 2>/dev/null; echo; fi
done
run uname-r uname -r
run uname-m uname -m
run uname-n uname -n
run boot ls -1 /boot
run modules ls -1 /lib/modules
run init-link readlink /sbin/init
"#,
    );
    s.push_str(&format!("run present ls -1d {PRESENCE_GLOBS}\n"));
    s.push_str(
        r#"run grub-version grub-install --version
run df-k df -P -k
run df-i df -P -i
run blkid blkid
run lsblk lsblk -P -b -o NAME,KNAME,PKNAME,TYPE,SIZE,FSTYPE,UUID,LABEL,MOUNTPOINT,PTTYPE
run lvs lvs --noheadings --nosuffix --units b --separator '|' -o vg_name,lv_name,lv_size
run ip-addr ip -o addr show
run ip-link ip -o link show
run ip-route ip route show
run ifconfig ifconfig -a
run route route -n
run systemd-units systemctl list-units --type=service --state=running --no-legend --plain --no-pager
run initd ls -1 /etc/init.d
run procs sh -c 'cat /proc/[0-9]*/stat 2>/dev/null; exit 0'
run2 tar-version tar --version
run2 tar-help tar --help
run2 find-printf find / -maxdepth 0 -printf 'printf-ok\n'
run2 stat-format stat -c 'stat-ok %i' /
run2 busybox busybox
echo "$M cmd tools"
for c in zstd xz gzip bzip2 lz4 pigz lzop md5sum sha1sum sha256sum b2sum rsync setfacl getfattr; do
  p=`command -v $c 2>/dev/null` && echo "$c $p"
done
echo "$M status 0"
"#,
    );
    s
}
