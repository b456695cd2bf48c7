//! Where log events go besides standard error (`[log] output`): a syslog socket (RFC 5424, with
//! `fasyslog`) or the systemd journal (with `tracing-journald`).
//!
//! This module owns opening those sinks at start (an error names the setting), and the syslog
//! writer thread. It does not choose the events or their fields: `crate::access::init_tracing`
//! installs the subscriber and its filter, and a syslog message's body is the line
//! `tracing_subscriber`'s JSON formatter writes, exactly what `format = "json"` writes on
//! standard error.
//!
//! Logging is best-effort and never holds up the data path. The thread that logs an event
//! formats its RFC 5424 message (`<PRI>1 TIMESTAMP HOSTNAME hostgate PID TARGET - {json}`) and
//! queues it without waiting ([`std::sync::mpsc::SyncSender::try_send`], [`QUEUE`] messages);
//! one thread writes the queue to the socket. When the queue is full (a TCP server that stopped
//! reading) the message is dropped and counted; when a write fails (the local daemon restarted,
//! the TCP connection was closed) the socket is reopened at most once per [`RETRY`], and messages
//! that arrive while it is closed are dropped and counted. The next message that gets through is
//! preceded by a warning with the count. A UDP server that goes away costs nothing: datagrams
//! are sent whether or not anybody listens.
//!
//! The journal is written by `tracing-journald` on the logging thread, one datagram per event
//! (a local socket that systemd-journald keeps draining); a send that fails is ignored there.

use std::io::{self, Write};
use std::net::ToSocketAddrs;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use fasyslog::format::SyslogContext;
use fasyslog::sender::SyslogSender;
use fasyslog::{Facility, Severity};
use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

use crate::config::{SyslogConfig, SyslogTarget};

/// Messages waiting for the syslog writer thread; more are dropped and counted.
pub(crate) const QUEUE: usize = 4096;

/// How long a syslog socket that failed stays closed before it is reopened.
pub(crate) const RETRY: Duration = Duration::from_secs(1);

/// The syslog APP-NAME and the journal's `SYSLOG_IDENTIFIER`.
pub(crate) const APP_NAME: &str = "hostgate";

/// The syslog queue of the process, for [`flush`] at exit.
static QUEUED: OnceLock<SyncSender<Msg>> = OnceLock::new();

enum Msg {
    Line(Vec<u8>),
    /// Answered once every message queued before it was written.
    Flush(SyncSender<()>),
}

/// The syslog sink, as the JSON formatter's writer: every event is one [`Message`].
#[derive(Debug)]
pub(crate) struct Syslog {
    context: SyslogContext,
    tx: SyncSender<Msg>,
    dropped: Arc<AtomicU64>,
}

/// Opens `[log] syslog` (a unix socket is connected, a host name resolved, a TCP connection
/// made) and starts the writer thread.
///
/// # Errors
/// The setting, its value and why it cannot be opened.
pub(crate) fn open_syslog(config: &SyslogConfig) -> Result<Syslog, String> {
    let sender = connect(&config.target).map_err(|e| format!("log.syslog: cannot open `{}`: {e}", config.target))?;
    let facility = Facility::try_from(config.facility).map_err(|()| format!("log.facility: {}", config.facility))?;
    let mut context = SyslogContext::new();
    context.appname(APP_NAME).procid(std::process::id().to_string()).facility(facility);
    let (tx, rx) = mpsc::sync_channel(QUEUE);
    let dropped = Arc::new(AtomicU64::new(0));
    let writer = Writer {
        target: config.target.clone(),
        sender: Some(sender),
        retry_at: Instant::now(),
        dropped: dropped.clone(),
        context: context.clone(),
    };
    std::thread::Builder::new()
        .name("hostgate-syslog".to_string())
        .spawn(move || writer.run(rx))
        .map_err(|e| format!("log.syslog: cannot start its writer thread: {e}"))?;
    let _ = QUEUED.set(tx.clone());
    Ok(Syslog { context, tx, dropped })
}

/// Waits (up to `timeout`) until the syslog messages queued so far are written: the process
/// calls it before it exits. Does nothing when the log does not go to syslog.
pub(crate) fn flush(timeout: Duration) {
    let Some(tx) = QUEUED.get() else { return };
    let deadline = Instant::now() + timeout;
    let (done, wait) = mpsc::sync_channel(1);
    // The queue may be full of messages for a TCP server that stopped reading: bounded waits.
    let mut msg = Msg::Flush(done);
    loop {
        match tx.try_send(msg) {
            Ok(()) => break,
            Err(TrySendError::Full(m)) if Instant::now() < deadline => {
                msg = m;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => return,
        }
    }
    let _ = wait.recv_timeout(deadline.saturating_duration_since(Instant::now()));
}

/// Opens the socket `target` names.
fn connect(target: &SyslogTarget) -> io::Result<SyslogSender> {
    match target {
        SyslogTarget::Unix(path) => fasyslog::sender::unix(path),
        SyslogTarget::Udp(addr) => {
            let remote = resolve(addr)?;
            let local = if remote.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
            fasyslog::sender::udp(local, remote).map(SyslogSender::Udp)
        }
        SyslogTarget::Tcp(addr) => {
            let mut sender = fasyslog::sender::tcp(resolve(addr)?)?;
            // RFC 6587 non-transparent framing with LF, the trailer every TCP syslog server
            // reads; a JSON body never holds a raw newline.
            sender.set_postfix("\n");
            Ok(SyslogSender::Tcp(sender))
        }
    }
}

fn resolve(addr: &str) -> io::Result<std::net::SocketAddr> {
    addr.to_socket_addrs()?.next().ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "the name has no address"))
}

/// The syslog severity of a tracing level (RFC 5424 §6.2.1).
pub(crate) fn severity(level: &Level) -> Severity {
    match *level {
        Level::ERROR => Severity::ERROR,
        Level::WARN => Severity::WARNING,
        Level::INFO => Severity::INFORMATIONAL,
        Level::DEBUG | Level::TRACE => Severity::DEBUG,
    }
}

/// An event's target as an RFC 5424 MSGID: at most 32 printable ASCII characters.
fn msgid(target: &str) -> String {
    target.chars().filter(|c| c.is_ascii_graphic()).take(32).collect()
}

impl<'a> MakeWriter<'a> for Syslog {
    type Writer = Message<'a>;

    fn make_writer(&'a self) -> Message<'a> {
        Message { sink: self, severity: Severity::INFORMATIONAL, msgid: String::new(), body: Vec::new() }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Message<'a> {
        Message { sink: self, severity: severity(meta.level()), msgid: msgid(meta.target()), body: Vec::new() }
    }
}

/// One event's message: the formatter writes the body into it, and it is queued when dropped.
#[derive(Debug)]
pub(crate) struct Message<'a> {
    sink: &'a Syslog,
    severity: Severity,
    msgid: String,
    body: Vec<u8>,
}

impl Write for Message<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.body.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Message<'_> {
    fn drop(&mut self) {
        let body = String::from_utf8_lossy(&self.body);
        let body = body.trim_end_matches(['\n', '\r']);
        if body.is_empty() {
            return;
        }
        let msgid = (!self.msgid.is_empty()).then_some(self.msgid.as_str());
        let line = self.sink.context.format_rfc5424(self.severity, msgid, Vec::new(), Some(body)).to_string();
        if self.sink.tx.try_send(Msg::Line(line.into_bytes())).is_err() {
            self.sink.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The writer thread's state: the socket (closed after a failure until `retry_at`).
struct Writer {
    target: SyslogTarget,
    sender: Option<SyslogSender>,
    retry_at: Instant,
    dropped: Arc<AtomicU64>,
    context: SyslogContext,
}

impl Writer {
    fn run(mut self, rx: Receiver<Msg>) {
        loop {
            // Stream sockets are buffered: flush when the queue is drained, or after a while.
            let msg = match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(m) => m,
                Err(RecvTimeoutError::Timeout) => {
                    self.flush();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            };
            self.handle(msg);
            while let Ok(m) = rx.try_recv() {
                self.handle(m);
            }
            self.flush();
        }
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Line(line) => self.send(&line),
            Msg::Flush(done) => {
                self.flush();
                let _ = done.try_send(());
            }
        }
    }

    fn send(&mut self, line: &[u8]) {
        if self.sender.is_none() && Instant::now() >= self.retry_at {
            match connect(&self.target) {
                Ok(s) => self.sender = Some(s),
                Err(_) => self.retry_at = Instant::now() + RETRY,
            }
        }
        let Some(sender) = self.sender.as_mut() else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let lost = self.dropped.swap(0, Ordering::Relaxed);
        if lost > 0 {
            let note = serde_json::json!({
                "level": "WARN",
                "target": APP_NAME,
                "message": "syslog: log messages were dropped (the queue was full or the server unreachable)",
                "dropped": lost,
                "syslog": self.target.to_string(),
            });
            let note = self.context.format_rfc5424(Severity::WARNING, Some(APP_NAME), Vec::new(), Some(note));
            if let Err(e) = sender.send_formatted(note.to_string().as_bytes()) {
                self.dropped.fetch_add(lost, Ordering::Relaxed);
                self.failed(&e);
                return;
            }
        }
        if let Err(e) = sender.send_formatted(line) {
            self.failed(&e);
        }
    }

    fn flush(&mut self) {
        if let Some(sender) = self.sender.as_mut() {
            if let Err(e) = sender.flush() {
                self.failed(&e);
            }
        }
    }

    /// A write failed: this message is lost; a UDP socket stays (a datagram to a port nobody
    /// listens on fails once and the next one may get through), any other is reopened later.
    fn failed(&mut self, _error: &io::Error) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        if !matches!(self.sender, Some(SyslogSender::Udp(_))) {
            self.sender = None;
            self.retry_at = Instant::now() + RETRY;
        }
    }
}

/// Opens the journal (`/run/systemd/journal/socket`): fields as journal fields, unprefixed
/// (`HOST=`, `ACTION=`…), `SYSLOG_IDENTIFIER=hostgate`, and `PRIORITY` the syslog severity of the
/// event's level, as syslog output has it.
///
/// # Errors
/// When the journal socket cannot be reached.
pub(crate) fn open_journald() -> Result<tracing_journald::Layer, String> {
    use tracing_journald::{Priority, PriorityMappings};
    let layer = tracing_journald::layer()
        .map_err(|e| format!("log.output = \"journald\": cannot reach /run/systemd/journal/socket: {e}"))?;
    Ok(layer.with_syslog_identifier(APP_NAME.to_string()).with_field_prefix(None).with_priority_mappings(
        PriorityMappings {
            error: Priority::Error,
            warn: Priority::Warning,
            info: Priority::Informational,
            debug: Priority::Debug,
            trace: Priority::Debug,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msgid_is_printable_and_short() {
        assert_eq!(msgid("access"), "access");
        assert_eq!(msgid("hostgate_proxy::listen::workers::x"), "hostgate_proxy::listen::workers:");
        assert_eq!(msgid("a b\tc"), "abc");
    }

    #[test]
    fn severity_follows_the_level() {
        assert_eq!(severity(&Level::ERROR), Severity::ERROR);
        assert_eq!(severity(&Level::WARN), Severity::WARNING);
        assert_eq!(severity(&Level::INFO), Severity::INFORMATIONAL);
        assert_eq!(severity(&Level::TRACE), Severity::DEBUG);
    }
}
