//! Reads the TLS ClientHello out of the bytes a client sent first, without consuming them.
//!
//! This module owns one thing: given the buffer read from the client so far, say whether it holds a
//! whole ClientHello yet ([`Progress::NeedMore`]), what that ClientHello asks for
//! ([`Progress::Done`]: SNI, ALPN, supported versions, whether ECH is offered), or why the bytes are
//! refused ([`SniffError`]). It reassembles the handshake message across TLS records and across
//! whatever TCP segments the buffer was read in, and it never copies or consumes the buffer: the
//! caller keeps every byte and replays them upstream unchanged.
//!
//! It does not do I/O, keep state between calls, decide anything from the name, or validate the
//! name beyond "printable ASCII": lowercasing, the trailing dot, IDNA and label rules belong to the
//! matcher's host normaliser. It does not parse the ECH payload, key shares or anything else it has
//! no use for; those extensions are only bounds-checked and skipped.
//!
//! # How it reads
//!
//! Each call parses from the start of the buffer. The handshake stream is read through a cursor that
//! walks the record headers as it crosses them, so no reassembly buffer is allocated; the only
//! allocations are the fields of the returned [`ClientHello`]. Checks run in one fixed order, and a
//! check that needs bytes the buffer does not hold yet stops the parse with `NeedMore` instead of
//! being skipped. Hence the answer is a function of the buffer alone, and once a prefix gets an
//! answer other than `NeedMore`, every longer buffer with that prefix gets the same answer.
//!
//! The `cap` is checked against the smallest size the ClientHello's records could still take, as
//! soon as that grows (at each record header and at the handshake length), so a client announcing
//! a huge ClientHello is refused before its bytes arrive. The size counts every record up to and
//! including the one holding the ClientHello's last byte, headers included (this is
//! [`ClientHello::records_len`]); that last record must be in the buffer whole before the answer is
//! `Done`, so `records_len <= buf.len()` always holds.
//!
//! # Example
//!
//! ```
//! use hostgate_proxy::sniff::tls::{parse_client_hello, Progress};
//!
//! // A minimal ClientHello for example.com: one record, TLS 1.2 style, one cipher suite.
//! let mut bytes = vec![0x16, 3, 1, 0, 67, 1, 0, 0, 63, 3, 3]; // record, handshake header, version
//! bytes.extend([0; 32]); // random
//! bytes.extend([0, 0, 2, 0x13, 0x01, 1, 0]); // session_id, cipher_suites, compression_methods
//! bytes.extend([0, 20, 0, 0, 0, 16, 0, 14, 0, 0, 11]); // extensions: server_name, one host_name
//! bytes.extend(b"example.com");
//!
//! // The first TCP segment held 40 bytes: read more, then call again with the whole buffer.
//! assert_eq!(parse_client_hello(&bytes[..40], 16 * 1024 + 5)?, Progress::NeedMore);
//! let Progress::Done(hello) = parse_client_hello(&bytes, 16 * 1024 + 5)? else { panic!() };
//! assert_eq!(hello.sni.as_deref(), Some("example.com"));
//! assert_eq!((hello.records, hello.records_len), (1, bytes.len()));
//! # Ok::<(), hostgate_proxy::sniff::tls::SniffError>(())
//! ```

use std::fmt;

/// Bytes in a TLS record header: type, version (2), length (2).
const RECORD_HEADER: usize = 5;
/// The largest plaintext record payload (RFC 8446 §5.1).
const MAX_FRAGMENT: usize = 1 << 14;
/// Bytes in a handshake message header: type, length (3).
const HANDSHAKE_HEADER: usize = 4;
const CONTENT_HANDSHAKE: u8 = 0x16;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const EXT_SERVER_NAME: u16 = 0;
const EXT_ALPN: u16 = 16;
const EXT_SUPPORTED_VERSIONS: u16 = 43;
const EXT_ECH: u16 = 0xfe0d;
const NAME_TYPE_HOST_NAME: u8 = 0;

/// What the parser found once the whole ClientHello is in the buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientHello {
    /// The `host_name` of the server_name extension, exactly as sent (ASCII; not lowercased,
    /// trailing dot kept). None when there is no server_name extension (or, for the record, when
    /// its list holds only entries of unknown name types).
    pub sni: Option<String>,
    /// ALPN protocol names, in order (lossy UTF-8).
    pub alpn: Vec<String>,
    /// supported_versions extension values, in order (e.g. 0x0304, 0x0303); empty when absent.
    pub supported_versions: Vec<u16>,
    /// The ClientHello's legacy_version field (0x0303 for TLS 1.2 and 1.3).
    pub legacy_version: u16,
    /// An encrypted_client_hello extension (type 0xfe0d) is present (ECH offered; the SNI above is
    /// the outer one).
    pub ech_offered: bool,
    /// How many bytes of the buffer the TLS records that carry the ClientHello take (all records up
    /// to and including the one holding its last byte).
    pub records_len: usize,
    /// How many TLS records carried it (1 normally; more when it was split).
    pub records: usize,
}

/// The answer for a buffer that is not refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// The buffer holds a valid prefix; read more bytes and call again with the whole buffer.
    NeedMore,
    /// The whole ClientHello (and the whole record holding its last byte) is in the buffer.
    Done(ClientHello),
}

/// Why the bytes are refused. `Display` gives a short lowercase reason suitable for a log field
/// (e.g. "record type 23 before the ClientHello", "two host_name entries in server_name",
/// "server_name host_name is not ASCII", "ClientHello over the 16384-byte cap").
///
/// Every variant blames the client: these are the bytes it sent.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SniffError {
    /// Not a TLS handshake record at all (first byte is not 0x16, or the record version's major
    /// byte is not 3).
    NotTls,
    /// The records/handshake carrying the ClientHello would exceed `cap` bytes (counting record
    /// headers).
    TooLarge {
        /// The cap that was passed to [`parse_client_hello`].
        cap: usize,
    },
    /// Structurally invalid; the string says what (static text, no client bytes).
    Malformed(&'static str),
    /// More than one host_name entry in server_name.
    MultipleHostNames,
    /// A host_name that is empty, not ASCII, or contains a NUL/control byte.
    InvalidName(&'static str),
}

impl fmt::Display for SniffError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SniffError::NotTls => f.write_str("not a TLS handshake record"),
            SniffError::TooLarge { cap } => write!(f, "ClientHello over the {cap}-byte cap"),
            SniffError::Malformed(reason) | SniffError::InvalidName(reason) => f.write_str(reason),
            SniffError::MultipleHostNames => f.write_str("two host_name entries in server_name"),
        }
    }
}

impl std::error::Error for SniffError {}

/// Parses the ClientHello at the start of `buf` (the bytes read from the client so far).
/// `cap`: the maximum number of bytes (record headers included) the ClientHello may take.
pub fn parse_client_hello(buf: &[u8], cap: usize) -> Result<Progress, SniffError> {
    match parse(buf, cap) {
        Ok(hello) => Ok(Progress::Done(hello)),
        Err(Stop::Refuse(err)) => Err(err),
        // The cap checks in `Frames` already refuse every such buffer: a parse that stops for more
        // bytes stops at a position past `buf.len()` inside records whose minimum size was checked.
        // Kept so that the documented rule holds even if that reasoning were broken by an edit.
        Err(Stop::NeedMore) if buf.len() > cap => Err(SniffError::TooLarge { cap }),
        Err(Stop::NeedMore) => Ok(Progress::NeedMore),
    }
}

/// Cheap test on the first bytes: Some(true) if this looks like a TLS handshake record start
/// (0x16 0x03 0x00..=0x04), Some(false) if it cannot be, None if fewer than 3 bytes.
pub fn looks_like_tls(buf: &[u8]) -> Option<bool> {
    match buf {
        [kind, major, minor, ..] => Some(*kind == CONTENT_HANDSHAKE && *major == 3 && *minor <= 4),
        _ => None,
    }
}

/// Why a parse stopped short of a ClientHello.
#[derive(Debug)]
enum Stop {
    /// The buffer ends before the next byte the parse needs.
    NeedMore,
    Refuse(SniffError),
}

impl From<SniffError> for Stop {
    fn from(err: SniffError) -> Self {
        Stop::Refuse(err)
    }
}

fn malformed(reason: &'static str) -> Stop {
    Stop::Refuse(SniffError::Malformed(reason))
}

fn invalid_name(reason: &'static str) -> Stop {
    Stop::Refuse(SniffError::InvalidName(reason))
}

/// The reason for a non-handshake record met before the ClientHello is complete.
fn record_type_reason(kind: u8) -> &'static str {
    match kind {
        20 => "record type 20 before the ClientHello",
        21 => "record type 21 before the ClientHello",
        23 => "record type 23 before the ClientHello",
        24 => "record type 24 before the ClientHello",
        _ => "record of unknown type before the ClientHello",
    }
}

/// The handshake stream as it is laid out in the buffer: record payloads between 5-byte headers.
/// Headers are read (and checked) when the stream crosses them.
#[derive(Clone, Copy, Debug)]
struct Frames<'a> {
    buf: &'a [u8],
    /// Offset in `buf` of the next payload byte, or of the next record header when `left == 0`.
    /// Never past `buf.len()`.
    pos: usize,
    /// Payload bytes of the current record not read yet.
    left: usize,
    /// Record headers read so far.
    records: usize,
    /// Handshake-stream bytes in those records (their declared lengths, read or not).
    covered: usize,
    /// Handshake-stream bytes the ClientHello takes: its header until that is read, then the whole
    /// message.
    need: usize,
    cap: usize,
}

impl<'a> Frames<'a> {
    fn new(buf: &'a [u8], cap: usize) -> Self {
        Frames { buf, pos: 0, left: 0, records: 0, covered: 0, need: HANDSHAKE_HEADER, cap }
    }

    /// Refuses when the records known so far, plus the fewest records that could carry the rest of
    /// `need` stream bytes, take more than the cap.
    fn check_cap(&self, need: usize) -> Result<(), Stop> {
        // Each term is bounded by the buffer length or 2^24, but saturate anyway: this is the one
        // sum of client-chosen lengths.
        let missing = need.saturating_sub(self.covered);
        let min_len = RECORD_HEADER
            .saturating_mul(self.records.saturating_add(missing.div_ceil(MAX_FRAGMENT)))
            .saturating_add(self.covered)
            .saturating_add(missing);
        if min_len > self.cap {
            return Err(SniffError::TooLarge { cap: self.cap }.into());
        }
        Ok(())
    }

    /// Reads the record header at `pos`. Only called when the stream needs another byte within
    /// the ClientHello, so the record is really needed.
    fn next_record(&mut self) -> Result<(), Stop> {
        let header = self.buf.get(self.pos..).unwrap_or_default();
        let first = self.records == 0;
        match header.first() {
            None => return Err(Stop::NeedMore),
            Some(&CONTENT_HANDSHAKE) => {}
            Some(_) if first => return Err(SniffError::NotTls.into()),
            Some(&kind) => return Err(malformed(record_type_reason(kind))),
        }
        // As early as possible: this record takes at least its header and one byte.
        self.check_cap(self.need.max(self.covered + 1))?;
        match header.get(1) {
            None => return Err(Stop::NeedMore),
            Some(3) => {}
            Some(_) if first => return Err(SniffError::NotTls.into()),
            Some(_) => return Err(malformed("record version major byte is not 3")),
        }
        let Some(&[_, _, _, hi, lo]) = header.get(..RECORD_HEADER) else {
            return Err(Stop::NeedMore);
        };
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        if len == 0 {
            return Err(malformed("zero-length handshake record"));
        }
        if len > MAX_FRAGMENT {
            return Err(malformed("record longer than 16384 bytes"));
        }
        self.records += 1;
        self.covered += len;
        self.pos += RECORD_HEADER;
        self.left = len;
        self.check_cap(self.need)
    }

    fn byte(&mut self) -> Result<u8, Stop> {
        if self.left == 0 {
            self.next_record()?;
        }
        let byte = *self.buf.get(self.pos).ok_or(Stop::NeedMore)?;
        self.pos += 1;
        self.left -= 1; // `next_record` never leaves an empty record current
        Ok(byte)
    }

    fn skip(&mut self, mut n: usize) -> Result<(), Stop> {
        while n > 0 {
            if self.left == 0 {
                self.next_record()?;
            }
            let step = n.min(self.left);
            if self.buf.len().saturating_sub(self.pos) < step {
                return Err(Stop::NeedMore);
            }
            self.pos += step;
            self.left -= step;
            n -= step;
        }
        Ok(())
    }
}

/// A cursor over one length-delimited part of the handshake stream (the ClientHello body, a
/// vector inside it). Reading past its end refuses the hello with `overrun`; reading past the
/// buffer's end stops with `NeedMore`.
#[derive(Clone, Copy, Debug)]
struct Reader<'a> {
    frames: Frames<'a>,
    /// Bytes of this part not read yet.
    remaining: usize,
    /// The reason given when something inside claims more bytes than this part has.
    overrun: &'static str,
}

impl<'a> Reader<'a> {
    /// Claims `n` bytes of this part, before reading them (so an overrun is reported without
    /// waiting for bytes).
    fn take(&mut self, n: usize) -> Result<(), Stop> {
        self.remaining = self.remaining.checked_sub(n).ok_or(malformed(self.overrun))?;
        Ok(())
    }

    fn u8(&mut self) -> Result<u8, Stop> {
        self.take(1)?;
        self.frames.byte()
    }

    fn u16(&mut self) -> Result<u16, Stop> {
        self.take(2)?;
        Ok(u16::from_be_bytes([self.frames.byte()?, self.frames.byte()?]))
    }

    fn u24(&mut self) -> Result<usize, Stop> {
        self.take(3)?;
        let [a, b, c] = [self.frames.byte()?, self.frames.byte()?, self.frames.byte()?];
        Ok(usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c))
    }

    /// The next `n` bytes as a part of their own (whose overruns say `overrun`); this cursor moves
    /// past them, which needs them all in the buffer.
    fn bytes(&mut self, n: usize, overrun: &'static str) -> Result<Reader<'a>, Stop> {
        self.take(n)?;
        let part = Reader { frames: self.frames, remaining: n, overrun };
        self.frames.skip(n)?;
        Ok(part)
    }

    fn vec8(&mut self, overrun: &'static str) -> Result<Reader<'a>, Stop> {
        let n = usize::from(self.u8()?);
        self.bytes(n, overrun)
    }

    fn vec16(&mut self, overrun: &'static str) -> Result<Reader<'a>, Stop> {
        let n = usize::from(self.u16()?);
        self.bytes(n, overrun)
    }

    fn is_empty(&self) -> bool {
        self.remaining == 0
    }

    /// Refuses with `reason` unless this part has been read to its end.
    fn finish(&self, reason: &'static str) -> Result<(), Stop> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(malformed(reason))
        }
    }
}

fn parse(buf: &[u8], cap: usize) -> Result<ClientHello, Stop> {
    let mut r = Reader { frames: Frames::new(buf, cap), remaining: HANDSHAKE_HEADER, overrun: "handshake header" };
    if r.u8()? != HANDSHAKE_CLIENT_HELLO {
        return Err(malformed("first handshake message is not a ClientHello"));
    }
    let len = r.u24()?;
    r.frames.need = HANDSHAKE_HEADER + len;
    r.frames.check_cap(r.frames.need)?;
    r.remaining = len;
    r.overrun = "ClientHello fields overrun its length";

    let legacy_version = r.u16()?;
    r.bytes(32, "random")?;
    let session_id = usize::from(r.u8()?);
    if session_id > 32 {
        return Err(malformed("session_id longer than 32 bytes"));
    }
    r.bytes(session_id, "session_id")?;
    let suites = usize::from(r.u16()?);
    if suites == 0 {
        return Err(malformed("empty cipher_suites"));
    }
    if suites % 2 != 0 {
        return Err(malformed("odd cipher_suites length"));
    }
    r.bytes(suites, "cipher_suites")?;
    let compression = usize::from(r.u8()?);
    if compression == 0 {
        return Err(malformed("empty compression_methods"));
    }
    r.bytes(compression, "compression_methods")?;

    let mut hello = ClientHello {
        sni: None,
        alpn: Vec::new(),
        supported_versions: Vec::new(),
        legacy_version,
        ech_offered: false,
        records_len: 0,
        records: 0,
    };
    // Without extensions the body ends here (allowed for TLS 1.2, RFC 5246 §7.4.1.2).
    if !r.is_empty() {
        let block = usize::from(r.u16()?);
        if block > r.remaining {
            return Err(malformed("extensions overrun the ClientHello"));
        }
        if block < r.remaining {
            return Err(malformed("bytes after the extensions"));
        }
        let extensions = r.bytes(block, "extension overruns the extensions block")?;
        parse_extensions(extensions, &mut hello)?;
    }

    // The ClientHello ends here; the record holding its last byte must be in the buffer whole.
    // Whatever else that record carries is not looked at.
    let end = r.frames.pos + r.frames.left;
    if end > buf.len() {
        return Err(Stop::NeedMore);
    }
    hello.records_len = end;
    hello.records = r.frames.records;
    Ok(hello)
}

fn parse_extensions(mut extensions: Reader<'_>, hello: &mut ClientHello) -> Result<(), Stop> {
    // Duplicates are refused (RFC 8446 §4.2).
    let mut seen = Seen::default();
    while !extensions.is_empty() {
        let kind = extensions.u16()?;
        if !seen.insert(kind) {
            return Err(malformed("duplicate extension type"));
        }
        let body = extensions.vec16("extension body shorter than its contents")?;
        match kind {
            EXT_SERVER_NAME => server_name(body, &mut hello.sni)?,
            EXT_ALPN => alpn(body, &mut hello.alpn)?,
            EXT_SUPPORTED_VERSIONS => supported_versions(body, &mut hello.supported_versions)?,
            EXT_ECH => hello.ech_offered = true,
            _ => {}
        }
    }
    Ok(())
}

/// The extension types of one ClientHello so far. Browsers send a few dozen at most: those are
/// kept in a small array on the stack and searched (an 8 KiB bitmap of every type, zeroed for
/// each hello, cost more than the whole parse); past [`Seen::FEW`] types, a bitmap on the heap
/// takes over, so a hello of thousands of extensions stays linear.
struct Seen {
    few: [u16; Seen::FEW],
    len: usize,
    many: Option<Box<[u64; 1 << 10]>>,
}

impl Default for Seen {
    fn default() -> Seen {
        Seen { few: [0; Seen::FEW], len: 0, many: None }
    }
}

impl Seen {
    const FEW: usize = 64;

    /// Adds `kind`; `false` if it was there already.
    fn insert(&mut self, kind: u16) -> bool {
        if self.many.is_none() {
            if self.few[..self.len].contains(&kind) {
                return false;
            }
            if self.len < Seen::FEW {
                self.few[self.len] = kind;
                self.len += 1;
                return true;
            }
            let mut bits = Box::new([0u64; 1 << 10]);
            for &k in &self.few {
                set_bit(&mut bits, k);
            }
            self.many = Some(bits);
        }
        self.many.as_mut().is_some_and(|bits| set_bit(bits, kind))
    }
}

/// Sets `kind`'s bit; `false` if it was set. (`kind >> 6` is below `1 << 10`: always in bounds.)
fn set_bit(bits: &mut [u64; 1 << 10], kind: u16) -> bool {
    let word = &mut bits[usize::from(kind >> 6)];
    let bit = 1u64 << (kind & 63);
    let fresh = *word & bit == 0;
    *word |= bit;
    fresh
}

/// RFC 6066 §3: `ServerName server_name_list<1..2^16-1>`, each `(u8 name_type, u16 len, bytes)`.
fn server_name(mut body: Reader<'_>, sni: &mut Option<String>) -> Result<(), Stop> {
    body.overrun = "server_name list overruns its extension";
    let mut list = body.vec16("server_name entry overruns its list")?;
    body.finish("bytes after the server_name list")?;
    if list.is_empty() {
        return Err(malformed("empty server_name list"));
    }
    while !list.is_empty() {
        let name_type = list.u8()?;
        let mut name = list.vec16("server_name entry")?;
        if name_type != NAME_TYPE_HOST_NAME {
            continue;
        }
        if sni.is_some() {
            return Err(SniffError::MultipleHostNames.into());
        }
        if name.is_empty() {
            return Err(invalid_name("server_name host_name is empty"));
        }
        let mut host = String::with_capacity(name.remaining);
        while !name.is_empty() {
            let byte = name.u8()?;
            if !byte.is_ascii() {
                return Err(invalid_name("server_name host_name is not ASCII"));
            }
            if byte < 0x21 || byte == 0x7f {
                return Err(invalid_name("server_name host_name contains a space or control byte"));
            }
            host.push(char::from(byte));
        }
        *sni = Some(host);
    }
    Ok(())
}

/// RFC 7301 §3.1: `ProtocolName protocol_name_list<2..2^16-1>`, each `opaque<1..2^8-1>`.
fn alpn(mut body: Reader<'_>, out: &mut Vec<String>) -> Result<(), Stop> {
    body.overrun = "ALPN list overruns its extension";
    let mut list = body.vec16("ALPN protocol name overruns its list")?;
    body.finish("bytes after the ALPN list")?;
    if list.is_empty() {
        return Err(malformed("empty ALPN list"));
    }
    while !list.is_empty() {
        let mut name = list.vec8("ALPN protocol name")?;
        if name.is_empty() {
            return Err(malformed("empty ALPN protocol name"));
        }
        let mut bytes = Vec::with_capacity(name.remaining);
        while !name.is_empty() {
            bytes.push(name.u8()?);
        }
        // Valid UTF-8 (the usual case) becomes the String without a copy.
        out.push(String::from_utf8(bytes).unwrap_or_else(|err| String::from_utf8_lossy(err.as_bytes()).into_owned()));
    }
    Ok(())
}

/// RFC 8446 §4.2.1: `ProtocolVersion versions<2..254>` in a ClientHello.
fn supported_versions(mut body: Reader<'_>, out: &mut Vec<u16>) -> Result<(), Stop> {
    body.overrun = "supported_versions list overruns its extension";
    let mut list = body.vec8("supported_versions list")?;
    body.finish("bytes after the supported_versions list")?;
    if list.is_empty() {
        return Err(malformed("empty supported_versions list"));
    }
    if list.remaining % 2 != 0 {
        return Err(malformed("odd supported_versions length"));
    }
    while !list.is_empty() {
        out.push(list.u16()?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The extension-type set: duplicates found on the stack and past it on the heap, the few
    /// seen before the switch carried over, every type (0 and 0xffff included) kept apart.
    #[test]
    fn seen_finds_duplicates_in_both_regimes() {
        let mut seen = Seen::default();
        for k in 0..Seen::FEW as u16 {
            assert!(seen.insert(k * 1000 + 1), "{k}");
        }
        assert!(seen.many.is_none());
        assert!(!seen.insert(1), "a duplicate on the stack");
        assert!(seen.insert(0xffff) && seen.many.is_some(), "the next one moves to the bitmap");
        assert!(!seen.insert(1) && !seen.insert(63_001), "the stack's types carried over");
        assert!(!seen.insert(0xffff), "a duplicate in the bitmap");
        assert!(seen.insert(0) && seen.insert(2) && !seen.insert(0));
        // A hello of every possible type: each one new once.
        let mut all = Seen::default();
        assert!((0..=u16::MAX).all(|k| all.insert(k)));
        assert!((0..=u16::MAX).all(|k| !all.insert(k)));
    }
    use proptest::prelude::*;

    // ---- a test-only ClientHello builder ----

    /// The parts of a ClientHello; `message()` assembles the handshake message, `framed()` wraps it
    /// in records.
    #[derive(Clone, Debug)]
    struct Builder {
        version: u16,
        session_id: Vec<u8>,
        suites: Vec<u16>,
        compression: Vec<u8>,
        /// None: the body ends after compression_methods (no extensions block at all).
        extensions: Option<Vec<(u16, Vec<u8>)>>,
    }

    impl Builder {
        fn new() -> Self {
            Builder {
                version: 0x0303,
                session_id: vec![0x5a; 32],
                suites: vec![0x1301, 0x1302, 0xc02f],
                compression: vec![0],
                extensions: Some(Vec::new()),
            }
        }

        fn ext(mut self, kind: u16, data: Vec<u8>) -> Self {
            self.extensions.get_or_insert_with(Vec::new).push((kind, data));
            self
        }

        fn sni(self, name: &[u8]) -> Self {
            self.ext(0, sni_data(&[(0, name)]))
        }

        fn body(&self) -> Vec<u8> {
            let mut out = self.version.to_be_bytes().to_vec();
            out.extend((0u8..32).map(|i| i.wrapping_mul(37)));
            out.push(u8::try_from(self.session_id.len()).unwrap());
            out.extend(&self.session_id);
            out.extend(u16::try_from(self.suites.len() * 2).unwrap().to_be_bytes());
            out.extend(self.suites.iter().flat_map(|s| s.to_be_bytes()));
            out.push(u8::try_from(self.compression.len()).unwrap());
            out.extend(&self.compression);
            if let Some(extensions) = &self.extensions {
                let mut block = Vec::new();
                for (kind, data) in extensions {
                    block.extend(kind.to_be_bytes());
                    block.extend(u16::try_from(data.len()).unwrap().to_be_bytes());
                    block.extend(data);
                }
                out.extend(u16::try_from(block.len()).unwrap().to_be_bytes());
                out.extend(block);
            }
            out
        }

        fn message(&self) -> Vec<u8> {
            handshake(1, &self.body())
        }

        fn record(&self) -> Vec<u8> {
            record(0x16, &self.message())
        }
    }

    fn handshake(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![kind];
        out.extend(&u32::try_from(body.len()).unwrap().to_be_bytes()[1..]);
        out.extend(body);
        out
    }

    fn record(kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![kind, 3, 1];
        out.extend(u16::try_from(payload.len()).unwrap().to_be_bytes());
        out.extend(payload);
        out
    }

    /// `msg` in handshake records whose payload sizes cycle through `sizes` (the last takes the rest).
    fn framed(msg: &[u8], sizes: &[usize]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = msg;
        for &size in sizes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (now, later) = rest.split_at(size.min(rest.len()));
            out.extend(record(0x16, now));
            rest = later;
        }
        out
    }

    fn sni_data(entries: &[(u8, &[u8])]) -> Vec<u8> {
        let mut list = Vec::new();
        for (kind, name) in entries {
            list.push(*kind);
            list.extend(u16::try_from(name.len()).unwrap().to_be_bytes());
            list.extend(*name);
        }
        vec16(&list)
    }

    fn alpn_data(names: &[&[u8]]) -> Vec<u8> {
        let mut list = Vec::new();
        for name in names {
            list.push(u8::try_from(name.len()).unwrap());
            list.extend(*name);
        }
        vec16(&list)
    }

    fn versions_data(versions: &[u16]) -> Vec<u8> {
        let list: Vec<u8> = versions.iter().flat_map(|v| v.to_be_bytes()).collect();
        let mut out = vec![u8::try_from(list.len()).unwrap()];
        out.extend(list);
        out
    }

    fn vec16(data: &[u8]) -> Vec<u8> {
        let mut out = u16::try_from(data.len()).unwrap().to_be_bytes().to_vec();
        out.extend(data);
        out
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    fn hello(sni: Option<&str>, records_len: usize) -> ClientHello {
        ClientHello {
            sni: sni.map(str::to_string),
            alpn: Vec::new(),
            supported_versions: Vec::new(),
            legacy_version: 0x0303,
            ech_offered: false,
            records_len,
            records: 1,
        }
    }

    type Answer = Result<Progress, SniffError>;

    fn done(hello: ClientHello) -> Answer {
        Ok(Progress::Done(hello))
    }

    fn bad(reason: &'static str) -> Answer {
        Err(SniffError::Malformed(reason))
    }

    fn bad_name(reason: &'static str) -> Answer {
        Err(SniffError::InvalidName(reason))
    }

    const CAP: usize = 16 * 1024 + 5;

    // ---- captured ClientHellos ----

    /// `openssl s_client -connect 127.0.0.1:PORT -servername example.com -alpn h2,http/1.1` (OpenSSL
    /// 3.0.22, Debian 12) against a Python socket listener on 127.0.0.1 that saved the first bytes
    /// it received: one 335-byte record, TLS 1.3 + 1.2, SNI example.com, ALPN h2 and http/1.1.
    const OPENSSL_S_CLIENT: &str = concat!(
        "160301014a01000146030393fb13de40d156fcb27bbe38682a19096d548fe3e3d018456956296611d1b0a1203e5eb277",
        "daccb18347be3b0d8c0adbd403a94b6a937ce014ca3fe8a6033f8778003e130213031301c02cc030009fcca9cca8ccaa",
        "c02bc02f009ec024c028006bc023c0270067c00ac0140039c009c0130033009d009c003d003c0035002f00ff010000bf",
        "00000010000e00000b6578616d706c652e636f6d000b000403000102000a00160014001d0017001e0019001801000101",
        "010201030104002300000010000e000c02683208687474702f312e310016000000170000000d002a0028040305030603",
        "080708080809080a080b080408050806040105010601030303010302040205020602002b000908030403030302030100",
        "2d00020101003300260024001d002072913b69ff3a37e4c5b5859fe0bed4d99a30aabcdb207db142c143fbde2a683d",
    );

    /// `curl --resolve example.com:PORT:127.0.0.1 https://example.com:PORT/` (curl 7.88.1 with
    /// OpenSSL 3.0.22, Debian 12) against the same listener: one 517-byte record, with a padding
    /// extension (21) and post_handshake_auth (49).
    const CURL: &str = concat!(
        "1603010200010001fc03036202d4f27f06ab04093ea4585b435fb39a9d7167df7a70be3f1cd453de3e1174207d28147e",
        "03e90f5718544acdb2ec478167b7835089bebfdcd403c6ebf754dbf2003e130213031301c02cc030009fcca9cca8ccaa",
        "c02bc02f009ec024c028006bc023c0270067c00ac0140039c009c0130033009d009c003d003c0035002f00ff01000175",
        "00000010000e00000b6578616d706c652e636f6d000b000403000102000a00160014001d0017001e0019001801000101",
        "0102010301040010000e000c02683208687474702f312e31001600000017000000310000000d002a0028040305030603",
        "080708080809080a080b080408050806040105010601030303010302040205020602002b000908030403030302030100",
        "2d00020101003300260024001d00200e497c80a7bfd04ed43e66cbab8736e5bf9671196cede5eedc2fa4283162a13100",
        "1500b2000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        "00000000000000000000000000000000000000000000000000000000000000000000000000",
    );

    fn captured(records_len: usize) -> ClientHello {
        ClientHello {
            sni: Some("example.com".to_string()),
            alpn: vec!["h2".to_string(), "http/1.1".to_string()],
            supported_versions: vec![0x0304, 0x0303, 0x0302, 0x0301],
            legacy_version: 0x0303,
            ech_offered: false,
            records_len,
            records: 1,
        }
    }

    #[test]
    fn captured_hellos() {
        for (name, bytes) in [("openssl s_client", OPENSSL_S_CLIENT), ("curl", CURL)] {
            let bytes = hex(bytes);
            assert_eq!(looks_like_tls(&bytes), Some(true), "{name}");
            assert_eq!(parse_client_hello(&bytes, CAP), done(captured(bytes.len())), "{name}");
            assert_every_prefix(&bytes, CAP);
            // Re-framed into small records (the handshake message is the payload of the one record).
            let msg = &bytes[5..];
            let split = framed(msg, &[100]);
            let mut want = captured(split.len());
            want.records = msg.len().div_ceil(100);
            assert_eq!(parse_client_hello(&split, CAP), done(want), "{name} in 100-byte records");
            // Caps around the exact size.
            assert_eq!(parse_client_hello(&bytes, bytes.len()), done(captured(bytes.len())), "{name}");
            assert_eq!(parse_client_hello(&bytes, bytes.len() - 1), Err(SniffError::TooLarge { cap: bytes.len() - 1 }));
        }
    }

    /// Every prefix shorter than the records is `NeedMore`, the whole is `Done`, and bytes after it
    /// change nothing.
    fn assert_every_prefix(bytes: &[u8], cap: usize) {
        let Ok(Progress::Done(whole)) = parse_client_hello(bytes, cap) else { panic!("not a whole hello") };
        assert_eq!(whole.records_len, bytes.len());
        for len in 0..bytes.len() {
            assert_eq!(parse_client_hello(&bytes[..len], cap), Ok(Progress::NeedMore), "prefix of {len} bytes");
        }
        let mut longer = bytes.to_vec();
        longer.extend(record(0x17, b"early data"));
        longer.extend(b"\x00garbage");
        for len in bytes.len()..=longer.len() {
            assert_eq!(parse_client_hello(&longer[..len], cap), done(whole.clone()), "with {len} bytes");
        }
    }

    // ---- table ----

    #[test]
    fn table() {
        let good = Builder::new().sni(b"example.com");
        let good_len = good.record().len();
        let alpn_versions = Builder::new()
            .sni(b"api.example.com")
            .ext(16, alpn_data(&[b"h2", b"http/1.1", b"\xffx"]))
            .ext(43, versions_data(&[0x0304, 0x0303]));
        let ech = Builder::new().sni(b"public.example").ext(0xfe0d, vec![0, 1, 2, 3, 4]);
        let mut no_extensions = Builder::new();
        no_extensions.extensions = None;
        let msg = good.message();
        let (head, tail) = msg.split_at(20);
        let with_second_message = {
            let mut payload = msg.clone();
            payload.extend(handshake(0xff, b"whatever"));
            record(0x16, &payload)
        };
        let interleaved = |kind: u8| [record(0x16, head), record(kind, &[1]), record(0x16, tail)].concat();
        let declared_huge = [&[0x16, 3, 1, 0, 4][..], &[1, 0, 0x80, 0]].concat(); // 32 KiB hello
        let header_only = |len: u16| [&[0x16, 3, 1][..], &len.to_be_bytes()].concat();
        let mut version_2 = good.record();
        version_2[1] = 2;
        let mut server_hello = good.record();
        server_hello[5] = 2;
        let mut no_suites = good.clone();
        no_suites.suites.clear();
        let mut odd_suites = good.record();
        odd_suites[5 + 4 + 2 + 32 + 1 + 32 + 1] += 1; // low byte of the cipher_suites length
        let mut no_compression = good.clone();
        no_compression.compression.clear();
        let mut long_session = good.clone();
        long_session.session_id = vec![1; 33];
        let mut empty_session = good.clone();
        empty_session.session_id.clear();
        let ext_block_at = 5 + 4 + 2 + 32 + 1 + 32 + 2 + 6 + 1 + 1;
        let with_block_len = |delta: i32| {
            let mut bytes = good.record();
            let len = u16::from_be_bytes([bytes[ext_block_at], bytes[ext_block_at + 1]]);
            let len = u16::try_from(i32::from(len) + delta).unwrap();
            bytes[ext_block_at..ext_block_at + 2].copy_from_slice(&len.to_be_bytes());
            bytes
        };
        let with_block = |block: &[u8]| {
            let body = [no_extensions.body(), vec16(block)].concat();
            record(0x16, &handshake(1, &body))
        };
        let trailing_in_body = {
            let mut body = good.body();
            body.push(0);
            record(0x16, &handshake(1, &body))
        };

        #[rustfmt::skip]
        let cases: Vec<(&str, Vec<u8>, usize, Answer)> = vec![
            ("good hello", good.record(), CAP, done(hello(Some("example.com"), good_len))),
            ("no SNI", Builder::new().record(), CAP, done(hello(None, Builder::new().record().len()))),
            ("no extensions block", no_extensions.record(), CAP, done(hello(None, no_extensions.record().len()))),
            ("empty session id", empty_session.record(), CAP, done(hello(Some("example.com"), good_len - 32))),
            ("ALPN and versions", alpn_versions.record(), CAP, done(ClientHello {
                alpn: vec!["h2".into(), "http/1.1".into(), "\u{fffd}x".into()],
                supported_versions: vec![0x0304, 0x0303],
                ..hello(Some("api.example.com"), alpn_versions.record().len())
            })),
            ("ECH offered", ech.record(), CAP, done(ClientHello {
                ech_offered: true,
                ..hello(Some("public.example"), ech.record().len())
            })),
            ("name kept as sent", Builder::new().sni(b"WWW.Example.COM.").record(), CAP,
                done(hello(Some("WWW.Example.COM."), 0))),
            ("unknown name type skipped",
                Builder::new().ext(0, sni_data(&[(7, b""), (0, b"a.b"), (9, b"\xff")])).record(), CAP,
                done(hello(Some("a.b"), 0))),
            ("only unknown name types", Builder::new().ext(0, sni_data(&[(1, b"x")])).record(), CAP,
                done(hello(None, 0))),
            ("unknown extensions skipped",
                good.clone().ext(0xff01, vec![0]).ext(21, vec![0; 100]).ext(0x1234, vec![]).record(), CAP,
                done(hello(Some("example.com"), 0))),
            ("second handshake message after it", with_second_message.clone(), CAP,
                done(hello(Some("example.com"), with_second_message.len()))),
            ("empty buffer", vec![], CAP, Ok(Progress::NeedMore)),
            ("record header only", header_only(100), CAP, Ok(Progress::NeedMore)),
            // not TLS
            ("HTTP", b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n".to_vec(), CAP, Err(SniffError::NotTls)),
            ("one HTTP byte", b"G".to_vec(), CAP, Err(SniffError::NotTls)),
            ("alert first", record(0x15, &[2, 40]), CAP, Err(SniffError::NotTls)),
            ("record major version 2", version_2, CAP, Err(SniffError::NotTls)),
            // records
            ("change_cipher_spec interleaved", interleaved(0x14), CAP, bad("record type 20 before the ClientHello")),
            ("alert interleaved", interleaved(0x15), CAP, bad("record type 21 before the ClientHello")),
            ("application data interleaved", interleaved(0x17), CAP, bad("record type 23 before the ClientHello")),
            ("unknown record type interleaved", interleaved(0x99), CAP,
                bad("record of unknown type before the ClientHello")),
            ("second record major version 4", [record(0x16, head), vec![0x16, 4, 1, 0, 1]].concat(), CAP,
                bad("record version major byte is not 3")),
            ("zero-length first record", header_only(0), CAP, bad("zero-length handshake record")),
            ("zero-length middle record", [record(0x16, head), record(0x16, &[]), record(0x16, tail)].concat(), CAP,
                bad("zero-length handshake record")),
            ("record over 2^14", header_only(16385), CAP, bad("record longer than 16384 bytes")),
            // cap
            ("declared length over cap", declared_huge, CAP, Err(SniffError::TooLarge { cap: CAP })),
            ("hello one byte over cap", good.record(), good_len - 1, Err(SniffError::TooLarge { cap: good_len - 1 })),
            ("hello exactly at cap", good.record(), good_len, done(hello(Some("example.com"), good_len))),
            ("record header over tiny cap", header_only(100), 50, Err(SniffError::TooLarge { cap: 50 })),
            ("handshake byte with cap 0", vec![0x16], 0, Err(SniffError::TooLarge { cap: 0 })),
            ("split hello over cap by its headers", framed(&msg, &[10]), msg.len() + 5,
                Err(SniffError::TooLarge { cap: msg.len() + 5 })),
            // ClientHello body
            ("ServerHello", server_hello, CAP, bad("first handshake message is not a ClientHello")),
            ("session id over 32", long_session.record(), CAP, bad("session_id longer than 32 bytes")),
            ("no cipher suites", no_suites.record(), CAP, bad("empty cipher_suites")),
            ("odd cipher suites", odd_suites, CAP, bad("odd cipher_suites length")),
            ("no compression", no_compression.record(), CAP, bad("empty compression_methods")),
            ("zero-length hello", record(0x16, &[1, 0, 0, 0]), CAP, bad("ClientHello fields overrun its length")),
            ("truncated body", record(0x16, &handshake(1, &good.body()[..50])), CAP,
                bad("ClientHello fields overrun its length")),
            ("bytes after the extensions", trailing_in_body, CAP, bad("bytes after the extensions")),
            ("extensions block too long", with_block_len(1), CAP, bad("extensions overrun the ClientHello")),
            ("extensions block too short", with_block_len(-1), CAP, bad("bytes after the extensions")),
            ("extension overruns the block", with_block(&[0, 0x10, 0, 5, 1, 2]), CAP,
                bad("extension overruns the extensions block")),
            ("stray byte in the block", with_block(&[0x12, 0x34, 0, 0, 7]), CAP,
                bad("extension overruns the extensions block")),
            ("duplicate extension",
                good.clone().ext(16, alpn_data(&[b"h2"])).ext(16, alpn_data(&[b"h2"])).record(), CAP,
                bad("duplicate extension type")),
            ("duplicate server_name", good.clone().sni(b"example.com").record(), CAP, bad("duplicate extension type")),
            ("duplicate unknown extension", good.clone().ext(0xabcd, vec![]).ext(0xabcd, vec![1]).record(), CAP,
                bad("duplicate extension type")),
            // server_name
            ("two host_names", Builder::new().ext(0, sni_data(&[(0, b"a.com"), (0, b"b.com")])).record(), CAP,
                Err(SniffError::MultipleHostNames)),
            ("two host_names, the second empty",
                Builder::new().ext(0, sni_data(&[(0, b"a.com"), (0, b"")])).record(), CAP,
                Err(SniffError::MultipleHostNames)),
            ("non-ASCII name", Builder::new().sni("bücher.de".as_bytes()).record(), CAP,
                bad_name("server_name host_name is not ASCII")),
            ("empty name", Builder::new().sni(b"").record(), CAP, bad_name("server_name host_name is empty")),
            ("name with space", Builder::new().sni(b"a b.com").record(), CAP,
                bad_name("server_name host_name contains a space or control byte")),
            ("name with NUL", Builder::new().sni(b"a.com\0.evil").record(), CAP,
                bad_name("server_name host_name contains a space or control byte")),
            ("name with DEL", Builder::new().sni(b"a\x7f").record(), CAP,
                bad_name("server_name host_name contains a space or control byte")),
            ("empty server_name list", Builder::new().ext(0, vec![0, 0]).record(), CAP, bad("empty server_name list")),
            ("empty server_name extension", Builder::new().ext(0, vec![]).record(), CAP,
                bad("server_name list overruns its extension")),
            ("server_name list longer than extension", Builder::new().ext(0, vec![0, 9, 0, 0, 1, b'a']).record(), CAP,
                bad("server_name list overruns its extension")),
            ("bytes after the server_name list",
                Builder::new().ext(0, [sni_data(&[(0, b"a")]), vec![0]].concat()).record(), CAP,
                bad("bytes after the server_name list")),
            ("host_name overruns the list", Builder::new().ext(0, vec![0, 4, 0, 0, 5, b'a']).record(), CAP,
                bad("server_name entry overruns its list")),
            ("entry header cut by the list", Builder::new().ext(0, vec![0, 2, 0, 0]).record(), CAP,
                bad("server_name entry overruns its list")),
            // ALPN and supported_versions
            ("empty ALPN name", Builder::new().ext(16, alpn_data(&[b"h2", b""])).record(), CAP,
                bad("empty ALPN protocol name")),
            ("empty ALPN list", Builder::new().ext(16, vec![0, 0]).record(), CAP, bad("empty ALPN list")),
            ("ALPN name overruns the list", Builder::new().ext(16, vec![0, 3, 5, b'h', b'2']).record(), CAP,
                bad("ALPN protocol name overruns its list")),
            ("bytes after the ALPN list", Builder::new().ext(16, [alpn_data(&[b"h2"]), vec![0]].concat()).record(), CAP,
                bad("bytes after the ALPN list")),
            ("odd supported_versions", Builder::new().ext(43, vec![3, 3, 4, 3]).record(), CAP,
                bad("odd supported_versions length")),
            ("empty supported_versions", Builder::new().ext(43, vec![0]).record(), CAP,
                bad("empty supported_versions list")),
            ("supported_versions overruns", Builder::new().ext(43, vec![4, 3, 4]).record(), CAP,
                bad("supported_versions list overruns its extension")),
        ];
        for (name, bytes, cap, mut want) in cases {
            // A table row's `records_len: 0` stands for "the whole input".
            if let Ok(Progress::Done(hello)) = &mut want {
                if hello.records_len == 0 {
                    hello.records_len = bytes.len();
                }
            }
            assert_eq!(parse_client_hello(&bytes, cap), want, "{name}");
            // Same answer with more bytes after (a refusal or a Done never turns into something else).
            let mut longer = bytes.clone();
            longer.extend([0x16, 3, 3, 0, 1, 0]);
            if want != Ok(Progress::NeedMore) {
                assert_eq!(parse_client_hello(&longer, cap), want, "{name}, with bytes after");
            }
        }
    }

    #[test]
    fn every_prefix_of_a_good_hello() {
        let good = Builder::new()
            .sni(b"example.com")
            .ext(16, alpn_data(&[b"h2"]))
            .ext(43, versions_data(&[0x0304]))
            .ext(0xfe0d, vec![9; 20]);
        assert_every_prefix(&good.record(), CAP);
        let mut no_extensions = Builder::new();
        no_extensions.extensions = None;
        assert_every_prefix(&no_extensions.record(), CAP);
        assert_every_prefix(&framed(&good.message(), &[1]), CAP);
    }

    #[test]
    fn split_records() {
        let good = Builder::new().sni(b"example.com").ext(16, alpn_data(&[b"h2", b"http/1.1"]));
        let msg = good.message();
        let Ok(Progress::Done(whole)) = parse_client_hello(&good.record(), CAP) else { panic!() };
        let third = msg.len().div_ceil(3);
        for (name, sizes, records) in [
            ("2 records", vec![msg.len().div_ceil(2)], 2),
            ("3 records", vec![third, third], 3),
            ("one handshake byte per record", vec![1], msg.len()),
            // The SNI name itself straddles records.
            ("7-byte records", vec![7], msg.len().div_ceil(7)),
        ] {
            let bytes = framed(&msg, &sizes);
            let want = ClientHello { records, records_len: bytes.len(), ..whole.clone() };
            assert_eq!(parse_client_hello(&bytes, CAP), done(want), "{name}");
            assert_every_prefix(&bytes, CAP);
        }
    }

    #[test]
    fn last_record_must_be_whole() {
        let good = Builder::new().sni(b"example.com");
        let mut payload = good.message();
        payload.extend(b"more handshake bytes");
        let bytes = record(0x16, &payload);
        for len in 0..bytes.len() {
            assert_eq!(parse_client_hello(&bytes[..len], CAP), Ok(Progress::NeedMore), "{len}");
        }
        assert_eq!(parse_client_hello(&bytes, CAP), done(hello(Some("example.com"), bytes.len())));
    }

    #[test]
    fn cap_refuses_before_the_bytes_arrive() {
        // A 100 KiB ClientHello is announced; only the headers have arrived.
        let bytes = [0x16, 3, 1, 0x40, 0, 1, 0x01, 0x90, 0x00];
        for len in 0..bytes.len() {
            let want = if len < 9 { Ok(Progress::NeedMore) } else { Err(SniffError::TooLarge { cap: CAP }) };
            assert_eq!(parse_client_hello(&bytes[..len], CAP), want, "{len}");
        }
        // 2^14 + 5 fits one full record; the same announced in one more byte needs a second header.
        let fits = [0x16, 3, 1, 0x40, 0, 1, 0x00, 0x3f, 0xfc];
        assert_eq!(parse_client_hello(&fits, CAP), Ok(Progress::NeedMore));
        let over = [0x16, 3, 1, 0x40, 0, 1, 0x00, 0x3f, 0xfd];
        assert_eq!(parse_client_hello(&over, CAP), Err(SniffError::TooLarge { cap: CAP }));
        assert_eq!(parse_client_hello(&over, CAP + 6), Ok(Progress::NeedMore));
    }

    #[test]
    fn looks_like_tls_table() {
        for (bytes, want) in [
            (&b""[..], None),
            (b"\x16\x03", None),
            (b"G", None),
            (b"\x16\x03\x01", Some(true)),
            (b"\x16\x03\x00\x00", Some(true)),
            (b"\x16\x03\x04", Some(true)),
            (b"\x16\x03\x05", Some(false)),
            (b"\x16\x02\x01", Some(false)),
            (b"\x17\x03\x03", Some(false)),
            (b"GET / HTTP/1.1", Some(false)),
        ] {
            assert_eq!(looks_like_tls(bytes), want, "{bytes:?}");
        }
    }

    #[test]
    fn display() {
        for (err, want) in [
            (SniffError::NotTls, "not a TLS handshake record"),
            (SniffError::TooLarge { cap: 16384 }, "ClientHello over the 16384-byte cap"),
            (SniffError::Malformed("record type 23 before the ClientHello"), "record type 23 before the ClientHello"),
            (SniffError::MultipleHostNames, "two host_name entries in server_name"),
            (SniffError::InvalidName("server_name host_name is not ASCII"), "server_name host_name is not ASCII"),
        ] {
            assert_eq!(err.to_string(), want);
        }
    }

    // ---- properties ----

    /// Checks the answers for every prefix of `bytes`: `NeedMore` until the first other answer,
    /// which then holds for every longer prefix; `Done` only within the cap and the buffer; and the
    /// backstop in `parse_client_hello` (NeedMore over the cap) is never what decides.
    fn check_prefixes(bytes: &[u8], cap: usize) -> Result<(), TestCaseError> {
        let mut settled = None;
        for len in 0..=bytes.len() {
            let prefix = &bytes[..len];
            if let Err(Stop::NeedMore) = parse(prefix, cap) {
                prop_assert!(len <= cap, "NeedMore for {} bytes over the {}-byte cap", len, cap);
            }
            let got = parse_client_hello(prefix, cap);
            if let Ok(Progress::Done(hello)) = &got {
                prop_assert!(hello.records_len <= len && hello.records_len <= cap);
                prop_assert!(hello.records >= 1);
            }
            match &settled {
                None if got == Ok(Progress::NeedMore) => {}
                None => settled = Some(got),
                Some(first) => prop_assert_eq!(first, &got, "prefix {}", len),
            }
        }
        Ok(())
    }

    fn host_name() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9.*_-]{1,80}"
    }

    prop_compose! {
        fn arb_hello()(
            sni in proptest::option::of(host_name()),
            alpn in proptest::collection::vec("[ -~]{1,20}", 0..4),
            versions in proptest::collection::vec(any::<u16>(), 0..6),
            ech in any::<bool>(),
            extra in proptest::collection::btree_map(
                100u16..0xfe00,
                proptest::collection::vec(any::<u8>(), 0..300),
                0..6,
            ),
            session_id in proptest::collection::vec(any::<u8>(), 0..=32),
            legacy_version in any::<u16>(),
        ) -> (Builder, ClientHello) {
            let mut builder = Builder::new();
            builder.version = legacy_version;
            builder.session_id = session_id;
            let mut extensions: Vec<(u16, Vec<u8>)> = extra.into_iter().collect();
            if let Some(name) = &sni {
                extensions.insert(extensions.len() / 2, (0, sni_data(&[(0, name.as_bytes())])));
            }
            if !alpn.is_empty() {
                let names: Vec<&[u8]> = alpn.iter().map(|n| n.as_bytes()).collect();
                extensions.push((16, alpn_data(&names)));
            }
            if !versions.is_empty() {
                extensions.insert(0, (43, versions_data(&versions)));
            }
            if ech {
                extensions.push((0xfe0d, vec![0; 40]));
            }
            builder.extensions = Some(extensions);
            let want = ClientHello {
                sni,
                alpn,
                supported_versions: versions,
                legacy_version,
                ech_offered: ech,
                records_len: 0,
                records: 0,
            };
            (builder, want)
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn random_splits_give_the_same_hello(
            (builder, want) in arb_hello(),
            sizes in proptest::collection::vec(1usize..200, 1..8),
            tail in proptest::collection::vec(any::<u8>(), 0..20),
        ) {
            let msg = builder.message();
            let mut bytes = framed(&msg, &sizes);
            let records_len = bytes.len();
            let mut records = 0;
            let mut left = msg.len();
            for size in sizes.iter().cycle() {
                if left == 0 {
                    break;
                }
                left -= left.min(*size);
                records += 1;
            }
            bytes.extend(tail);
            let want = ClientHello { records_len, records, ..want };
            prop_assert_eq!(parse_client_hello(&bytes, CAP), done(want.clone()));
            prop_assert_eq!(parse_client_hello(&builder.record(), CAP),
                done(ClientHello { records_len: msg.len() + 5, records: 1, ..want }));
            check_prefixes(&bytes, CAP)?;
            // Below the size the records take, the answer is TooLarge.
            let cap = records_len - 1;
            prop_assert_eq!(parse_client_hello(&bytes, cap), Err(SniffError::TooLarge { cap }));
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600), cap in 0usize..2000) {
            check_prefixes(&bytes, cap)?;
            let mut tls = vec![0x16, 3, 1, 2, 0, 1, 0, 1, 0xfc];
            tls.extend(&bytes);
            check_prefixes(&tls, cap)?;
            check_prefixes(&tls, CAP)?;
        }

        #[test]
        fn mutated_hellos_never_panic(
            (builder, _) in arb_hello(),
            sizes in proptest::collection::vec(1usize..100, 1..4),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        ) {
            let mut bytes = framed(&builder.message(), &sizes);
            for (at, byte) in edits {
                let at = at.index(bytes.len());
                bytes[at] = byte;
            }
            check_prefixes(&bytes, CAP)?;
        }
    }
}
