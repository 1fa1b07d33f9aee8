//! One SSH channel per remote command, with streamed stdin/stdout/stderr.
//!
//! Flow control: a pump task moves channel messages into bounded in-memory
//! pipes ([`PIPE_CAPACITY`] each). When a reader is slow, the pump blocks,
//! russh's per-channel queue fills, and russh stops reading the socket, so the
//! remote side is slowed by TCP and SSH window flow control instead of memory
//! growing. Because of that, a caller that stops reading stdout while the
//! command writes a lot to stderr (or the other way round) stalls the command,
//! exactly like OS pipes: read both concurrently (as [`super::Session::run`]
//! does), or drop the one you do not want (its data is then discarded).
//! russh shares one socket for all channels, so a stalled channel also stalls
//! the other channels of that session: use one session per bulk stream.

use std::pin::Pin;
use std::task::{Context, Poll};

use russh::client::Msg;
use russh::{ChannelMsg, ChannelReadHalf, ChannelWriteHalf};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio::task::JoinHandle;

use super::SshError;

/// Bytes buffered per output stream between the channel and the reader.
pub const PIPE_CAPACITY: usize = 256 * 1024;

/// How a remote command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitStatus {
    /// `exit-status` from the server.
    Code(u32),
    /// `exit-signal`: the signal name without "SIG" (e.g. "KILL", "TERM").
    Signal(String),
}

impl ExitStatus {
    pub fn success(&self) -> bool {
        matches!(self, ExitStatus::Code(0))
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit status {c}"),
            ExitStatus::Signal(s) => write!(f, "killed by signal {s}"),
        }
    }
}

/// The result of [`super::Session::run`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// The remote command's standard input. `shutdown()` sends EOF.
pub struct ChildStdin {
    inner: Pin<Box<dyn AsyncWrite + Send>>,
    shut: bool,
}

impl AsyncWrite for ChildStdin {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.inner.as_mut().poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.inner.as_mut().poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = self.inner.as_mut().poll_shutdown(cx);
        if r.is_ready() {
            self.shut = true;
        }
        r
    }
}

/// The remote command's stdout or stderr. EOF when the remote closes it.
pub struct ChildOutput {
    inner: DuplexStream,
}

impl AsyncRead for ChildOutput {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

/// A running remote command. Take the streams you need (`stdin`, `stdout`,
/// `stderr` are public `Option`s, or use the `take_*` helpers), then
/// [`RemoteChild::wait`].
pub struct RemoteChild {
    pub stdin: Option<ChildStdin>,
    pub stdout: Option<ChildOutput>,
    pub stderr: Option<ChildOutput>,
    pump: JoinHandle<Result<ExitStatus, SshError>>,
    addr: String,
}

impl RemoteChild {
    pub(crate) fn spawn(
        addr: String,
        read: ChannelReadHalf,
        write: ChannelWriteHalf<Msg>,
    ) -> RemoteChild {
        let stdin = ChildStdin {
            inner: Box::pin(write.make_writer()),
            shut: false,
        };
        let (out_w, out_r) = tokio::io::duplex(PIPE_CAPACITY);
        let (err_w, err_r) = tokio::io::duplex(PIPE_CAPACITY);
        let pump = tokio::spawn(pump(addr.clone(), read, write, out_w, err_w));
        RemoteChild {
            stdin: Some(stdin),
            stdout: Some(ChildOutput { inner: out_r }),
            stderr: Some(ChildOutput { inner: err_r }),
            pump,
            addr,
        }
    }

    /// The stdin writer, while it has not been taken.
    pub fn stdin(&mut self) -> Option<&mut ChildStdin> {
        self.stdin.as_mut()
    }
    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.stdin.take()
    }
    pub fn take_stdout(&mut self) -> Option<ChildOutput> {
        self.stdout.take()
    }
    pub fn take_stderr(&mut self) -> Option<ChildOutput> {
        self.stderr.take()
    }

    /// Wait for the command to end. If stdin is still held here and was not
    /// shut down, EOF is sent first (so `cat` and friends terminate). Output
    /// streams still held here are discarded.
    pub async fn wait(mut self) -> Result<ExitStatus, SshError> {
        if let Some(mut stdin) = self.stdin.take() {
            if !stdin.shut {
                // The remote may already be gone; its status tells.
                let _ = stdin.shutdown().await;
            }
        }
        drop(self.stdout.take());
        drop(self.stderr.take());
        match (&mut self.pump).await {
            Ok(r) => r,
            Err(e) => Err(SshError::Disconnected {
                addr: self.addr.clone(),
                detail: format!("channel task failed: {e}"),
            }),
        }
    }
}

impl Drop for RemoteChild {
    fn drop(&mut self) {
        // wait() consumed the pump when it finished; aborting a finished task is a no-op.
        self.pump.abort();
    }
}

async fn pump(
    addr: String,
    mut read: ChannelReadHalf,
    write: ChannelWriteHalf<Msg>,
    mut out: DuplexStream,
    mut err: DuplexStream,
) -> Result<ExitStatus, SshError> {
    let mut status: Option<ExitStatus> = None;
    let (mut out_open, mut err_open) = (true, true);
    while let Some(msg) = read.wait().await {
        match msg {
            // A dropped reader: discard its data from now on.
            ChannelMsg::Data { data } if out_open => out_open = out.write_all(&data).await.is_ok(),
            ChannelMsg::ExtendedData { data, ext: 1 } if err_open => {
                err_open = err.write_all(&data).await.is_ok()
            }
            ChannelMsg::ExitStatus { exit_status } => status = Some(ExitStatus::Code(exit_status)),
            ChannelMsg::ExitSignal {
                signal_name,
                core_dumped,
                error_message,
                ..
            } => {
                let name = format!("{signal_name:?}");
                let name = match signal_name {
                    russh::Sig::Custom(s) => s,
                    _ => name,
                };
                tracing::debug!("{addr}: remote command killed by signal {name} (core dumped: {core_dumped}) {error_message}");
                status = Some(ExitStatus::Signal(name));
            }
            ChannelMsg::Eof => {
                let _ = out.shutdown().await;
                let _ = err.shutdown().await;
            }
            ChannelMsg::Failure => {
                return Err(SshError::Channel {
                    addr,
                    detail: "the server refused the exec request".into(),
                });
            }
            ChannelMsg::Close => break,
            _ => {}
        }
    }
    drop(out);
    drop(err);
    // russh answers the server's CHANNEL_CLOSE itself.
    drop(write);
    status.ok_or(SshError::NoExitStatus { addr })
}
