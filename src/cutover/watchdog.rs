//! The source-side watchdog: a timed rollback left running on the source
//! while its addresses are off it. If the client dies (or loses the
//! source) before it disarms the watchdog, the source gives itself its
//! addresses back and restarts its services after the timeout. It is
//! disarmed before the clone boots; from then on the client rolls back.
//!
//! It leaves nothing behind: the script removes itself when it fires,
//! and disarming removes it and ends its `sleep`.

use std::time::Duration;

/// The flag file: it exists (holding the watchdog's pid) while armed.
pub const ARMED: &str = "/run/hotclone-cutover.armed";
pub const SCRIPT: &str = "/run/hotclone-cutover-watchdog.sh";

/// The script (sent on stdin to [`arm`]'s command).
pub fn script(restore: &str, after: Duration) -> String {
    format!(
        "#!/bin/sh\n\
         # hotclone cutover watchdog: gives this host its addresses back unless disarmed.\n\
         sleep {secs}\n\
         [ -e {ARMED} ] || exit 0\n\
         rm -f {ARMED}\n\
         {restore}\n\
         rm -f \"$0\"\n",
        secs = after.as_secs().max(1)
    )
}

/// Reads the script on stdin, starts it detached, and records its pid.
pub fn arm() -> String {
    format!(
        "umask 077; cat > {SCRIPT} && \
         if command -v setsid >/dev/null 2>&1; then setsid sh {SCRIPT} </dev/null >/dev/null 2>&1 & \
         else nohup sh {SCRIPT} </dev/null >/dev/null 2>&1 & fi; echo $! > {ARMED}"
    )
}

/// Prints `disarmed` when the watchdog was still armed (and stops it),
/// `fired` when it had already run.
pub fn disarm() -> String {
    format!(
        "if [ -e {ARMED} ]; then p=$(cat {ARMED}); rm -f {ARMED} {SCRIPT}; \
         kill \"$p\" 2>/dev/null; echo disarmed; \
         else rm -f {SCRIPT}; echo fired; fi"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_restores_only_while_armed_and_removes_itself() {
        let s = script(
            "ip addr add 198.51.100.11/24 dev eth0",
            Duration::from_secs(300),
        );
        assert!(s.contains("sleep 300\n"), "{s}");
        let armed_check = s
            .find("[ -e /run/hotclone-cutover.armed ] || exit 0")
            .unwrap();
        let restore = s.find("ip addr add").unwrap();
        assert!(armed_check < restore, "{s}");
        assert!(s.ends_with("rm -f \"$0\"\n"), "{s}");
        assert!(disarm().contains("echo fired"));
        assert!(arm().contains("echo $! > /run/hotclone-cutover.armed"));
    }
}
