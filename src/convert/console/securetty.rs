//! `/etc/securetty`: the terminals root may log in on. RHEL 5's lists
//! `console`, `vc/N` and `ttyN` but not `ttyS0`; the VM's serial console
//! is ttyS0, so it is added (and tty1 when missing), each once. The file
//! is only touched when it exists (no securetty means no restriction).

pub struct Securetty;

pub const PATH: &str = "etc/securetty";

one_file_rewriter!(Securetty, "securetty", PATH, false, |text, _| rewrite(text));

/// The pure rewrite.
pub fn rewrite(text: &str) -> String {
    let listed = |t: &str| text.lines().any(|l| l.trim() == t);
    let missing: Vec<&str> = ["tty1", "ttyS0"]
        .into_iter()
        .filter(|t| !listed(t))
        .collect();
    if missing.is_empty() {
        return text.to_string();
    }
    let mut out = text.to_string();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    for t in missing {
        out.push_str(t);
        out.push('\n');
    }
    out
}
