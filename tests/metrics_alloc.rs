//! Recording metrics into label sets that already exist allocates nothing: an access event, a
//! tunnel or connection gauge held and dropped, a TLS-handling count. The counting allocator
//! counts only on the measuring thread and only inside the measured call, so the test harness's
//! own threads do not disturb it.
//!
//! (Its own test binary: a `#[global_allocator]` is per binary.)

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;

use hostgate_proxy::metrics::{AccessSample, Metrics};

/// The system allocator, counting allocations (and reallocations) made on a thread while that
/// thread's `COUNTING` is set.
struct Counting;

thread_local! {
    /// Whether this thread counts its allocations now. `const`-initialised, with no destructor:
    /// reading it from inside the allocator neither allocates nor registers anything.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn counted() {
    if COUNTING.with(Cell::get) {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; the counters
// have no effect on the memory handed out.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        counted();
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        counted();
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        counted();
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// How many allocations `f` made on this thread.
fn allocations(f: impl FnOnce()) -> u64 {
    ALLOCATIONS.with(|n| n.set(0));
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn recording_into_existing_label_sets_does_not_allocate() {
    // The counter counts: a box is an allocation.
    assert_eq!(allocations(|| drop(std::hint::black_box(Box::new(1u64)))), 1);

    let m = Metrics::new();
    // Made once, as the data path makes them: per listener, per rule file.
    let listener: Arc<str> = Arc::from("127.0.0.1:3128");
    let file: Arc<str> = Arc::from("config/local.rules");
    let ruled = AccessSample {
        listener: &listener,
        kind: "connect",
        protocol: "tls",
        action: "allow",
        outcome: "ok",
        source: Some(&file),
        bytes_up: 719,
        bytes_down: 7110,
        would_deny: true,
    };
    let by_default = AccessSample { action: "deny", outcome: "denied", source: None, ..ruled };

    // The first event of a label set creates it; that may allocate.
    assert!(allocations(|| m.access(&ruled)) > 0, "creating the label sets should allocate");
    m.access(&by_default);
    drop(m.tunnel(&listener));
    drop(m.connection(&listener));
    m.tls_handling("inspected");

    // Every later one with the same labels does not.
    assert_eq!(allocations(|| m.access(&ruled)), 0, "access, rule file");
    assert_eq!(allocations(|| m.access(&by_default)), 0, "access, default action");
    assert_eq!(allocations(|| drop(m.tunnel(&listener))), 0, "tunnel gauge");
    assert_eq!(allocations(|| drop(m.connection(&listener))), 0, "connection gauge");
    assert_eq!(allocations(|| m.tls_handling("inspected")), 0, "tls handling");

    // A label value equal to a known one, in another allocation, finds the same label set.
    let same: Arc<str> = Arc::from("127.0.0.1:3128");
    assert_eq!(allocations(|| m.access(&AccessSample { listener: &same, ..ruled })), 0, "equal listener");

    // And the events were counted.
    let text = m.encode();
    assert!(
        text.lines().any(|l| l
            == r#"hostgate_connections_total{listener="127.0.0.1:3128",kind="connect",protocol="tls",action="allow",outcome="ok"} 3"#),
        "{text}"
    );
    assert!(text.lines().any(|l| l == r#"hostgate_decisions_total{source="default",action="deny"} 2"#), "{text}");
    assert!(text.lines().any(|l| l == "hostgate_would_deny_total 5"), "{text}");
}
