//! The admin listener: `/metrics`, `/healthz`, `/readyz`, `/policy` and the PAC file over plain HTTP/1.1
//! (hyper), one task per connection, keep-alive. It owns the routes, their status codes and
//! content types; it does not own what they report (an [`AdminState`] supplies the metrics text,
//! readiness and the policy summary) nor where it listens. It has no authentication and no TLS:
//! bind it to loopback or a management network.
//!
//! | Route | `GET` / `HEAD` |
//! |---|---|
//! | `/metrics` | 200, `application/openmetrics-text; version=1.0.0; charset=utf-8` |
//! | `/healthz` | 200 `ok` (the process answers) |
//! | `/readyz` | 200 `ready`, or 503 and the reason |
//! | `/policy` | 200, `application/json` |
//! | `/proxy.pac`, `/wpad.dat` | 200, `application/x-ns-proxy-autoconfig` (clients in no group; `?group=NAME`), `ETag`, 304 ([`crate::pac::respond`]) |
//! | `/`, `/rules`, `/recent`, `/top` | the operator's view (`crate::status`): HTML, JSON |
//!
//! Any other method on these paths is 405 with `allow: GET, HEAD`; any other path is 404.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::policy::GroupId;

/// The content type of `/metrics`.
pub(crate) const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";
/// How long a client may take to send a request's head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The pause after a failed accept (out of file descriptors), so as not to spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What the admin endpoints report.
pub(crate) trait AdminState: Send + Sync + 'static {
    /// The body of `/metrics`: the OpenMetrics text exposition.
    fn metrics(&self) -> String;
    /// For `/readyz`: `Ok` when the gateway serves (200 `ready`), or why not (503 and the reason).
    fn ready(&self) -> Result<(), String>;
    /// The body of `/policy`.
    fn policy_json(&self) -> serde_json::Value;
    /// The PAC files of the generation in force.
    fn pac(&self) -> Option<Arc<crate::pac::Pac>>;
    /// The operator's view (`crate::status`: `/`, `/rules`, `/recent`, `/top`); `None` when
    /// this state has none.
    fn page(&self, _path: &str, _query: Option<&str>) -> Option<crate::status::Page> {
        None
    }
}

/// Serves the admin endpoints on `listener` until the returned future is dropped (or the task
/// running it aborted); dropping it also ends every connection it is serving.
pub(crate) async fn serve(listener: TcpListener, state: Arc<dyn AdminState>) {
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "admin: accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let state = state.clone();
        connections.spawn(async move {
            let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                let response = if crate::pac::is_pac_path(req.uri().path()) {
                    let pac = state.pac();
                    crate::pac::respond(pac.as_deref(), req.method(), req.uri(), req.headers(), GroupId::NONE)
                } else {
                    respond(&*state, req.method(), req.uri().path(), req.uri().query())
                };
                async move { Ok::<_, Infallible>(response) }
            });
            let result = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "admin: connection ended with an error");
            }
        });
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    Metrics,
    Healthz,
    Readyz,
    Policy,
}

impl Route {
    fn of(path: &str) -> Option<Route> {
        match path {
            "/metrics" => Some(Route::Metrics),
            "/healthz" => Some(Route::Healthz),
            "/readyz" => Some(Route::Readyz),
            "/policy" => Some(Route::Policy),
            _ => None,
        }
    }
}

/// The response to `method path`. For `HEAD` the body is built anyway, so that `content-length`
/// is the `GET` one's; hyper does not send it.
fn respond(state: &dyn AdminState, method: &Method, path: &str, query: Option<&str>) -> Response<Full<Bytes>> {
    let Some(route) = Route::of(path) else {
        let page = (method == Method::GET || method == Method::HEAD).then(|| state.page(path, query)).flatten();
        return match page {
            Some(page) => page_response(page),
            None if crate::status::PATHS.contains(&path) && method != Method::GET && method != Method::HEAD => {
                let mut r = response(StatusCode::METHOD_NOT_ALLOWED, TEXT, "method not allowed\n");
                r.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
                r
            }
            None => response(StatusCode::NOT_FOUND, TEXT, "not found\n"),
        };
    };
    if method != Method::GET && method != Method::HEAD {
        let mut r = response(StatusCode::METHOD_NOT_ALLOWED, TEXT, "method not allowed\n");
        r.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match route {
        Route::Metrics => response(StatusCode::OK, METRICS_CONTENT_TYPE, state.metrics()),
        Route::Healthz => response(StatusCode::OK, TEXT, "ok\n"),
        Route::Readyz => match state.ready() {
            Ok(()) => response(StatusCode::OK, TEXT, "ready\n"),
            Err(reason) => response(StatusCode::SERVICE_UNAVAILABLE, TEXT, format!("{}\n", reason.trim_end())),
        },
        Route::Policy => match serde_json::to_vec_pretty(&state.policy_json()) {
            Ok(mut body) => {
                body.push(b'\n');
                response(StatusCode::OK, JSON, body)
            }
            Err(e) => {
                tracing::debug!(error = %e, "admin: /policy did not serialise");
                response(StatusCode::INTERNAL_SERVER_ERROR, TEXT, "internal error\n")
            }
        },
    }
}

/// A response of the operator's view: read-only, never cached, never sniffed, and for HTML a
/// content security policy that allows nothing but the page's own style and script.
fn page_response(page: crate::status::Page) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(page.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = response(status, page.content_type, page.body);
    let h = r.headers_mut();
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    if let Some(csp) = page.csp.and_then(|c| HeaderValue::from_str(c).ok()) {
        h.insert("content-security-policy", csp);
    }
    r
}

fn response(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Mutex;

    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpStream;

    use super::*;

    #[derive(Debug)]
    struct State {
        ready: Mutex<Result<(), String>>,
    }

    impl AdminState for State {
        fn metrics(&self) -> String {
            "# TYPE hostgate_up gauge\nhostgate_up 1\n# EOF\n".to_owned()
        }
        fn ready(&self) -> Result<(), String> {
            self.ready.lock().expect("lock").clone()
        }
        fn policy_json(&self) -> serde_json::Value {
            serde_json::json!({ "generation": 3, "default": "deny", "rules": { "allow": 2 } })
        }
        fn pac(&self) -> Option<Arc<crate::pac::Pac>> {
            None
        }
    }

    struct Reply {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    }

    impl Reply {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
        }
    }

    async fn start(ready: Result<(), String>) -> (SocketAddr, Arc<State>, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(State { ready: Mutex::new(ready) });
        let task = tokio::spawn(serve(listener, state.clone()));
        (addr, state, task)
    }

    /// Sends one request on `conn` and reads one response (its body by `content-length`; none
    /// for `HEAD`).
    async fn exchange(conn: &mut BufReader<TcpStream>, method: &str, path: &str) -> Reply {
        let req = format!("{method} {path} HTTP/1.1\r\nhost: admin.test\r\n\r\n");
        conn.get_mut().write_all(req.as_bytes()).await.expect("write");
        let mut line = String::new();
        conn.read_line(&mut line).await.expect("status line");
        let status = line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("status: {line:?}"));
        let mut headers = Vec::new();
        loop {
            line.clear();
            conn.read_line(&mut line).await.expect("header");
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let (n, v) = l.split_once(':').expect("header colon");
            headers.push((n.to_owned(), v.trim().to_owned()));
        }
        let mut reply = Reply { status, headers, body: String::new() };
        let len: usize = reply.header("content-length").expect("content-length").parse().expect("length");
        if method != "HEAD" {
            let mut body = vec![0; len];
            conn.read_exact(&mut body).await.expect("body");
            reply.body = String::from_utf8(body).expect("utf-8");
        }
        reply
    }

    async fn get(addr: SocketAddr, method: &str, path: &str) -> Reply {
        let mut conn = BufReader::new(TcpStream::connect(addr).await.expect("connect"));
        exchange(&mut conn, method, path).await
    }

    #[tokio::test]
    async fn metrics() {
        let (addr, _, _task) = start(Ok(())).await;
        let r = get(addr, "GET", "/metrics").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some(METRICS_CONTENT_TYPE));
        assert_eq!(r.body, "# TYPE hostgate_up gauge\nhostgate_up 1\n# EOF\n");
    }

    #[tokio::test]
    async fn healthz() {
        let (addr, _, _task) = start(Err("starting".into())).await;
        let r = get(addr, "GET", "/healthz").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some(TEXT));
        assert_eq!(r.body, "ok\n");
    }

    #[tokio::test]
    async fn readyz_follows_the_state() {
        let (addr, state, _task) = start(Err("policy not loaded".into())).await;
        let r = get(addr, "GET", "/readyz").await;
        assert_eq!(r.status, 503);
        assert_eq!(r.header("content-type"), Some(TEXT));
        assert_eq!(r.body, "policy not loaded\n");
        *state.ready.lock().expect("lock") = Ok(());
        let r = get(addr, "GET", "/readyz").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body, "ready\n");
    }

    #[tokio::test]
    async fn policy() {
        let (addr, _, _task) = start(Ok(())).await;
        let r = get(addr, "GET", "/policy?x=1").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some(JSON));
        assert!(r.body.ends_with('\n'));
        let v: serde_json::Value = serde_json::from_str(&r.body).expect("json");
        assert_eq!(v["generation"], 3);
        assert_eq!(v["rules"]["allow"], 2);
    }

    #[tokio::test]
    async fn head_has_headers_and_no_body() {
        let (addr, _, _task) = start(Err("draining".into())).await;
        let mut conn = BufReader::new(TcpStream::connect(addr).await.expect("connect"));
        for (path, status, ctype) in [
            ("/metrics", 200, METRICS_CONTENT_TYPE),
            ("/healthz", 200, TEXT),
            ("/readyz", 503, TEXT),
            ("/policy", 200, JSON),
        ] {
            let head = exchange(&mut conn, "HEAD", path).await;
            // A GET on the same connection right after reads cleanly only if HEAD sent no body.
            let get = exchange(&mut conn, "GET", path).await;
            assert_eq!((head.status, get.status), (status, status), "{path}");
            assert_eq!(head.header("content-type"), Some(ctype), "{path}");
            assert_eq!(head.header("content-length"), get.header("content-length"), "{path}");
            assert!(head.body.is_empty());
            assert!(!get.body.is_empty());
        }
    }

    #[tokio::test]
    async fn unknown_path_is_404() {
        let (addr, _, _task) = start(Ok(())).await;
        for (method, path) in [("GET", "/"), ("GET", "/metrics/"), ("POST", "/nope"), ("GET", "/METRICS")] {
            let r = get(addr, method, path).await;
            assert_eq!(r.status, 404, "{method} {path}");
            assert_eq!(r.body, "not found\n");
        }
    }

    #[tokio::test]
    async fn other_methods_are_405() {
        let (addr, _, _task) = start(Ok(())).await;
        for (method, path) in [("POST", "/metrics"), ("PUT", "/healthz"), ("DELETE", "/readyz"), ("OPTIONS", "/policy")]
        {
            let r = get(addr, method, path).await;
            assert_eq!(r.status, 405, "{method} {path}");
            assert_eq!(r.header("allow"), Some("GET, HEAD"));
        }
    }

    #[tokio::test]
    async fn keep_alive_serves_two_requests_on_one_connection() {
        let (addr, _, _task) = start(Ok(())).await;
        let mut conn = BufReader::new(TcpStream::connect(addr).await.expect("connect"));
        let first = exchange(&mut conn, "GET", "/healthz").await;
        let second = exchange(&mut conn, "GET", "/metrics").await;
        assert_eq!((first.status, first.body.as_str()), (200, "ok\n"));
        assert_eq!(second.status, 200);
        assert!(second.body.ends_with("# EOF\n"));
        assert_eq!(first.header("connection"), None);
    }

    #[tokio::test]
    async fn dropping_serve_closes_its_connections() {
        let (addr, _, task) = start(Ok(())).await;
        let mut conn = BufReader::new(TcpStream::connect(addr).await.expect("connect"));
        assert_eq!(exchange(&mut conn, "GET", "/healthz").await.status, 200);
        task.abort();
        let _ = task.await;
        let mut rest = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut rest))
            .await
            .expect("the connection closes")
            .unwrap_or(0);
        assert_eq!(n, 0);
        assert!(TcpStream::connect(addr).await.is_err());
    }

    #[tokio::test]
    async fn the_header_read_timeout_is_set() {
        // A client that never finishes its head is cut off after 5 s.
        let (addr, _, _task) = start(Ok(())).await;
        let mut conn = TcpStream::connect(addr).await.expect("connect");
        conn.write_all(b"GET /healthz HTTP/1.1\r\n").await.expect("write");
        let mut rest = Vec::new();
        let started = std::time::Instant::now();
        let read = tokio::time::timeout(Duration::from_secs(15), conn.read_to_end(&mut rest)).await;
        assert!(read.is_ok(), "still open after 15 s");
        assert!(started.elapsed() >= Duration::from_secs(4), "closed early: {:?}", started.elapsed());
    }
}
