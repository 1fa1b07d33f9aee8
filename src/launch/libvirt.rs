//! libvirt: the migration's VM as a libvirt domain named `hotclone-NAME`,
//! driven with `virsh -c URI` (from libvirt-clients). The domain is
//! persistent, so `virsh list --all` shows it from the first launch on,
//! running or shut off. Each start redefines it for what it boots: the
//! rescue image by direct kernel boot, or its own disk.
//!
//! - The VM has a VGA device, as QEMU direct gives it by default: without
//!   one GRUB on a converted disk stalled before the kernel.
//! - QEMU runs as root (a static DAC label, no relabelling), as it does
//!   under QEMU direct: the migration's keys, initrd and disk are private
//!   to root.
//! - The NIC joins a bridge (`bridge:BR`, libvirt makes the tap) or uses
//!   an existing tap (`tap:TAP`, unmanaged), in libvirtd's own network
//!   namespace; `netns=` is refused.
//! - The disk, kernel and console log are files on this host, so the URI
//!   names a libvirtd on this host (`qemu:///system` or `qemu:///session`).
//!
//! On failure the command virsh ran and its output are returned. A domain
//! that did not start stays defined and shut off. A domain of that name
//! that is not this migration's is never redefined.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::export::xml_escape;
use super::qemu::{boot_mode, rescue_cmdline, run};
use super::{io, BootMode, LaunchError, NetSpec, VmFiles, VmState};
use crate::rescue::RescueImage;

/// A libvirtd on this host, and the domain type to ask it for.
pub struct Libvirt {
    pub uri: String,
    /// `kvm` or `qemu` (TCG); `None`: `kvm` when libvirt offers it.
    pub domain_type: Option<String>,
}

/// The domain's name.
pub fn domain_name(migration: &str) -> String {
    format!("hotclone-{migration}")
}

/// What marks a domain as this migration's own (its `<description>`).
fn description(migration: &str) -> String {
    format!("hotclone migration {migration}")
}

/// A direct kernel boot: the rescue image.
pub struct KernelBoot {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub cmdline: String,
}

/// What a domain definition holds beyond the VM's record.
pub struct DomainParts<'a> {
    /// `kvm` or `qemu`.
    pub domain_type: &'a str,
    /// The UUID of the domain being redefined (`None`: libvirt makes one).
    pub uuid: Option<&'a str>,
    /// The serial console's log file.
    pub console: &'a Path,
    /// The rescue kernel, or `None` to boot the disk.
    pub boot: Option<&'a KernelBoot>,
}

/// The libvirt domain that runs `vm` (its paths absolute). Pure.
pub fn domain_xml(vm: &VmState, parts: &DomainParts) -> String {
    let DomainParts {
        domain_type,
        uuid,
        console,
        boot,
    } = *parts;
    let uuid = uuid
        .map(|u| format!("  <uuid>{}</uuid>\n", xml_escape(u)))
        .unwrap_or_default();
    let e = |p: &Path| xml_escape(&p.display().to_string());
    let os_boot = match boot {
        Some(k) => format!(
            "    <kernel>{}</kernel>\n    <initrd>{}</initrd>\n    <cmdline>{}</cmdline>\n",
            e(&k.kernel),
            e(&k.initrd),
            xml_escape(&k.cmdline)
        ),
        None => "    <boot dev='hd'/>\n".into(),
    };
    let nic = match &vm.net {
        NetSpec::Bridge { bridge, .. } => format!(
            "    <interface type='bridge'>\n      <mac address='{mac}'/>\n      <source bridge='{br}'/>\n      <model type='virtio'/>\n    </interface>\n",
            mac = vm.mac,
            br = xml_escape(bridge)
        ),
        NetSpec::Tap { tap, .. } => format!(
            "    <interface type='ethernet'>\n      <mac address='{mac}'/>\n      <target dev='{tap}' managed='no'/>\n      <model type='virtio'/>\n    </interface>\n",
            mac = vm.mac,
            tap = xml_escape(tap)
        ),
    };
    format!(
        "<domain type='{domain_type}'>
{uuid}  <name>{name}</name>
  <description>{description}</description>
  <memory unit='MiB'>{mem}</memory>
  <vcpu>{cpus}</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
{os_boot}  </os>
  <features>
    <acpi/>
    <apic/>
  </features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='{fmt}' cache='writeback'/>
      <source file='{disk}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
{nic}    <video>
      <model type='vga'/>
    </video>
    <serial type='file'>
      <source path='{console}'/>
      <target port='0'/>
    </serial>
  </devices>
  <seclabel type='static' model='dac' relabel='no'>
    <label>+0:+0</label>
  </seclabel>
</domain>
",
        name = xml_escape(&domain_name(&vm.name)),
        description = xml_escape(&description(&vm.name)),
        mem = vm.memory_mib,
        cpus = vm.cpus,
        fmt = vm.format.name(),
        disk = e(&vm.disk),
        console = e(console),
    )
}

fn absolute(path: &Path) -> Result<PathBuf, LaunchError> {
    std::path::absolute(path).map_err(io(path))
}

impl Libvirt {
    fn spec(&self) -> String {
        super::HypervisorSpec::Libvirt {
            uri: self.uri.clone(),
            domain_type: self.domain_type.clone(),
        }
        .to_string()
    }

    /// `virsh -c URI ARGS`: its output, or the command and what it said.
    fn virsh(&self, args: &[&str]) -> Result<String, LaunchError> {
        let mut all = vec!["-c".to_string(), self.uri.clone()];
        all.extend(args.iter().map(|a| a.to_string()));
        run(None, "virsh", &all, "libvirt-clients")
    }

    /// `kvm` when libvirt offers it for x86_64, else `qemu` (TCG).
    fn domain_type(&self) -> Result<String, LaunchError> {
        if let Some(t) = &self.domain_type {
            return Ok(t.clone());
        }
        let caps = self.virsh(&["capabilities"])?;
        Ok(if caps.contains("<domain type='kvm'") {
            "kvm".into()
        } else {
            "qemu".into()
        })
    }

    /// The UUID of this migration's domain when it is defined already
    /// (a redefinition keeps it); a domain of our name that is someone
    /// else's is refused.
    fn existing_uuid(&self, name: &str) -> Result<Option<String>, LaunchError> {
        let domain = domain_name(name);
        match self.virsh(&["dumpxml", &domain]) {
            Err(LaunchError::Command { .. }) => Ok(None), // no such domain
            Err(e) => Err(e),
            Ok(xml) if xml.contains(&xml_escape(&description(name))) => Ok(xml
                .split_once("<uuid>")
                .and_then(|(_, rest)| rest.split_once("</uuid>"))
                .map(|(uuid, _)| uuid.trim().to_string())),
            Ok(_) => Err(LaunchError::Unsupported {
                what: format!("a libvirt domain named {domain} that is not migration {name}'s"),
                hypervisor: self.spec(),
                advice: format!(
                    "hotclone never redefines another domain; rename or undefine it (virsh -c {} domrename/undefine {domain}), or use another migration name",
                    self.uri
                ),
            }),
        }
    }

    fn state_of(&self, name: &str) -> Option<String> {
        self.virsh(&["domstate", &domain_name(name)])
            .ok()
            .map(|s| s.trim().to_string())
    }

    pub fn start(
        &self,
        state: &mut VmState,
        files: &VmFiles,
        rescue: Option<&RescueImage>,
    ) -> Result<(), LaunchError> {
        if let Some(ns) = state.net.netns() {
            return Err(LaunchError::Unsupported {
                what: format!("--net with netns={ns}"),
                hypervisor: self.spec(),
                advice: "libvirt puts the NIC in libvirtd's own network namespace; leave netns= out, with the bridge where libvirtd runs".into(),
            });
        }
        if !state.drive_options.is_empty() {
            return Err(LaunchError::Unsupported {
                what: format!("the drive options {}", state.drive_options.join(",")),
                hypervisor: self.spec(),
                advice: "run this VM under QEMU direct (--hypervisor qemu)".into(),
            });
        }
        let uuid = self.existing_uuid(&state.name)?;
        let mode = boot_mode(rescue);
        let console = absolute(&files.console(mode))?;
        let _ = std::fs::remove_file(&console);
        let boot = match rescue {
            Some(r) => Some(KernelBoot {
                kernel: absolute(&r.kernel())?,
                initrd: absolute(&files.initrd())?,
                cmdline: rescue_cmdline(state),
            }),
            None => None,
        };
        let vm = VmState {
            disk: absolute(&state.disk)?,
            ..state.clone()
        };
        let xml = domain_xml(
            &vm,
            &DomainParts {
                domain_type: &self.domain_type()?,
                uuid: uuid.as_deref(),
                console: &console,
                boot: boot.as_ref(),
            },
        );
        let path = files.dir.join("domain.xml");
        std::fs::write(&path, xml).map_err(io(&path))?;
        self.virsh(&["define", &path.display().to_string()])?;
        let domain = domain_name(&state.name);
        self.virsh(&["start", &domain])?;
        (state.tap, state.tap_created) = match &state.net {
            NetSpec::Tap { tap, .. } => (tap.clone(), false),
            NetSpec::Bridge { .. } => (String::new(), false),
        };
        state.pid = std::fs::read_to_string(format!("/run/libvirt/qemu/{domain}.pid"))
            .ok()
            .and_then(|t| t.trim().parse().ok());
        state.mode = mode;
        Ok(())
    }

    pub fn stop(&self, state: &mut VmState) -> Result<(), LaunchError> {
        if self.running(state) {
            let domain = domain_name(&state.name);
            // SIGTERM first (QEMU exits cleanly, flushing its disk), then
            // SIGKILL: libvirt's destroy.
            if let Err(e) = self.virsh(&["destroy", &domain]) {
                if self.running(state) {
                    return Err(e);
                }
            }
            let started = Instant::now();
            while self.running(state) && started.elapsed() < Duration::from_secs(30) {
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        state.pid = None;
        Ok(())
    }

    pub fn running(&self, state: &VmState) -> bool {
        matches!(
            self.state_of(&state.name).as_deref(),
            Some("running" | "paused" | "in shutdown" | "blocked")
        )
    }
}

/// Where the console of the VM booted in `mode` is logged (the domain's
/// serial port writes that file).
pub fn console_log(files: &VmFiles, mode: BootMode) -> PathBuf {
    files.console(mode)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::launch::HypervisorSpec;

    fn vm(net: NetSpec) -> VmState {
        VmState {
            tap: String::new(),
            tap_created: false,
            memory_mib: 2048,
            mode: BootMode::Rescue,
            hypervisor: HypervisorSpec::Libvirt {
                uri: "qemu:///system".into(),
                domain_type: None,
            },
            ..crate::launch::example_vm(net)
        }
    }

    #[test]
    fn rescue_and_disk_domains_match_their_goldens() {
        let v = vm(NetSpec::Bridge {
            bridge: "br0".into(),
            netns: None,
        });
        let rescue = KernelBoot {
            kernel: "/r/vmlinuz".into(),
            initrd: "/m/web01/vm/initrd.img".into(),
            cmdline: rescue_cmdline(&v),
        };
        let rescue_boot = DomainParts {
            domain_type: "qemu",
            uuid: None,
            console: Path::new("/m/web01/vm/console-rescue.log"),
            boot: Some(&rescue),
        };
        crate::golden::assert_golden("libvirt", "web01-rescue.xml", &domain_xml(&v, &rescue_boot));
        // A redefinition (the boot from its disk) keeps the domain's UUID:
        // without it libvirt refuses the same name with a new UUID.
        let disk_boot = DomainParts {
            domain_type: "kvm",
            uuid: Some("65f528fb-0763-4d6a-a62b-a483785c15bc"),
            console: Path::new("/m/web01/vm/console-disk.log"),
            boot: None,
        };
        crate::golden::assert_golden("libvirt", "web01-disk.xml", &domain_xml(&v, &disk_boot));
    }

    #[test]
    fn an_existing_tap_is_used_unmanaged_and_no_secret_is_in_the_domain() {
        let v = vm(NetSpec::Tap {
            tap: "tap7".into(),
            netns: None,
        });
        let parts = DomainParts {
            domain_type: "qemu",
            uuid: None,
            console: Path::new("/c.log"),
            boot: None,
        };
        let xml = domain_xml(&v, &parts);
        assert!(
            xml.contains("<interface type='ethernet'>")
                && xml.contains("<target dev='tap7' managed='no'/>"),
            "{xml}"
        );
        assert!(xml.contains("web01 &lt;old&gt;.qcow2"), "{xml}");
        // The keys travel in the initrd file, never in the definition.
        assert!(!xml.contains("PRIVATE") && !xml.contains("ssh-ed25519"));
    }
}
