//! The hand-over socket's messages: one JSON object per line, except the
//! first, which carries the sockets as `SCM_RIGHTS` with the list of their
//! roles. Both sides are this binary, maybe of two versions: unknown
//! messages are an error that ends the upgrade, never a guess.

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer, SendAncillaryMessage,
    SendFlags,
};
use serde::{Deserialize, Serialize};

use super::{Handed, Role};
use crate::sessions::SessionRecord;

/// At most this many sockets change hands (listeners, admin, cluster).
pub const MAX_SOCKETS: usize = 64;

/// The first message's largest size (the roles' list).
const MAX_FIRST: usize = 64 * 1024;

/// From the old node to the new process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToNew {
    /// With the sockets, in this order.
    Sockets { roles: Vec<Role>, pid: u32, version: String },
    /// The store's file is closed; records written since follow as
    /// `Record`. With the state of every server, to take over.
    StoreReleased { servers: Vec<crate::health::server::Carried> },
    /// Gossip and the cluster API have stopped in the old node.
    ClusterReleased,
    /// A session record the old node wrote after it released the store.
    Record(SessionRecord),
}

/// From the new process to the old node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToOld {
    /// The new process cannot start; it exits after this.
    Failed {
        error: String,
    },
    ReleaseStore,
    ReleaseCluster,
    /// The new process accepts connections.
    Ready {
        pid: u32,
        version: String,
    },
}

/// One message as a line.
pub fn line<T: Serialize>(msg: &T) -> Vec<u8> {
    let mut v = serde_json::to_vec(msg).expect("hand-over messages serialize");
    v.push(b'\n');
    v
}

/// Parses one line (without its newline).
pub fn parse<'a, T: Deserialize<'a>>(line: &'a str) -> Result<T, String> {
    serde_json::from_str(line).map_err(|e| format!("unreadable hand-over message ({e}): {:.200}", line))
}

/// Sends the first message with every socket attached. Blocking socket.
pub fn send_sockets(socket: impl AsFd, sockets: &[&Handed], pid: u32) -> std::io::Result<()> {
    if sockets.len() > MAX_SOCKETS {
        return Err(std::io::Error::other(format!("{} sockets to hand over, at most {MAX_SOCKETS}", sockets.len())));
    }
    let msg = ToNew::Sockets {
        roles: sockets.iter().map(|h| h.role.clone()).collect(),
        pid,
        version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let bytes = line(&msg);
    if bytes.len() > MAX_FIRST {
        return Err(std::io::Error::other("the list of sockets is too long"));
    }
    let fds: Vec<BorrowedFd<'_>> = sockets.iter().map(|h| h.fd.as_fd()).collect();
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_SOCKETS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(std::io::Error::other("cannot attach the sockets"));
    }
    let mut sent = sendmsg(&socket, &[IoSlice::new(&bytes)], &mut control, SendFlags::NOSIGNAL)?;
    // The descriptors went with the first byte; the rest is plain data.
    while sent < bytes.len() {
        let mut empty = SendAncillaryBuffer::default();
        sent += sendmsg(&socket, &[IoSlice::new(&bytes[sent..])], &mut empty, SendFlags::NOSIGNAL)?;
    }
    Ok(())
}

/// Receives the first message and its sockets. Blocking socket. Reads only
/// up to the first newline's segment: the old node sends nothing more
/// until asked.
pub fn recv_sockets(socket: impl AsFd) -> std::io::Result<(Vec<Handed>, u32, String)> {
    let mut buf = vec![0u8; MAX_FIRST];
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_SOCKETS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = recvmsg(&socket, &mut [IoSliceMut::new(&mut buf)], &mut control, RecvFlags::CMSG_CLOEXEC)?;
    let mut fds: Vec<OwnedFd> = Vec::new();
    for msg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = msg {
            fds.extend(received);
        }
    }
    if got.flags.contains(rustix::net::ReturnFlags::CTRUNC) {
        return Err(std::io::Error::other("the sockets' message was cut short (too many sockets)"));
    }
    let mut len = got.bytes;
    // A long list may come in several reads; the sockets came with the first.
    while !buf[..len].contains(&b'\n') {
        if len == buf.len() {
            return Err(std::io::Error::other("the first hand-over message is too long"));
        }
        let mut none: [MaybeUninit<u8>; 0] = [];
        let mut empty = RecvAncillaryBuffer::new(&mut none);
        let more = recvmsg(&socket, &mut [IoSliceMut::new(&mut buf[len..])], &mut empty, RecvFlags::empty())?;
        if more.bytes == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the old node closed the socket"));
        }
        len += more.bytes;
    }
    let end = buf[..len].iter().position(|b| *b == b'\n').unwrap_or(len);
    if end + 1 != len {
        return Err(std::io::Error::other("unexpected bytes after the sockets' message"));
    }
    let text =
        std::str::from_utf8(&buf[..end]).map_err(|_| std::io::Error::other("the sockets' message is not UTF-8"))?;
    match parse::<ToNew>(text).map_err(std::io::Error::other)? {
        ToNew::Sockets { roles, pid, version } => {
            if roles.len() != fds.len() {
                return Err(std::io::Error::other(format!("{} sockets named but {} received", roles.len(), fds.len())));
            }
            let sockets = roles.into_iter().zip(fds).map(|(role, fd)| Handed { role, fd }).collect();
            Ok((sockets, pid, version))
        }
        other => Err(std::io::Error::other(format!("expected the sockets first, got {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn sockets_cross_with_their_roles_and_still_listen() {
        let (a, b) = UnixStream::pair().unwrap();
        let l1 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let h1 = Handed::of(Role::Listener { name: "http".into(), bind: l1.local_addr().unwrap() }, &l1).unwrap();
        let h2 = Handed::of(Role::Gossip { bind: u.local_addr().unwrap() }, &u).unwrap();
        send_sockets(&a, &[&h1, &h2], 42).unwrap();
        let (got, pid, version) = recv_sockets(&b).unwrap();
        assert_eq!((pid, version.as_str()), (42, env!("CARGO_PKG_VERSION")));
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].role, h1.role);
        assert_eq!(got[1].role, h2.role);
        // The received descriptor is the same listening socket.
        let taken = std::net::TcpListener::from(got.into_iter().next().unwrap().fd);
        assert_eq!(taken.local_addr().unwrap(), l1.local_addr().unwrap());
        drop(l1);
        let _client = std::net::TcpStream::connect(taken.local_addr().unwrap()).unwrap();
        taken.accept().expect("the handed-over socket still accepts after the original is closed");
    }

    #[test]
    fn a_message_naming_more_sockets_than_it_carries_is_refused() {
        let (a, b) = UnixStream::pair().unwrap();
        let roles = vec![Role::Admin { bind: "127.0.0.1:1".parse().unwrap() }];
        std::io::Write::write_all(&mut &a, &line(&ToNew::Sockets { roles, pid: 1, version: "x".into() })).unwrap();
        let e = recv_sockets(&b).unwrap_err();
        assert!(e.to_string().contains("1 sockets named but 0 received"), "{e}");
    }

    #[test]
    fn a_first_message_of_another_kind_is_refused() {
        let (a, b) = UnixStream::pair().unwrap();
        std::io::Write::write_all(&mut &a, &line(&ToNew::StoreReleased { servers: Vec::new() })).unwrap();
        let e = recv_sockets(&b).unwrap_err();
        assert!(e.to_string().contains("expected the sockets first"), "{e}");
        let (a, b) = UnixStream::pair().unwrap();
        std::io::Write::write_all(&mut &a, b"{not json}\n").unwrap();
        let e = recv_sockets(&b).unwrap_err();
        assert!(e.to_string().contains("unreadable hand-over message"), "{e}");
        let (a, b) = UnixStream::pair().unwrap();
        drop(a);
        assert!(recv_sockets(&b).is_err(), "a closed socket is an error, not a hang");
    }

    #[test]
    fn messages_read_back_as_written() {
        for m in
            [ToOld::ReleaseStore, ToOld::Failed { error: "x\ny".into() }, ToOld::Ready { pid: 3, version: "v".into() }]
        {
            let l = line(&m);
            assert_eq!(l.iter().filter(|b| **b == b'\n').count(), 1, "one line per message");
            assert_eq!(parse::<ToOld>(std::str::from_utf8(&l[..l.len() - 1]).unwrap()).unwrap(), m);
        }
        assert!(parse::<ToOld>(r#""self_destruct""#).is_err());
    }
}
