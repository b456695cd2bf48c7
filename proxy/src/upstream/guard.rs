//! The SSRF guard: decides whether an upstream IP address is one the gateway may connect to.
//!
//! A client names a host; DNS (or a client-chosen destination) turns it into addresses, and some
//! of those may point back inside: loopback, the private networks, link-local (where cloud metadata
//! services live, 169.254.169.254), and so on. [`Guard::check`] refuses those unless the operator
//! listed the network in `[upstream] allow_private`.
//!
//! It owns only that decision, for one address at a time. It does not resolve names, connect, or
//! choose among addresses: the caller must check *every* address it may connect to, and connect to
//! exactly the address it checked (resolving again between the check and the connect would let a
//! DNS rebinding answer slip through). Mapping a [`Blocked`] to what the client sees happens
//! elsewhere.
//!
//! IPv6 forms that carry an IPv4 address (IPv4-mapped, IPv4-compatible, NAT64, 6to4, Teredo) are
//! judged by the IPv4 address they lead to, so `::ffff:127.0.0.1` or `64:ff9b::a9fe:a9fe` cannot
//! be used to reach loopback or the metadata service.
//!
//! | range | blocked as |
//! | --- | --- |
//! | `0.0.0.0/8` | unspecified / this network |
//! | `10.0.0.0/8`, `172.16.0.0/12`, `192.168.0.0/16` | private |
//! | `100.64.0.0/10` | shared (CGNAT) |
//! | `127.0.0.0/8` | loopback |
//! | `169.254.0.0/16` | link-local |
//! | `192.0.0.0/24` | IETF protocol assignments |
//! | `198.18.0.0/15` | benchmarking |
//! | `224.0.0.0/4` | multicast |
//! | `255.255.255.255/32`, `240.0.0.0/4` | broadcast, reserved |
//! | `::/128`, `::1/128` | unspecified, loopback |
//! | `fe80::/10`, `fec0::/10`, `fc00::/7`, `ff00::/8` | link-local, site-local, unique local, multicast |
//! | `::ffff:0:0/96`, `::/96`, `64:ff9b::/96`, `64:ff9b:1::/48`, `2002::/16`, `2001::/32` | by the IPv4 address inside |
//!
//! The documentation ranges (`192.0.2.0/24`, `198.51.100.0/24`, `203.0.113.0/24`, `2001:db8::/32`)
//! are deliberately *not* blocked: nothing routes them on the internet, so they are harmless, and
//! the tests use them as stand-ins for public addresses.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// Which address ranges a connection may not reach unless allowed.
#[derive(Clone, Debug, Default)]
pub(crate) struct Guard {
    /// Networks exempt from the guard (`[upstream] allow_private`).
    allow_private: Vec<IpNet>,
}

impl Guard {
    /// A guard that blocks every range in the module table except those inside `allow_private`.
    pub(crate) fn new(allow_private: Vec<IpNet>) -> Guard {
        Guard { allow_private }
    }

    /// `Ok(())` if `ip` may be connected to; `Err(Blocked)` naming the range otherwise.
    ///
    /// An address inside any `allow_private` network is always `Ok`. For IPv6 forms that embed an
    /// IPv4 address, `allow_private` is matched against both the address as given and the embedded
    /// IPv4 address, so allowing `127.0.0.0/8` also lets `::ffff:127.0.0.1` through.
    pub(crate) fn check(&self, ip: IpAddr) -> Result<(), Blocked> {
        if self.allowed(ip) {
            return Ok(());
        }
        let range = match ip {
            IpAddr::V4(v4) => v4_range(v4).map(|r| r.desc[Form::Plain as usize]),
            IpAddr::V6(v6) => match embedded_v4(v6) {
                Some((_, v4)) if self.allowed(IpAddr::V4(v4)) => None,
                Some((form, v4)) => v4_range(v4).map(|r| r.desc[form as usize]),
                None => v6_range(v6),
            },
        };
        match range {
            Some(range) => Err(Blocked { ip, range }),
            None => Ok(()),
        }
    }

    fn allowed(&self, ip: IpAddr) -> bool {
        self.allow_private.iter().any(|net| net.contains(&ip))
    }
}

/// Why [`Guard::check`] refused an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Blocked {
    /// The address as it was checked (for an IPv6 form embedding IPv4, the IPv6 address).
    pub ip: IpAddr,
    /// What the range is, with the range itself: `"loopback (127.0.0.0/8)"`,
    /// `"IPv4-mapped private (10.0.0.0/8)"`.
    pub range: &'static str,
}

impl fmt::Display for Blocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} is {}", self.ip, self.range)
    }
}

impl std::error::Error for Blocked {}

/// How an IPv4 address reached the guard: the index into [`V4Range::desc`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Form {
    Plain = 0,
    /// `::ffff:a.b.c.d` (RFC 4291).
    Mapped,
    /// `::a.b.c.d` (RFC 4291, deprecated).
    Compatible,
    /// `64:ff9b::a.b.c.d` (RFC 6052 well-known prefix).
    Nat64,
    /// `64:ff9b:1::/48` (RFC 8215 local-use prefix).
    LocalNat64,
    /// `2002:aabb:ccdd::/48` (RFC 3056).
    SixToFour,
    /// `2001:0:<server>:<flags>:<port>:<client>` (RFC 4380), the client inverted.
    Teredo,
}

/// A blocked IPv4 range, with its description for each [`Form`].
struct V4Range {
    net: u32,
    len: u32,
    desc: [&'static str; 7],
}

/// Builds [`V4_RANGES`]; `concat!` makes every description a `&'static str` at compile time.
macro_rules! v4_ranges {
    ($( [$a:literal, $b:literal, $c:literal, $d:literal] / $len:literal => $what:literal, )*) => {
        /// Blocked IPv4 ranges, first match wins (so broadcast comes before the reserved /4).
        const V4_RANGES: &[V4Range] = &[$(
            V4Range {
                net: u32::from_be_bytes([$a, $b, $c, $d]),
                len: $len,
                desc: [
                    concat!($what, " (", $a, ".", $b, ".", $c, ".", $d, "/", $len, ")"),
                    concat!("IPv4-mapped ", $what, " (", $a, ".", $b, ".", $c, ".", $d, "/", $len, ")"),
                    concat!("IPv4-compatible ", $what, " (", $a, ".", $b, ".", $c, ".", $d, "/", $len, ")"),
                    concat!("NAT64 ", $what, " (", $a, ".", $b, ".", $c, ".", $d, "/", $len, ")"),
                    concat!("local-use NAT64 ", $what, " (", $a, ".", $b, ".", $c, ".", $d, "/", $len, ")"),
                    concat!("6to4 ", $what, " (", $a, ".", $b, ".", $c, ".", $d, "/", $len, ")"),
                    concat!("Teredo ", $what, " (", $a, ".", $b, ".", $c, ".", $d, "/", $len, ")"),
                ],
            },
        )*];
    };
}

// The documentation ranges 192.0.2.0/24, 198.51.100.0/24 and 203.0.113.0/24 are left out on
// purpose: see the module docs.
v4_ranges! {
    [0, 0, 0, 0] / 8 => "unspecified or this-network",
    [10, 0, 0, 0] / 8 => "private",
    [100, 64, 0, 0] / 10 => "shared CGNAT",
    [127, 0, 0, 0] / 8 => "loopback",
    [169, 254, 0, 0] / 16 => "link-local",
    [172, 16, 0, 0] / 12 => "private",
    [192, 0, 0, 0] / 24 => "IETF protocol assignment",
    [192, 168, 0, 0] / 16 => "private",
    [198, 18, 0, 0] / 15 => "benchmarking",
    [224, 0, 0, 0] / 4 => "multicast",
    [255, 255, 255, 255] / 32 => "broadcast",
    [240, 0, 0, 0] / 4 => "reserved",
}

/// Blocked IPv6 ranges (the forms embedding IPv4 are handled by [`embedded_v4`] first).
const V6_RANGES: &[(u128, u32, &str)] = &[
    (0, 128, "unspecified (::/128)"),
    (1, 128, "loopback (::1/128)"),
    (0xfe80 << 112, 10, "link-local (fe80::/10)"),
    (0xfec0 << 112, 10, "site-local, deprecated (fec0::/10)"),
    (0xfc00 << 112, 7, "unique local (fc00::/7)"),
    (0xff00 << 112, 8, "multicast (ff00::/8)"),
];

fn v4_range(ip: Ipv4Addr) -> Option<&'static V4Range> {
    let bits = u32::from(ip);
    V4_RANGES.iter().find(|r| bits & mask32(r.len) == r.net)
}

fn v6_range(ip: Ipv6Addr) -> Option<&'static str> {
    let bits = u128::from(ip);
    V6_RANGES.iter().find(|&&(net, len, _)| bits & mask128(len) == net).map(|&(_, _, desc)| desc)
}

/// The IPv4 address an IPv6 address leads to, for the forms that carry one.
///
/// The local-use NAT64 prefix is read as a /96 (IPv4 in the last 32 bits), the layout every
/// deployment of it we know uses; RFC 6052's shorter layouts would put the address elsewhere.
fn embedded_v4(ip: Ipv6Addr) -> Option<(Form, Ipv4Addr)> {
    let bits = u128::from(ip);
    // Truncation is the point: each form keeps the IPv4 address in a known 32-bit slice.
    let low = Ipv4Addr::from(bits as u32);
    let in_net = |net: u128, len: u32| bits & mask128(len) == net;
    if in_net(0xffff << 32, 96) {
        Some((Form::Mapped, low))
    } else if in_net(0, 96) {
        // `::` and `::1` are in ::/96 too, but are their own IPv6 ranges.
        (bits > 1).then_some((Form::Compatible, low))
    } else if in_net(0x0064_ff9b << 96, 96) {
        Some((Form::Nat64, low))
    } else if in_net(0x0064_ff9b_0001 << 80, 48) {
        Some((Form::LocalNat64, low))
    } else if in_net(0x2002 << 112, 16) {
        Some((Form::SixToFour, Ipv4Addr::from((bits >> 80) as u32)))
    } else if in_net(0x2001_0000 << 96, 32) {
        Some((Form::Teredo, Ipv4Addr::from(!(bits as u32))))
    } else {
        None
    }
}

/// The top `len` bits set (`len` ≤ 32).
const fn mask32(len: u32) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - len)
    }
}

/// The top `len` bits set (`len` ≤ 128).
const fn mask128(len: u32) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    /// Address → `None` if allowed, `Some(range)` if blocked, with the default (empty) allow list.
    const TABLE: &[(&str, Option<&str>)] = &[
        // Public, and the documentation ranges that stand in for public addresses.
        ("1.1.1.1", None),
        ("8.8.8.8", None),
        ("203.0.113.5", None),
        ("192.0.2.1", None),
        ("198.51.100.7", None),
        ("2606:4700::1111", None),
        ("2001:db8::1", None),
        // Just outside blocked ranges.
        ("9.255.255.255", None),
        ("11.0.0.0", None),
        ("100.63.255.255", None),
        ("100.128.0.0", None),
        ("172.15.255.255", None),
        ("172.32.0.0", None),
        ("192.0.1.255", None),
        ("192.167.255.255", None),
        ("192.169.0.0", None),
        ("198.17.255.255", None),
        ("198.20.0.0", None),
        ("223.255.255.255", None),
        ("169.253.255.255", None),
        // IPv4.
        ("0.0.0.0", Some("unspecified or this-network (0.0.0.0/8)")),
        ("0.1.2.3", Some("unspecified or this-network (0.0.0.0/8)")),
        ("10.0.0.1", Some("private (10.0.0.0/8)")),
        ("10.255.255.255", Some("private (10.0.0.0/8)")),
        ("172.16.0.1", Some("private (172.16.0.0/12)")),
        ("172.31.255.254", Some("private (172.16.0.0/12)")),
        ("192.168.1.1", Some("private (192.168.0.0/16)")),
        ("127.0.0.1", Some("loopback (127.0.0.0/8)")),
        ("127.255.255.254", Some("loopback (127.0.0.0/8)")),
        ("169.254.169.254", Some("link-local (169.254.0.0/16)")),
        ("100.64.0.1", Some("shared CGNAT (100.64.0.0/10)")),
        ("100.127.255.255", Some("shared CGNAT (100.64.0.0/10)")),
        ("224.0.0.1", Some("multicast (224.0.0.0/4)")),
        ("239.255.255.250", Some("multicast (224.0.0.0/4)")),
        ("240.0.0.1", Some("reserved (240.0.0.0/4)")),
        ("255.255.255.254", Some("reserved (240.0.0.0/4)")),
        ("255.255.255.255", Some("broadcast (255.255.255.255/32)")),
        ("192.0.0.8", Some("IETF protocol assignment (192.0.0.0/24)")),
        ("192.0.0.170", Some("IETF protocol assignment (192.0.0.0/24)")),
        ("198.18.0.1", Some("benchmarking (198.18.0.0/15)")),
        ("198.19.255.255", Some("benchmarking (198.18.0.0/15)")),
        // IPv6.
        ("::", Some("unspecified (::/128)")),
        ("::1", Some("loopback (::1/128)")),
        ("fe80::1", Some("link-local (fe80::/10)")),
        ("febf:ffff::1", Some("link-local (fe80::/10)")),
        ("fec0::1", Some("site-local, deprecated (fec0::/10)")),
        ("fc00::1", Some("unique local (fc00::/7)")),
        ("fd12:3456::1", Some("unique local (fc00::/7)")),
        ("ff02::1", Some("multicast (ff00::/8)")),
        ("fe00::1", None),
        ("2001:4860:4860::8888", None),
        // IPv4-mapped.
        ("::ffff:127.0.0.1", Some("IPv4-mapped loopback (127.0.0.0/8)")),
        ("::ffff:169.254.169.254", Some("IPv4-mapped link-local (169.254.0.0/16)")),
        ("::ffff:10.1.2.3", Some("IPv4-mapped private (10.0.0.0/8)")),
        ("::ffff:0.0.0.0", Some("IPv4-mapped unspecified or this-network (0.0.0.0/8)")),
        ("::ffff:1.1.1.1", None),
        ("::ffff:203.0.113.5", None),
        // IPv4-compatible (deprecated).
        ("::127.0.0.1", Some("IPv4-compatible loopback (127.0.0.0/8)")),
        ("::192.168.0.1", Some("IPv4-compatible private (192.168.0.0/16)")),
        ("::2", Some("IPv4-compatible unspecified or this-network (0.0.0.0/8)")),
        ("::1.1.1.1", None),
        // NAT64, well-known and local-use prefixes.
        ("64:ff9b::127.0.0.1", Some("NAT64 loopback (127.0.0.0/8)")),
        ("64:ff9b::a9fe:a9fe", Some("NAT64 link-local (169.254.0.0/16)")),
        ("64:ff9b::1.1.1.1", None),
        ("64:ff9b:1::10.0.0.1", Some("local-use NAT64 private (10.0.0.0/8)")),
        ("64:ff9b:1:abcd::a9fe:a9fe", Some("local-use NAT64 link-local (169.254.0.0/16)")),
        ("64:ff9b:1::203.0.113.5", None),
        // 6to4: the IPv4 address is bits 16..48.
        ("2002:0a00:0001::1", Some("6to4 private (10.0.0.0/8)")),
        ("2002:7f00:0001:1234::5", Some("6to4 loopback (127.0.0.0/8)")),
        ("2002:a9fe:a9fe::", Some("6to4 link-local (169.254.0.0/16)")),
        ("2002:0101:0101::1", None),
        // Teredo: the client is the last 32 bits inverted. 127.0.0.1 → 80ff:fffe.
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", Some("Teredo loopback (127.0.0.0/8)")),
        ("2001::f5ff:fffe", Some("Teredo private (10.0.0.0/8)")),
        // RFC 4380's example: client 192.0.2.45 (documentation, so allowed).
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", None),
        ("2001:1::1", None),
    ];

    #[test]
    fn table() {
        let guard = Guard::default();
        for &(addr, want) in TABLE {
            let got = guard.check(ip(addr)).err().map(|b| b.range);
            assert_eq!(got, want, "{addr}");
        }
    }

    #[test]
    fn blocked_names_the_address_as_given() {
        let err = Guard::default().check(ip("::ffff:127.0.0.1")).unwrap_err();
        assert_eq!(err, Blocked { ip: ip("::ffff:127.0.0.1"), range: "IPv4-mapped loopback (127.0.0.0/8)" });
        assert_eq!(err.to_string(), "::ffff:127.0.0.1 is IPv4-mapped loopback (127.0.0.0/8)");
        let err = Guard::default().check(ip("10.0.0.1")).unwrap_err();
        assert_eq!(err.to_string(), "10.0.0.1 is private (10.0.0.0/8)");
    }

    #[test]
    fn allow_private_overrides() {
        let guard = Guard::new(vec![net("127.0.0.0/8"), net("fd00::/8"), net("10.1.0.0/16")]);
        for allowed in [
            "127.0.0.1",
            "127.1.2.3",
            "::ffff:127.0.0.1",
            "::127.0.0.1",
            "64:ff9b::127.0.0.1",
            "2002:7f00:0001::1",
            "2001:0:4136:e378:8000:63bf:80ff:fffe",
            "fd12::1",
            "10.1.2.3",
            "::ffff:10.1.2.3",
            // Still allowed: public addresses.
            "1.1.1.1",
            "2606:4700::1111",
        ] {
            assert_eq!(guard.check(ip(allowed)), Ok(()), "{allowed}");
        }
        for (blocked, range) in [
            ("10.0.0.1", "private (10.0.0.0/8)"),
            ("::ffff:10.0.0.1", "IPv4-mapped private (10.0.0.0/8)"),
            ("::1", "loopback (::1/128)"),
            ("fc00::1", "unique local (fc00::/7)"),
            ("169.254.169.254", "link-local (169.254.0.0/16)"),
        ] {
            assert_eq!(guard.check(ip(blocked)).map_err(|b| b.range), Err(range), "{blocked}");
        }
    }

    #[test]
    fn allow_private_matches_the_ipv6_form_as_given() {
        // An operator who allows the mapped range itself gets it, even though the IPv4 inside
        // is loopback.
        let guard = Guard::new(vec![net("::ffff:127.0.0.0/104"), net("::1/128")]);
        assert_eq!(guard.check(ip("::ffff:127.0.0.1")), Ok(()));
        assert_eq!(guard.check(ip("::1")), Ok(()));
        assert!(guard.check(ip("127.0.0.1")).is_err());
    }

    #[test]
    fn every_description_names_its_range() {
        for r in V4_RANGES {
            let cidr = format!("({}/{})", Ipv4Addr::from(r.net), r.len);
            assert_eq!(r.net & !mask32(r.len), 0, "{cidr} has host bits");
            for desc in r.desc {
                assert!(desc.ends_with(&cidr), "{desc} vs {cidr}");
            }
        }
        for &(net, len, desc) in V6_RANGES {
            assert_eq!(net & !mask128(len), 0, "{desc} has host bits");
            assert!(desc.ends_with(&format!("({}/{len})", Ipv6Addr::from(net))), "{desc}");
        }
    }

    #[test]
    fn guard_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Guard>();
        assert_send_sync::<Blocked>();
    }
}
