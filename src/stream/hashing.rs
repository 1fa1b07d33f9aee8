//! The command both sides hash files with (`sync --checksum`, grown
//! files): the source's md5sum or sha1sum, the target's the same tool.
//! Its output is parsed by [`crate::pass::checksum`].

/// The shell command that hashes the NUL-separated relative paths on its
/// stdin under `root`.
pub fn command(tool: &str, root: &str) -> String {
    format!(
        "cd {} && xargs -0 {tool} -- 2>/dev/null; true",
        crate::shell::quote(root)
    )
}
