//! systemd's readiness protocol (`sd_notify`): a datagram to the socket
//! named by `$NOTIFY_SOCKET`. Without it (not started by systemd, or a unit
//! with another `Type=`) every call does nothing. The unit is
//! `Type=notify`: the node says `READY=1` once it accepts connections, and
//! in an upgrade the old node names the new main process (`MAINPID=`)
//! before it retires, so that systemd follows the new process.

use std::os::unix::net::UnixDatagram;

/// Sends `state` (newline-separated `KEY=value` lines); errors are logged
/// at `debug` (a missing socket is the normal case outside systemd).
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return };
    if let Err(e) = send(&path, state) {
        tracing::warn!("cannot notify systemd ({state}): {e}");
    }
}

fn send(path: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let socket = UnixDatagram::unbound()?;
    let bytes = path.as_bytes();
    match bytes.first() {
        // An abstract socket: '@' stands for the leading NUL.
        Some(b'@') => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(&bytes[1..])?;
            socket.send_to_addr(state.as_bytes(), &addr)?;
        }
        Some(b'/') => {
            socket.send_to(state.as_bytes(), std::path::Path::new(path))?;
        }
        _ => return Err(std::io::Error::other("NOTIFY_SOCKET is neither a path nor an abstract name")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_reaches_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).unwrap();
        send(path.as_os_str(), "READY=1\nMAINPID=7").unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nMAINPID=7");
    }

    #[test]
    fn a_state_reaches_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("sysmanage-node-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx = UnixDatagram::bind_addr(&addr).unwrap();
        send(std::ffi::OsStr::new(&format!("@{name}")), "STOPPING=1").unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
        assert!(send(std::ffi::OsStr::new("relative"), "X=1").is_err());
    }
}
