//! `hotclone launch`: the target VM of a migration (QEMU direct or libvirt).

use std::time::Duration;

use clap::Args;
use hotclone::launch::{self, DiskSpec, LaunchOptions, NetSpec, StagingIp};
use hotclone::migration::{self, Migration};

use super::progress::CliProgress;

/// Create the target VM of a migration and boot it from the rescue image
/// with a new, empty disk. It waits until the rescue system's SSH answers
/// with the host key it was given, then prints the target to clone into.
/// The VM's keys go into the migration's state, so `hotclone clone SOURCE
/// --name NAME` finds the target by itself.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
hotclone launch web01 --disk /var/lib/vm/web01.qcow2,size=40G --net bridge:br0 --ip 192.0.2.50/24\n  \
hotclone clone root@web01 --name web01             # into the VM, over SSH\n  \
hotclone launch web01 --boot-disk                   # boot the converted clone\n  \
hotclone launch web01 --stop\n  \
hotclone launch web01 --hypervisor libvirt --disk /var/lib/libvirt/images/web01.qcow2,size=40G --net bridge:br0 --ip 192.0.2.50/24\n\n\
Without size=, the disk is sized from the migration's plan (`hotclone plan SOURCE --name NAME`).\n\
Memory and vCPUs follow the source (1-4 GiB, 1-4 vCPUs) unless given.")]
pub struct LaunchArgs {
    /// The migration (see `hotclone status`).
    #[arg(value_name = "NAME")]
    pub name: String,
    /// The VM's disk: PATH[,size=SIZE][,format=raw|qcow2]. A new file; an
    /// existing one is used only if it is this migration's own disk.
    #[arg(long, value_name = "DISK", required_unless_present_any = ["stop", "boot_disk"])]
    pub disk: Option<DiskSpec>,
    /// The NIC: bridge:BRIDGE (a new tap on it) or tap:TAP (an existing
    /// one); add ,netns=NS when it lives in another network namespace.
    #[arg(long, value_name = "NET", required_unless_present_any = ["stop", "boot_disk"])]
    pub net: Option<NetSpec>,
    /// The rescue system's static address, ADDR/PREFIX (default: DHCP,
    /// whose lease shows on the VM's console log).
    #[arg(long, value_name = "ADDR/PREFIX")]
    pub ip: Option<StagingIp>,
    /// Default gateway of the rescue system.
    #[arg(long, value_name = "ADDR", requires = "ip")]
    pub gateway: Option<std::net::Ipv4Addr>,
    /// Memory in MiB (default: like the source, 1024-4096).
    #[arg(long, value_name = "MIB")]
    pub memory: Option<u64>,
    /// vCPUs (default: like the source, 1-4).
    #[arg(long, value_name = "N")]
    pub cpus: Option<u32>,
    /// The rescue image to boot [default: $HOTCLONE_RESCUE_DIR, else
    /// ~/.local/share/hotclone/rescue].
    #[arg(long, value_name = "DIR")]
    pub rescue: Option<std::path::PathBuf>,
    /// Seconds to wait for the rescue system's SSH.
    #[arg(long, value_name = "SECS", default_value_t = 180)]
    pub timeout: u64,
    /// Which hypervisor runs the VM: qemu (a QEMU process of hotclone's
    /// own) or libvirt[:URI][,type=kvm|qemu] (a libvirt domain named
    /// hotclone-NAME, visible to virsh and virt-manager; URI defaults to
    /// qemu:///system). Later commands use the one the VM was launched with.
    #[arg(long, value_name = "HYPERVISOR", default_value = "qemu")]
    pub hypervisor: launch::HypervisorSpec,
    /// Stop the VM.
    #[arg(long, conflicts_with_all = ["disk", "net", "boot_disk"])]
    pub stop: bool,
    /// Restart the VM from its own disk (the converted clone) instead of
    /// the rescue image.
    #[arg(long, conflicts_with_all = ["disk", "net"])]
    pub boot_disk: bool,
    /// Progress and the result as JSON lines on stdout.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: LaunchArgs) -> anyhow::Result<()> {
    let home = migration::home();
    let mut progress = CliProgress::new(args.json);
    if args.stop || args.boot_disk {
        let migration = Migration::open(&home, &args.name)?;
        let state = if args.stop {
            launch::stop(&migration)?
        } else {
            launch::boot_disk(&migration, &mut progress)?
        };
        progress.finish();
        if args.json {
            println!("{}", serde_json::json!({"event": "done", "vm": state}));
        } else if args.stop {
            println!(
                "The VM of {} is stopped; its disk is {}",
                args.name,
                state.disk.display()
            );
        } else {
            println!(
                "The VM of {} boots from {} (pid {}); its console log is {}",
                args.name,
                state.disk.display(),
                state.pid.unwrap_or_default(),
                launch::VmFiles::of(&migration)
                    .console(launch::BootMode::Disk)
                    .display()
            );
        }
        return Ok(());
    }
    let migration = Migration::open_or_create(&home, &args.name)?;
    let ip = args.ip.map(|ip| StagingIp {
        gateway: args.gateway,
        ..ip
    });
    let opts = LaunchOptions {
        disk: args.disk.clone().expect("clap requires --disk"),
        net: args.net.clone().expect("clap requires --net"),
        ip,
        memory_mib: args.memory,
        cpus: args.cpus,
        rescue: args
            .rescue
            .clone()
            .unwrap_or_else(hotclone::rescue::default_dir),
        timeout: Duration::from_secs(args.timeout.max(1)),
        hypervisor: args.hypervisor.clone(),
    };
    let started = std::time::Instant::now();
    let state = launch::launch(&migration, &opts, &mut progress).await?;
    progress.finish();
    let target = state
        .ssh_destination()
        .map(|d| format!("ssh://{d}"))
        .unwrap_or_else(|| "(DHCP: see the console log for the address)".into());
    if args.json {
        println!(
            "{}",
            serde_json::json!({"event": "done", "target": target, "vm": state,
                "seconds": started.elapsed().as_secs_f64()})
        );
    } else {
        println!("{target}");
        eprintln!(
            "The rescue VM of {} answered in {:.1} s (pid {}, {} MiB, {} vCPUs, host key {}).",
            args.name,
            started.elapsed().as_secs_f64(),
            state.pid.unwrap_or_default(),
            state.memory_mib,
            state.cpus,
            state.rescue_host_key
        );
        eprintln!(
            "Clone into it with: hotclone clone SOURCE --name {}",
            args.name
        );
    }
    Ok(())
}
