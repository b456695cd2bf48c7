//! A real rustls ClientHello, as the benches and the comparison harness send it. Included with
//! `#[path]` where the rest of `support` is not needed.

use std::sync::Arc;

/// The first flight of a rustls client (ring provider, TLS 1.3 and 1.2, no roots) for `name`,
/// offering `alpn`: one record holding the ClientHello.
pub(crate) fn rustls_client_hello(name: &str, alpn: &[&[u8]]) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let server_name = rustls::pki_types::ServerName::try_from(name.to_string()).expect("a DNS name");
    let mut conn = rustls::ClientConnection::new(Arc::new(config), server_name).expect("client");
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).expect("write_tls");
    }
    out
}
