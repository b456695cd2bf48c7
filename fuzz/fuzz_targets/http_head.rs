//! The sniff phase on what may be an HTTP/1 request head.
//!
//! hostgate serves HTTP with hyper, but decides by itself whether a client's first bytes are HTTP
//! (a method token and a space; `proxy/src/sniff/mod.rs`), through the public read loop
//! `hostgate_proxy::sniff::sniff` over an in-memory client.
//!
//! Invariants: never panics; the same answer whatever the reads (whole, byte by byte, with pauses,
//! in sizes derived from the input); `Http` only for bytes that start with token characters and
//! a space, after any empty lines; and whenever `httparse` (the parser inside
//! hyper) reads a complete request head from the bytes, the sniffer says `Http`.
//!
//! That last one found finding 2 (`fuzz/README.md`, fixed): the sniffer used to take only
//! `[A-Z_-]{1,16}` and a space at the very start, where httparse reads methods of any token
//! characters and any length, after empty lines.
#![no_main]

use hostgate_matcher_fuzz::invariants::{check_sniff, chunk_sizes, fnv};
use hostgate_proxy::sniff::Sniffed;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let hash = fnv(data);
    let reads = chunk_sizes(hash, [1, 4, 17, 200][(hash >> 60) as usize & 3], 8);
    let answer = check_sniff(data, &[&reads], 16 * 1024);

    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut headers);
    if let Ok(httparse::Status::Complete(len)) = request.parse(data) {
        assert_eq!(
            answer,
            Ok(Sniffed::Http),
            "httparse reads a {len}-byte request head ({:?} {:?}) that the sniffer does not take for HTTP: {:?}",
            request.method,
            request.path,
            String::from_utf8_lossy(data),
        );
    }
});
