//! A rule's port constraint: one port, a range, or a list of them (`443`, `3478-3481`,
//! `80,443,3478-3481`).
//!
//! This module owns the syntax and the set operations the policy and its lint need (contains,
//! covers, overlaps). It knows nothing of rules or transports.

use std::fmt;

/// An inclusive range of ports, `lo <= hi`, both non-zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    /// The first port.
    pub lo: u16,
    /// The last port (equal to `lo` for one port).
    pub hi: u16,
}

impl PortRange {
    /// Whether `port` is in the range.
    pub fn contains(self, port: u16) -> bool {
        self.lo <= port && port <= self.hi
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lo == self.hi {
            write!(f, "{}", self.lo)
        } else {
            write!(f, "{}-{}", self.lo, self.hi)
        }
    }
}

/// A port constraint: the ports and ranges as written, in their order.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Ports(Box<[PortRange]>);

impl Ports {
    /// One port.
    pub fn one(port: u16) -> Ports {
        Ports(Box::new([PortRange { lo: port, hi: port }]))
    }

    /// Parses `443`, `3478-3481` or a comma-separated list of them. Errors are messages.
    pub fn parse(text: &str) -> Result<Ports, String> {
        let bad = || format!("bad port `{text}` (1-65535, a range LO-HI, or a comma-separated list of them)");
        let number = |s: &str| match s.parse::<u16>() {
            Ok(n) if n > 0 && s.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
            _ => Err(bad()),
        };
        let mut out = Vec::new();
        for item in text.split(',') {
            let range = match item.split_once('-') {
                Some((lo, hi)) => {
                    let (lo, hi) = (number(lo)?, number(hi)?);
                    if lo > hi {
                        return Err(format!(
                            "bad port range `{item}` in `{text}`: the first port must not exceed the last"
                        ));
                    }
                    PortRange { lo, hi }
                }
                None => {
                    let n = number(item)?;
                    PortRange { lo: n, hi: n }
                }
            };
            out.push(range);
        }
        Ok(Ports(out.into_boxed_slice()))
    }

    /// The ranges, in the order written.
    pub fn ranges(&self) -> &[PortRange] {
        &self.0
    }

    /// Whether `port` is one of them.
    pub fn contains(&self, port: u16) -> bool {
        self.0.iter().any(|r| r.contains(port))
    }

    /// Whether every port of `other` is one of these.
    pub fn covers(&self, other: &Ports) -> bool {
        other.merged().iter().all(|o| {
            // Each of `other`'s merged ranges must sit inside one of our merged ranges.
            self.merged().iter().any(|s| s.lo <= o.lo && o.hi <= s.hi)
        })
    }

    /// Whether some port is in both.
    pub fn overlaps(&self, other: &Ports) -> bool {
        self.0.iter().any(|a| other.0.iter().any(|b| a.lo <= b.hi && b.lo <= a.hi))
    }

    /// The ranges sorted, with overlapping and adjacent ones joined (`80,443,444-450` is
    /// `80,443-450`).
    pub fn merged(&self) -> Vec<PortRange> {
        let mut v = self.0.to_vec();
        v.sort_unstable();
        let mut out: Vec<PortRange> = Vec::with_capacity(v.len());
        for r in v {
            match out.last_mut() {
                Some(last) if u32::from(r.lo) <= u32::from(last.hi) + 1 => last.hi = last.hi.max(r.hi),
                _ => out.push(r),
            }
        }
        out
    }

    /// Every port of both, merged (`443` and `3478-3481,444` is `443-444,3478-3481`).
    pub fn union(&self, other: &Ports) -> Ports {
        let both = Ports(self.0.iter().chain(other.0.iter()).copied().collect());
        Ports(both.merged().into_boxed_slice())
    }

    /// The single port, when this is exactly one.
    pub fn single(&self) -> Option<u16> {
        match *self.0 {
            [PortRange { lo, hi }] if lo == hi => Some(lo),
            _ => None,
        }
    }
}

impl fmt::Display for Ports {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_syntax() {
        for (text, shown) in
            [("443", "443"), ("3478-3481", "3478-3481"), ("80,443,3478-3481", "80,443,3478-3481"), ("5-5", "5")]
        {
            assert_eq!(Ports::parse(text).unwrap().to_string(), shown, "{text}");
        }
        for bad in ["", "0", "65536", "+80", "80,", ",80", "1-", "-2", "9-3", "80 ,443", "1-2-3", "a"] {
            assert!(Ports::parse(bad).is_err(), "{bad:?} should be refused");
        }
        assert_eq!(
            Ports::parse("9-3").unwrap_err(),
            "bad port range `9-3` in `9-3`: the first port must not exceed the last"
        );
        assert_eq!(
            Ports::parse("0").unwrap_err(),
            "bad port `0` (1-65535, a range LO-HI, or a comma-separated list of them)"
        );
    }

    #[test]
    fn contains_covers_overlaps() {
        let p = |s: &str| Ports::parse(s).unwrap();
        let teams = p("443,3478-3481");
        for (port, yes) in [(443, true), (3478, true), (3481, true), (3482, false), (80, false), (3477, false)] {
            assert_eq!(teams.contains(port), yes, "{port}");
        }
        assert!(teams.covers(&p("3479-3480,443")));
        assert!(!teams.covers(&p("3479-3482")));
        assert!(p("80-100,101-200").covers(&p("90-150")), "adjacent ranges join");
        assert!(!p("80-100,102-200").covers(&p("90-150")));
        assert!(teams.overlaps(&p("3481-4000")));
        assert!(!teams.overlaps(&p("80,3482-4000")));
        assert_eq!(p("3478-3481,444").union(&p("443,80")).to_string(), "80,443-444,3478-3481");
        assert_eq!(p("443").single(), Some(443));
        assert_eq!(p("443,80").single(), None);
        assert_eq!(p("1-2").single(), None);
        assert_eq!(
            p("450,80,443,444-449").merged(),
            vec![PortRange { lo: 80, hi: 80 }, PortRange { lo: 443, hi: 450 }]
        );
    }
}
