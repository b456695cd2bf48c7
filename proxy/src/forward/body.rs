//! The bodies of forwarded requests and responses: counted as they stream, and the request's
//! access record emitted when the response body ends.
//!
//! This module owns byte counting of HTTP bodies and the moment a request's record is emitted
//! (the response's end, its failure, or the client going away first). It does not touch
//! headers or decide.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Response;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::access::Access;
use crate::generation::Generation;
use crate::outcome::{Failure, Outcome};

/// The body of every response the gateway sends.
pub(crate) type ResBody = BoxBody<Bytes, hyper::Error>;

/// An empty response body.
pub(crate) fn empty() -> ResBody {
    Empty::new().map_err(|never: Infallible| match never {}).boxed()
}

/// A refusal or status response with its fixed body, as the gateway's body type.
pub(crate) fn fixed(res: Response<Full<Bytes>>) -> Response<ResBody> {
    res.map(|b| b.map_err(|never: Infallible| match never {}).boxed())
}

/// A request body that counts its bytes.
#[derive(Debug)]
pub(crate) struct Counted {
    inner: Incoming,
    count: Arc<AtomicU64>,
}

impl Counted {
    /// Counts `inner`'s data bytes into `count`.
    pub(crate) fn new(inner: Incoming, count: Arc<AtomicU64>) -> Counted {
        Counted { inner, count }
    }
}

impl Body for Counted {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                self.count.fetch_add(data.len() as u64, Ordering::Relaxed);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that counts its bytes and emits the request's access record when it ends
/// (or is dropped: the client went away).
pub(crate) struct Logged {
    inner: Incoming,
    gen: Arc<Generation>,
    access: Option<Access>,
    up: Arc<AtomicU64>,
    down: u64,
}

impl Logged {
    /// Streams `inner` and emits `access` through `gen` when it ends; `up` is the request
    /// body's count.
    pub(crate) fn new(inner: Incoming, gen: Arc<Generation>, access: Access, up: Arc<AtomicU64>) -> Logged {
        Logged { inner, gen, access: Some(access), up, down: 0 }
    }

    fn finish(&mut self, failure: Option<Failure>) {
        if let Some(mut access) = self.access.take() {
            access.bytes_up = self.up.load(Ordering::Relaxed);
            access.bytes_down = self.down;
            if let Some(f) = failure {
                access.fail(f.outcome, f.detail);
            }
            self.gen.emit(&access);
        }
    }
}

impl Body for Logged {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.down += data.len() as u64;
                }
            }
            Poll::Ready(Some(Err(e))) => {
                let f = Failure::new(Outcome::UpstreamError, format!("response body: {e}"));
                self.finish(Some(f));
            }
            Poll::Ready(None) => self.finish(None),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        if self.access.is_some() {
            let ended = self.inner.is_end_stream();
            self.finish(
                (!ended).then(|| Failure::new(Outcome::ClientError, "client went away before the response ended")),
            );
        }
    }
}
