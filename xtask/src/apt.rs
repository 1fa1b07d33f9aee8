//! Installing Debian packages the lab needs.
use crate::sh;
use anyhow::{Context, Result};

/// True if dpkg says `pkg` is installed.
pub fn is_installed(pkg: &str) -> bool {
    match sh::cmd("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
    {
        Ok(s) => s.contains("install ok installed"),
        Err(_) => false,
    }
}

/// `apt-get install -y` whichever of `pkgs` are missing, then check again:
/// installing one package can remove another (qemu-system-x86 from stable
/// replaces a backported qemu-utils), which a second round puts back.
pub fn ensure_packages(pkgs: &[&str]) -> Result<()> {
    for _ in 0..2 {
        install_missing(pkgs)?;
    }
    let missing: Vec<&str> = pkgs.iter().copied().filter(|p| !is_installed(p)).collect();
    anyhow::ensure!(
        missing.is_empty(),
        "still not installed after apt-get: {}",
        missing.join(" ")
    );
    Ok(())
}

/// One round: runs `apt-get update` and retries once if the install fails.
fn install_missing(pkgs: &[&str]) -> Result<()> {
    let missing: Vec<&str> = pkgs.iter().copied().filter(|p| !is_installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("installing missing packages: {}", missing.join(" "));
    let install = || {
        sh::cmd("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing)
            .run()
    };
    if install().is_ok() {
        return Ok(());
    }
    sh::cmd("apt-get")
        .arg("update")
        .run()
        .context("apt-get update failed")?;
    install().with_context(|| {
        format!(
            "could not install {}; install them by hand with apt-get",
            missing.join(" ")
        )
    })
}
