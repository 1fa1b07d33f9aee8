//! TCP connections made from inside another network namespace: the
//! rehearsal's prober reaches the clone on a network that has no route to
//! anything else, while the rest of hotclone stays where it runs.
//!
//! A socket belongs to the namespace it was created in, whatever thread
//! uses it later. So [`connect`] creates it on a short-lived thread that
//! first joins the namespace (`setns(2)`), and hands back the connected
//! stream; the calling thread and the process never change namespace.
//!
//! On failure: a namespace that cannot be opened or joined (not root, or
//! it was removed) is an error naming it; a refused or timed-out connect
//! is the usual `io::Error`.

use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The file of a named namespace (`ip netns add NAME`).
pub fn path_of(name: &str) -> PathBuf {
    Path::new("/run/netns").join(name)
}

/// Connect to `addr` from inside the namespace at `ns`, within `timeout`.
pub fn connect(ns: &Path, addr: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    let ns = ns.to_path_buf();
    let joined = std::thread::Builder::new()
        .name("netns-connect".into())
        .spawn(move || {
            enter(&ns)?;
            TcpStream::connect_timeout(&addr, timeout)
        })?
        .join();
    joined.unwrap_or_else(|_| Err(std::io::Error::other("the connecting thread panicked")))
}

/// Make the calling thread a member of the namespace at `ns`.
fn enter(ns: &Path) -> std::io::Result<()> {
    let file = std::fs::File::open(ns).map_err(|e| {
        std::io::Error::new(e.kind(), format!("network namespace {}: {e}", ns.display()))
    })?;
    // SAFETY: setns(2) on an fd we own; it only changes this thread's
    // network namespace, and this thread ends after one connect.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        return Err(std::io::Error::new(
            e.kind(),
            format!("joining network namespace {}: {e}", ns.display()),
        ));
    }
    Ok(())
}

/// An async connect: [`connect`] on a blocking thread, the stream handed
/// to tokio.
pub async fn connect_async(
    ns: &Path,
    addr: SocketAddr,
    timeout: Duration,
) -> std::io::Result<tokio::net::TcpStream> {
    let ns = ns.to_path_buf();
    let std_stream = tokio::task::spawn_blocking(move || connect(&ns, addr, timeout))
        .await
        .map_err(|_| std::io::Error::other("the connecting task failed"))??;
    std_stream.set_nonblocking(true)?;
    tokio::net::TcpStream::from_std(std_stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_namespace_is_named_in_the_error() {
        let e = connect(
            Path::new("/run/netns/hotclone-no-such-namespace"),
            "198.51.100.1:22".parse().unwrap(),
            Duration::from_millis(100),
        )
        .unwrap_err();
        assert!(e.to_string().contains("hotclone-no-such-namespace"), "{e}");
    }
}
