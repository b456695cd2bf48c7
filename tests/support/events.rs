//! The access events of one in-process gateway, typed: the gateway is started with a
//! [`ChannelSink`], and [`AccessEvents`] keeps what its channel delivered so that a test can
//! look through them as often as it likes (filter, poll, wait).
//!
//! Every gateway has its own channel, so a test sees its own gateway's events and no other's:
//! nothing is filtered by listener address. Set `RUST_LOG` to also print the gateway's tracing
//! events (the `access` lines among them) to the test output.

use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use hostgate_proxy::access::{AccessEvent, AccessSink, ChannelSink};
use tokio::sync::mpsc::UnboundedReceiver;
use tracing_subscriber::EnvFilter;

/// What a gateway's [`ChannelSink`] delivered so far, in order.
#[derive(Debug)]
pub struct AccessEvents {
    inner: Mutex<Received>,
}

#[derive(Debug)]
struct Received {
    rx: UnboundedReceiver<AccessEvent>,
    events: Vec<AccessEvent>,
}

impl AccessEvents {
    /// A sink to start a gateway with, and the events it will deliver.
    pub fn new() -> (Arc<dyn AccessSink>, AccessEvents) {
        print_logs();
        let (sink, rx) = ChannelSink::new();
        (Arc::new(sink), AccessEvents { inner: Mutex::new(Received { rx, events: Vec::new() }) })
    }

    /// Every event so far that satisfies `pred`.
    pub fn matching(&self, pred: impl Fn(&AccessEvent) -> bool) -> Vec<AccessEvent> {
        let mut received = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        // A closed channel (the gateway is gone) has delivered everything it will.
        while let Ok(event) = received.rx.try_recv() {
            received.events.push(event);
        }
        received.events.iter().filter(|e| pred(e)).cloned().collect()
    }

    /// Polls until an event satisfying `pred` has arrived and returns the first one.
    ///
    /// # Panics
    /// After `timeout`, listing every event of this gateway so far, so that the failure shows
    /// what the gateway did log.
    pub async fn wait(&self, pred: impl Fn(&AccessEvent) -> bool, timeout: Duration) -> AccessEvent {
        let start = Instant::now();
        loop {
            if let Some(e) = self.matching(&pred).into_iter().next() {
                return e;
            }
            if start.elapsed() > timeout {
                let seen = self.matching(|_| true);
                panic!(
                    "no matching access event within {timeout:?}; {} event(s) of this gateway so far: {seen:#?}",
                    seen.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// With `RUST_LOG` set, installs (once per process) a subscriber printing the gateway's tracing
/// events at that filter to the test output.
fn print_logs() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let Some(filter) = std::env::var("RUST_LOG").ok().filter(|v| !v.trim().is_empty()) else { return };
        // A test that installed its own subscriber keeps it: printing is only a debugging aid.
        let _ = tracing_subscriber::fmt().with_env_filter(EnvFilter::new(filter)).with_test_writer().try_init();
    });
}
