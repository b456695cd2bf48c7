//! Hand-built TLS ClientHellos, for what no TLS library will send: two `host_name` entries, a
//! non-ASCII name, padding past the sniff cap, a hello cut into tiny records.
//!
//! The hello offers TLS 1.3 and 1.2 with an x25519 key share, so a well-formed one is accepted by
//! a real server's parser (the support self-test feeds one to rustls).

/// A ClientHello to build.
#[derive(Clone, Debug)]
pub struct ClientHello {
    /// The `host_name` entries of the server_name extension, as raw bytes; the extension is
    /// left out when empty.
    pub names: Vec<Vec<u8>>,
    /// ALPN protocols offered; the extension is left out when empty.
    pub alpn: Vec<Vec<u8>>,
    /// Bytes of a padding extension (RFC 7685), left out when 0.
    pub padding: usize,
    /// The largest TLS record fragment; the handshake message is split across as many records
    /// as it needs.
    pub record_size: usize,
    /// Offer Encrypted Client Hello: an outer `encrypted_client_hello` extension (0xfe0d) with a
    /// made-up config id, encapsulated key and payload (the server cannot decrypt it and, per
    /// the ECH draft's "GREASE" behaviour, ignores it).
    pub ech: bool,
}

impl ClientHello {
    /// A hello naming `sni`.
    pub fn new(sni: &str) -> ClientHello {
        ClientHello::with_names(vec![sni.as_bytes().to_vec()])
    }

    /// A hello with these `host_name` entries, verbatim.
    pub fn with_names(names: Vec<Vec<u8>>) -> ClientHello {
        ClientHello { names, alpn: Vec::new(), padding: 0, record_size: 16384, ech: false }
    }

    /// Sets the padding length.
    pub fn padding(mut self, n: usize) -> ClientHello {
        self.padding = n;
        self
    }

    /// Sets the record fragment size.
    pub fn record_size(mut self, n: usize) -> ClientHello {
        assert!(n > 0);
        self.record_size = n;
        self
    }

    /// Offers ECH (see [`ClientHello::ech`]).
    pub fn ech(mut self) -> ClientHello {
        self.ech = true;
        self
    }

    /// Sets the ALPN protocols.
    pub fn alpn(mut self, protocols: &[&str]) -> ClientHello {
        self.alpn = protocols.iter().map(|p| p.as_bytes().to_vec()).collect();
        self
    }

    /// The handshake message (type 1, 24-bit length, body).
    pub fn handshake(&self) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&[0x03, 0x03]); // legacy_version TLS 1.2
        body.extend((0u8..32).map(|i| i.wrapping_mul(7).wrapping_add(1))); // random
        body.push(32); // legacy_session_id
        body.extend((0u8..32).map(|i| i ^ 0x5a));
        let suites: [u16; 5] = [0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f];
        put_u16(&mut body, (suites.len() * 2) as u16);
        for s in suites {
            put_u16(&mut body, s);
        }
        body.extend_from_slice(&[1, 0]); // compression: null

        let mut exts = Vec::new();
        if !self.names.is_empty() {
            let mut list = Vec::new();
            for name in &self.names {
                list.push(0); // host_name
                put_u16(&mut list, name.len() as u16);
                list.extend_from_slice(name);
            }
            let mut data = Vec::new();
            put_u16(&mut data, list.len() as u16);
            data.extend_from_slice(&list);
            ext(&mut exts, 0x0000, &data);
        }
        ext(&mut exts, 0x000a, &[0x00, 0x02, 0x00, 0x1d]); // supported_groups: x25519
        ext(&mut exts, 0x000d, &[0x00, 0x06, 0x04, 0x03, 0x08, 0x04, 0x04, 0x01]); // signature_algorithms
        ext(&mut exts, 0x002b, &[0x04, 0x03, 0x04, 0x03, 0x03]); // supported_versions: 1.3, 1.2
        ext(&mut exts, 0x002d, &[0x01, 0x01]); // psk_key_exchange_modes: psk_dhe_ke
        let mut share = vec![0x00, 0x24, 0x00, 0x1d, 0x00, 0x20];
        share.extend((0u8..32).map(|i| i.wrapping_mul(13).wrapping_add(9)));
        ext(&mut exts, 0x0033, &share); // key_share: x25519
        if !self.alpn.is_empty() {
            let mut list = Vec::new();
            for p in &self.alpn {
                list.push(p.len() as u8);
                list.extend_from_slice(p);
            }
            let mut data = Vec::new();
            put_u16(&mut data, list.len() as u16);
            data.extend_from_slice(&list);
            ext(&mut exts, 0x0010, &data);
        }
        if self.ech {
            // ECHClientHello, outer: type 0, HPKE suite (HKDF-SHA256, AES-128-GCM), config_id,
            // enc (32 bytes), payload (64 bytes).
            let mut data = vec![0x00, 0x00, 0x01, 0x00, 0x01, 0x2a, 0x00, 0x20];
            data.extend((0u8..32).map(|i| i.wrapping_mul(3)));
            data.extend_from_slice(&[0x00, 0x40]);
            data.extend((0u8..64).map(|i| i ^ 0xa5));
            ext(&mut exts, 0xfe0d, &data);
        }
        if self.padding > 0 {
            ext(&mut exts, 0x0015, &vec![0; self.padding]);
        }
        put_u16(&mut body, exts.len() as u16);
        body.extend_from_slice(&exts);

        let mut msg = vec![0x01];
        msg.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        msg.extend_from_slice(&body);
        msg
    }

    /// The hello as TLS records (content type 22, record version TLS 1.0 as clients send it).
    pub fn to_bytes(&self) -> Vec<u8> {
        let msg = self.handshake();
        let mut out = Vec::with_capacity(msg.len() + 5 * (msg.len() / self.record_size + 1));
        for fragment in msg.chunks(self.record_size) {
            out.extend_from_slice(&[0x16, 0x03, 0x01]);
            put_u16(&mut out, fragment.len() as u16);
            out.extend_from_slice(fragment);
        }
        out
    }
}

fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn ext(out: &mut Vec<u8>, kind: u16, data: &[u8]) {
    put_u16(out, kind);
    put_u16(out, data.len() as u16);
    out.extend_from_slice(data);
}
