//! Where one owner's names end: the registrable domain of a name, by the Public Suffix List
//! (the `psl` crate, which compiles Mozilla's list, ICANN and private sections, into code: no
//! file to ship, nothing fetched at run time) and by the shared hosting namespaces the lint
//! knows ([`crate::policy::shared_namespaces`]: `blob.core.windows.net`, `github.io`…, where
//! every label below belongs to another customer).
//!
//! The top tables group denied names by [`registrable`]; `hostgate suggest` never proposes a
//! wildcard at or above a [`boundary`].

use crate::policy::shared_namespaces;

/// The longest suffix of `name` that belongs to no single owner: its public suffix (a single
/// unknown label counts as one, as the list's `*` rule says), or the shared namespace it is
/// under when that is longer. `name` itself when it is one.
pub fn boundary(name: &str) -> &str {
    let name = name.strip_suffix('.').unwrap_or(name);
    let public = psl::suffix_str(name).unwrap_or_else(|| last_label(name));
    let shared = shared_namespaces().iter().filter(|ns| under_or_equal(name, ns)).max_by_key(|ns| ns.len());
    let longest = match shared {
        Some(ns) if ns.len() > public.len() => ns,
        _ => public,
    };
    // Return a slice of `name` (not of the list), so callers can compare by position.
    &name[name.len() - longest.len().min(name.len())..]
}

/// The registrable domain of `name`: its [`boundary`] and one more label (`a.b.example.co.uk`
/// → `example.co.uk`; `x.y.blob.core.windows.net` → `y.blob.core.windows.net`), or `name`
/// when it is a boundary itself.
pub fn registrable(name: &str) -> &str {
    let name = name.strip_suffix('.').unwrap_or(name);
    let b = boundary(name);
    if b.len() >= name.len() {
        return name;
    }
    let above = &name[..name.len() - b.len() - 1];
    match above.rfind('.') {
        Some(dot) => &name[dot + 1..],
        None => name,
    }
}

fn last_label(name: &str) -> &str {
    name.rfind('.').map_or(name, |i| &name[i + 1..])
}

/// Whether `name` is `suffix` or a name under it.
pub fn under_or_equal(name: &str, suffix: &str) -> bool {
    name == suffix || name.strip_suffix(suffix).is_some_and(|rest| rest.ends_with('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundaries_and_registrable_domains() {
        for (name, boundary_, registrable_) in [
            ("www.example.com", "com", "example.com"),
            ("example.com", "com", "example.com"),
            ("a.b.example.co.uk", "co.uk", "example.co.uk"),
            ("co.uk", "co.uk", "co.uk"),
            ("x.y.blob.core.windows.net", "blob.core.windows.net", "y.blob.core.windows.net"),
            ("acct.blob.core.windows.net", "blob.core.windows.net", "acct.blob.core.windows.net"),
            ("blob.core.windows.net", "blob.core.windows.net", "blob.core.windows.net"),
            ("login.windows.net", "net", "windows.net"),
            ("me.github.io", "github.io", "me.github.io"),
            ("a.b.internal.test", "test", "internal.test"),
            ("localhost", "localhost", "localhost"),
            ("www.example.com.", "com", "example.com"),
        ] {
            assert_eq!(boundary(name), boundary_, "boundary({name})");
            assert_eq!(registrable(name), registrable_, "registrable({name})");
        }
    }
}
