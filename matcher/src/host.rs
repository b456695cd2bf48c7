use crate::error::InvalidHost;

/// A normalised, validated host name: lowercase ASCII (punycode A-labels), no trailing dot.
#[derive(Clone)]
pub struct Host {
    buf: [u8; 253],
    len: u8,
}

impl Host {
    /// Normalises `name`.
    pub fn new(name: &str) -> Result<Host, InvalidHost> { let _ = name; unimplemented!() }
    /// Normalises raw bytes (e.g. an SNI `host_name`); non-UTF-8 is invalid.
    pub fn from_bytes(name: &[u8]) -> Result<Host, InvalidHost> { let _ = name; unimplemented!() }
    /// The normalised name.
    pub fn as_str(&self) -> &str { let _ = (&self.buf, self.len); unimplemented!() }
}
