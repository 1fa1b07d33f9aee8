//! The `Inventory`: everything the probe learned about a source, as plain
//! data. Later stages (plan, clone, convert, cutover) act on this record and
//! never inspect the source again. It serialises to JSON (`probe --json`).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inventory {
    /// The name the user gave (`[user@]host[:port]` or an ssh_config alias).
    pub source: String,
    pub hostname: String,
    pub os: OsInfo,
    pub kernel: KernelInfo,
    pub init: InitSystem,
    pub bootloader: Bootloader,
    pub hardware: Hardware,
    pub storage: Storage,
    pub network: Network,
    pub services: Services,
    pub capabilities: Capabilities,
    /// SELinux mode from /etc/selinux/config ("enforcing", "permissive",
    /// "disabled"); None when the source has no SELinux configuration.
    #[serde(default)]
    pub selinux: Option<String>,
    /// What could not be read, and what that means. Never fatal.
    pub warnings: Vec<String>,
    /// The SSH host key the probe saw (`SHA256:...`): the clone carries
    /// the same key, and a rehearsal's prober accepts only it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_key: Option<String>,
}

impl Inventory {
    /// The filesystem mounted at / (the last one, as the kernel lists an
    /// old-style `rootfs` entry first).
    pub fn root_mount(&self) -> Option<&Mount> {
        self.storage
            .mounts
            .iter()
            .rev()
            .find(|m| m.mount_point == "/")
    }

    /// A network interface by name.
    pub fn interface(&self, name: &str) -> Option<&Interface> {
        self.network.interfaces.iter().find(|i| i.name == name)
    }

    /// The source's fstab line for a mount point.
    pub fn fstab_entry(&self, mount_point: &str) -> Option<&FstabEntry> {
        self.storage
            .fstab
            .iter()
            .find(|e| e.mount_point == mount_point)
    }
}

/// Which family of distributions a source belongs to. Later stages choose
/// their conversion modules from this, in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DistroFamily {
    Debian,
    RedHat,
    Suse,
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OsInfo {
    pub family: DistroFamily,
    /// os-release ID, or the ID we derived from a legacy release file.
    pub id: String,
    pub name: String,
    /// Full version as the distro writes it, e.g. "12.7", "5.0.10", "5.11".
    pub version: Option<String>,
    pub codename: Option<String>,
    pub pretty_name: String,
    /// The files this was read from, most authoritative first.
    pub sources: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KernelInfo {
    /// `uname -r`: what runs now. Can differ from what is installed (an
    /// upgrade without a reboot, or a chroot).
    pub running: String,
    pub arch: String,
    /// Kernel versions with modules in /lib/modules.
    pub installed: Vec<String>,
    /// Kernel images in /boot (vmlinuz-*, vmlinux-*).
    pub boot_images: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InitKind {
    Systemd,
    Upstart,
    Sysvinit,
    Busybox,
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InitSystem {
    pub kind: InitKind,
    /// Whether that init is PID 1 right now (systemd: /run/systemd/system).
    pub active: bool,
    /// How we know, e.g. "/sbin/init -> /lib/systemd/systemd".
    pub evidence: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BootloaderKind {
    Grub2,
    GrubLegacy,
    Lilo,
    Extlinux,
    None,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bootloader {
    pub kind: BootloaderKind,
    /// Its configuration file, when one exists.
    pub config: Option<String>,
    /// e.g. "grub-install (GRUB) 2.06-13+deb12u1".
    pub version: Option<String>,
    /// Whether the firmware is UEFI (/sys/firmware/efi exists).
    pub uefi: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hardware {
    pub cpus: u32,
    pub memory_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Storage {
    pub mounts: Vec<Mount>,
    pub block_devices: Vec<BlockDevice>,
    pub logical_volumes: Vec<LogicalVolume>,
    pub md_arrays: Vec<MdArray>,
    pub fstab: Vec<FstabEntry>,
    /// Active swap areas from /proc/swaps. Swap files are excluded from the
    /// copy; swap partitions are recreated.
    pub swaps: Vec<Swap>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Swap {
    pub path: String,
    /// "partition" or "file".
    pub kind: String,
    pub size_bytes: u64,
    pub used_bytes: u64,
}

/// What kind of thing a mount is; decides what the clone copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MountKind {
    /// A filesystem on a block device: copied.
    Disk,
    /// proc, sysfs, tmpfs, devpts, cgroup...: never copied.
    Pseudo,
    /// nfs, cifs, ...: never copied.
    Network,
    /// A bind mount or anything we cannot classify.
    Other,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mount {
    pub device: String,
    pub mount_point: String,
    pub fs_type: String,
    pub options: String,
    pub kind: MountKind,
    pub uuid: Option<String>,
    pub label: Option<String>,
    pub bytes_total: Option<u64>,
    pub bytes_used: Option<u64>,
    pub inodes_total: Option<u64>,
    pub inodes_used: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockDevice {
    pub name: String,
    /// "disk", "part", "lvm", "raid1", "loop"...; from lsblk, or guessed
    /// from /proc/partitions names when lsblk is missing.
    pub kind: String,
    pub size_bytes: u64,
    pub parent: Option<String>,
    /// Partition table of a disk: "dos", "gpt", or None when unknown.
    pub partition_table: Option<String>,
    pub fs_type: Option<String>,
    pub uuid: Option<String>,
    pub label: Option<String>,
    pub mount_point: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogicalVolume {
    pub vg: String,
    pub lv: String,
    pub size_bytes: u64,
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MdArray {
    pub name: String,
    pub level: String,
    pub members: Vec<String>,
    pub active: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FstabEntry {
    pub spec: String,
    pub mount_point: String,
    pub fs_type: String,
    pub options: String,
    pub dump: u32,
    pub pass: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Network {
    pub interfaces: Vec<Interface>,
    pub routes: Vec<Route>,
    pub dns: Dns,
    /// Config styles whose files exist, most specific first.
    pub config_styles: Vec<NetConfigStyle>,
    pub config_files: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NetConfigStyle {
    Ifupdown,
    Ifcfg,
    Netplan,
    NetworkManager,
    Networkd,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    pub mac: Option<String>,
    pub mtu: Option<u32>,
    pub up: bool,
    /// CIDR notation, IPv4 and IPv6.
    pub addresses: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Route {
    /// "default" or a CIDR.
    pub destination: String,
    pub gateway: Option<String>,
    pub device: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Dns {
    pub nameservers: Vec<String>,
    pub search: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Services {
    /// "systemd" when systemd listed its running units, "processes" when the
    /// list was derived from init scripts matched against running processes.
    pub source: String,
    pub running: Vec<String>,
    /// Distinct names of running processes (kernel threads excluded).
    pub processes: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TarFlavour {
    Gnu,
    Busybox,
    Bsd,
    Missing,
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TarInfo {
    pub flavour: TarFlavour,
    pub version: Option<String>,
    pub xattrs: bool,
    pub acls: bool,
    pub selinux: bool,
}

/// What the source's own tools can do. The data path adapts to this.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Capabilities {
    pub tar: TarInfo,
    /// GNU find's `-printf` (else the listing falls back to find + stat, or ls).
    pub find_printf: bool,
    /// `stat -c FORMAT`.
    pub stat_format: bool,
    /// The busybox version when busybox is installed.
    pub busybox: Option<String>,
    pub compressors: Vec<String>,
    pub hashers: Vec<String>,
    pub rsync: bool,
}

impl Capabilities {
    /// GNU find and stat, this tar (no xattrs) and these compressors
    /// (tests).
    #[cfg(test)]
    pub fn for_test(flavour: TarFlavour, compressors: &[&str]) -> Capabilities {
        Capabilities {
            tar: TarInfo {
                flavour,
                version: None,
                xattrs: false,
                acls: false,
                selinux: false,
            },
            find_printf: true,
            stat_format: true,
            busybox: None,
            compressors: compressors.iter().map(|c| c.to_string()).collect(),
            hashers: Vec::new(),
            rsync: false,
        }
    }
}

/// Whether an interface name is a virtual interface rather than a NIC: a
/// bridge, bond, team, VLAN, alias, container or VM network, tunnel. Such
/// interfaces keep their names and configuration in the clone; only NICs
/// map onto the VM's NICs.
pub fn is_virtual_interface(name: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "br", "bridge", "bond", "team", "virbr", "docker", "vlan", "veth", "vnet", "tap", "tun",
        "lxcbr", "lxdbr", "ovs", "cni", "flannel", "cali", "vxlan", "wg", "xenbr", "vif",
        "macvlan", "ipvlan",
    ];
    name.contains('.')
        || name.contains(':')
        || PREFIXES.iter().any(|p| {
            name.strip_prefix(p).is_some_and(|rest| {
                rest.is_empty()
                    || rest.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '_')
            })
        })
}
