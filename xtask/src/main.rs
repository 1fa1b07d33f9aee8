use anyhow::Result;
use clap::{Parser, Subcommand};
use xtask::{apt, demo, lab, rescue, suite};

#[derive(Parser)]
#[command(name = "xtask", about = "hotclone developer tasks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The test lab (network namespaces + real source roots).
    Lab {
        #[command(subcommand)]
        action: LabCmd,
    },
    /// The whole test suite, lab tests included: installs missing Debian
    /// packages, brings the lab up, runs every test binary (live_lab in a
    /// lane of its own beside the others), takes the lab down. Extra
    /// arguments go to a plain `cargo test --workspace` instead (e.g.
    /// `-- --test probe_lab`).
    Test {
        /// Leave the lab up afterwards.
        #[arg(long)]
        keep_lab: bool,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        cargo_args: Vec<String>,
    },
    /// The whole story on the lab: build the rescue image, launch a target
    /// VM, clone debian12 into it live, boot the clone, prove its identity.
    Demo,
    /// Build the rescue image (cached by recipe) into <labdir>/rescue.
    RescueImage,
    /// Benchmarks: hotclone against tar|ssh|tar, tar|zstd|ssh and rsync over
    /// OpenSSH, measured in the same run on a bench source of its own.
    /// Writes target/bench/results.{md,json} and a chart (results.svg).
    Bench(xtask::bench::BenchArgs),
}

#[derive(Subcommand)]
enum LabCmd {
    /// Build cached images if needed and start the lab (idempotent).
    Up,
    /// Stop the lab and delete its namespaces and disks (keeps keys).
    Down,
    /// Show each host; exit 1 if the lab is partially up.
    Status,
    /// Build the cached images only (the roots and the VM sources' disks),
    /// starting nothing: a lab that is up stays as it is.
    Images,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Lab { action } => run_lab(action),
        Cmd::Test {
            keep_lab,
            cargo_args,
        } => suite::run(keep_lab, &cargo_args),
        Cmd::Demo => demo::run(),
        Cmd::Bench(args) => xtask::bench::run(&args),
        Cmd::RescueImage => {
            apt::ensure_packages(&suite::packages())?;
            rescue::ensure(&lab::LabOptions::from_env()).map(|_| ())
        }
    }
}

fn run_lab(action: LabCmd) -> Result<()> {
    let opts = lab::LabOptions::from_env();
    match action {
        LabCmd::Up => {
            let info = lab::up(&opts)?;
            for s in &info.sources {
                println!("{:<13} {:<15} {} pid {}", s.name, s.ip, s.sshd, s.pid);
            }
            println!(
                "ssh: ip netns exec {} ssh -F {} debian12",
                info.client_ns,
                info.ssh_config.display()
            );
            Ok(())
        }
        LabCmd::Down => {
            let t = std::time::Instant::now();
            lab::down_with(&opts)?;
            eprintln!("lab down in {:.1}s", t.elapsed().as_secs_f64());
            Ok(())
        }
        LabCmd::Images => {
            lab::check_prerequisites()?;
            for (name, path) in lab::build_all_images(&opts)? {
                println!("{name:<13} {}", path.display());
            }
            Ok(())
        }
        LabCmd::Status => {
            if !lab::status(&opts)? {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}
