//! `hotclone export NAME`: the migration's VM for another hypervisor.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use hotclone::launch::{export, hypervisor, VmState};
use hotclone::migration::{self, Migration};

/// Write definitions of a migration's VM (its converted disk, memory,
/// vCPUs and MAC) for the user's hypervisor: a libvirt domain XML (KVM,
/// virtio) and a Xen xl.cfg (HVM, with what differs from KVM in comments).
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  hotclone export web01 -o /etc/libvirt/qemu && virsh define /etc/libvirt/qemu/web01.xml\n  hotclone export web01 --libvirt-type qemu -o /tmp   # for a host without KVM"
)]
pub struct ExportArgs {
    /// The migration (its VM was made by `hotclone launch`).
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Directory to write NAME.xml and NAME.xl.cfg into.
    #[arg(short = 'o', long, value_name = "DIR", default_value = ".")]
    pub output: PathBuf,
    /// The bridge for the NIC when the VM was launched on a tap device.
    #[arg(long, value_name = "BRIDGE", default_value = "br0")]
    pub bridge: String,
    /// The libvirt domain type: kvm, or qemu (emulation, for a host
    /// without KVM, such as a test machine that is itself a VM).
    #[arg(long, value_name = "kvm|qemu", default_value = "kvm")]
    pub libvirt_type: export::DomainType,
}

pub fn run(args: ExportArgs) -> anyhow::Result<()> {
    let migration = Migration::open(&migration::home(), &args.name)?;
    let vm = VmState::load(&migration)?.with_context(|| {
        format!(
            "migration {} has no VM; `hotclone launch {}` makes one",
            args.name, args.name
        )
    })?;
    std::fs::create_dir_all(&args.output)
        .with_context(|| format!("creating {}", args.output.display()))?;
    for (file, text) in [
        (
            format!("{}.xml", vm.name),
            hypervisor::for_vm(&vm).export(
                &vm,
                &export::ExportOptions {
                    fallback_bridge: args.bridge.clone(),
                    domain_type: args.libvirt_type,
                },
            ),
        ),
        (
            format!("{}.xl.cfg", vm.name),
            export::xl_cfg(&vm, &args.bridge),
        ),
    ] {
        let path = args.output.join(file);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        println!("{}", path.display());
    }
    Ok(())
}
