//! The answer fast path: encoded responses kept by question, reused while nothing they
//! depend on has changed.
//!
//! A query of the common shape (one question, no answer/authority records, at most an OPT)
//! is read by [`quick`] without a full DNS parse; its key is the lower-cased question name,
//! type and size budget. A hit is the stored response with the client's ID, RD/CD flags and
//! question spelling patched in: every owner name equal to the question is compressed to
//! point at it (see `encode`), so the patched bytes echo the client's case.
//!
//! Entries carry the resolver's generation (config, zones and health): any reload or
//! health change invalidates them at once. Answers built from upstream data live at most
//! one second, so their TTLs are at most a second stale; answers the health policy orders
//! at random per response are never stored.

use std::{
    collections::HashMap,
    hash::BuildHasher,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::record::Source;

/// A question read without a full parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quick {
    /// End of the question name in the packet (it starts at 12).
    pub qname_end: usize,
    /// Query type.
    pub qtype: u16,
    /// EDNS payload size, if an OPT record came with it.
    pub edns_payload: Option<u16>,
}

/// Reads the common query shape; `None` for anything else (the full parser decides).
pub fn quick(p: &[u8]) -> Option<Quick> {
    if p.len() < 17 {
        return None;
    }
    let flags = u16::from_be_bytes([p[2], p[3]]);
    // QR must be 0, opcode QUERY.
    if flags & 0xF800 != 0 {
        return None;
    }
    let count = |i: usize| u16::from_be_bytes([p[i], p[i + 1]]);
    if count(4) != 1 || count(6) != 0 || count(8) != 0 || count(10) > 1 {
        return None;
    }
    let mut i = 12;
    let mut total = 0usize;
    loop {
        let len = usize::from(*p.get(i)?);
        if len == 0 {
            i += 1;
            break;
        }
        if len > 63 {
            return None; // compression pointer or reserved label type
        }
        total += len + 1;
        if total > 254 {
            return None;
        }
        i += 1 + len;
    }
    let qname_end = i;
    let qtype = u16::from_be_bytes([*p.get(i)?, *p.get(i + 1)?]);
    let qclass = u16::from_be_bytes([*p.get(i + 2)?, *p.get(i + 3)?]);
    if qclass != 1 || matches!(qtype, 41 | 251 | 252) {
        return None;
    }
    i += 4;
    let mut edns_payload = None;
    if count(10) == 1 {
        // OPT: root name, type 41, class = payload, ttl = ext rcode | version | flags.
        if *p.get(i)? != 0 || u16::from_be_bytes([*p.get(i + 1)?, *p.get(i + 2)?]) != 41 {
            return None;
        }
        let payload = u16::from_be_bytes([*p.get(i + 3)?, *p.get(i + 4)?]);
        let version = *p.get(i + 6)?;
        if version != 0 {
            return None;
        }
        let rdlen = usize::from(u16::from_be_bytes([*p.get(i + 9)?, *p.get(i + 10)?]));
        i += 11 + rdlen;
        edns_payload = Some(payload);
    }
    if i != p.len() {
        return None;
    }
    Some(Quick {
        qname_end,
        qtype,
        edns_payload,
    })
}

/// The cache key of a quick question under a size budget.
pub fn key(p: &[u8], q: &Quick, limit: usize) -> Vec<u8> {
    let mut k = Vec::with_capacity(q.qname_end - 12 + 4);
    k.extend(p[12..q.qname_end].iter().map(u8::to_ascii_lowercase));
    k.extend_from_slice(&q.qtype.to_be_bytes());
    k.extend_from_slice(&(limit as u32).to_be_bytes()[1..]);
    k
}

#[derive(Clone)]
struct Entry {
    bytes: Arc<[u8]>,
    generation: u128,
    expires: Instant,
    source: Source,
    rcode: crate::record::Rcode,
}

const SHARDS: usize = 16;

/// Encoded responses by question. Sharded `std::sync::Mutex`es: each lock is held only for
/// a map lookup or insert, never across an `.await`.
pub struct AnswerCache {
    shards: Vec<Mutex<HashMap<Vec<u8>, Entry>>>,
    per_shard: usize,
    hasher: std::collections::hash_map::RandomState,
}

/// A cache hit, ready to send.
pub struct Hit {
    /// The response.
    pub bytes: Vec<u8>,
    /// Where its answer came from.
    pub source: Source,
    /// Its response code.
    pub rcode: crate::record::Rcode,
}

impl AnswerCache {
    /// A cache of at most `capacity` responses.
    pub fn new(capacity: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    fn shard(&self, key: &[u8]) -> &Mutex<HashMap<Vec<u8>, Entry>> {
        &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS]
    }

    /// The response for `request` if one is stored under `key` for `generation`, with the
    /// request's ID, flags and question spelling patched in.
    pub fn get(&self, key: &[u8], generation: u128, request: &[u8], q: &Quick) -> Option<Hit> {
        let entry = {
            let map = self.shard(key).lock().ok()?;
            let e = map.get(key)?;
            if e.generation != generation || e.expires <= Instant::now() {
                return None;
            }
            e.clone()
        };
        let mut out = entry.bytes.to_vec();
        if out.len() < q.qname_end {
            return None;
        }
        out[0] = request[0];
        out[1] = request[1];
        // RD (0x01 of byte 2) and CD (0x10 of byte 3) follow the request.
        out[2] = (out[2] & !0x01) | (request[2] & 0x01);
        out[3] = (out[3] & !0x10) | (request[3] & 0x10);
        out[12..q.qname_end].copy_from_slice(&request[12..q.qname_end]);
        Some(Hit {
            bytes: out,
            source: entry.source,
            rcode: entry.rcode,
        })
    }

    /// Stores a response.
    pub fn put(
        &self,
        key: Vec<u8>,
        bytes: &[u8],
        generation: u128,
        source: Source,
        rcode: crate::record::Rcode,
    ) {
        let life = match source {
            Source::Static | Source::Synthesized => Duration::from_secs(60),
            _ => Duration::from_secs(1),
        };
        let Ok(mut map) = self.shard(&key).lock() else {
            return;
        };
        if map.len() >= self.per_shard && !map.contains_key(&key) {
            let now = Instant::now();
            map.retain(|_, e| e.expires > now);
            if map.len() >= self.per_shard {
                // Still full of live entries: start over rather than track recency on the
                // hot path; entries are cheap to rebuild.
                map.clear();
            }
        }
        map.insert(
            key,
            Entry {
                bytes: Arc::from(bytes),
                generation,
                expires: Instant::now() + life,
                source,
                rcode,
            },
        );
    }

    /// Stored responses.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map_or(0, |m| m.len()))
            .sum()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use hickory_proto::{
        op::{Edns, Message, Query},
        rr::{Name, RecordType},
    };

    use super::*;

    fn q(name: &str, edns: Option<u16>) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = 42;
        m.add_query(Query::query(
            Name::from_ascii(name).unwrap(),
            RecordType::SRV,
        ));
        if let Some(p) = edns {
            let mut e = Edns::new();
            e.set_max_payload(p);
            m.set_edns(e);
        }
        m.to_vec().unwrap()
    }

    #[test]
    fn reads_common_queries_and_refuses_the_rest() {
        let p = q("_sip._udp.Example.org.", Some(1232));
        let qq = quick(&p).unwrap();
        assert_eq!(qq.qtype, 33);
        assert_eq!(qq.edns_payload, Some(1232));
        assert_eq!(qq.qname_end, 12 + "_sip._udp.Example.org.".len() + 1);
        assert!(
            quick(&q("a.example.org.", None))
                .unwrap()
                .edns_payload
                .is_none()
        );
        let mut resp = p.clone();
        resp[2] |= 0x80;
        assert!(quick(&resp).is_none());
        assert!(quick(&p[..p.len() - 1]).is_none());
        let mut trailing = p.clone();
        trailing.push(0);
        assert!(quick(&trailing).is_none());
        let mut v1 = p.clone();
        let opt_version = v1.len() - 5;
        v1[opt_version] = 1;
        assert!(
            quick(&v1).is_none(),
            "EDNS version 1 must take the full path (BADVERS)"
        );
    }

    #[test]
    fn keys_ignore_case_and_hits_echo_the_request() {
        let a = q("Pbx.Example.org.", None);
        let b = q("pBX.eXAMPLE.ORG.", None);
        let (qa, qb) = (quick(&a).unwrap(), quick(&b).unwrap());
        assert_eq!(key(&a, &qa, 512), key(&b, &qb, 512));
        assert_ne!(key(&a, &qa, 512), key(&a, &qa, 1232));
        let cache = AnswerCache::new(100);
        let mut stored = a.clone();
        stored[2] |= 0x80;
        cache.put(
            key(&a, &qa, 512),
            &stored,
            7,
            Source::Static,
            crate::record::Rcode::NoError,
        );
        let mut b2 = b.clone();
        b2[0] = 0xAB;
        let hit = cache.get(&key(&b2, &qb, 512), 7, &b2, &qb).unwrap();
        assert_eq!(hit.bytes[0], 0xAB);
        assert_eq!(&hit.bytes[12..qb.qname_end], &b2[12..qb.qname_end]);
        assert!(
            cache.get(&key(&b2, &qb, 512), 8, &b2, &qb).is_none(),
            "a new generation invalidates"
        );
    }

    #[test]
    fn capacity_is_bounded() {
        let cache = AnswerCache::new(32);
        for i in 0..1000u32 {
            cache.put(
                i.to_be_bytes().to_vec(),
                b"x",
                1,
                Source::Static,
                crate::record::Rcode::NoError,
            );
        }
        assert!(cache.len() <= 32 + SHARDS, "{}", cache.len());
    }
}
