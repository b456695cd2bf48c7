//! Sniffing: reading a client's first bytes until the gateway can tell what it asks for.
//!
//! This phase owns the read loop (with the `sniff.timeout` deadline and the `sniff.max_bytes`
//! cap) and the protocol guess: a TLS ClientHello ([`tls`], reassembled across TCP segments
//! and TLS records), a plain HTTP request (the method token is enough; hyper parses the rest),
//! or anything else. Bytes are read into a buffer, never forwarded: the relay or hyper replays
//! them (see `stream::Prefixed`). It does not decide or log.

pub mod tls;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::config::SniffConfig;
use crate::outcome::{Failure, Outcome};
use tls::{ClientHello, Progress, SniffError};

/// What the client's first bytes are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sniffed {
    /// A complete, valid ClientHello.
    Tls(ClientHello),
    /// The start of an HTTP/1 request: after any empty lines, a method token and a space (what
    /// hyper's parser, httparse, starts a request with).
    Http,
    /// Neither.
    Unknown,
}

/// Reads from `io` into `buf` until the protocol is known (and for TLS, the ClientHello is
/// complete), within `cfg.timeout`.
///
/// # Errors
/// A [`Failure`] with outcome `timeout`, `malformed-clienthello`, `clienthello-too-large` or
/// `client-error` (closed or reset before anything decidable).
pub async fn sniff<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut BytesMut,
    cfg: &SniffConfig,
) -> Result<Sniffed, Failure> {
    sniff_until(io, buf, cfg, tokio::time::Instant::now() + cfg.timeout).await
}

/// [`sniff`] with the `sniff.timeout` deadline already running: a listener that waited for the
/// client's first byte before allocating anything for it passes the deadline it set at accept.
///
/// # Errors
/// As [`sniff`].
pub async fn sniff_until<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut BytesMut,
    cfg: &SniffConfig,
    deadline: tokio::time::Instant,
) -> Result<Sniffed, Failure> {
    match tokio::time::timeout_at(deadline, sniff_loop(io, buf, cfg.max_bytes)).await {
        Ok(r) => r,
        Err(_) => Err(timed_out(cfg, buf.len())),
    }
}

/// The `timeout` failure of a client that sent `read` bytes, none of them decidable, within
/// `sniff.timeout`.
pub fn timed_out(cfg: &SniffConfig, read: usize) -> Failure {
    Failure::new(
        Outcome::Timeout,
        format!("nothing decidable within {} ms ({read} bytes read)", cfg.timeout.as_millis()),
    )
}

async fn sniff_loop<S: AsyncRead + Unpin>(io: &mut S, buf: &mut BytesMut, cap: usize) -> Result<Sniffed, Failure> {
    let mut walk = RecordWalk::default();
    loop {
        // Bytes that start like a handshake record but cannot be TLS (`looks_like_tls` needs
        // three) are decided at once, not after the record the walk would wait for.
        if buf.first() != Some(&0x16) || tls::looks_like_tls(buf) == Some(false) || walk.ready(buf, cap) {
            if let Some(found) = classify(buf, cap)? {
                return Ok(found);
            }
        }
        buf.reserve(2048.min(cap + 1 - buf.len().min(cap)));
        let n = io
            .read_buf(buf)
            .await
            .map_err(|e| Failure::new(Outcome::ClientError, format!("read error before a decision: {e}")))?;
        if n == 0 {
            return Err(Failure::new(
                Outcome::ClientError,
                format!("client closed after {} bytes, before anything decidable", buf.len()),
            ));
        }
    }
}

/// Decides when a TLS buffer is worth a full parse, so that a client trickling its ClientHello a
/// byte (or a record) at a time costs linear work, not a re-parse of the whole buffer per read.
///
/// It walks the record headers once, incrementally, adding up the handshake bytes the complete
/// records carry, and learns the ClientHello's declared length from the first four of them. A
/// full parse runs when those bytes are all there, or when the parser has something to refuse
/// early: a record that is not a handshake record, an impossible record length, a handshake
/// that is not a ClientHello or cannot fit the cap, or a buffer over the cap.
#[derive(Debug, Default)]
struct RecordWalk {
    /// Offset of the next record header not walked yet.
    pos: usize,
    /// Handshake bytes in the complete records walked.
    stream: usize,
    /// The first four handshake bytes (type and u24 length), as far as seen.
    head: [u8; 4],
    head_len: usize,
}

impl RecordWalk {
    fn ready(&mut self, buf: &[u8], cap: usize) -> bool {
        if buf.len() > cap {
            return true;
        }
        while let Some(&[kind, major, _, hi, lo]) = buf.get(self.pos..self.pos + 5) {
            let len = usize::from(u16::from_be_bytes([hi, lo]));
            if kind != 0x16 || major != 3 || len == 0 || len > 16384 {
                return true;
            }
            let Some(payload) = buf.get(self.pos + 5..self.pos + 5 + len) else { break };
            for &b in payload.iter().take(4 - self.head_len) {
                self.head[self.head_len] = b;
                self.head_len += 1;
            }
            self.stream += len;
            self.pos += 5 + len;
        }
        // The handshake header may still be in the record that is arriving: peek at it there
        // (without committing) so that an impossible length is refused before the record ends.
        let mut head = self.head;
        let mut head_len = self.head_len;
        for &b in buf.get(self.pos + 5..).unwrap_or_default().iter().take(4 - head_len) {
            head[head_len] = b;
            head_len += 1;
        }
        if head_len < 4 {
            return false;
        }
        let declared = usize::from(head[1]) << 16 | usize::from(head[2]) << 8 | usize::from(head[3]);
        head[0] != 1 || declared + 4 + 5 > cap || self.stream >= declared + 4
    }
}

/// Classifies what has been read so far; `None` when more bytes are needed.
fn classify(buf: &[u8], cap: usize) -> Result<Option<Sniffed>, Failure> {
    if buf.is_empty() {
        return Ok(None);
    }
    if buf[0] == 0x16 {
        return match tls::looks_like_tls(buf) {
            None => Ok(None),
            Some(false) => Ok(Some(Sniffed::Unknown)),
            Some(true) => match tls::parse_client_hello(buf, cap) {
                Ok(Progress::NeedMore) => Ok(None),
                Ok(Progress::Done(hello)) => Ok(Some(Sniffed::Tls(hello))),
                Err(SniffError::NotTls) => Ok(Some(Sniffed::Unknown)),
                Err(e @ SniffError::TooLarge { .. }) => Err(Failure::new(Outcome::ClientHelloTooLarge, e.to_string())),
                Err(e) => Err(Failure::new(Outcome::MalformedClientHello, e.to_string())),
            },
        };
    }
    Ok(match http_opening(buf) {
        Some(true) => Some(Sniffed::Http),
        Some(false) => Some(Sniffed::Unknown),
        // Only empty lines and token characters so far: a request that has not reached its
        // space yet, unless it has filled the sniff buffer.
        None => (buf.len() > cap).then_some(Sniffed::Unknown),
    })
}

/// Whether `buf` opens an HTTP/1 request the way hyper's parser (httparse) reads one: any empty
/// lines (`CRLF` or a bare `LF`, RFC 9112 §2.2), then a method of one or more token characters
/// (RFC 9110 `tchar`, any case, any length) and a space. `None` while every byte so far fits.
fn http_opening(buf: &[u8]) -> Option<bool> {
    let mut i = 0;
    loop {
        match buf.get(i..i + 2) {
            Some(b"\r\n") => i += 2,
            Some([b'\n', _]) => i += 1,
            Some([b'\r', _]) => return Some(false),
            _ => match buf.get(i) {
                Some(b'\n') => i += 1,
                Some(b'\r') | None => return None,
                Some(_) => break,
            },
        }
    }
    for (n, &b) in buf[i..].iter().enumerate() {
        match b {
            b' ' => return Some(n > 0),
            b if is_tchar(b) => {}
            _ => return Some(false),
        }
    }
    None
}

/// A byte of an HTTP token (RFC 9110 §5.6.2 `tchar`).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

impl ClientHello {
    /// ALPN names, comma-separated, for the log; `None` when none were offered.
    pub fn alpn_list(&self) -> Option<String> {
        (!self.alpn.is_empty()).then(|| self.alpn.join(","))
    }

    /// Offered versions as names (`1.3,1.2`), for the log; the legacy version when the client
    /// sent no supported_versions extension.
    pub fn versions_list(&self) -> String {
        let name = |v: u16| match v {
            0x0304 => "1.3".to_string(),
            0x0303 => "1.2".to_string(),
            0x0302 => "1.1".to_string(),
            0x0301 => "1.0".to_string(),
            0x0300 => "ssl3".to_string(),
            v if v & 0x0f0f == 0x0a0a => "grease".to_string(),
            v => format!("{v:#06x}"),
        };
        if self.supported_versions.is_empty() {
            name(self.legacy_version)
        } else {
            self.supported_versions.iter().map(|&v| name(v)).filter(|v| v != "grease").collect::<Vec<_>>().join(",")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guesses() {
        assert_eq!(classify(b"GET / HTTP/1.1\r\n", 16384).unwrap(), Some(Sniffed::Http));
        assert_eq!(classify(b"GE", 16384).unwrap(), None);
        assert_eq!(classify(b"SSH-2.0-OpenSSH_9.2\r\n", 16384).unwrap(), Some(Sniffed::Unknown));
        assert_eq!(classify(b"\x00\x01", 16384).unwrap(), Some(Sniffed::Unknown));
        assert_eq!(classify(b" GET", 16384).unwrap(), Some(Sniffed::Unknown));
        // Whatever httparse reads as a request line: any token characters, any length, after
        // empty lines.
        assert_eq!(classify(b"get / HTTP/1.1", 16384).unwrap(), Some(Sniffed::Http));
        assert_eq!(classify(b"M-SEARCH.2~x * HTTP/1.1", 16384).unwrap(), Some(Sniffed::Http));
        assert_eq!(classify(b"VERSION-CONTROL-EXTENDED / HTTP/1.1", 16384).unwrap(), Some(Sniffed::Http));
        assert_eq!(classify(b"\r\n\nGET / HTTP/1.1", 16384).unwrap(), Some(Sniffed::Http));
        assert_eq!(classify(b"\r\n\r", 16384).unwrap(), None);
        assert_eq!(classify(b"\r\r", 16384).unwrap(), Some(Sniffed::Unknown));
        assert_eq!(classify(b"\r\n ", 16384).unwrap(), Some(Sniffed::Unknown));
        assert_eq!(classify(b"GET\t/", 16384).unwrap(), Some(Sniffed::Unknown));
        // A token that never ends is decided when it fills the buffer.
        assert_eq!(classify(b"ABCDEFGHIJKLMNOPQRSTU", 16384).unwrap(), None);
        assert_eq!(classify(b"ABCDEFGHIJKLMNOPQRSTU", 20).unwrap(), Some(Sniffed::Unknown));
        assert_eq!(classify(b"\x16\x03", 16384).unwrap(), None);
        assert_eq!(classify(b"\x16\x07\x01", 16384).unwrap(), Some(Sniffed::Unknown));
    }

    /// A minimal ClientHello for `name`: TLS 1.2 body, one cipher suite, server_name only.
    fn hello(name: &str) -> Vec<u8> {
        let mut sni = vec![0u8];
        sni.extend((name.len() as u16).to_be_bytes());
        sni.extend(name.as_bytes());
        let mut list = (sni.len() as u16).to_be_bytes().to_vec();
        list.extend(sni);
        let mut ext = vec![0, 0];
        ext.extend((list.len() as u16).to_be_bytes());
        ext.extend(list);
        let mut body = vec![3, 3];
        body.extend([7u8; 32]);
        body.extend([0, 0, 2, 0x13, 0x01, 1, 0]);
        body.extend((ext.len() as u16).to_be_bytes());
        body.extend(ext);
        let mut hs = vec![1];
        hs.extend(&(body.len() as u32).to_be_bytes()[1..]);
        hs.extend(body);
        hs
    }

    fn records(hs: &[u8], size: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for chunk in hs.chunks(size) {
            out.extend([0x16, 3, 1]);
            out.extend((chunk.len() as u16).to_be_bytes());
            out.extend(chunk);
        }
        out
    }

    #[test]
    fn the_walk_gates_parsing_without_changing_answers() {
        let hs = hello("example.com");
        for size in [1, 3, 7, 64, 16384] {
            let bytes = records(&hs, size);
            let mut walk = RecordWalk::default();
            for end in 1..=bytes.len() {
                let prefix = &bytes[..end];
                let gated = if walk.ready(prefix, 16384) { classify(prefix, 16384).unwrap() } else { None };
                let full = classify(prefix, 16384).unwrap();
                match (&gated, &full) {
                    (None, None) => {}
                    (Some(Sniffed::Tls(a)), Some(Sniffed::Tls(b))) => {
                        assert_eq!(a, b);
                        assert_eq!(end, bytes.len(), "done early at {end} of {}", bytes.len());
                        assert_eq!(a.sni.as_deref(), Some("example.com"));
                    }
                    _ => panic!("size {size}, prefix {end}: gated {gated:?}, full {full:?}"),
                }
            }
        }
        // Refusals are not delayed: a declared length over the cap is judged at once.
        let mut big = records(&hs, 16384);
        big[6..9].copy_from_slice(&[0x01, 0, 0]);
        let mut walk = RecordWalk::default();
        assert!(walk.ready(&big[..9], 16384));
        assert!(classify(&big[..9], 16384).is_err());
        // So is a record of another type.
        let mut walk = RecordWalk::default();
        assert!(walk.ready(b"\x16\x03\x01\x00\x01\x01\x15\x03\x03\x00\x02", 16384));
    }

    #[tokio::test]
    async fn silent_client_times_out() {
        let (_keep, mut b) = tokio::io::duplex(64);
        let cfg =
            SniffConfig { timeout: std::time::Duration::from_millis(50), max_bytes: 16384, ..SniffConfig::default() };
        let mut buf = BytesMut::new();
        let e = sniff(&mut b, &mut buf, &cfg).await.unwrap_err();
        assert_eq!(e.outcome, Outcome::Timeout);
    }
}
