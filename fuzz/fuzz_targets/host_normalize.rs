//! `Host::from_bytes` / `Host::new` on arbitrary bytes.
//!
//! Invariants: never panics; `from_bytes` and `new` agree on UTF-8 input and `from_bytes` rejects
//! non-UTF-8; an accepted name is non-empty, at most 253 bytes, made of `[a-z0-9-_.]` with no empty
//! label and labels of at most 63 bytes, and normalising it again gives the same name; for plain
//! ASCII input (no `xn--` label) the result is exactly the lowercase name without one trailing dot,
//! or an error when that name is not a valid host.
#![no_main]

use hostgate_matcher::Host;
use hostgate_matcher_fuzz::reference::ascii_host_oracle;
use libfuzzer_sys::fuzz_target;

fn check_valid(name: &str, input: &[u8]) {
    assert!(!name.is_empty(), "empty host from {input:?}");
    assert!(name.len() <= 253, "{} bytes from {input:?}", name.len());
    assert!(
        name.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.')),
        "bad byte in {name:?} from {input:?}"
    );
    for label in name.split('.') {
        assert!(!label.is_empty(), "empty label in {name:?} from {input:?}");
        assert!(label.len() <= 63, "long label in {name:?} from {input:?}");
    }
    let again = Host::new(name).map(|h| h.as_str().to_string());
    assert_eq!(again.as_deref(), Ok(name), "not idempotent, from {input:?}");
    let again = Host::from_bytes(name.as_bytes()).map(|h| h.as_str().to_string());
    assert_eq!(again.as_deref(), Ok(name), "from_bytes not idempotent, from {input:?}");
}

fuzz_target!(|data: &[u8]| {
    let from_bytes = Host::from_bytes(data).map(|h| h.as_str().to_string());
    match std::str::from_utf8(data) {
        Ok(s) => {
            let from_str = Host::new(s).map(|h| h.as_str().to_string());
            assert_eq!(from_bytes.as_ref().ok(), from_str.as_ref().ok(), "from_bytes and new disagree on {s:?}");
        }
        Err(_) => assert!(from_bytes.is_err(), "non-UTF-8 accepted: {data:?}"),
    }
    if let Ok(name) = &from_bytes {
        check_valid(name, data);
    }
    if let Some(want) = ascii_host_oracle(data) {
        assert_eq!(from_bytes.as_ref().ok(), want.as_ref().ok(), "ASCII host {:?}", String::from_utf8_lossy(data));
    }
});
