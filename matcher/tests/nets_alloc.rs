//! `NetTable::matches` and `NetTable::longest` do not allocate: counted with a global allocator
//! that counts this thread's allocations (its own binary, so that it slows no other test).

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::IpAddr;

use hostgate_matcher::{NetTable, NetTableBuilder};
use ipnet::IpNet;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

struct Counting;

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; the counter (a
// const-initialised thread-local without a destructor, so reading it does not allocate) has no
// effect on the memory handed out.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn lookups_do_not_allocate() {
    let mut b = NetTableBuilder::new();
    for s in ["0.0.0.0/0", "10.0.0.0/8", "10.1.0.0/16", "10.1.0.0/16", "10.1.2.3/32", "::/0", "2001:db8::/32"] {
        b.add(s.parse::<IpNet>().unwrap(), s.to_string());
    }
    for i in 0..10_000u32 {
        b.add(
            IpNet::new(IpAddr::from((i.wrapping_mul(0x9e37_79b9)).to_be_bytes()), 8 + (i % 25) as u8).unwrap(),
            String::new(),
        );
    }
    let t: NetTable<String> = b.build();
    let addrs: Vec<IpAddr> = ["10.1.2.3", "10.1.9.9", "11.0.0.1", "::ffff:10.1.2.3", "2001:db8::1", "fe80::1"]
        .map(|a| a.parse().unwrap())
        .to_vec();
    let mut seen = 0usize;
    let before = allocations();
    for _ in 0..100 {
        for &a in &addrs {
            for hit in t.matches(a) {
                seen += hit.value().len() + usize::from(hit.prefix_len());
            }
            seen += t.longest(a).map_or(0, |h| h.id().as_usize());
        }
    }
    let after = allocations();
    assert!(seen > 0);
    assert_eq!(after - before, 0, "allocations during 600 lookups");
    // The counter works: building a table allocates.
    let _t: NetTable<u8> = std::iter::once(("10.0.0.0/8".parse().unwrap(), 1)).collect();
    assert!(allocations() > after);
}
