//! The io_uring experiment of issue 20: hostgate's transparent TLS path on one io_uring instead
//! of tokio and epoll, to see what a data path without epoll, with every system call of a loop
//! turn batched into one `io_uring_enter`, would gain.
//!
//! It does what a forwarded or refused connection costs in hostgate's comparison run: accept
//! (multishot), read the ClientHello, `SO_ORIGINAL_DST`, parse the hello with hostgate's own
//! parser and decide with hostgate's own [`Policy`], then either refuse (the `access_denied`
//! alert with `MSG_MORE`, a shutdown, a lingering read until the client's end) or open a socket
//! with `TCP_NODELAY`, connect to the name's pinned address, replay the hello and relay both ways
//! until both ends are done; a reset is passed on as a reset. It does less than hostgate (no
//! access record, metrics, timeouts, limits, reload or DNS: only `[resolve]` pins), so its figure
//! is an upper bound for what io_uring could give hostgate's data path.
//!
//! It reads hostgate's configuration and answers the part of hostgate's command line the
//! harness uses, so the harness measures it in hostgate's place:
//!
//! ```text
//! cargo build --release --example uring_probe
//! sudo benches/compare/run.sh --hostgate target/release/examples/uring_probe --peers hostgate,haproxy
//! ```
//!
//! BENCHMARKS.md ("issue 20: io_uring") has what it measured. It stays an experiment: the
//! result did not justify a second data path.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::path::Path;

use hostgate_matcher::{Host, Matches};
use hostgate_proxy::config::{Config, Pin};
use hostgate_proxy::outcome::TLS_ACCESS_DENIED;
use hostgate_proxy::policy::{Action, Policy, Query, Scheme};
use hostgate_proxy::sniff::tls::{parse_client_hello, Progress};
use io_uring::{cqueue, opcode, squeue, types, IoUring};
use socket2::{Domain, SockAddr, Socket, Type};

/// Each direction's buffer.
const BUF: usize = 16 * 1024;

/// What a completion was for (the low byte of its `user_data`; the slot is above it).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Op {
    Accept,
    HelloRecv,
    AlertSend,
    Shutdown,
    LingerRecv,
    Connect,
    /// Client to upstream: the hello first, then whatever the client sends.
    UpSend,
    ClientRecv,
    UpRecv,
    ClientSend,
    Close,
}

impl Op {
    const ALL: [Op; 11] = [
        Op::Accept,
        Op::HelloRecv,
        Op::AlertSend,
        Op::Shutdown,
        Op::LingerRecv,
        Op::Connect,
        Op::UpSend,
        Op::ClientRecv,
        Op::UpRecv,
        Op::ClientSend,
        Op::Close,
    ];

    fn data(self, slot: usize) -> u64 {
        ((slot as u64) << 8) | self as u64
    }

    fn of(user_data: u64) -> (Op, usize) {
        (Op::ALL[(user_data & 0xff) as usize], (user_data >> 8) as usize)
    }
}

/// One connection. Boxed, and kept until nothing is in flight for it: the ring's operations
/// point into its buffers and its address.
#[derive(Debug)]
struct Conn {
    client: Option<Socket>,
    up: Option<Socket>,
    to: Option<SockAddr>,
    /// Client to upstream: the hello, then relayed bytes. `c_out` is (bytes to send, sent).
    cbuf: Box<[u8; BUF]>,
    clen: usize,
    c_out: (usize, usize),
    /// Upstream to client.
    ubuf: Box<[u8; BUF]>,
    u_out: (usize, usize),
    c_eof: bool,
    u_eof: bool,
    aborted: bool,
    inflight: u32,
}

impl Conn {
    fn new() -> Box<Conn> {
        Box::new(Conn {
            client: None,
            up: None,
            to: None,
            cbuf: Box::new([0; BUF]),
            clen: 0,
            c_out: (0, 0),
            ubuf: Box::new([0; BUF]),
            u_out: (0, 0),
            c_eof: false,
            u_eof: false,
            aborted: false,
            inflight: 0,
        })
    }

    fn fd(&self, up: bool) -> types::Fd {
        let s = if up { &self.up } else { &self.client };
        types::Fd(s.as_ref().map_or(-1, AsRawFd::as_raw_fd))
    }
}

// Boxed connections in a `Vec`: see `conns`.
#[allow(clippy::vec_box)]
struct Probe {
    ring: IoUring,
    /// Boxed: the ring points into each `Conn`, which must not move when the `Vec` grows.
    conns: Vec<Option<Box<Conn>>>,
    free: Vec<usize>,
    spare: Vec<Box<Conn>>,
    policy: Policy,
    pins: HashMap<String, SocketAddr>,
    scratch: Matches,
    listener: Socket,
}

impl Probe {
    #[allow(unsafe_code)]
    fn push(&mut self, e: squeue::Entry) {
        // SAFETY: every buffer and address an entry points at lives in a boxed `Conn` that is
        // neither freed nor reused while it has operations in flight (`inflight`), or is static
        // (the alert).
        unsafe {
            while self.ring.submission().push(&e).is_err() {
                self.ring.submit().expect("io_uring submit");
            }
        }
    }

    fn arm_accept(&mut self) {
        let e = opcode::AcceptMulti::new(types::Fd(self.listener.as_raw_fd()))
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(Op::Accept.data(0));
        self.push(e);
    }

    fn conn(&mut self, slot: usize) -> &mut Conn {
        self.conns[slot].as_mut().expect("a live slot")
    }

    /// Queues `op` for `slot` (a receive or send on its buffers).
    fn queue(&mut self, slot: usize, op: Op) {
        let c = self.conn(slot);
        c.inflight += 1;
        let e = match op {
            Op::HelloRecv => {
                let fd = c.fd(false);
                let rest = &mut c.cbuf[c.clen..];
                opcode::Recv::new(fd, rest.as_mut_ptr(), rest.len() as u32).build()
            }
            Op::ClientRecv | Op::LingerRecv => opcode::Recv::new(c.fd(false), c.cbuf.as_mut_ptr(), BUF as u32).build(),
            Op::UpRecv => opcode::Recv::new(c.fd(true), c.ubuf.as_mut_ptr(), BUF as u32).build(),
            Op::UpSend => {
                let out = &c.cbuf[c.c_out.1..c.c_out.0];
                opcode::Send::new(c.fd(true), out.as_ptr(), out.len() as u32).flags(libc::MSG_NOSIGNAL).build()
            }
            Op::ClientSend => {
                let out = &c.ubuf[c.u_out.1..c.u_out.0];
                opcode::Send::new(c.fd(false), out.as_ptr(), out.len() as u32).flags(libc::MSG_NOSIGNAL).build()
            }
            _ => unreachable!("not a buffer operation: {op:?}"),
        };
        self.push(e.user_data(op.data(slot)));
    }

    fn accepted(&mut self, client: Socket) {
        let mut c = self.spare.pop().unwrap_or_else(Conn::new);
        c.client = Some(client);
        c.clen = 0;
        c.c_out = (0, 0);
        c.u_out = (0, 0);
        c.c_eof = false;
        c.u_eof = false;
        c.aborted = false;
        let slot = self.free.pop().unwrap_or_else(|| {
            self.conns.push(None);
            self.conns.len() - 1
        });
        self.conns[slot] = Some(c);
        self.queue(slot, Op::HelloRecv);
    }

    /// Frees the slot once nothing is in flight and both ends are done; the sockets are closed
    /// through the ring.
    fn maybe_finish(&mut self, slot: usize) {
        let c = self.conn(slot);
        if c.inflight > 0 || !(c.aborted || (c.c_eof && c.u_eof)) {
            return;
        }
        let socks = [c.client.take(), c.up.take()];
        c.to = None;
        for s in socks.into_iter().flatten() {
            let close = opcode::Close::new(types::Fd(s.into_raw_fd())).build();
            self.push(close.user_data(Op::Close.data(0)).flags(squeue::Flags::SKIP_SUCCESS));
        }
        let c = self.conns[slot].take().expect("a live slot");
        self.spare.push(c);
        self.free.push(slot);
    }

    /// A reset on either side: passed on as a reset (`SO_LINGER` 0), and both sockets shut so
    /// that what is in flight completes.
    fn abort(&mut self, slot: usize) {
        let c = self.conn(slot);
        if c.aborted {
            return;
        }
        c.aborted = true;
        for s in [&c.client, &c.up].into_iter().flatten() {
            let _ = s.set_linger(Some(std::time::Duration::ZERO));
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    /// The alert with `MSG_MORE`, the shutdown (its FIN rides with the alert), then reads until
    /// the client's end: linked, so they run in order.
    fn refuse(&mut self, slot: usize) {
        let c = self.conn(slot);
        c.inflight += 3;
        c.u_eof = true;
        let fd = c.fd(false);
        let send = opcode::Send::new(fd, TLS_ACCESS_DENIED.as_ptr(), TLS_ACCESS_DENIED.len() as u32)
            .flags(libc::MSG_MORE | libc::MSG_NOSIGNAL)
            .build()
            .user_data(Op::AlertSend.data(slot))
            .flags(squeue::Flags::IO_LINK);
        let shut = opcode::Shutdown::new(fd, libc::SHUT_WR)
            .build()
            .user_data(Op::Shutdown.data(slot))
            .flags(squeue::Flags::IO_LINK);
        let linger =
            opcode::Recv::new(fd, c.cbuf.as_mut_ptr(), BUF as u32).build().user_data(Op::LingerRecv.data(slot));
        self.push(send);
        self.push(shut);
        self.push(linger);
    }

    fn hello_done(&mut self, slot: usize, sni: Option<String>) {
        let port = self.conn(slot).client.as_ref().and_then(original_port).unwrap_or(443);
        let Some(Ok(host)) = sni.as_deref().map(Host::new) else {
            return self.refuse(slot);
        };
        // No client groups in the harness's configuration: the lookup is made for its cost.
        let group = self.policy.group_of(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let q = Query { host: &host, scheme: Scheme::Https, port, path: None, group };
        if self.policy.decide_connection(&q, &mut self.scratch).action == Action::Deny {
            return self.refuse(slot);
        }
        let Some(&to) = self.pins.get(host.as_str()) else {
            return self.refuse(slot);
        };
        let up = match Socket::new(Domain::for_address(to), Type::STREAM.cloexec(), None) {
            Ok(s) if s.set_tcp_nodelay(true).is_ok() => s,
            _ => return self.abort(slot),
        };
        let c = self.conn(slot);
        c.c_out = (c.clen, 0);
        c.inflight += 2;
        let to = c.to.insert(SockAddr::from(to));
        let connect = opcode::Connect::new(types::Fd(up.as_raw_fd()), to.as_ptr().cast(), to.len())
            .build()
            .user_data(Op::Connect.data(slot))
            .flags(squeue::Flags::IO_LINK);
        let hello = &c.cbuf[..c.clen];
        let send = opcode::Send::new(types::Fd(up.as_raw_fd()), hello.as_ptr(), hello.len() as u32)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(Op::UpSend.data(slot));
        c.up = Some(up);
        self.push(connect);
        self.push(send);
    }

    #[allow(unsafe_code)]
    fn complete(&mut self, user_data: u64, res: i32, more: bool) {
        let (op, slot) = Op::of(user_data);
        match op {
            Op::Accept => {
                if res >= 0 {
                    // SAFETY: a successful accept's result is a new descriptor that nothing
                    // else owns.
                    let fd = unsafe { OwnedFd::from_raw_fd(res as RawFd) };
                    self.accepted(Socket::from(fd));
                }
                if !more {
                    self.arm_accept();
                }
                return;
            }
            Op::Close => return,
            _ => {}
        }
        let c = self.conn(slot);
        c.inflight -= 1;
        if c.aborted {
            return self.maybe_finish(slot);
        }
        match op {
            Op::HelloRecv if res <= 0 => self.abort(slot),
            Op::HelloRecv => {
                c.clen += res as usize;
                match parse_client_hello(&c.cbuf[..c.clen], BUF) {
                    Ok(Progress::NeedMore) if c.clen < BUF => self.queue(slot, Op::HelloRecv),
                    Ok(Progress::Done(h)) => self.hello_done(slot, h.sni),
                    _ => self.refuse(slot),
                }
            }
            Op::AlertSend | Op::Shutdown => {}
            Op::LingerRecv if res > 0 => self.queue(slot, Op::LingerRecv),
            Op::LingerRecv => c.c_eof = true,
            Op::Connect if res < 0 => self.abort(slot),
            Op::Connect => {}
            Op::ClientRecv | Op::UpRecv | Op::UpSend | Op::ClientSend if res < 0 => self.abort(slot),
            Op::ClientRecv | Op::UpRecv if res == 0 => {
                let from_client = op == Op::ClientRecv;
                if from_client {
                    c.c_eof = true;
                } else {
                    c.u_eof = true;
                }
                let other = c.fd(from_client);
                c.inflight += 1;
                self.push(opcode::Shutdown::new(other, libc::SHUT_WR).build().user_data(Op::Shutdown.data(slot)));
            }
            Op::ClientRecv => {
                c.c_out = (res as usize, 0);
                self.queue(slot, Op::UpSend);
            }
            Op::UpRecv => {
                c.u_out = (res as usize, 0);
                self.queue(slot, Op::ClientSend);
            }
            Op::UpSend | Op::ClientSend => {
                let (out, next) =
                    if op == Op::UpSend { (&mut c.c_out, Op::ClientRecv) } else { (&mut c.u_out, Op::UpRecv) };
                out.1 += res as usize;
                if out.1 < out.0 {
                    self.queue(slot, op);
                } else if op == Op::UpSend && c.clen > 0 {
                    // The hello is out: relay both ways from here.
                    c.clen = 0;
                    self.queue(slot, Op::ClientRecv);
                    self.queue(slot, Op::UpRecv);
                } else {
                    self.queue(slot, next);
                }
            }
            Op::Accept | Op::Close => unreachable!(),
        }
        self.maybe_finish(slot);
    }

    fn run(&mut self) -> ! {
        self.arm_accept();
        let mut done: Vec<(u64, i32, bool)> = Vec::with_capacity(1024);
        loop {
            self.ring.submit_and_wait(1).expect("io_uring submit_and_wait");
            done.extend(self.ring.completion().map(|c| (c.user_data(), c.result(), cqueue::more(c.flags()))));
            for (data, res, more) in done.drain(..) {
                self.complete(data, res, more);
            }
        }
    }
}

/// The port a redirected connection was sent to.
fn original_port(client: &Socket) -> Option<u16> {
    nix::sys::socket::getsockopt(client, nix::sys::socket::sockopt::OriginalDst)
        .ok()
        .map(|sa| u16::from_be(sa.sin_port))
}

fn fail(what: impl std::fmt::Display) -> ! {
    eprintln!("uring_probe: {what}");
    std::process::exit(1)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let path = match args.as_slice() {
        ["--version"] => {
            println!("uring_probe (hostgate's transparent TLS path on io_uring; issue 20's experiment)");
            return;
        }
        ["run", "--config", path] => *path,
        _ => {
            eprintln!("usage: uring_probe run --config FILE");
            std::process::exit(2)
        }
    };
    let cfg = Config::load(Path::new(path)).unwrap_or_else(|e| fail(e));
    let policy = Policy::load(&cfg.policy_inputs()).unwrap_or_else(|e| fail(e));
    let mut pins = HashMap::new();
    for (name, list) in &cfg.resolve {
        let to = match list.first() {
            Some(Pin::Socket(s)) => *s,
            Some(Pin::Ip(ip)) => SocketAddr::new(*ip, 443),
            None => continue,
        };
        pins.insert(name.clone(), to);
    }
    let Some(addr) = cfg.listeners.first().map(|l| l.address) else { fail("no listener in the configuration") };
    let listener = (|| {
        let s = Socket::new(Domain::for_address(addr), Type::STREAM.cloexec(), None)?;
        s.set_reuse_address(true)?;
        s.set_tcp_nodelay(true)?;
        s.bind(&addr.into())?;
        s.listen(4096)?;
        Ok::<_, std::io::Error>(s)
    })()
    .unwrap_or_else(|e| fail(format!("listening on {addr}: {e}")));
    let ring = IoUring::builder()
        .setup_single_issuer()
        .setup_coop_taskrun()
        .build(4096)
        .unwrap_or_else(|e| fail(format!("io_uring: {e}")));
    eprintln!("uring_probe: listening on {addr}");
    Probe {
        ring,
        conns: Vec::new(),
        free: Vec::new(),
        spare: Vec::new(),
        policy,
        pins,
        scratch: Matches::new(),
        listener,
    }
    .run()
}
