//! Definitions of a migration's VM for the user's own hypervisor, written
//! from the record `launch` keeps ([`VmState`]): a libvirt domain (KVM,
//! virtio disk and NIC) and a Xen `xl.cfg` (HVM). Pure functions of the
//! record; `hotclone export` writes them to files.

use super::{NetSpec, VmState};

pub(super) fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

/// The bridge the VM's NIC should join: the one it was launched on, else
/// `fallback`.
fn bridge<'a>(vm: &'a VmState, fallback: &'a str) -> &'a str {
    match &vm.net {
        NetSpec::Bridge { bridge, .. } => bridge,
        NetSpec::Tap { .. } => fallback,
    }
}

/// What an exported libvirt domain is for.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// The bridge for the NIC when the VM was launched on a tap device.
    pub fallback_bridge: String,
    /// `kvm` (a KVM host), or `qemu` (TCG, for a host without KVM).
    pub domain_type: DomainType,
}

/// A libvirt domain type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainType {
    /// Hardware virtualization: the production choice.
    Kvm,
    /// QEMU's emulation (TCG): slow, for a host without KVM.
    Qemu,
}

impl std::str::FromStr for DomainType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "kvm" => Ok(DomainType::Kvm),
            "qemu" => Ok(DomainType::Qemu),
            _ => Err(format!("libvirt domain type {s:?}: expected kvm or qemu")),
        }
    }
}

/// A libvirt domain: the converted disk on virtio, the VM's MAC on a
/// virtio NIC in its bridge, a serial console. Under KVM the guest gets
/// the host's CPU model; TCG has no host CPU to copy.
pub fn libvirt_xml(vm: &VmState, opts: &ExportOptions) -> String {
    let name = xml_escape(&vm.name);
    let disk = xml_escape(&vm.disk.display().to_string());
    let bridge = xml_escape(bridge(vm, &opts.fallback_bridge));
    let (domain_type, cpu) = match opts.domain_type {
        DomainType::Kvm => ("kvm", "\n  <cpu mode='host-model'/>"),
        DomainType::Qemu => ("qemu", ""),
    };
    format!(
        "<!-- libvirt domain for hotclone migration {name}: `virsh define` this file. -->
<domain type='{domain_type}'>
  <name>{name}</name>
  <memory unit='MiB'>{mem}</memory>
  <vcpu>{cpus}</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <boot dev='hd'/>
  </os>
  <features>
    <acpi/>
    <apic/>
  </features>{cpu}
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='{fmt}' cache='none'/>
      <source file='{disk}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='bridge'>
      <mac address='{mac}'/>
      <source bridge='{bridge}'/>
      <model type='virtio'/>
    </interface>
    <serial type='pty'>
      <target port='0'/>
    </serial>
    <console type='pty'>
      <target type='serial' port='0'/>
    </console>
  </devices>
</domain>
",
        mem = vm.memory_mib,
        cpus = vm.cpus,
        fmt = vm.format.name(),
        mac = vm.mac,
    )
}

/// An `xl.cfg` for Xen HVM, with what differs from KVM said in comments.
pub fn xl_cfg(vm: &VmState, fallback_bridge: &str) -> String {
    format!(
        "# Xen HVM guest for hotclone migration {name}: `xl create` this file.
#
# The clone was converted for KVM (virtio). Under Xen HVM:
# - the disk is seen as emulated IDE until the kernel's xen-blkfront takes it
#   over (as xvda); fstab and the bootloader name filesystems by UUID, so the
#   device name does not matter, and Debian's initramfs (MODULES=most) holds
#   xen-blkfront;
# - the NIC is e1000 (emulated), or xen-netfront once the PV drivers load;
#   the clone boots with net.ifnames=0, so it is eth0 either way;
# - the serial console is the first emulated UART (ttyS0), as under KVM.
name = \"{name}\"
type = \"hvm\"
memory = {mem}
vcpus = {cpus}
disk = [ \"format={fmt}, vdev=xvda, access=rw, target={disk}\" ]
vif = [ \"mac={mac}, bridge={bridge}, model=e1000\" ]
boot = \"c\"
serial = \"pty\"
on_crash = \"restart\"
",
        name = vm.name,
        mem = vm.memory_mib,
        cpus = vm.cpus,
        fmt = vm.format.name(),
        disk = vm.disk.display(),
        mac = vm.mac,
        bridge = bridge(vm, fallback_bridge),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(net: NetSpec) -> VmState {
        crate::launch::example_vm(net)
    }

    fn kvm(bridge: &str) -> ExportOptions {
        ExportOptions {
            fallback_bridge: bridge.into(),
            domain_type: DomainType::Kvm,
        }
    }

    #[test]
    fn a_tcg_domain_has_no_host_cpu_model() {
        let v = vm(NetSpec::Bridge {
            bridge: "br0".into(),
            netns: None,
        });
        let opts = ExportOptions {
            domain_type: DomainType::Qemu,
            ..kvm("virbr0")
        };
        let xml = libvirt_xml(&v, &opts);
        assert!(xml.contains("<domain type='qemu'>"), "{xml}");
        assert!(!xml.contains("<cpu"), "{xml}");
        // Otherwise the KVM domain, line for line.
        let kvm_xml = libvirt_xml(&v, &kvm("virbr0"));
        assert_eq!(
            kvm_xml
                .replace("<domain type='kvm'>", "<domain type='qemu'>")
                .replace("\n  <cpu mode='host-model'/>", ""),
            xml
        );
    }

    #[test]
    fn libvirt_and_xl_definitions_match_their_goldens() {
        let v = vm(NetSpec::Bridge {
            bridge: "br0".into(),
            netns: None,
        });
        crate::golden::assert_golden("export", "web01.xml", &libvirt_xml(&v, &kvm("virbr0")));
        crate::golden::assert_golden("export", "web01.xl.cfg", &xl_cfg(&v, "xenbr0"));
    }

    #[test]
    fn a_tap_launched_vm_gets_the_fallback_bridge_and_names_are_escaped() {
        let v = vm(NetSpec::Tap {
            tap: "tap0".into(),
            netns: None,
        });
        let xml = libvirt_xml(&v, &kvm("virbr0"));
        assert!(xml.contains("<source bridge='virbr0'/>"), "{xml}");
        assert!(xml.contains("web01 &lt;old&gt;.qcow2"), "{xml}");
        assert!(xl_cfg(&v, "xenbr0").contains("bridge=xenbr0"));
    }
}
