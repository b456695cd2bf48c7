//! Sniffing: reading a client's first bytes until the gateway can tell what it asks for.
//!
//! This phase owns the read loop (with the `sniff.timeout` deadline and the `sniff.max_bytes`
//! cap) and the protocol guess: a TLS ClientHello ([`tls`], reassembled across TCP segments
//! and TLS records), a plain HTTP request (the method token is enough; hyper parses the rest),
//! or anything else. Bytes are read into a buffer, never forwarded: the relay or hyper replays
//! them (see [`crate::io::Prefixed`]). It does not decide or log.

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
    /// The start of an HTTP/1 request (a method token and a space).
    Http,
    /// Neither.
    Unknown,
}

/// The longest HTTP method token accepted when guessing (`OPTIONS` is 7, `PROPPATCH` 9).
const MAX_METHOD: usize = 16;

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
    match tokio::time::timeout(cfg.timeout, sniff_loop(io, buf, cfg.max_bytes)).await {
        Ok(r) => r,
        Err(_) => Err(Failure::new(
            Outcome::Timeout,
            format!("nothing decidable within {} ms ({} bytes read)", cfg.timeout.as_millis(), buf.len()),
        )),
    }
}

async fn sniff_loop<S: AsyncRead + Unpin>(io: &mut S, buf: &mut BytesMut, cap: usize) -> Result<Sniffed, Failure> {
    loop {
        if let Some(found) = classify(buf, cap)? {
            return Ok(found);
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
    for (i, &b) in buf.iter().enumerate().take(MAX_METHOD + 1) {
        match b {
            b'A'..=b'Z' | b'-' | b'_' => {}
            b' ' if i > 0 => return Ok(Some(Sniffed::Http)),
            _ => return Ok(Some(Sniffed::Unknown)),
        }
    }
    Ok((buf.len() > MAX_METHOD).then_some(Sniffed::Unknown))
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
        assert_eq!(classify(b"SSH-2.0-OpenSSH", 16384).unwrap(), Some(Sniffed::Unknown));
        assert_eq!(classify(b"\x00\x01", 16384).unwrap(), Some(Sniffed::Unknown));
        assert_eq!(classify(b"ABCDEFGHIJKLMNOPQRSTU", 16384).unwrap(), Some(Sniffed::Unknown));
        assert_eq!(classify(b" GET", 16384).unwrap(), Some(Sniffed::Unknown));
        assert_eq!(classify(b"\x16\x03", 16384).unwrap(), None);
        assert_eq!(classify(b"\x16\x07\x01", 16384).unwrap(), Some(Sniffed::Unknown));
    }

    #[tokio::test]
    async fn silent_client_times_out() {
        let (_keep, mut b) = tokio::io::duplex(64);
        let cfg = SniffConfig { timeout: std::time::Duration::from_millis(50), max_bytes: 16384 };
        let mut buf = BytesMut::new();
        let e = sniff(&mut b, &mut buf, &cfg).await.unwrap_err();
        assert_eq!(e.outcome, Outcome::Timeout);
    }
}
