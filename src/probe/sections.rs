//! Splits the probe script's output into its framed sections.
//!
//! Pure: bytes in, a map out. Output from the remote host may not be UTF-8
//! (old locales); it is decoded lossily, which is what every parser expects.

use std::collections::BTreeMap;

use super::script::MARKER;

/// One command's output and exit status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CmdOutput {
    pub text: String,
    pub status: Option<i32>,
}

impl CmdOutput {
    /// The output, when the command ran and succeeded.
    pub fn ok(&self) -> Option<&str> {
        (self.status == Some(0)).then_some(self.text.as_str())
    }
}

/// The probe output, split: files read and commands run.
#[derive(Debug, Default, Clone)]
pub struct Sections {
    pub files: BTreeMap<String, String>,
    pub cmds: BTreeMap<String, CmdOutput>,
}

impl Sections {
    pub fn file(&self, path: &str) -> Option<&str> {
        self.files.get(path).map(String::as_str)
    }

    /// A command's output if it exited 0.
    pub fn cmd_ok(&self, name: &str) -> Option<&str> {
        self.cmds.get(name).and_then(CmdOutput::ok)
    }

    /// A command's output whatever its exit status (for `--help` texts and
    /// version banners that some tools print with a non-zero status).
    pub fn cmd_any(&self, name: &str) -> Option<&str> {
        self.cmds.get(name).map(|c| c.text.as_str())
    }
}

enum Current {
    None,
    File(String),
    Cmd(String),
}

pub fn split(output: &[u8]) -> Sections {
    let text = String::from_utf8_lossy(output);
    let mut sections = Sections::default();
    let mut current = Current::None;
    let mut buf = String::new();
    let prefix = format!("{MARKER} ");
    for line in text.split_inclusive('\n') {
        let Some(rest) = line.strip_prefix(&prefix) else {
            buf.push_str(line);
            continue;
        };
        let rest = rest.trim_end_matches(['\n', '\r']);
        if let Some(code) = rest.strip_prefix("status ") {
            if let Current::Cmd(name) = &current {
                sections.cmds.insert(
                    name.clone(),
                    CmdOutput {
                        text: std::mem::take(&mut buf),
                        status: code.trim().parse().ok(),
                    },
                );
            }
            buf.clear();
            current = Current::None;
            continue;
        }
        flush(&mut sections, &current, &mut buf);
        current = if let Some(path) = rest.strip_prefix("file ") {
            Current::File(path.to_string())
        } else if let Some(name) = rest.strip_prefix("cmd ") {
            Current::Cmd(name.to_string())
        } else {
            Current::None
        };
    }
    flush(&mut sections, &current, &mut buf);
    sections
}

fn flush(sections: &mut Sections, current: &Current, buf: &mut String) {
    match current {
        Current::File(path) => {
            // The script adds one newline after each file in case it lacks one.
            let mut text = std::mem::take(buf);
            if text.ends_with('\n') {
                text.pop();
            }
            sections.files.insert(path.clone(), text);
        }
        // A command whose status line never came (the connection dropped).
        Current::Cmd(name) => {
            sections.cmds.insert(
                name.clone(),
                CmdOutput {
                    text: std::mem::take(buf),
                    status: None,
                },
            );
        }
        Current::None => buf.clear(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_files_and_commands_with_status() {
        let out = b"@@hotclone@@ file /etc/debian_version\n5.0.10\n\n@@hotclone@@ cmd uname-r\n2.6.26-2-686\n@@hotclone@@ status 0\n@@hotclone@@ cmd lvs\n@@hotclone@@ status 127\n";
        let s = split(out);
        assert_eq!(s.file("/etc/debian_version"), Some("5.0.10\n"));
        assert_eq!(s.cmd_ok("uname-r"), Some("2.6.26-2-686\n"));
        assert_eq!(s.cmd_ok("lvs"), None);
        assert_eq!(s.cmds["lvs"].status, Some(127));
    }

    #[test]
    fn truncated_output_keeps_what_arrived_without_status() {
        let s = split(b"@@hotclone@@ cmd procs\n1 (init) S 0\n");
        assert_eq!(s.cmds["procs"].status, None);
        assert_eq!(s.cmd_any("procs"), Some("1 (init) S 0\n"));
        assert_eq!(s.cmd_ok("procs"), None);
    }

    #[test]
    fn non_utf8_output_is_decoded_lossily() {
        let s = split(b"@@hotclone@@ file /etc/hostname\nh\xffst\n\n");
        assert_eq!(s.file("/etc/hostname"), Some("h\u{fffd}st\n"));
    }
}
