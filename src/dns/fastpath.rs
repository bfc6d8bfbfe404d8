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
    hash::{BuildHasher, BuildHasherDefault, Hasher},
    sync::Mutex,
    time::{Duration, Instant},
};

use prometheus::IntCounter;

use super::header;

/// A question read without a full parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quick {
    /// End of the question name in the packet (it starts at 12).
    pub qname_end: usize,
    /// Query type.
    pub qtype: u16,
    /// EDNS payload size, if an OPT record came with it.
    pub edns_payload: Option<u16>,
    /// The DO bit of that OPT record.
    pub dnssec_ok: bool,
    /// That OPT record carries options (a cookie, a client subnet...).
    pub edns_options: bool,
}

/// Reads the common query shape; `None` for anything else (the full parser decides).
pub fn quick(p: &[u8]) -> Option<Quick> {
    if p.len() < 17 {
        return None;
    }
    let flags = header::flags(p);
    // QR must be 0, opcode QUERY.
    if flags & (header::QR | header::OPCODE_MASK) != 0 {
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
    let mut dnssec_ok = false;
    let mut edns_options = false;
    if count(10) == 1 {
        // OPT: root name, type 41, class = payload, ttl = ext rcode | version | flags.
        if *p.get(i)? != 0 || u16::from_be_bytes([*p.get(i + 1)?, *p.get(i + 2)?]) != 41 {
            return None;
        }
        // RFC 6891 §6.2.5: a payload below 512 counts as 512 (the full parser says the same).
        let payload = u16::from_be_bytes([*p.get(i + 3)?, *p.get(i + 4)?]).max(512);
        let version = *p.get(i + 6)?;
        if version != 0 {
            return None;
        }
        dnssec_ok = u16::from_be_bytes([*p.get(i + 7)?, *p.get(i + 8)?]) & header::EDNS_DO != 0;
        let rdlen = usize::from(u16::from_be_bytes([*p.get(i + 9)?, *p.get(i + 10)?]));
        i += 11 + rdlen;
        edns_payload = Some(payload);
        edns_options = rdlen > 0;
    }
    if i != p.len() {
        return None;
    }
    Some(Quick {
        qname_end,
        qtype,
        edns_payload,
        dnssec_ok,
        edns_options,
    })
}

/// The longest cache key: a 255-byte name, type, budget, and a byte of bits that change the
/// reply (transport, OPT present, DO, CD, AD).
pub const KEY_MAX: usize = 255 + 2 + 3 + 1;

/// Room for one cache key on the stack.
pub struct KeyBuf([u8; KEY_MAX]);

impl KeyBuf {
    /// An empty buffer.
    pub fn new() -> Self {
        Self([0; KEY_MAX])
    }
}

impl Default for KeyBuf {
    fn default() -> Self {
        Self::new()
    }
}

/// The cache key of a quick question under a size budget and transport: the lower-cased
/// name, type, budget, and every bit of the query that changes the reply (transport, OPT
/// present or not, DO, CD, AD), written into `buf`. Only the ID, RD and the name's case are
/// not in it: a hit patches those in. ([`quick`] bounds the name to 255 bytes.)
pub fn key_into<'a>(p: &[u8], q: &Quick, limit: usize, tcp: bool, buf: &'a mut KeyBuf) -> &'a [u8] {
    let flags = header::flags(p);
    let name = &p[12..q.qname_end];
    let k = &mut buf.0;
    let n = name.len();
    for (d, s) in k[..n].iter_mut().zip(name) {
        *d = s.to_ascii_lowercase();
    }
    k[n..n + 2].copy_from_slice(&q.qtype.to_be_bytes());
    k[n + 2..n + 5].copy_from_slice(&(limit as u32).to_be_bytes()[1..]);
    k[n + 5] = u8::from(tcp)
        | u8::from(q.edns_payload.is_some()) << 1
        | u8::from(q.dnssec_ok) << 2
        | u8::from(flags & header::CD != 0) << 3
        | u8::from(flags & header::AD != 0) << 4;
    &k[..n + 6]
}

/// The counters a stored response moves on every hit, resolved when it is stored, so a hit
/// hashes no label strings.
#[derive(Clone)]
pub struct Series {
    /// `dns_queries{transport, qtype, rcode}`.
    pub queries: IntCounter,
    /// `dns_answers{source}`.
    pub answers: IntCounter,
}

struct Entry {
    /// The whole key, compared on a hit (the map is keyed by its hash).
    key: Box<[u8]>,
    bytes: Box<[u8]>,
    generation: u128,
    expires: Instant,
    series: Series,
}

const SHARDS: usize = 16;

/// Hashes are computed once per lookup with a random key (SipHash) and used as they are by
/// the shard maps.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed here; fold anything else in anyway.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

type Shard = HashMap<u64, Entry, BuildHasherDefault<PassThrough>>;

/// Encoded responses by question. Sharded `std::sync::Mutex`es: each lock is held only for
/// a map lookup and a copy, or an insert, never across an `.await`. The maps are keyed by
/// the question's 64-bit keyed hash; the entry keeps the whole key and a hit compares it,
/// so a collision is a miss (and the later `put` replaces the other entry).
pub struct AnswerCache {
    shards: Vec<Mutex<Shard>>,
    per_shard: usize,
    hasher: std::collections::hash_map::RandomState,
}

impl AnswerCache {
    /// A cache of at most `capacity` responses.
    pub fn new(capacity: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    fn locate(&self, key: &[u8]) -> (u64, &Mutex<Shard>) {
        let h = self.hasher.hash_one(key);
        // The shard's table uses the low bits (slot) and the top 7 (control bytes): pick
        // the shard from bits in between.
        (h, &self.shards[(h >> 32) as usize % SHARDS])
    }

    /// If a response is stored under `key` for `generation` and still fresh at `now`,
    /// writes it into `out` with the request's ID, flags and question spelling patched in,
    /// counts the hit, and returns true.
    pub fn get_into(
        &self,
        key: &[u8],
        generation: u128,
        now: Instant,
        request: &[u8],
        q: &Quick,
        out: &mut Vec<u8>,
    ) -> bool {
        let (h, shard) = self.locate(key);
        let Ok(map) = shard.lock() else {
            return false;
        };
        let Some(e) = map.get(&h) else {
            return false;
        };
        if e.generation != generation
            || e.expires <= now
            || *e.key != *key
            || e.bytes.len() < q.qname_end
        {
            return false;
        }
        out.clear();
        out.extend_from_slice(&e.bytes);
        e.series.queries.inc();
        e.series.answers.inc();
        drop(map);
        out[0] = request[0];
        out[1] = request[1];
        // RD follows the request (everything else that differs is in the key).
        let rd = (header::RD >> 8) as u8;
        out[2] = (out[2] & !rd) | (request[2] & rd);
        out[12..q.qname_end].copy_from_slice(&request[12..q.qname_end]);
        true
    }

    /// Stores a response for `life`.
    pub fn put(
        &self,
        key: Vec<u8>,
        bytes: &[u8],
        generation: u128,
        life: Duration,
        series: Series,
    ) {
        let (h, shard) = self.locate(&key);
        let Ok(mut map) = shard.lock() else {
            return;
        };
        if map.len() >= self.per_shard && !map.contains_key(&h) {
            let now = Instant::now();
            map.retain(|_, e| e.expires > now);
            if map.len() >= self.per_shard {
                // Still full of live entries: start over rather than track recency on the
                // hot path; entries are cheap to rebuild.
                map.clear();
            }
        }
        map.insert(
            h,
            Entry {
                key: key.into_boxed_slice(),
                bytes: bytes.into(),
                generation,
                expires: Instant::now() + life,
                series,
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

    /// Found by the `dns_wire` fuzz target (its input is the seed `payload_below_512`): the
    /// quick reader kept a payload of 28 where the parser reads 512.
    #[test]
    fn a_payload_below_512_is_512_as_the_parser_reads_it() {
        let mut p = q("server2.pbx.example.org.", Some(1232));
        let at = p.len() - 8;
        p[at..at + 2].copy_from_slice(&28u16.to_be_bytes());
        let qq = quick(&p).unwrap();
        assert_eq!(qq.edns_payload, Some(512));
        let Some(fast) = crate::dns::wire::from_quick(&p, &qq) else {
            panic!("from_quick declined a common query");
        };
        match crate::dns::wire::parse(&p, 1232) {
            crate::dns::wire::Parsed::Query(full) => assert_eq!(fast, full),
            _ => panic!("the parser did not read a query"),
        }
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

    fn key(p: &[u8], q: &Quick, limit: usize, tcp: bool) -> Vec<u8> {
        key_into(p, q, limit, tcp, &mut KeyBuf::new()).to_vec()
    }

    fn series() -> Series {
        Series {
            queries: IntCounter::new("q", "q").unwrap(),
            answers: IntCounter::new("a", "a").unwrap(),
        }
    }

    #[test]
    fn keys_ignore_case_and_hits_echo_the_request() {
        let a = q("Pbx.Example.org.", None);
        let b = q("pBX.eXAMPLE.ORG.", None);
        let (qa, qb) = (quick(&a).unwrap(), quick(&b).unwrap());
        assert_eq!(key(&a, &qa, 512, false), key(&b, &qb, 512, false));
        assert_ne!(key(&a, &qa, 512, false), key(&a, &qa, 1232, false));
        assert_ne!(key(&a, &qa, 512, false), key(&a, &qa, 512, true));
        let cache = AnswerCache::new(100);
        let mut stored = a.clone();
        stored[2] |= 0x80;
        let s = series();
        cache.put(
            key(&a, &qa, 512, false),
            &stored,
            7,
            Duration::from_secs(60),
            s.clone(),
        );
        let mut b2 = b.clone();
        b2[0] = 0xAB;
        let now = Instant::now();
        let mut out = Vec::new();
        assert!(cache.get_into(&key(&b2, &qb, 512, false), 7, now, &b2, &qb, &mut out));
        assert_eq!(out[0], 0xAB);
        assert_eq!(&out[12..qb.qname_end], &b2[12..qb.qname_end]);
        assert_eq!(s.queries.get(), 1);
        assert_eq!(s.answers.get(), 1);
        assert!(
            !cache.get_into(&key(&b2, &qb, 512, false), 8, now, &b2, &qb, &mut out),
            "a new generation invalidates"
        );
        assert!(
            !cache.get_into(&key(&b2, &qb, 1232, false), 7, now, &b2, &qb, &mut out),
            "another budget is another entry"
        );
        assert!(
            !cache.get_into(
                &key(&b2, &qb, 512, false),
                7,
                now + Duration::from_secs(61),
                &b2,
                &qb,
                &mut out
            ),
            "expired"
        );
        assert_eq!(s.queries.get(), 1, "misses count nothing");
    }

    #[test]
    fn capacity_is_bounded() {
        let cache = AnswerCache::new(32);
        for i in 0..1000u32 {
            cache.put(
                i.to_be_bytes().to_vec(),
                b"x",
                1,
                Duration::from_secs(60),
                series(),
            );
        }
        assert!(cache.len() <= 32 + SHARDS, "{}", cache.len());
    }
}
