//! `hotclone plan` against lab sources: the plan follows from what the
//! source really is (its installed kernel, its usage).

mod common;

use common::{lab, run, run_ok};
use hotclone::plan::{FsType, PartitionRole, PartitionTable, Plan};

fn plan_for(source: &str, target: &str) -> (Plan, String) {
    let lab = lab();
    let dir = std::env::temp_dir().join(format!("hotclone-plan-{source}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("plan.toml");
    let summary = run_ok(
        lab.hotclone()
            .args(["plan", "--batch", "-F"])
            .arg(&lab.ssh_config)
            .arg(source)
            .arg("--target")
            .arg(target)
            .arg("-o")
            .arg(&file),
    );
    let plan = Plan::from_toml(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    (plan, summary)
}

#[test]
fn plan_debian11_targets_its_installed_kernel() {
    let lab = lab();
    let src = lab.source("debian11");
    let (plan, summary) = plan_for("debian11", "image:/nonexistent/d11.qcow2");
    let kernel = src.kernel_installed.clone().unwrap();
    assert_eq!(plan.source.kernel, kernel);
    assert_eq!(plan.disk.partition_table, PartitionTable::Gpt);
    assert_eq!(plan.disk.partitions[0].role, PartitionRole::BiosBoot);
    let root = plan
        .disk
        .partitions
        .iter()
        .find(|p| p.mount_point.as_deref() == Some("/"))
        .unwrap();
    let fs = root.fs.as_ref().unwrap();
    assert_eq!(fs.fs_type, FsType::Ext4);
    // Bullseye's 5.10 kernel predates orphan_file (5.15) and nothing else.
    assert_eq!(fs.features_off, vec!["orphan_file"]);
    assert!(root.size_bytes > root.source_used_bytes.unwrap());
    assert!(summary.contains("^orphan_file"), "{summary}");
    assert!(plan
        .network
        .iter()
        .any(|n| n.source_mac.as_deref() == Some(src.mac.as_str())
            && n.addresses.contains(&format!("{}/{}", src.ip, src.prefix))));
}

#[test]
fn plan_refuses_a_disk_too_small_with_both_sizes() {
    let lab = lab();
    let out = run(lab
        .hotclone()
        .args(["plan", "--batch", "-F"])
        .arg(&lab.ssh_config)
        .arg("debian12")
        .args(["--target", "image:/nonexistent/x.img,size=100M"]));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("too small") && err.contains("the disk has 100.0 MiB"),
        "{err}"
    );
}
