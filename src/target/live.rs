//! The live target: the disk of a VM booted from the rescue image,
//! reached over SSH. The client starts `hotclone agent` and `hotclone
//! target ...` there, the same code the image target runs here.
//!
//! **Version handshake.** On connecting, the client asks the target's
//! hotclone for its build id (`hotclone target hello`). When it differs
//! from the client's own (or there is none), the client uploads itself to
//! [`UPLOAD_DIR`] (the rescue system's RAM disk) and uses that. It stays
//! there until the VM reboots, so later passes and the cutover do not
//! upload it again; everything else of ours ([`remote::WORK_DIR`]) is
//! removed when the clone or pass ends.
//!
//! **Failure.** A command that fails on the target is an error quoting its
//! stderr. The target's filesystems stay mounted and the journal says what
//! they hold, so running the clone again continues.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio_util::io::SyncIoBridge;

use super::device::DiskInfo;
use super::remote::{Hello, ROOT, WORK_DIR};
use super::{AgentLink, AgentProcess, Converted, StateFile, StateWriter, Target};
use crate::plan::{Plan, TargetSpec};
use crate::probe::Inventory;
use crate::progress::Progress;
use crate::rescue::{AGENT_PATH, BUILD_ID};
use crate::ssh::{ConnectOptions, Session};
use crate::target::CloneError;
use crate::units::format_bytes;

/// Where an uploaded hotclone is kept in the rescue system (RAM).
pub const UPLOAD_DIR: &str = "/run/hotclone-agent";

/// An SSH connection to the target host, its hotclone checked.
pub struct Connection {
    session: Arc<Session>,
    pub destination: String,
    /// The hotclone binary to run there.
    agent: String,
    /// True when `agent` is one uploaded by a client (in [`UPLOAD_DIR`]).
    pub uploaded: bool,
    pub hello: Hello,
}

fn remote_err(what: String, out: &crate::ssh::Output) -> CloneError {
    CloneError::Target(format!(
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    ))
}

/// Quote for the target's shell.
fn q(s: &str) -> String {
    crate::shell::quote(s)
}

async fn remote_hello(session: &Session, agent: &str) -> Result<Hello, String> {
    let out = session
        .run(&format!("{} target hello", q(agent)), b"")
        .await
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "`{agent} target hello` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("its hello is unreadable: {e}"))
}

/// Connect to the target host and make sure a hotclone of this very build
/// runs there (uploading this binary when it does not).
pub async fn connect(
    destination: &str,
    opts: &ConnectOptions,
    progress: &mut dyn Progress,
) -> Result<Connection, CloneError> {
    let session = Session::connect(destination, opts)
        .await
        .map_err(CloneError::Ssh)?;
    // Only the rescue system gets its disks partitioned, and nothing of
    // ours is put on any other host.
    let mark = session
        .run(&format!("cat {}", crate::rescue::MARK_PATH), b"")
        .await
        .map_err(CloneError::Ssh)?;
    if !mark.status.success() {
        let _ = session.disconnect().await;
        return Err(CloneError::Target(format!(
            "{destination} is not running the hotclone rescue image (it has no {}); a live clone partitions a whole disk, so it writes only there. Boot the VM with `hotclone launch` or the rescue ISO",
            crate::rescue::MARK_PATH
        )));
    }
    let uploaded_agent = format!("{UPLOAD_DIR}/hotclone");
    let (agent, uploaded, hello) = match remote_hello(&session, AGENT_PATH).await {
        Ok(h) if h.build == BUILD_ID => (AGENT_PATH.to_string(), false, h),
        found => match remote_hello(&session, &uploaded_agent).await {
            // Uploaded by an earlier pass of this client's build.
            Ok(h) if h.build == BUILD_ID => (uploaded_agent, true, h),
            _ => {
                let why = match found {
                    Ok(h) => format!(
                        "its hotclone is build {} (version {}), this one is build {BUILD_ID}",
                        h.build, h.version
                    ),
                    Err(e) => e,
                };
                progress.note(&format!(
                    "{destination}: {why}; uploading this hotclone for the clone"
                ));
                let uploaded = match upload(&session).await {
                    Ok(path) => remote_hello(&session, &path)
                        .await
                        .map(|h| (path, h))
                        .map_err(|e| {
                            CloneError::Target(format!(
                                "the uploaded hotclone does not run on {destination}: {e}"
                            ))
                        }),
                    Err(e) => Err(e),
                };
                match uploaded {
                    Ok((path, hello)) => (path, true, hello),
                    Err(e) => {
                        let _ = session.run(&format!("rm -rf {UPLOAD_DIR}"), b"").await;
                        return Err(e);
                    }
                }
            }
        },
    };
    Ok(Connection {
        session: Arc::new(session),
        destination: destination.to_string(),
        agent,
        uploaded,
        hello,
    })
}

/// Copy this binary into the target's scratch directory.
async fn upload(session: &Session) -> Result<String, CloneError> {
    let exe = std::env::current_exe()
        .map_err(|e| CloneError::Target(format!("finding this hotclone binary: {e}")))?;
    let bytes = std::fs::read(&exe)
        .map_err(|e| CloneError::Target(format!("reading {}: {e}", exe.display())))?;
    let path = format!("{UPLOAD_DIR}/hotclone");
    let cmd = format!(
        "umask 077 && mkdir -p {UPLOAD_DIR} && cat > {path}.part && chmod 700 {path}.part && mv {path}.part {path}"
    );
    let out = session.run(&cmd, &bytes).await.map_err(CloneError::Ssh)?;
    if !out.status.success() {
        return Err(remote_err(format!("uploading hotclone to {path}"), &out));
    }
    Ok(path)
}

impl Connection {
    /// The disk to clone into: `wanted`, or the only one it has. It must
    /// exist and be free.
    pub fn choose_disk(&self, wanted: Option<&Path>) -> Result<DiskInfo, CloneError> {
        let listed = || {
            self.hello
                .disks
                .iter()
                .map(|d| {
                    format!(
                        "{} ({}{})",
                        d.device.display(),
                        format_bytes(d.size_bytes),
                        if d.users.is_empty() {
                            ", free"
                        } else {
                            ", in use"
                        }
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let disk = match wanted {
            Some(w) => self
                .hello
                .disks
                .iter()
                .find(|d| d.device == w)
                .ok_or_else(|| {
                    CloneError::Target(format!(
                        "{} has no disk {}; its disks: {}",
                        self.destination,
                        w.display(),
                        listed()
                    ))
                })?,
            None => match self.hello.disks.as_slice() {
                [only] => only,
                [] => {
                    return Err(CloneError::Target(format!(
                        "{} has no disk to clone into",
                        self.destination
                    )))
                }
                _ => {
                    return Err(CloneError::Target(format!(
                        "{} has several disks ({}); name one with ssh://{},disk=/dev/NAME",
                        self.destination,
                        listed(),
                        self.destination
                    )))
                }
            },
        };
        if !disk.users.is_empty() {
            return Err(CloneError::Image(super::image::ImageError::InUse {
                device: disk.device.clone(),
                what: disk.users.join("; "),
            }));
        }
        Ok(disk.clone())
    }

    async fn run(&self, what: &str, cmd: &str, stdin: &[u8]) -> Result<Vec<u8>, CloneError> {
        let out = self
            .session
            .run(cmd, stdin)
            .await
            .map_err(CloneError::Ssh)?;
        if !out.status.success() {
            return Err(remote_err(format!("on {}, {what}", self.destination), &out));
        }
        Ok(out.stdout)
    }

    /// Put `bytes` at `path` on the target, atomically, readable by root only.
    async fn put(&self, path: &str, bytes: &[u8]) -> Result<(), CloneError> {
        put(&self.session, &self.destination, path, bytes).await
    }

    /// Re-hash the target against `journal` (bytes of the client's), on
    /// the target; it is unmounted again afterwards.
    pub async fn verify(
        &self,
        plan: &Plan,
        journal: &[u8],
    ) -> Result<Vec<crate::verify::Difference>, CloneError> {
        let disk = planned_disk(plan)?;
        let (plan_file, journal_file) = (
            format!("{WORK_DIR}/plan.toml"),
            format!("{WORK_DIR}/verify.sqlite"),
        );
        self.put(&plan_file, plan.to_toml().as_bytes()).await?;
        self.put(&journal_file, journal).await?;
        let cmd = format!(
            "{} target verify --plan {plan_file} --disk {} --root {ROOT} --journal {journal_file}",
            q(&self.agent),
            q(&disk.display().to_string())
        );
        self.target_json("verifying the target", &cmd).await
    }

    /// Park the planned disk for a rehearsal (`hotclone target park`): the
    /// VM holds its lock, with nothing of it mounted and its writes on the
    /// VM's disk, until [`Parked::release`] (or until this connection
    /// dies: the remote end sees stdin close and lets go).
    pub async fn park(&self, plan: &Plan) -> Result<Parked, CloneError> {
        let disk = planned_disk(plan)?;
        let plan_file = format!("{WORK_DIR}/plan.toml");
        self.put(&plan_file, plan.to_toml().as_bytes()).await?;
        let cmd = format!(
            "{} target park --plan {plan_file} --disk {}",
            q(&self.agent),
            q(&disk.display().to_string())
        );
        let mut child = self.session.exec(&cmd).await.map_err(CloneError::Ssh)?;
        let mut stdout = tokio::io::BufReader::new(child.take_stdout().expect("stdout"));
        let mut stderr = child.take_stderr().expect("stderr");
        let mut line = String::new();
        let _ = stdout.read_line(&mut line).await;
        if !line.contains("\"parked\"") {
            let mut why = Vec::new();
            let _ = tokio::io::AsyncReadExt::read_to_end(&mut stderr, &mut why).await;
            let status = child.wait().await;
            return Err(CloneError::Target(format!(
                "parking {} for the rehearsal failed ({}): {}",
                disk.display(),
                status
                    .map(|s| s.to_string())
                    .unwrap_or_else(|e| e.to_string()),
                String::from_utf8_lossy(&why).trim()
            )));
        }
        Ok(Parked { child })
    }

    /// Run a `hotclone target ...` command and remove our scratch files
    /// whatever it did; its JSON answer.
    async fn target_json<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        cmd: &str,
    ) -> Result<T, CloneError> {
        let out = self.run(what, cmd, b"").await;
        let cleaned = self
            .run(
                "removing hotclone's scratch files",
                &format!("rm -rf {WORK_DIR}"),
                b"",
            )
            .await;
        let answer = serde_json::from_slice(&out?).map_err(|e| {
            CloneError::Target(format!("the target's answer ({what}) is unreadable: {e}"))
        })?;
        cleaned?;
        Ok(answer)
    }

    /// Run a shell command on the target host (the cutover's ARP probes);
    /// its output whatever its exit status.
    pub async fn shell(&self, cmd: &str) -> Result<crate::ssh::Output, CloneError> {
        self.session.run(cmd, b"").await.map_err(CloneError::Ssh)
    }

    /// Cutover: finalize the clone's identity on the planned disk (see
    /// [`crate::cutover::identity`]); it is checked and unmounted after.
    pub async fn finalize(
        &self,
        plan: &Plan,
        inventory: &Inventory,
        addresses: &[crate::probe::addresses::ProdAddr],
    ) -> Result<Vec<String>, CloneError> {
        let disk = planned_disk(plan)?;
        let json =
            |v: serde_json::Result<Vec<u8>>| v.map_err(|e| CloneError::Target(e.to_string()));
        let (plan_file, inv_file, addr_file) = (
            format!("{WORK_DIR}/plan.toml"),
            format!("{WORK_DIR}/inventory.json"),
            format!("{WORK_DIR}/addresses.json"),
        );
        self.put(&plan_file, plan.to_toml().as_bytes()).await?;
        self.put(&inv_file, &json(serde_json::to_vec(inventory))?)
            .await?;
        self.put(&addr_file, &json(serde_json::to_vec(addresses))?)
            .await?;
        let cmd = format!(
            "{} target finalize --plan {plan_file} --disk {} --root {ROOT} --inventory {inv_file} --addresses {addr_file}",
            q(&self.agent),
            q(&disk.display().to_string())
        );
        self.target_json("finalizing the clone's identity", &cmd)
            .await
    }

    /// End the connection (a connection still shared is left to close
    /// when its last user drops it).
    pub async fn close(self) {
        if let Ok(session) = Arc::try_unwrap(self.session) {
            let _ = session.disconnect().await;
        }
    }

    /// Prepare the planned disk (new) or mount it again (`resuming`).
    pub async fn open(self, plan: &Plan, resuming: bool) -> Result<LiveTarget, CloneError> {
        let disk = planned_disk(plan)?;
        let plan_file = format!("{WORK_DIR}/plan.toml");
        self.put(&plan_file, plan.to_toml().as_bytes()).await?;
        let cmd = format!(
            "{} target prepare --plan {plan_file} --disk {} --root {ROOT}{}",
            q(&self.agent),
            q(&disk.display().to_string()),
            if resuming { " --attach" } else { "" }
        );
        self.run(&format!("preparing {}", disk.display()), &cmd, b"")
            .await?;
        Ok(LiveTarget {
            disk: disk.to_path_buf(),
            root: PathBuf::from(ROOT),
            handle: tokio::runtime::Handle::current(),
            conn: self,
        })
    }
}

/// The disk of the live target the plan names.
fn planned_disk(plan: &Plan) -> Result<&Path, CloneError> {
    match &plan.target {
        TargetSpec::Live {
            disk: Some(disk), ..
        } => Ok(disk),
        other => Err(CloneError::Target(format!(
            "the plan's target {} names no disk of a live target",
            other.display()
        ))),
    }
}

async fn put(
    session: &Session,
    destination: &str,
    path: &str,
    bytes: &[u8],
) -> Result<(), CloneError> {
    let dir = Path::new(path)
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "/".into());
    let cmd = format!(
        "umask 077 && mkdir -p {d} && cat > {p}.part && mv {p}.part {p}",
        d = q(&dir),
        p = q(path)
    );
    let out = session.run(&cmd, bytes).await.map_err(CloneError::Ssh)?;
    if !out.status.success() {
        return Err(remote_err(
            format!("on {destination}, writing {path}"),
            &out,
        ));
    }
    Ok(())
}

/// The rescue VM's disk, prepared and mounted at [`ROOT`] there.
/// A disk parked in the rescue VM ([`Connection::park`]).
pub struct Parked {
    child: crate::ssh::RemoteChild,
}

impl Parked {
    /// Let the disk go: close the park command's stdin and wait for it.
    pub async fn release(self) {
        let _ = self.child.wait().await;
    }
}

pub struct LiveTarget {
    conn: Connection,
    disk: PathBuf,
    root: PathBuf,
    handle: tokio::runtime::Handle,
}

/// The wire stream into the remote agent's stdin, as blocking I/O. Its
/// end (EOF) is sent without blocking when it is dropped.
struct RemoteInput {
    bridge: Option<SyncIoBridge<crate::ssh::ChildStdin>>,
    handle: tokio::runtime::Handle,
}

impl std::io::Write for RemoteInput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.bridge.as_mut() {
            Some(b) => b.write(buf),
            None => Err(std::io::ErrorKind::BrokenPipe.into()),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self.bridge.as_mut() {
            Some(b) => b.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for RemoteInput {
    fn drop(&mut self) {
        if let Some(bridge) = self.bridge.take() {
            let mut stdin = bridge.into_inner();
            self.handle.spawn(async move {
                let _ = stdin.shutdown().await;
            });
        }
    }
}

struct RemoteAgent {
    child: crate::ssh::RemoteChild,
    handle: tokio::runtime::Handle,
}

impl AgentProcess for RemoteAgent {
    fn wait(self: Box<Self>) -> Result<Option<String>, CloneError> {
        let RemoteAgent { child, handle } = *self;
        let status = handle.block_on(child.wait()).map_err(CloneError::Ssh)?;
        Ok((!status.success()).then(|| status.to_string()))
    }
}

impl LiveTarget {
    /// Start `cmd` on the target; its stdout and stderr taken (stdin is
    /// still in the child).
    async fn spawn(
        &self,
        cmd: &str,
    ) -> Result<
        (
            crate::ssh::RemoteChild,
            crate::ssh::ChildOutput,
            crate::ssh::ChildOutput,
        ),
        CloneError,
    > {
        let mut child = self.conn.session.exec(cmd).await.map_err(CloneError::Ssh)?;
        let stdout = child
            .take_stdout()
            .ok_or_else(|| CloneError::internal("stdout"))?;
        let stderr = child
            .take_stderr()
            .ok_or_else(|| CloneError::internal("stderr"))?;
        Ok((child, stdout, stderr))
    }

    fn agent_cmd(&self, args: &str) -> String {
        format!("{} {args}", q(&self.conn.agent))
    }

    fn plan_args(&self) -> String {
        format!(
            "--plan {WORK_DIR}/plan.toml --disk {} --root {ROOT}",
            q(&self.disk.display().to_string())
        )
    }

    /// End of the work: unmount (with fsck at the end of a clone), remove
    /// our scratch directory (the uploaded agent with it).
    async fn end(&self, fsck: bool) -> Result<(), CloneError> {
        let cmd = self.agent_cmd(&format!(
            "target finish {}{}",
            self.plan_args(),
            if fsck { " --fsck" } else { "" }
        ));
        self.conn.run("finishing the disk", &cmd, b"").await?;
        self.conn
            .run(
                "removing hotclone's scratch files",
                &format!("rm -rf {WORK_DIR}"),
                b"",
            )
            .await?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl Target for LiveTarget {
    fn root(&self) -> &Path {
        &self.root
    }

    fn describe(&self) -> String {
        format!("{}:{}", self.conn.destination, self.disk.display())
    }

    async fn hash_files(&self, tool: &str, paths: &[u8]) -> Result<Vec<u8>, CloneError> {
        let cmd = crate::stream::hashing::command(tool, ROOT);
        let out = self
            .conn
            .session
            .run(&cmd, paths)
            .await
            .map_err(|e| crate::target::error::checksum_error(tool, e))?;
        Ok(out.stdout)
    }

    async fn agent(&self, sweep: bool) -> Result<AgentLink, CloneError> {
        let cmd = format!(
            "exec {}",
            self.agent_cmd(&format!(
                "agent --root {ROOT} --lock {}{}",
                q(&super::lock::device_lock_path(&self.disk)
                    .display()
                    .to_string()),
                if sweep { " --sweep" } else { "" }
            ))
        );
        let (mut child, stdout, stderr) = self.spawn(&cmd).await?;
        let stdin = child
            .take_stdin()
            .ok_or_else(|| CloneError::internal("agent stdin"))?;
        {
            let from = self.conn.destination.clone();
            tokio::spawn(async move {
                let mut lines = tokio::io::BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    tracing::info!("agent on {from}: {line}");
                }
            });
        }
        Ok(AgentLink {
            input: Box::new(RemoteInput {
                bridge: Some(SyncIoBridge::new(stdin)),
                handle: self.handle.clone(),
            }),
            acks: Box::new(std::io::BufReader::new(SyncIoBridge::new(stdout))),
            process: Box::new(RemoteAgent {
                child,
                handle: self.handle.clone(),
            }),
        })
    }

    fn state_writer(&self) -> StateWriter {
        let session = self.conn.session.clone();
        let destination = self.conn.destination.clone();
        let handle = self.handle.clone();
        let dir = crate::migration::target_state(&self.root);
        Arc::new(move |name: &str, file: StateFile<'_>| {
            let path = dir.join(name).display().to_string();
            let snapshot;
            let bytes = match file {
                StateFile::Bytes(b) => b,
                StateFile::Journal(j) => {
                    snapshot = j.snapshot()?;
                    &snapshot
                }
            };
            handle.block_on(put(&session, &destination, &path, bytes))
        })
    }

    async fn convert(
        &mut self,
        inv: &Inventory,
        _plan: &Plan,
        _journal: &Path,
        progress: &mut dyn Progress,
    ) -> Result<Converted, CloneError> {
        let inventory =
            serde_json::to_vec_pretty(inv).map_err(|e| CloneError::Target(e.to_string()))?;
        let inv_file = format!("{WORK_DIR}/inventory.json");
        self.conn.put(&inv_file, &inventory).await?;
        let cmd = self.agent_cmd(&format!(
            "target convert --inventory {inv_file} {}",
            self.plan_args()
        ));
        let (child, stdout, mut stderr) = self.spawn(&cmd).await?;
        let errors = tokio::spawn(async move {
            let mut text = Vec::new();
            let _ = tokio::io::AsyncReadExt::read_to_end(&mut stderr, &mut text).await;
            String::from_utf8_lossy(&text).into_owned()
        });
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let mut result = None;
        while let Ok(Some(line)) = lines.next_line().await {
            let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            match event["event"].as_str() {
                Some("phase") => progress.phase(event["name"].as_str().unwrap_or_default()),
                Some("note") => progress.note(event["message"].as_str().unwrap_or_default()),
                Some("result") => {
                    result = serde_json::from_value::<Converted>(event["converted"].clone()).ok()
                }
                _ => {}
            }
        }
        let status = child.wait().await.map_err(CloneError::Ssh)?;
        let stderr = errors.await.unwrap_or_default();
        match result {
            Some(converted) if status.success() => Ok(converted),
            _ => Err(CloneError::Convert(format!(
                "on {} ({status}): {}",
                self.conn.destination,
                stderr.trim()
            ))),
        }
    }

    async fn finish(
        self: Box<Self>,
        _plan: &Plan,
        progress: &mut dyn Progress,
    ) -> Result<String, CloneError> {
        progress.phase("checking the filesystems on the target");
        self.end(true).await?;
        Ok(self.describe())
    }

    async fn close(self: Box<Self>, progress: &mut dyn Progress) -> Result<(), CloneError> {
        progress.phase("closing the target disk");
        self.end(false).await
    }
}
