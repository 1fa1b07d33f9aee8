//! Installing Debian packages the lab needs.
use crate::sh;
use anyhow::{Context, Result};

/// True if dpkg says `pkg` is installed.
pub fn is_installed(pkg: &str) -> bool {
    match sh::cmd("dpkg-query").args(["-W", "-f=${Status}", pkg]).output() {
        Ok(s) => s.contains("install ok installed"),
        Err(_) => false,
    }
}

/// `apt-get install -y` whichever of `pkgs` are missing. Runs
/// `apt-get update` and retries once if the first install fails.
pub fn ensure_packages(pkgs: &[&str]) -> Result<()> {
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
    sh::cmd("apt-get").arg("update").run().context("apt-get update failed")?;
    install().with_context(|| {
        format!("could not install {}; install them by hand with apt-get", missing.join(" "))
    })
}
