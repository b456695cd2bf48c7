//! Captures the gateway's access log: one process-wide `tracing` subscriber whose layer records
//! every event with target `access` as a map of field name to value.
//!
//! Tests run in parallel inside one binary and all see the same events, so every lookup filters
//! by the test's own listener address (see [`crate::support::TestGateway::wait_access`]).
//! Set `RUST_LOG` to also print the gateway's other events to the test output.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use tracing::field::{Field, Visit};
use tracing::Subscriber;
use tracing_subscriber::filter::{filter_fn, EnvFilter};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// One access event: field name → value (strings as written, numbers and booleans in decimal /
/// `true` / `false`). Fields the gateway left empty are absent.
pub type Event = BTreeMap<String, String>;

static EVENTS: Mutex<Vec<Event>> = Mutex::new(Vec::new());
static INIT: Once = Once::new();

/// Installs the capturing subscriber (once per process; later calls do nothing).
pub fn init() {
    INIT.call_once(|| {
        let capture = Capture.with_filter(filter_fn(|m| m.target() == "access"));
        let print = std::env::var("RUST_LOG")
            .ok()
            .filter(|v| !v.trim().is_empty())
            .map(|v| tracing_subscriber::fmt::layer().with_test_writer().with_filter(EnvFilter::new(v)));
        // Another subscriber can only be there if a test installed one itself: then capture
        // would silently see nothing, which is worth a loud failure.
        tracing_subscriber::registry().with(capture).with(print).try_init().expect("install the capturing subscriber");
    });
}

/// Every access event so far that satisfies `pred`.
pub fn events(pred: impl Fn(&Event) -> bool) -> Vec<Event> {
    EVENTS.lock().unwrap_or_else(|e| e.into_inner()).iter().filter(|e| pred(e)).cloned().collect()
}

/// Polls until an access event satisfying `pred` has been emitted and returns the first one.
///
/// # Panics
/// After `timeout`, listing the events that `context` selects (the test's own) so that the
/// failure shows what the gateway did log.
pub async fn wait_access(pred: impl Fn(&Event) -> bool, timeout: Duration) -> Event {
    wait_access_in(|_| true, pred, timeout).await
}

/// [`wait_access`] among the events that `scope` selects; the panic message lists those.
pub async fn wait_access_in(scope: impl Fn(&Event) -> bool, pred: impl Fn(&Event) -> bool, timeout: Duration) -> Event {
    let start = Instant::now();
    loop {
        if let Some(e) = events(|e| scope(e) && pred(e)).into_iter().next() {
            return e;
        }
        if start.elapsed() > timeout {
            let seen = events(&scope);
            panic!(
                "no matching access event within {timeout:?}; {} event(s) of this test so far: {seen:#?}",
                seen.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Typed access to an [`Event`]'s fields.
pub trait EventExt {
    /// The field as text, `None` when absent.
    fn s(&self, field: &str) -> Option<&str>;
    /// The field as a number, `None` when absent or not a number.
    fn u(&self, field: &str) -> Option<u64>;
}

impl EventExt for Event {
    fn s(&self, field: &str) -> Option<&str> {
        self.get(field).map(String::as_str)
    }

    fn u(&self, field: &str) -> Option<u64> {
        self.get(field).and_then(|v| v.parse().ok())
    }
}

struct Capture;

impl<S: Subscriber> Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Fields(BTreeMap::new());
        event.record(&mut fields);
        EVENTS.lock().unwrap_or_else(|e| e.into_inner()).push(fields.0);
    }
}

struct Fields(Event);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // `%x` fields arrive here wrapped in a `DisplayValue`, whose `Debug` is the `Display`.
        self.0.insert(field.name().to_string(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_string(), value.to_string());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_string(), value.to_string());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_string(), value.to_string());
    }
}
