//! `parse_client_hello` and the sniff phase on arbitrary bytes, and on handshake messages
//! re-framed into records.
//!
//! The first input byte picks the mode. 0x16 (a TLS handshake record, as every seed in
//! `seeds/client_hello/` starts): the whole input, raw, as a client would send it. Otherwise, by
//! its value modulo 4: raw bytes (the rest of the input); the rest of the input as a handshake
//! message, framed into records whose sizes come from the second byte; a real ClientHello
//! (curl's, from the unit tests) with bytes overwritten at input-chosen offsets, framed the same
//! way; or an explicit list of read sizes (a count byte, then one byte per read, 0 = a pause)
//! followed by raw bytes. Framing gets past the record layer without the fuzzer having to keep
//! record lengths consistent.
//!
//! Invariants, for every buffer checked: never panics. Fed as a growing prefix (every prefix length,
//! as if the bytes arrived in any split over TCP segments), the answers are `NeedMore` until the
//! first other answer, which every longer prefix repeats exactly; `NeedMore` only while the buffer is
//! within the cap; the first `Done` comes exactly when the buffer reaches its `records_len`, so
//! `NeedMore` is only ever said of a proper prefix of the records that make the ClientHello. A `Done`
//! has at least one record, `records_len` within the buffer and the cap and at least the record
//! headers plus a minimal ClientHello, an SNI of printable ASCII and non-empty ALPN names. Across
//! caps: a `Done` with no cap is the same `Done` for every cap from its `records_len` up and
//! `TooLarge` below it; any other answer with no cap is that answer or `TooLarge` under a cap.
//! Re-framing a message into more records changes only `records` and `records_len`.
//!
//! The same buffer through `hostgate_proxy::sniff::sniff` (the read loop the gateway runs, over an
//! in-memory client) read whole, byte by byte, with pauses, and in the input's read sizes (or
//! sizes derived from a hash of the input): the same answer every time, and for 0x16 bytes the
//! answer `parse_client_hello` gives the whole buffer. A ClientHello's SNI and ALPN names are
//! byte-for-byte in the handshake message its records carry, behind their length prefixes. See
//! `src/invariants.rs` (shared with `tests/properties.rs`).
#![no_main]

use hostgate_matcher_fuzz::invariants::{check_hello_in_input, check_sniff, chunk_sizes, fnv};
use hostgate_proxy::sniff::tls::{looks_like_tls, parse_client_hello, ClientHello, Progress, SniffError};
use libfuzzer_sys::fuzz_target;

/// The cap the proxy is expected to use: one full record.
const CAP: usize = 16 * 1024 + 5;
/// Above this buffer size only some prefixes are checked (every prefix is quadratic).
const EVERY_PREFIX_UP_TO: usize = 4096;

/// The handshake message of the `curl` ClientHello in `proxy/src/sniff/tls.rs` (without its record
/// header; its padding extension shortened to 16 bytes).
const CURL_MESSAGE: &str = concat!(
    "0100015a03036202d4f27f06ab04093ea4585b435fb39a9d7167df7a70be3f1cd453de3e1174207d28147e03",
    "e90f5718544acdb2ec478167b7835089bebfdcd403c6ebf754dbf2003e130213031301c02cc030009fcca9cca8ccaac0",
    "2bc02f009ec024c028006bc023c0270067c00ac0140039c009c0130033009d009c003d003c0035002f00ff010000d300",
    "000010000e00000b6578616d706c652e636f6d000b000403000102000a00160014001d0017001e001900180100010101",
    "02010301040010000e000c02683208687474702f312e31001600000017000000310000000d002a002804030503060308",
    "0708080809080a080b080408050806040105010601030303010302040205020602002b0009080304030303020301002d",
    "00020101003300260024001d00200e497c80a7bfd04ed43e66cbab8736e5bf9671196cede5eedc2fa4283162a1310015",
    "001000000000000000000000000000000000",
);

fn hex(s: &str) -> Vec<u8> {
    s.as_bytes().chunks(2).map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap()).collect()
}

/// `msg` in handshake records; `seed` 0 means records as large as possible, otherwise the payload
/// sizes cycle through `seed`, `seed * 7 % 61 + 1`, `seed / 3 + 1`.
fn frame(msg: &[u8], seed: u8) -> Vec<u8> {
    let seed = usize::from(seed);
    let sizes = if seed == 0 { vec![16 * 1024] } else { vec![seed, seed * 7 % 61 + 1, seed / 3 + 1] };
    let mut out = Vec::with_capacity(msg.len() + msg.len() / 2 * 5 + 5);
    let mut rest = msg;
    for &size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (now, later) = rest.split_at(size.min(rest.len()));
        out.extend([0x16, 3, 1]);
        out.extend(u16::try_from(now.len()).unwrap().to_be_bytes());
        out.extend(now);
        rest = later;
    }
    out
}

fn check_hello(hello: &ClientHello, len: usize, cap: usize, input: &[u8]) {
    assert!(hello.records >= 1, "{hello:?} from {input:?}");
    // A record header each, plus the smallest ClientHello body (version, random, two empty
    // vectors, one suite, one compression method) and its handshake header.
    assert!(hello.records_len >= 5 * hello.records + 4 + 2 + 32 + 1 + 4 + 2, "{hello:?} from {input:?}");
    assert!(hello.records_len <= len && hello.records_len <= cap, "{hello:?} ({len} bytes, cap {cap})");
    if let Some(sni) = &hello.sni {
        assert!(!sni.is_empty() && sni.bytes().all(|b| (0x21..0x7f).contains(&b)), "{sni:?} from {input:?}");
    }
    assert!(hello.alpn.iter().all(|name| !name.is_empty()), "{hello:?} from {input:?}");
    check_hello_in_input(hello, input);
}

/// The growing-prefix and cap invariants for one buffer, then the sniff phase over it in reads
/// of `reads` (derived from the bytes when empty).
fn check(bytes: &[u8], reads: &[usize]) {
    let tls = looks_like_tls(bytes);
    assert_eq!(tls.is_none(), bytes.len() < 3);

    // The whole buffer under various caps, against the answer with no cap.
    let free = parse_client_hello(bytes, usize::MAX);
    let caps = [0, 1, 5, 8, 9, 10, 64, 300, bytes.len().saturating_sub(1), bytes.len(), bytes.len() + 1, CAP];
    for cap in caps {
        let got = parse_client_hello(bytes, cap);
        match &free {
            Ok(Progress::Done(hello)) if hello.records_len <= cap => assert_eq!(got, free, "cap {cap}"),
            _ if got == Err(SniffError::TooLarge { cap }) => {}
            Ok(Progress::Done(_)) => panic!("{got:?} for a hello over the {cap}-byte cap: {bytes:?}"),
            _ => assert_eq!(got, free, "cap {cap}: {bytes:?}"),
        }
        if let Ok(Progress::Done(hello)) = &got {
            check_hello(hello, bytes.len(), cap, bytes);
        }
    }

    // Growing prefixes: every length while that is cheap, then a sample plus the tail.
    for cap in [CAP, bytes.len() / 2 + 20] {
        let mut settled: Option<(usize, Result<Progress, SniffError>)> = None;
        // Increasing lengths: the check below compares each with the shorter ones before it.
        let lens: Box<dyn Iterator<Item = usize>> = if bytes.len() <= EVERY_PREFIX_UP_TO {
            Box::new(0..=bytes.len())
        } else {
            let (step, tail) = (bytes.len() / 512, bytes.len() - 256);
            Box::new((0..tail).step_by(step).chain(tail..=bytes.len()))
        };
        for len in lens {
            let got = parse_client_hello(&bytes[..len], cap);
            match (&settled, &got) {
                (None, Ok(Progress::NeedMore)) => assert!(len <= cap, "NeedMore over the cap: {len} > {cap}"),
                (None, _) => {
                    if let Ok(Progress::Done(hello)) = &got {
                        check_hello(hello, len, cap, bytes);
                        if bytes.len() <= EVERY_PREFIX_UP_TO {
                            assert_eq!(hello.records_len, len, "Done late: {bytes:?}");
                        }
                    }
                    settled = Some((len, got));
                }
                (Some((at, first)), _) => assert_eq!(first, &got, "prefix {len} (settled at {at}): {bytes:?}"),
            }
        }
    }

    // The read loop: the proxy's default cap, and the configuration's smallest.
    let derived;
    let reads = if reads.is_empty() {
        let hash = fnv(bytes);
        derived = chunk_sizes(hash, [1, 6, 40, 300][(hash >> 60) as usize & 3], 16);
        &derived[..]
    } else {
        reads
    };
    for cap in [16 * 1024, 512] {
        let _ = check_sniff(bytes, &[reads], cap);
    }
}

/// Frames `msg` as one record and as several; both must agree except for the record counts.
fn check_framings(msg: &[u8], seed: u8) {
    let split = frame(msg, seed);
    check(&split, &[]);
    if msg.len() > 16 * 1024 {
        return;
    }
    let whole = frame(msg, 0);
    check(&whole, &[]);
    let strip = |answer: Result<Progress, SniffError>| match answer {
        Ok(Progress::Done(hello)) => Ok(Progress::Done(ClientHello { records: 0, records_len: 0, ..hello })),
        other => other,
    };
    let (a, b) = (parse_client_hello(&whole, usize::MAX), parse_client_hello(&split, usize::MAX));
    assert_eq!(strip(a), strip(b), "seed {seed}: {msg:?}");
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        check(data, &[]);
        return;
    };
    if mode == 0x16 {
        check(data, &[]);
        return;
    }
    match mode % 4 {
        0 => check(rest, &[]),
        1 => {
            let Some((&seed, msg)) = rest.split_first() else { return };
            check_framings(msg, seed);
        }
        2 => {
            // [seed] then (offset_hi, offset_lo, byte) triples overwriting the curl ClientHello.
            let Some((&seed, edits)) = rest.split_first() else { return };
            let mut msg = hex(CURL_MESSAGE);
            for edit in edits.chunks_exact(3) {
                let at = usize::from(u16::from_be_bytes([edit[0], edit[1]])) % msg.len();
                msg[at] = edit[2];
            }
            check_framings(&msg, seed);
        }
        _ => {
            let Some((&count, rest)) = rest.split_first() else { return };
            let count = usize::from(count % 32).min(rest.len());
            let (reads, bytes) = rest.split_at(count);
            let reads: Vec<usize> = reads.iter().map(|&n| usize::from(n)).collect();
            check(bytes, &reads);
        }
    }
});
