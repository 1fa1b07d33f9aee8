//! Lab sources: per-lab disk copies, their overlay files, and their sshd
//! running with the disk loop-mounted as its own root.
use super::netns::Host;
use super::recipe::{self, NetworkStack, Recipe};
use crate::sh;
use anyhow::{bail, Context, Result};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sshd {
    OpenSsh,
    Dropbear,
}

impl Sshd {
    pub fn as_str(self) -> &'static str {
        match self {
            Sshd::OpenSsh => "openssh",
            Sshd::Dropbear => "dropbear",
        }
    }
}

/// A source as the lab defines it (fixed contract with the tests).
#[derive(Debug, Clone)]
pub struct SourceSpec {
    pub name: &'static str,
    pub host: Host,
    pub hostname: &'static str,
    pub recipe: &'static Recipe,
    pub sshd: Sshd,
    /// sshd restricted to the OpenSSH 5.x algorithm set.
    pub legacy: bool,
}

pub const CLIENT: Host = Host {
    ns: "hc-client",
    port: "v-client",
    ip: "198.51.100.2",
    mac: "02:48:43:00:00:02",
};

pub const SOURCES: [SourceSpec; 7] = [
    SourceSpec {
        name: "debian12",
        host: Host {
            ns: "hc-debian12",
            port: "v-debian12",
            ip: "198.51.100.11",
            mac: "02:48:43:00:00:11",
        },
        hostname: "src-debian12",
        recipe: &recipe::DEBIAN12,
        sshd: Sshd::OpenSsh,
        legacy: false,
    },
    SourceSpec {
        name: "debian11",
        host: Host {
            ns: "hc-debian11",
            port: "v-debian11",
            ip: "198.51.100.12",
            mac: "02:48:43:00:00:12",
        },
        hostname: "src-debian11",
        recipe: &recipe::DEBIAN11,
        sshd: Sshd::OpenSsh,
        legacy: false,
    },
    SourceSpec {
        name: "legacy-ssh",
        host: Host {
            ns: "hc-legacy",
            port: "v-legacy",
            ip: "198.51.100.13",
            mac: "02:48:43:00:00:13",
        },
        hostname: "src-legacy",
        recipe: &recipe::DEBIAN12,
        sshd: Sshd::OpenSsh,
        legacy: true,
    },
    // debian12 again, for live_lab alone: its cutover takes this source's
    // address and service away, so it runs beside the other test binaries
    // (`cargo xtask test`) without pulling debian12 from under them.
    SourceSpec {
        name: "debian12-live",
        host: Host {
            ns: "hc-live12",
            port: "v-live12",
            ip: "198.51.100.17",
            mac: "02:48:43:00:00:17",
        },
        hostname: "src-live12",
        recipe: &recipe::DEBIAN12,
        sshd: Sshd::OpenSsh,
        legacy: false,
    },
    SourceSpec {
        name: "debian13",
        host: Host {
            ns: "hc-debian13",
            port: "v-debian13",
            ip: "198.51.100.15",
            mac: "02:48:43:00:00:15",
        },
        hostname: "src-debian13",
        recipe: &recipe::DEBIAN13,
        sshd: Sshd::OpenSsh,
        legacy: false,
    },
    SourceSpec {
        name: "grub-legacy",
        host: Host {
            ns: "hc-grublegacy",
            port: "v-grublegacy",
            ip: "198.51.100.16",
            mac: "02:48:43:00:00:16",
        },
        hostname: "src-grub-legacy",
        recipe: &recipe::GRUB_LEGACY,
        sshd: Sshd::OpenSsh,
        legacy: false,
    },
    SourceSpec {
        name: "busybox",
        host: Host {
            ns: "hc-busybox",
            port: "v-busybox",
            ip: "198.51.100.14",
            mac: "02:48:43:00:00:14",
        },
        hostname: "src-busybox",
        recipe: &recipe::BUSYBOX,
        sshd: Sshd::Dropbear,
        legacy: false,
    },
];

/// Client-side options that match the legacy server's algorithms.
pub const LEGACY_CLIENT_OPTS: &[(&str, &str)] = &[
    (
        "KexAlgorithms",
        "diffie-hellman-group14-sha1,diffie-hellman-group1-sha1,diffie-hellman-group-exchange-sha1",
    ),
    ("HostKeyAlgorithms", "ssh-rsa"),
    ("PubkeyAcceptedAlgorithms", "ssh-rsa"),
    ("Ciphers", "aes128-ctr,aes128-cbc,3des-cbc"),
    ("MACs", "hmac-sha1,hmac-md5"),
];

const LEGACY_SSHD_CONFIG: &str = "\
# Restricted to what an OpenSSH 5.x server offered (hotclone lab).
Port 22
Protocol 2
HostKey /etc/ssh/ssh_host_rsa_key
KexAlgorithms diffie-hellman-group14-sha1,diffie-hellman-group1-sha1,diffie-hellman-group-exchange-sha1
HostKeyAlgorithms ssh-rsa
Ciphers aes128-ctr,aes128-cbc,3des-cbc
MACs hmac-sha1,hmac-md5
PubkeyAcceptedAlgorithms ssh-rsa
PermitRootLogin yes
# Hardened servers limit the sessions of one connection; the listing
# walk (issue 16) runs several finds at once and must live with two.
MaxSessions 2
PasswordAuthentication yes
KbdInteractiveAuthentication no
UsePAM yes
X11Forwarding no
PrintMotd no
AcceptEnv LANG LC_*
Subsystem sftp /usr/lib/openssh/sftp-server
";

/// Facts read from a source's disk image.
#[derive(Debug, Default)]
pub struct ImageFacts {
    pub debian_version: Option<String>,
    pub kernel_installed: Option<String>,
}

impl SourceSpec {
    pub fn addr(&self) -> String {
        format!("{}/24", self.host.ip)
    }

    /// A NetworkManager keyfile as `nmcli` writes one for a static
    /// address: the connection pinned to this source's NIC by its MAC.
    fn keyfile(&self) -> String {
        format!(
            "[connection]\nid=lan\nuuid=5f3c1a52-8e0b-4d7e-9a61-3b2f4c8d9e{}\ntype=ethernet\n\n[ethernet]\nmac-address={}\n\n[ipv4]\naddress1={}\nmethod=manual\n\n[ipv6]\naddr-gen-mode=default\nmethod=ignore\n\n[proxy]\n",
            &self.host.mac[15..],
            self.host.mac.to_uppercase(),
            self.addr()
        )
    }

    /// Write the per-lab files for this source into `stage` (a tree that is
    /// copied over the image root with `cp -a`).
    fn stage_overlay(
        &self,
        stage: &Path,
        authorized_keys: &str,
        host_keys: Option<&Path>,
    ) -> Result<()> {
        recipe::remove_tree(stage)?;
        mkdir_mode(stage, 0o755)?;
        mkdir_mode(&stage.join("etc"), 0o755)?;
        if self.recipe.network == NetworkStack::Ifupdown {
            mkdir_mode(&stage.join("etc/network"), 0o755)?;
        }
        mkdir_mode(&stage.join("root"), 0o700)?;
        mkdir_mode(&stage.join("root/.ssh"), 0o700)?;
        write_mode(
            &stage.join("etc/hostname"),
            &format!("{}\n", self.hostname),
            0o644,
        )?;
        let hosts = format!(
            "127.0.0.1\tlocalhost\n{}\t{}\n",
            self.host.ip, self.hostname
        );
        write_mode(&stage.join("etc/hosts"), &hosts, 0o644)?;
        match self.recipe.network {
            NetworkStack::Ifupdown => {
                let ifaces = format!(
                    "auto lo\niface lo inet loopback\n\nauto eth0\niface eth0 inet static\n\taddress {}\n",
                    self.addr()
                );
                write_mode(&stage.join("etc/network/interfaces"), &ifaces, 0o644)?;
            }
            NetworkStack::NetworkManager => {
                let dir = stage.join("etc/NetworkManager/system-connections");
                mkdir_mode(&stage.join("etc/NetworkManager"), 0o755)?;
                mkdir_mode(&dir, 0o755)?;
                // NetworkManager reads only keyfiles no one else can.
                write_mode(&dir.join("lan.nmconnection"), &self.keyfile(), 0o600)?;
            }
        }
        write_mode(
            &stage.join("root/.ssh/authorized_keys"),
            authorized_keys,
            0o600,
        )?;
        if self.legacy {
            mkdir_mode(&stage.join("etc/ssh"), 0o755)?;
            write_mode(
                &stage.join("etc/ssh/sshd_config"),
                LEGACY_SSHD_CONFIG,
                0o644,
            )?;
        }
        if let Some(dir) = host_keys {
            mkdir_mode(&stage.join("etc/ssh"), 0o755)?;
            sh::cmd("sh")
                .args(["-c", "cp -p \"$1\"/ssh_host_* \"$2\"/etc/ssh/", "cp"])
                .arg(dir)
                .arg(stage)
                .run()?;
        }
        Ok(())
    }

    /// Copy the cached image to `disk` and apply the per-lab overlay.
    /// `host_keys`: a directory of `ssh_host_*` files that replace the
    /// image's own (so sources sharing a cached image get their own identity).
    pub fn prepare_disk(
        &self,
        cached: &Path,
        disk: &Path,
        stage: &Path,
        keys: &str,
        host_keys: Option<&Path>,
    ) -> Result<ImageFacts> {
        let _ = fs::remove_file(disk);
        sh::cmd("cp")
            .arg("--sparse=always")
            .arg(cached)
            .arg(disk)
            .run()?;
        self.overlay(disk, stage, keys, host_keys)
    }

    /// Apply the per-lab overlay to `disk` itself (a disk this source owns).
    pub fn overlay(
        &self,
        disk: &Path,
        stage: &Path,
        keys: &str,
        host_keys: Option<&Path>,
    ) -> Result<ImageFacts> {
        self.stage_overlay(stage, keys, host_keys)?;
        let out = sh::private_mounts(OVERLAY_SH, "overlay")
            .arg(disk)
            .arg(stage)
            .output()
            .with_context(|| format!("applying lab files to {}", disk.display()))?;
        Ok(parse_facts(&out))
    }

    /// Start the source's sshd in its namespace; returns the PID of the
    /// outer `unshare` process (leader of its own process group).
    pub fn start(&self, disk: &Path, mnt: &Path, log: &Path) -> Result<u32> {
        fs::create_dir_all(mnt)?;
        let daemon = match self.sshd {
            Sshd::OpenSsh => "mkdir -p /run/sshd; exec /usr/sbin/sshd -D -e",
            Sshd::Dropbear => {
                "exec /usr/sbin/dropbear -F -E -p 22 -r /etc/dropbear/dropbear_rsa_host_key \
                 -r /etc/dropbear/dropbear_ed25519_host_key"
            }
        };
        let script = format!("{START_SH}\n{daemon}\n");
        let (mut cmd, shown) = sh::netns(self.host.ns, "unshare")
            .args([
                "--mount",
                "--uts",
                "--pid",
                "--fork",
                "--kill-child",
                "--propagation",
                "private",
            ])
            .args(["sh", "-c", &script, "start"])
            .arg(self.hostname)
            .arg(disk)
            .arg(mnt)
            .into_command();
        let logf = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        cmd.env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("LANG", "C")
            .stdin(Stdio::null())
            .stdout(logf.try_clone()?)
            .stderr(logf)
            .process_group(0);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start `{shown}`"))?;
        Ok(child.id())
    }
}

/// Host keys of their own for sources that reuse another source's image,
/// made once and kept in the cache (`<cache>/<name>-hostkeys/`), so the
/// source's identity survives `lab down`/`up`.
pub fn ensure_own_host_keys(cache: &Path, spec: &SourceSpec) -> Result<PathBuf> {
    let dir = cache.join(format!("{}-hostkeys", spec.name));
    if dir.join("ssh_host_rsa_key.pub").exists() {
        return Ok(dir);
    }
    let tmp = cache.join(format!("{}-hostkeys.tmp", spec.name));
    recipe::remove_tree(&tmp)?;
    fs::create_dir_all(&tmp)?;
    let comment = format!("root@{}", spec.hostname);
    for (t, bits) in [("rsa", "3072"), ("ecdsa", "256"), ("ed25519", "256")] {
        sh::cmd("ssh-keygen")
            .args(["-q", "-N", "", "-t", t, "-b", bits, "-C", &comment, "-f"])
            .arg(tmp.join(format!("ssh_host_{t}_key")))
            .run()?;
    }
    fs::rename(&tmp, &dir)
        .with_context(|| format!("renaming {} to {}", tmp.display(), dir.display()))?;
    Ok(dir)
}

/// Apply the staged overlay to an image; print facts. $1=image $2=stage.
const OVERLAY_SH: &str = r#"set -eu
M=$(mktemp -d /tmp/hc-overlay.XXXXXX)
mount -o loop "$1" "$M"
cp -a "$2"/. "$M"/
if [ -f "$M/etc/debian_version" ]; then echo "debian_version=$(cat "$M/etc/debian_version")"; fi
if [ -d "$M/lib/modules" ]; then echo "kernel_installed=$(ls "$M/lib/modules" | sort -V | tail -n1)"; fi
sync
umount "$M"
rmdir "$M"
"#;

/// Boot a source root: loop-mount the image, give it proc/sys/a small /dev
/// (with its root disk's node),
/// pivot into it. $1=hostname $2=image $3=mountpoint. The daemon line follows.
const START_SH: &str = r#"set -eu
hostname "$1"
mount --make-rprivate /
mount -o loop "$2" "$3"
ROOTDEV=$(findmnt -n -o SOURCE "$3")
cd "$3"
mount -t proc proc proc
mount -t sysfs sysfs sys
mount -t tmpfs -o mode=755,size=1m,nosuid devtmp dev
for n in "null 1 3" "zero 1 5" "full 1 7" "random 1 8" "urandom 1 9" "tty 5 0"; do
  set -- $n; mknod -m 666 "dev/$1" c "$2" "$3"
done
# The source's own disk has its node, as on a real server (blkid reads it).
set -- $(stat -c '%t %T' "$ROOTDEV"); mknod -m 660 "dev/${ROOTDEV#/dev/}" b $((0x$1)) $((0x$2))
ln -s /proc/self/fd dev/fd
ln -s /proc/self/fd/0 dev/stdin; ln -s /proc/self/fd/1 dev/stdout; ln -s /proc/self/fd/2 dev/stderr
mkdir dev/pts dev/shm
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5 devpts dev/pts
ln -s pts/ptmx dev/ptmx
mount -t tmpfs -o mode=1777,nosuid,nodev shm dev/shm
if [ -d run ]; then mount -t tmpfs -o mode=755,nosuid,nodev,size=16m tmpfs run; fi
mkdir -p .oldroot
pivot_root . .oldroot
cd /
umount -l /.oldroot
rmdir /.oldroot
echo "source root ready: $(hostname)"
"#;

fn parse_facts(out: &str) -> ImageFacts {
    let mut f = ImageFacts::default();
    for line in out.lines() {
        let nonempty = |v: &str| Some(v.trim().to_string()).filter(|s| !s.is_empty());
        if let Some(v) = line.strip_prefix("debian_version=") {
            f.debian_version = nonempty(v);
        } else if let Some(v) = line.strip_prefix("kernel_installed=") {
            f.kernel_installed = nonempty(v);
        }
    }
    f
}

fn mkdir_mode(p: &Path, mode: u32) -> Result<()> {
    fs::create_dir_all(p).with_context(|| format!("mkdir {}", p.display()))?;
    fs::set_permissions(p, fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn write_mode(p: &Path, text: &str, mode: u32) -> Result<()> {
    fs::write(p, text).with_context(|| format!("writing {}", p.display()))?;
    fs::set_permissions(p, fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// True if `pid` is a live (non-zombie) process whose command is unshare.
pub fn pid_is_ours(pid: u32) -> bool {
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit(')')
        .next()
        .and_then(|s| s.split_whitespace().next());
    let first = cmdline.split(|b| *b == 0).next().unwrap_or_default();
    first.ends_with(b"unshare") && state.is_some_and(|s| s != "Z")
}

/// Path of the recorded PID file for a source.
pub fn pid_file(lab: &Path, name: &str) -> PathBuf {
    lab.join("pids").join(format!("{name}.pid"))
}

/// Read a recorded PID, if any.
pub fn read_pid(lab: &Path, name: &str) -> Option<u32> {
    fs::read_to_string(pid_file(lab, name))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Ensure the source answers on port 22 from the client namespace.
pub fn wait_port(spec: &SourceSpec, log: &Path, secs: u64) -> Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if super::netns::tcp_answers(CLIENT.ns, spec.host.ip, 22) {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let text = fs::read_to_string(log).unwrap_or_default();
    bail!(
        "source {} ({}) did not answer on port 22 within {secs}s.\n--- last lines of {} ---\n{}\
         Fix the cause, then run `cargo xtask lab down && cargo xtask lab up`.",
        spec.name,
        spec.host.ip,
        log.display(),
        sh::tail(&text, 20)
    )
}
