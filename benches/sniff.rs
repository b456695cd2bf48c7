//! Sniffing benchmark: what reading a client's first bytes costs, from the ClientHello or request
//! head in memory to the name the gateway decides on, against what a user of rustls or httparse
//! would reach for. No sockets: the bytes come from memory.
//!
//! Inputs:
//!
//! * `rustls`: a real rustls 0.23 ClientHello (ring provider: x25519 and P-256/P-384 offered, one
//!   x25519 key share; one record, 250 bytes of handshake) for `bench.test`.
//! * `chrome_pq`: a Chrome-style ClientHello built byte by byte (see [`chrome_pq_hello`]): GREASE
//!   cipher suite, extensions and versions, the usual extension list with a GREASE ECH, ALPN `h2`,
//!   `http/1.1`, and an `X25519MLKEM768` key share (1,216 bytes) besides x25519: 1,794 bytes of
//!   handshake, as browsers have sent since post-quantum key agreement became their default.
//!   Taken in one record, and re-framed into 512-byte and 64-byte records.
//! * `curl_get`: the head `curl https://…` style clients send on a plain HTTP connection
//!   (origin-form, `Host`, `User-Agent`, `Accept`); `absolute_form`: a proxy-style request
//!   (`GET http://host/path`, `Proxy-Connection`, a few more headers).
//!
//! Groups (criterion ids `group/function`), throughput in elements (one parse):
//!
//! * `clienthello_parse/{hostgate,hostgate_64B_records,rustls_acceptor}` (moved here from the
//!   `relay` bench, ids unchanged): the rustls hello's bytes to its server name:
//!   `hostgate_proxy::sniff::tls::parse_client_hello` against rustls' own `server::Acceptor` (what
//!   a rustls user would use to read the SNI before choosing a config); the 64-byte-record variant
//!   is the same hello re-framed.
//! * `clienthello_parse_chrome_pq/{hostgate,hostgate_512B_records,hostgate_64B_records,
//!   rustls_acceptor,rustls_acceptor_64B_records}`: the same for the Chrome-style hello.
//! * `sniff_tls/{rustls,chrome_pq,chrome_pq_64B_records}`: the gateway's whole read loop,
//!   `hostgate_proxy::sniff::sniff` over an in-memory reader into a fresh `BytesMut` (as each
//!   connection gets), record walk, parse and timeout included, on a current-thread runtime.
//! * `http_head/{hostgate_sniff,httparse}/{curl_get,absolute_form}`: `sniff` deciding that the
//!   bytes are HTTP (it reads the method token; hyper parses the head afterwards), against
//!   `httparse::Request::parse` of the whole head (the parser hyper runs next, with 32 header
//!   slots): the sniff's share of what an HTTP request costs before it is decided.
//!
//! Every input is parsed once before timing and its answer checked (the name, ALPN, versions, the
//! number of records; rustls must agree on the name). Before timing, `interleaved` lines are
//! printed: each group's functions take turns in batches of 1,000 calls, 200 rounds, and the
//! median time per call of each is given with its ratio to the group's first function; load that
//! comes and goes on the machine then falls on every function alike.

#[path = "support/hello.rs"]
mod hello;

#[path = "support/median.rs"]
mod median;
use std::hint::black_box;
use std::time::Instant;

use bytes::BytesMut;
use criterion::{BenchmarkId, Criterion, Throughput};
use hostgate_proxy::config::SniffConfig;
use hostgate_proxy::sniff::tls::{parse_client_hello, ClientHello, Progress};
use hostgate_proxy::sniff::{sniff, Sniffed};
use tokio::runtime::Runtime;

use hello::rustls_client_hello;

const RUSTLS_NAME: &str = "bench.test";
const CHROME_NAME: &str = "login.microsoftonline.com";
/// The sniff cap the shipped configuration uses (`[sniff] max_bytes`).
const CAP: usize = 16 * 1024;

const CURL_GET: &[u8] = b"GET /download/v1/package.tar.gz HTTP/1.1\r\n\
Host: download.example.com\r\n\
User-Agent: curl/8.5.0\r\n\
Accept: */*\r\n\r\n";

const ABSOLUTE_FORM: &[u8] =
    b"GET http://ctldl.windowsupdate.com/msdownload/update/v3/static/trustedr/en/authrootstl.cab HTTP/1.1\r\n\
Host: ctldl.windowsupdate.com\r\n\
User-Agent: Microsoft-CryptoAPI/10.0\r\n\
Accept: */*\r\n\
Cache-Control: max-age = 86400\r\n\
If-Modified-Since: Tue, 12 Nov 2026 21:04:03 GMT\r\n\
If-None-Match: \"0e4d2b0f635db1:0\"\r\n\
Proxy-Connection: Keep-Alive\r\n\r\n";

fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn ext(out: &mut Vec<u8>, kind: u16, data: &[u8]) {
    put_u16(out, kind);
    put_u16(out, data.len() as u16);
    out.extend_from_slice(data);
}

/// A u16-length-prefixed list of u16 values.
fn u16_list(values: &[u16]) -> Vec<u8> {
    let mut out = Vec::new();
    put_u16(&mut out, (values.len() * 2) as u16);
    for &v in values {
        put_u16(&mut out, v);
    }
    out
}

/// A ClientHello shaped like Chrome's since X25519MLKEM768 became its default (one record):
/// legacy version TLS 1.2, a 32-byte session id, 16 cipher suites led by a GREASE value, and the
/// extensions GREASE, server_name, extended_master_secret, renegotiation_info, supported_groups
/// (GREASE, X25519MLKEM768, x25519, P-256, P-384), ec_point_formats, session_ticket, ALPN (`h2`,
/// `http/1.1`), status_request, signature_algorithms, signed_certificate_timestamp, key_share
/// (GREASE: 1 byte, X25519MLKEM768: 1,216 bytes, x25519: 32 bytes), psk_key_exchange_modes,
/// supported_versions (GREASE, 1.3, 1.2), compress_certificate (brotli), application_settings
/// (`h2`), a GREASE encrypted_client_hello (208-byte payload) and a last GREASE extension. Chrome
/// permutes the extension order per connection; this is one such order. No padding extension
/// (Chrome sends none once the hello is over 512 bytes).
fn chrome_pq_hello() -> Vec<u8> {
    const GREASE: [u16; 5] = [0x0a0a, 0x3a3a, 0x5a5a, 0x8a8a, 0xdada];
    let mut body = vec![0x03, 0x03];
    body.extend((0u8..32).map(|i| i.wrapping_mul(29).wrapping_add(3))); // random
    body.push(32);
    body.extend((0u8..32).map(|i| i ^ 0xc3)); // legacy_session_id
    let suites = [
        GREASE[0], 0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8, 0xc013, 0xc014, 0x009c,
        0x009d, 0x002f, 0x0035,
    ];
    body.extend(u16_list(&suites));
    body.extend_from_slice(&[1, 0]); // compression: null

    let mut exts = Vec::new();
    ext(&mut exts, GREASE[1], &[]);
    let mut sni = Vec::new();
    put_u16(&mut sni, (CHROME_NAME.len() + 3) as u16);
    sni.push(0); // host_name
    put_u16(&mut sni, CHROME_NAME.len() as u16);
    sni.extend_from_slice(CHROME_NAME.as_bytes());
    ext(&mut exts, 0x0000, &sni);
    ext(&mut exts, 0x0017, &[]); // extended_master_secret
    ext(&mut exts, 0xff01, &[0]); // renegotiation_info
    ext(&mut exts, 0x000a, &u16_list(&[GREASE[2], 0x11ec, 0x001d, 0x0017, 0x0018])); // supported_groups
    ext(&mut exts, 0x000b, &[1, 0]); // ec_point_formats: uncompressed
    ext(&mut exts, 0x0023, &[]); // session_ticket
    ext(&mut exts, 0x0010, b"\x00\x0c\x02h2\x08http/1.1"); // ALPN
    ext(&mut exts, 0x0005, &[1, 0, 0, 0, 0]); // status_request: OCSP
    let sigalgs = [0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601];
    ext(&mut exts, 0x000d, &u16_list(&sigalgs)); // signature_algorithms
    ext(&mut exts, 0x0012, &[]); // signed_certificate_timestamp
    let mut shares = Vec::new();
    put_u16(&mut shares, GREASE[2]);
    put_u16(&mut shares, 1);
    shares.push(0);
    put_u16(&mut shares, 0x11ec); // X25519MLKEM768: ML-KEM-768 encapsulation key (1,184) + x25519 (32)
    put_u16(&mut shares, 1216);
    shares.extend((0..1216u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8));
    put_u16(&mut shares, 0x001d); // x25519
    put_u16(&mut shares, 32);
    shares.extend((0u8..32).map(|i| i.wrapping_mul(13).wrapping_add(9)));
    let mut key_share = Vec::new();
    put_u16(&mut key_share, shares.len() as u16);
    key_share.extend(shares);
    ext(&mut exts, 0x0033, &key_share);
    ext(&mut exts, 0x002d, &[1, 1]); // psk_key_exchange_modes: psk_dhe_ke
    let mut versions = vec![6];
    for v in [GREASE[3], 0x0304, 0x0303] {
        put_u16(&mut versions, v);
    }
    ext(&mut exts, 0x002b, &versions); // supported_versions
    ext(&mut exts, 0x001b, &[2, 0, 2]); // compress_certificate: brotli
    ext(&mut exts, 0x44cd, b"\x00\x03\x02h2"); // application_settings
    let mut ech = vec![0, 0x00, 0x01, 0x00, 0x01, 0x9c]; // outer, HKDF-SHA256, AES-128-GCM, config id
    put_u16(&mut ech, 32);
    ech.extend((0u8..32).map(|i| i.wrapping_mul(3)));
    put_u16(&mut ech, 208);
    ech.extend((0..208u32).map(|i| (i * 7) as u8 ^ 0xa5));
    ext(&mut exts, 0xfe0d, &ech); // encrypted_client_hello (GREASE)
    ext(&mut exts, GREASE[4], &[0]);
    put_u16(&mut body, exts.len() as u16);
    body.extend(exts);

    let mut out = vec![0x16, 0x03, 0x01];
    put_u16(&mut out, (body.len() + 4) as u16);
    out.push(0x01);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    out.extend(body);
    out
}

/// Re-frames a one-record handshake into records of `size` payload bytes.
fn split_records(hello: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in hello[5..].chunks(size) {
        out.extend_from_slice(&hello[..3]);
        out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

fn parse(bytes: &[u8]) -> ClientHello {
    match parse_client_hello(bytes, CAP) {
        Ok(Progress::Done(h)) => h,
        other => panic!("{other:?}"),
    }
}

/// The server name rustls' `Acceptor` reads from `bytes`.
fn rustls_sni(bytes: &[u8]) -> Option<usize> {
    let mut acceptor = rustls::server::Acceptor::default();
    let mut rd: &[u8] = bytes;
    while !rd.is_empty() {
        acceptor.read_tls(&mut rd).expect("read_tls");
    }
    match acceptor.accept() {
        Ok(Some(accepted)) => accepted.client_hello().server_name().map(str::len),
        _ => panic!("no ClientHello"),
    }
}

/// `sniff` over `bytes` in memory, into a fresh buffer as each connection gets.
async fn sniff_once(bytes: &[u8], cfg: &SniffConfig) -> Sniffed {
    let mut rd: &[u8] = bytes;
    let mut buf = BytesMut::new();
    sniff(&mut rd, &mut buf, cfg).await.expect("sniff")
}

fn httparse_head(bytes: &[u8]) -> usize {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => n + req.headers.len(),
        other => panic!("{other:?}"),
    }
}

/// Checks every input's answer once.
fn check(rt: &Runtime, rustls: &[u8], chrome: &[u8], chrome_512: &[u8], chrome_64: &[u8]) {
    let h = parse(rustls);
    assert_eq!(h.sni.as_deref(), Some(RUSTLS_NAME));
    assert_eq!((h.records, h.records_len), (1, rustls.len()));
    assert_eq!(rustls_sni(rustls), Some(RUSTLS_NAME.len()));
    assert_eq!(parse(&split_records(rustls, 64)).sni.as_deref(), Some(RUSTLS_NAME));

    let h = parse(chrome);
    assert_eq!(h.sni.as_deref(), Some(CHROME_NAME));
    assert_eq!(h.alpn, ["h2", "http/1.1"]);
    assert_eq!(h.versions_list(), "1.3,1.2");
    assert!(h.ech_offered);
    assert_eq!((h.records, h.records_len), (1, chrome.len()));
    for (bytes, size) in [(chrome_512, 512), (chrome_64, 64)] {
        let s = parse(bytes);
        assert_eq!(s.records, (chrome.len() - 5).div_ceil(size));
        assert_eq!(s, ClientHello { records: s.records, records_len: bytes.len(), ..h.clone() });
    }
    assert_eq!(rustls_sni(chrome), Some(CHROME_NAME.len()));
    assert_eq!(rustls_sni(chrome_64), Some(CHROME_NAME.len()));

    let cfg = SniffConfig::default();
    rt.block_on(async {
        for (bytes, name) in [(rustls, RUSTLS_NAME), (chrome, CHROME_NAME), (chrome_64, CHROME_NAME)] {
            match sniff_once(bytes, &cfg).await {
                Sniffed::Tls(h) => assert_eq!(h.sni.as_deref(), Some(name)),
                other => panic!("{other:?}"),
            }
        }
        for head in [CURL_GET, ABSOLUTE_FORM] {
            assert_eq!(sniff_once(head, &cfg).await, Sniffed::Http);
        }
    });
    assert_eq!(httparse_head(CURL_GET), CURL_GET.len() + 3);
    assert_eq!(httparse_head(ABSOLUTE_FORM), ABSOLUTE_FORM.len() + 7);
}

/// `n` sniffs of a ClientHello, in one `block_on` (as criterion times them).
async fn sniff_tls_n(bytes: &[u8], n: u64, cfg: &SniffConfig) {
    for _ in 0..n {
        match sniff_once(black_box(bytes), cfg).await {
            Sniffed::Tls(h) => black_box(h.sni.map(|s| s.len())),
            other => panic!("{other:?}"),
        };
    }
}

/// `n` sniffs of an HTTP head, in one `block_on`.
async fn sniff_http_n(head: &[u8], n: u64, cfg: &SniffConfig) {
    for _ in 0..n {
        black_box(sniff_once(black_box(head), cfg).await);
    }
}

/// A function to time: its name, and a closure that makes `n` calls.
type Case<'a> = (&'static str, Box<dyn FnMut(u64) + 'a>);

/// A case from a closure making one call.
fn each<'a, R>(name: &'static str, mut f: impl FnMut() -> R + 'a) -> Case<'a> {
    (
        name,
        Box::new(move |n| {
            for _ in 0..n {
                black_box(f());
            }
        }),
    )
}

/// Runs the cases in turn, `BATCH` calls each per turn, `ROUNDS` rounds; prints the median time per
/// call of each and its ratio to the first case.
fn interleaved(title: &str, mut cases: Vec<Case<'_>>) {
    const ROUNDS: usize = 200;
    const BATCH: u32 = 1_000;
    let mut times = vec![Vec::with_capacity(ROUNDS); cases.len()];
    for _ in 0..ROUNDS {
        for ((_, f), t) in cases.iter_mut().zip(&mut times) {
            let started = Instant::now();
            f(u64::from(BATCH));
            t.push(started.elapsed() / BATCH);
        }
    }
    let medians = median::medians(&mut times);
    let first = medians[0].as_secs_f64();
    let line: Vec<String> = cases
        .iter()
        .zip(&medians)
        .map(|((name, _), m)| format!("{name} {:.0} ns ({:.2})", m.as_secs_f64() * 1e9, m.as_secs_f64() / first))
        .collect();
    println!("interleaved {title}: median per call (ratio to {}): {}", cases[0].0, line.join(", "));
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // Criterion's own rule: without `--bench` (as under `cargo test`), or with `--test`, it runs
    // each benchmark once as a smoke test.
    let test_mode = args.iter().any(|a| a == "--test") || !args.iter().any(|a| a == "--bench");
    let listing = args.iter().any(|a| a == "--list");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let rustls = rustls_client_hello(RUSTLS_NAME, &[]);
    let rustls_64 = split_records(&rustls, 64);
    let chrome = chrome_pq_hello();
    let chrome_512 = split_records(&chrome, 512);
    let chrome_64 = split_records(&chrome, 64);
    check(&rt, &rustls, &chrome, &chrome_512, &chrome_64);
    let cfg = SniffConfig::default();
    let parse_sni = |bytes: &[u8]| black_box(parse(black_box(bytes)).sni.map(|s| s.len()));

    if !listing && !test_mode {
        println!(
            "inputs: rustls hello {} bytes ({} of handshake), chrome_pq hello {} bytes ({} of handshake; {} bytes \
             in 512-byte records, {} in 64-byte records)",
            rustls.len(),
            rustls.len() - 5,
            chrome.len(),
            chrome.len() - 5,
            chrome_512.len(),
            chrome_64.len()
        );
        interleaved(
            "clienthello_parse",
            vec![
                each("hostgate", || parse_sni(&rustls)),
                each("hostgate_64B_records", || parse_sni(&rustls_64)),
                each("rustls_acceptor", || rustls_sni(black_box(&rustls))),
            ],
        );
        interleaved(
            "clienthello_parse_chrome_pq",
            vec![
                each("hostgate", || parse_sni(&chrome)),
                each("hostgate_512B_records", || parse_sni(&chrome_512)),
                each("hostgate_64B_records", || parse_sni(&chrome_64)),
                each("rustls_acceptor", || rustls_sni(black_box(&chrome))),
                each("rustls_acceptor_64B_records", || rustls_sni(black_box(&chrome_64))),
            ],
        );
        interleaved(
            "sniff_tls",
            vec![
                ("rustls", Box::new(|n| rt.block_on(sniff_tls_n(&rustls, n, &cfg)))),
                ("chrome_pq", Box::new(|n| rt.block_on(sniff_tls_n(&chrome, n, &cfg)))),
                ("chrome_pq_64B_records", Box::new(|n| rt.block_on(sniff_tls_n(&chrome_64, n, &cfg)))),
            ],
        );
        for (name, head) in [("curl_get", CURL_GET), ("absolute_form", ABSOLUTE_FORM)] {
            interleaved(
                &format!("http_head/{name}"),
                vec![
                    ("hostgate_sniff", Box::new(|n| rt.block_on(sniff_http_n(head, n, &cfg)))),
                    each("httparse", || httparse_head(black_box(head))),
                ],
            );
        }
    }

    let mut c = Criterion::default().configure_from_args();
    let mut g = c.benchmark_group("clienthello_parse");
    g.throughput(Throughput::Elements(1));
    for (name, bytes) in [("hostgate", &rustls), ("hostgate_64B_records", &rustls_64)] {
        g.bench_function(name, |b| b.iter(|| parse_sni(bytes)));
    }
    g.bench_function("rustls_acceptor", |b| b.iter(|| black_box(rustls_sni(black_box(&rustls)))));
    g.finish();

    let mut g = c.benchmark_group("clienthello_parse_chrome_pq");
    g.throughput(Throughput::Elements(1));
    for (name, bytes) in
        [("hostgate", &chrome), ("hostgate_512B_records", &chrome_512), ("hostgate_64B_records", &chrome_64)]
    {
        g.bench_function(name, |b| b.iter(|| parse_sni(bytes)));
    }
    for (name, bytes) in [("rustls_acceptor", &chrome), ("rustls_acceptor_64B_records", &chrome_64)] {
        g.bench_function(name, |b| b.iter(|| black_box(rustls_sni(black_box(bytes)))));
    }
    g.finish();

    let mut g = c.benchmark_group("sniff_tls");
    g.throughput(Throughput::Elements(1));
    for (name, bytes) in [("rustls", &rustls), ("chrome_pq", &chrome), ("chrome_pq_64B_records", &chrome_64)] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let t = Instant::now();
                rt.block_on(sniff_tls_n(bytes, iters, &cfg));
                t.elapsed()
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("http_head");
    g.throughput(Throughput::Elements(1));
    for (name, head) in [("curl_get", CURL_GET), ("absolute_form", ABSOLUTE_FORM)] {
        g.bench_function(BenchmarkId::new("hostgate_sniff", name), |b| {
            b.iter_custom(|iters| {
                let t = Instant::now();
                rt.block_on(sniff_http_n(head, iters, &cfg));
                t.elapsed()
            })
        });
        g.bench_function(BenchmarkId::new("httparse", name), |b| b.iter(|| black_box(httparse_head(black_box(head)))));
    }
    g.finish();
    c.final_summary();
}
