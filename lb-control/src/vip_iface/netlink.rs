//! Hand-built rtnetlink address messages (RTM_NEWADDR, RTM_DELADDR and the
//! RTM_GETADDR dump) and the parsing of the kernel's answers, sent over
//! nix's safe netlink socket. Integers are in host byte order, as netlink
//! wants them; messages and attributes are padded to 4 bytes.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, sendto,
    setsockopt, socket, sockopt,
};
use nix::sys::time::{TimeVal, TimeValLike};

const NLMSG_HDRLEN: usize = 16;
const IFADDRMSG_LEN: usize = 8;

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_GETADDR: u16 = 22;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_DUMP: u16 = 0x300;

const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_FLAGS: u16 = 8;
const IFA_PROTO: u16 = 11;

const IFA_F_NODAD: u32 = 0x02;
const AF_INET: u8 = libc::AF_INET as u8;
const AF_INET6: u8 = libc::AF_INET6 as u8;

/// Add or delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    /// RTM_NEWADDR (create, fail if it exists).
    Add,
    /// RTM_DELADDR.
    Delete,
}

/// One address of an interface, from a dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct IfAddr {
    /// The interface index.
    pub index: u32,
    /// The address.
    pub addr: IpAddr,
    /// Its prefix length.
    pub prefix_len: u8,
    /// Who added it (IFA_PROTO; 0 when unset).
    pub proto: u8,
}

/// One parsed message of the kernel's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reply {
    /// An RTM_NEWADDR of a dump.
    Addr(IfAddr),
    /// The end of a dump.
    Done,
    /// NLMSG_ERROR: 0 is an ACK, else a negative errno.
    Error(i32),
    /// Anything else (ignored).
    Other,
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn header(buf: &mut Vec<u8>, kind: u16, flags: u16, seq: u32) {
    buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set by `finish`
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
}

fn ifaddrmsg(buf: &mut Vec<u8>, family: u8, prefix_len: u8, flags: u8, index: u32) {
    buf.extend_from_slice(&[family, prefix_len, flags, 0 /* RT_SCOPE_UNIVERSE */]);
    buf.extend_from_slice(&index.to_ne_bytes());
}

fn attr(buf: &mut Vec<u8>, kind: u16, data: &[u8]) {
    let len = 4 + data.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(data);
    buf.resize(align4(buf.len()), 0);
}

fn finish(mut buf: Vec<u8>) -> Vec<u8> {
    let len = buf.len() as u32;
    buf[..4].copy_from_slice(&len.to_ne_bytes());
    buf
}

/// RTM_NEWADDR / RTM_DELADDR of the host address `ip` (/32 or /128) on
/// interface `index`, marked with `proto`; IPv6 without duplicate address
/// detection (IFA_F_NODAD), so the address is usable at once.
pub(super) fn address_request(op: Op, seq: u32, index: u32, ip: IpAddr, proto: u8) -> Vec<u8> {
    let (kind, flags) = match op {
        Op::Add => (
            RTM_NEWADDR,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        ),
        Op::Delete => (RTM_DELADDR, NLM_F_REQUEST | NLM_F_ACK),
    };
    let mut buf = Vec::with_capacity(64);
    header(&mut buf, kind, flags, seq);
    match ip {
        IpAddr::V4(v4) => {
            ifaddrmsg(&mut buf, AF_INET, 32, 0, index);
            attr(&mut buf, IFA_LOCAL, &v4.octets());
            attr(&mut buf, IFA_ADDRESS, &v4.octets());
        }
        IpAddr::V6(v6) => {
            ifaddrmsg(&mut buf, AF_INET6, 128, IFA_F_NODAD as u8, index);
            attr(&mut buf, IFA_ADDRESS, &v6.octets());
            if op == Op::Add {
                attr(&mut buf, IFA_FLAGS, &IFA_F_NODAD.to_ne_bytes());
            }
        }
    }
    if op == Op::Add {
        attr(&mut buf, IFA_PROTO, &[proto]);
    }
    finish(buf)
}

/// RTM_GETADDR dump of every address of every interface (filtered here).
pub(super) fn dump_request(seq: u32) -> Vec<u8> {
    let mut buf = Vec::with_capacity(NLMSG_HDRLEN + IFADDRMSG_LEN);
    header(&mut buf, RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, seq);
    ifaddrmsg(&mut buf, 0, 0, 0, 0);
    finish(buf)
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn parse_addr(body: &[u8]) -> Option<IfAddr> {
    let (family, prefix_len) = (*body.first()?, *body.get(1)?);
    let index = u32_at(body, 4)?;
    let (mut local, mut address, mut proto) = (None, None, 0);
    let mut at = IFADDRMSG_LEN;
    while at + 4 <= body.len() {
        let len = usize::from(u16_at(body, at)?);
        let kind = u16_at(body, at + 2)?;
        if len < 4 || at + len > body.len() {
            break;
        }
        let data = &body[at + 4..at + len];
        let ip = match (family, data.len()) {
            (AF_INET, 4) => <[u8; 4]>::try_from(data).ok().map(IpAddr::from),
            (AF_INET6, 16) => <[u8; 16]>::try_from(data).ok().map(IpAddr::from),
            _ => None,
        };
        match kind {
            IFA_LOCAL => local = ip,
            IFA_ADDRESS => address = ip,
            IFA_PROTO => proto = data.first().copied().unwrap_or(0),
            _ => {}
        }
        at += align4(len);
    }
    Some(IfAddr {
        index,
        // IPv4 reports its own address as IFA_LOCAL (IFA_ADDRESS is the
        // peer on point-to-point links); IPv6 as IFA_ADDRESS.
        addr: local.or(address)?,
        prefix_len,
        proto,
    })
}

/// The messages in one datagram from the kernel whose sequence number is `seq`.
fn parse(buf: &[u8], seq: u32) -> Vec<Reply> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + NLMSG_HDRLEN <= buf.len() {
        let (Some(len), Some(kind), Some(msg_seq)) =
            (u32_at(buf, at), u16_at(buf, at + 4), u32_at(buf, at + 8))
        else {
            break;
        };
        let len = len as usize;
        if len < NLMSG_HDRLEN || at + len > buf.len() {
            break;
        }
        let body = &buf[at + NLMSG_HDRLEN..at + len];
        if msg_seq == seq {
            out.push(match kind {
                NLMSG_DONE => Reply::Done,
                NLMSG_ERROR => Reply::Error(u32_at(body, 0).map_or(-libc::EBADMSG, |e| e as i32)),
                RTM_NEWADDR => parse_addr(body).map_or(Reply::Other, Reply::Addr),
                _ => Reply::Other,
            });
        }
        at += align4(len);
    }
    out
}

/// A NETLINK_ROUTE socket that sends one request at a time and waits for
/// its answer (at most 2 s).
#[derive(Debug)]
pub(super) struct Netlink {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

impl Netlink {
    /// Opens and binds the socket.
    pub(super) fn open() -> io::Result<Self> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))?;
        setsockopt(&fd, sockopt::ReceiveTimeout, &TimeVal::seconds(2))?;
        Ok(Self {
            fd,
            seq: 0,
            buf: vec![0; 64 * 1024],
        })
    }

    fn send(&mut self, build: impl FnOnce(u32) -> Vec<u8>) -> io::Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let msg = build(self.seq);
        sendto(
            self.fd.as_raw_fd(),
            &msg,
            &NetlinkAddr::new(0, 0),
            MsgFlags::empty(),
        )?;
        Ok(self.seq)
    }

    fn receive(&mut self, seq: u32) -> io::Result<Vec<Reply>> {
        let n = recv(self.fd.as_raw_fd(), &mut self.buf, MsgFlags::empty())?;
        Ok(parse(&self.buf[..n], seq))
    }

    /// Adds or deletes `ip` on interface `index`; the kernel's error as an
    /// `io::Error` (e.g. `EEXIST`, `EADDRNOTAVAIL`).
    pub(super) fn address(&mut self, op: Op, index: u32, ip: IpAddr, proto: u8) -> io::Result<()> {
        let seq = self.send(|seq| address_request(op, seq, index, ip, proto))?;
        loop {
            for reply in self.receive(seq)? {
                match reply {
                    Reply::Error(0) => return Ok(()),
                    Reply::Error(e) => return Err(io::Error::from_raw_os_error(-e)),
                    _ => {}
                }
            }
        }
    }

    /// Every address of interface `index`.
    pub(super) fn addresses(&mut self, index: u32) -> io::Result<Vec<IfAddr>> {
        let seq = self.send(dump_request)?;
        let mut out = Vec::new();
        loop {
            for reply in self.receive(seq)? {
                match reply {
                    Reply::Addr(a) if a.index == index => out.push(a),
                    Reply::Done => return Ok(out),
                    Reply::Error(0) => {}
                    Reply::Error(e) => return Err(io::Error::from_raw_os_error(-e)),
                    _ => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ne16(v: u16) -> [u8; 2] {
        v.to_ne_bytes()
    }

    fn ne32(v: u32) -> [u8; 4] {
        v.to_ne_bytes()
    }

    #[test]
    fn add_ipv4_is_a_host_address_with_local_address_and_proto() {
        let msg = address_request(Op::Add, 7, 3, "10.250.0.1".parse().unwrap(), 0x6c);
        let mut want = Vec::new();
        want.extend(ne32(48)); // 16 header + 8 ifaddrmsg + 8 + 8 + 8
        want.extend(ne16(RTM_NEWADDR));
        want.extend(ne16(0x1 | 0x4 | 0x400 | 0x200));
        want.extend(ne32(7));
        want.extend(ne32(0));
        want.extend([2, 32, 0, 0]);
        want.extend(ne32(3));
        want.extend(ne16(8));
        want.extend(ne16(IFA_LOCAL));
        want.extend([10, 250, 0, 1]);
        want.extend(ne16(8));
        want.extend(ne16(IFA_ADDRESS));
        want.extend([10, 250, 0, 1]);
        want.extend(ne16(5));
        want.extend(ne16(IFA_PROTO));
        want.extend([0x6c, 0, 0, 0]);
        assert_eq!(msg, want);
    }

    #[test]
    fn add_ipv6_has_nodad_and_delete_has_no_proto() {
        let ip: IpAddr = "fd00:250::1".parse().unwrap();
        let msg = address_request(Op::Add, 1, 9, ip, 0x6c);
        assert_eq!(msg.len(), 16 + 8 + 20 + 8 + 8);
        assert_eq!(u32_at(&msg, 0), Some(msg.len() as u32));
        assert_eq!(&msg[16..20], &[10, 128, 0x02, 0]);
        assert_eq!(u16_at(&msg, 26), Some(IFA_ADDRESS));
        assert_eq!(
            &msg[28..44],
            &[0xfd, 0, 2, 0x50, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]
        );
        assert_eq!(u16_at(&msg, 46), Some(IFA_FLAGS));
        assert_eq!(u32_at(&msg, 48), Some(IFA_F_NODAD));
        assert_eq!(u16_at(&msg, 54), Some(IFA_PROTO));
        assert_eq!(msg[56], 0x6c);

        let del = address_request(Op::Delete, 2, 9, ip, 0x6c);
        assert_eq!(del.len(), 16 + 8 + 20);
        assert_eq!(u16_at(&del, 4), Some(RTM_DELADDR));
        assert_eq!(u16_at(&del, 6), Some(NLM_F_REQUEST | NLM_F_ACK));
    }

    #[test]
    fn dump_request_is_a_bare_getaddr() {
        let msg = dump_request(5);
        assert_eq!(msg.len(), 24);
        assert_eq!(u16_at(&msg, 4), Some(RTM_GETADDR));
        assert_eq!(u16_at(&msg, 6), Some(0x301));
        assert_eq!(u32_at(&msg, 8), Some(5));
    }

    /// A kernel-style RTM_NEWADDR answer, then DONE and an ACK.
    #[test]
    fn parses_addresses_errors_and_done() {
        let mut buf = address_request(Op::Add, 4, 3, "10.250.0.1".parse().unwrap(), 0x6c);
        buf[4..6].copy_from_slice(&ne16(RTM_NEWADDR));
        let mut v6 = address_request(Op::Add, 4, 3, "fd00::5".parse().unwrap(), 0);
        let v6_without_proto = v6.len() - 8;
        v6.truncate(v6_without_proto);
        v6[..4].copy_from_slice(&ne32(v6_without_proto as u32));
        buf.extend(&v6);
        let mut other_seq = dump_request(99);
        other_seq[4..6].copy_from_slice(&ne16(NLMSG_DONE));
        buf.extend(&other_seq);
        let mut err = Vec::new();
        header(&mut err, NLMSG_ERROR, 0, 4);
        err.extend(ne32((-libc::EEXIST) as u32));
        err.extend([0; 16]);
        buf.extend(finish(err));
        let mut done = Vec::new();
        header(&mut done, NLMSG_DONE, 0, 4);
        done.extend(ne32(0));
        buf.extend(finish(done));

        let replies = parse(&buf, 4);
        assert_eq!(
            replies,
            vec![
                Reply::Addr(IfAddr {
                    index: 3,
                    addr: "10.250.0.1".parse().unwrap(),
                    prefix_len: 32,
                    proto: 0x6c
                }),
                Reply::Addr(IfAddr {
                    index: 3,
                    addr: "fd00::5".parse().unwrap(),
                    prefix_len: 128,
                    proto: 0
                }),
                Reply::Error(-libc::EEXIST),
                Reply::Done,
            ]
        );
        // A truncated datagram stops the parse without a panic.
        assert_eq!(parse(&buf[..30], 4), vec![]);
    }
}
