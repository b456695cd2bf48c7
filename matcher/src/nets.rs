//! TEMPORARY shim (replaced by the real table): linear scan.
#![allow(missing_docs, missing_debug_implementations)]
use ipnet::IpNet;
use std::net::IpAddr;

#[derive(Debug)]
pub struct NetTableBuilder<V> {
    e: Vec<(IpNet, V)>,
}
impl<V> Default for NetTableBuilder<V> {
    fn default() -> Self {
        Self::new()
    }
}
impl<V> NetTableBuilder<V> {
    pub fn new() -> Self {
        Self { e: Vec::new() }
    }
    pub fn add(&mut self, net: IpNet, v: V) -> &mut Self {
        self.e.push((net.trunc(), v));
        self
    }
    pub fn build(self) -> NetTable<V> {
        NetTable { e: self.e }
    }
}
#[derive(Debug)]
pub struct NetTable<V> {
    e: Vec<(IpNet, V)>,
}
#[derive(Debug)]
pub struct NetHit<'a, V> {
    net: IpNet,
    v: &'a V,
    id: usize,
}
impl<'a, V> NetHit<'a, V> {
    pub fn value(&self) -> &'a V {
        self.v
    }
    pub fn net(&self) -> IpNet {
        self.net
    }
    pub fn prefix_len(&self) -> u8 {
        self.net.prefix_len()
    }
    pub fn id(&self) -> usize {
        self.id
    }
}
impl<V> NetTable<V> {
    pub fn matches(&self, addr: IpAddr) -> impl Iterator<Item = NetHit<'_, V>> {
        let addr = addr.to_canonical();
        let mut v: Vec<_> = self
            .e
            .iter()
            .enumerate()
            .filter(|(_, (n, _))| n.contains(&addr))
            .map(|(id, (n, v))| NetHit { net: *n, v, id })
            .collect();
        v.sort_by(|a, b| b.net.prefix_len().cmp(&a.net.prefix_len()).then(a.id.cmp(&b.id)));
        v.into_iter()
    }
    pub fn longest(&self, addr: IpAddr) -> Option<NetHit<'_, V>> {
        self.matches(addr).next()
    }
    pub fn len(&self) -> usize {
        self.e.len()
    }
    pub fn is_empty(&self) -> bool {
        self.e.is_empty()
    }
    pub fn heap_bytes(&self) -> usize {
        self.e.capacity() * std::mem::size_of::<(IpNet, V)>()
    }
    pub fn same_network_pairs(&self) -> Vec<(NetHit<'_, V>, NetHit<'_, V>)> {
        let mut out = Vec::new();
        for (i, (a, va)) in self.e.iter().enumerate() {
            for (j, (b, vb)) in self.e.iter().enumerate().skip(i + 1) {
                if a == b {
                    out.push((NetHit { net: *a, v: va, id: i }, NetHit { net: *b, v: vb, id: j }));
                }
            }
        }
        out
    }
}
