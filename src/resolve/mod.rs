//! The one lookup path, used by the DNS server, the prober's target discovery and the
//! explain view alike:
//!
//! 1. [`Resolver::lookup`]: static entries and upstream combined by the zone's merge mode
//!    (`override`, `fallback`, `merge`), CNAMEs in static data followed;
//! 2. [`Resolver::answer`]: plus the RFC 3263 ADDITIONAL records (NAPTR -> its SRV records
//!    -> their A/AAAA; SRV -> A/AAAA), NAPTR synthesis, and the health policy for names in
//!    a managed SIP domain. ADDITIONAL records never hold an answer back: they come from
//!    static data and the forwarder's cache (fresh or stale); what the cache lacks is
//!    fetched in the background for the next answer.
//!
//! Config and zones are read through one `ArcSwap`, swapped whole on reload, so a query sees
//! either the old or the new state, never a mix. Health is read from the prober's snapshot,
//! also an `ArcSwap`: one atomic load per query, no lock shared with the prober.

use std::{collections::HashSet, sync::Arc, time::Duration};

use arc_swap::ArcSwap;
use futures::future::{BoxFuture, FutureExt, join_all};

use crate::{
    config::{MergeMode, SipDomainConfig},
    health::{HealthHandle, HealthSnapshot},
    metrics::Metrics,
    policy::{self, Explanation},
    record::{Answer, DomainName, RType, Rcode, Rec, RecordData, Reuse, Source},
    state::Data,
    target::Transport,
    upstream::{Forwarder, Want},
    zones::{Zone, ZoneAnswer},
};

/// How deep CNAME chains in static data are followed.
const MAX_CNAME_DEPTH: usize = 8;
/// At most this many SRV targets get their addresses added to ADDITIONAL.
const MAX_ADDITIONAL_TARGETS: usize = 16;
/// Background fetches of upstream data for ADDITIONAL records running at once, at most.
const MAX_PREFETCH: usize = 64;

/// Whether a lookup may wait for upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// Ask upstream and wait for it (the question itself).
    Upstream,
    /// Use only cached upstream data, fetching misses in the background (ADDITIONAL).
    CacheOnly,
}

/// How one lookup goes upstream: may it wait, and with which DNSSEC bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ask {
    wait: Wait,
    want: Want,
}

impl Ask {
    fn upstream(want: Want) -> Self {
        Self {
            wait: Wait::Upstream,
            want,
        }
    }

    fn cache_only(self) -> Self {
        Self {
            wait: Wait::CacheOnly,
            ..self
        }
    }
}

/// The lookup path.
pub struct Resolver {
    data: ArcSwap<Data>,
    /// Increases on every swap of `data`, so answer caches can tell it moved.
    generation: std::sync::atomic::AtomicU64,
    forwarder: Arc<Forwarder>,
    health: HealthHandle,
    metrics: Arc<Metrics>,
    prefetch: Arc<tokio::sync::Semaphore>,
    /// Questions waiting on upstream at once (`dns.max_inflight`): the bound sits where
    /// upstream work starts, so a flood of cache misses cannot queue without limit.
    inflight: tokio::sync::Semaphore,
}

impl Resolver {
    /// A resolver over `data`, forwarding through `forwarder`, reading health from
    /// `health`.
    pub fn new(
        data: Data,
        forwarder: Arc<Forwarder>,
        health: HealthHandle,
        metrics: Arc<Metrics>,
    ) -> Self {
        let max_inflight = data.config.dns.max_inflight.max(1);
        Self {
            data: ArcSwap::from_pointee(data),
            generation: std::sync::atomic::AtomicU64::new(1),
            forwarder,
            health,
            metrics,
            prefetch: Arc::new(tokio::sync::Semaphore::new(MAX_PREFETCH)),
            inflight: tokio::sync::Semaphore::new(max_inflight),
        }
    }

    /// The config and zones in force.
    pub fn data(&self) -> Arc<Data> {
        self.data.load_full()
    }

    /// The config and zones in force, without touching the reference count (hot path).
    pub fn data_guard(&self) -> arc_swap::Guard<Arc<Data>> {
        self.data.load()
    }

    /// Swaps in new config and zones atomically.
    pub fn swap(&self, data: Data) {
        self.data.store(Arc::new(data));
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::Release);
    }

    /// A number that changes whenever config, zones or any target's health change: answers
    /// computed under one generation stay valid while it holds.
    pub fn generation(&self) -> u128 {
        let data = self.generation.load(std::sync::atomic::Ordering::Acquire);
        let health = self.health.load().generation;
        (u128::from(data) << 64) | u128::from(health)
    }

    /// The health snapshot in force.
    pub fn health(&self) -> Arc<HealthSnapshot> {
        self.health.load_full()
    }

    /// The forwarder.
    pub fn forwarder(&self) -> &Arc<Forwarder> {
        &self.forwarder
    }

    /// Static entries and upstream by merge mode; no ADDITIONAL filling, no policy.
    pub async fn lookup(&self, name: &DomainName, rtype: RType) -> Answer {
        let data = self.data.load_full();
        self.lookup_in(&data, name, rtype, 0, Ask::upstream(Want::default()))
            .await
    }

    fn lookup_in<'a>(
        &'a self,
        data: &'a Data,
        name: &'a DomainName,
        rtype: RType,
        depth: usize,
        ask: Ask,
    ) -> BoxFuture<'a, Answer> {
        async move {
            let Some(zone) = data.zones.find(name) else {
                let up = self.forward(name, rtype, ask).await;
                return self.static_wins(data, name, up, rtype, depth, ask).await;
            };
            let stat = zone.lookup(name, rtype);
            // Static data is waiting: do not let a dead upstream hold the phone longer than
            // the RFC 8767 client response timer. What upstream then says lands in the
            // forwarder's cache for the next question.
            let has_static = matches!(stat, ZoneAnswer::Records(_) | ZoneAnswer::Cname(_));
            let budget = data.config.upstream.stale_answer_after;
            match zone.mode {
                // The zone is the operator's word for its names: upstream is not asked.
                MergeMode::Override => match stat {
                    ZoneAnswer::Records(r) => static_answer(r),
                    ZoneAnswer::Cname(c) => self.chase(data, c, rtype, depth, ask).await,
                    negative => negative_answer(zone, &negative, &Answer::servfail()),
                },
                MergeMode::Fallback => {
                    let up = self
                        .forward_within(has_static, budget, name, rtype, ask)
                        .await;
                    if is_positive(&up, rtype) {
                        return up;
                    }
                    let failed = up.rcode == Rcode::ServFail;
                    let a = match stat {
                        ZoneAnswer::Records(r) => static_answer(r),
                        ZoneAnswer::Cname(c) => self.chase(data, c, rtype, depth, ask).await,
                        negative => negative_answer(zone, &negative, &up),
                    };
                    if failed {
                        given_because_upstream_failed(a)
                    } else {
                        a
                    }
                }
                MergeMode::Merge => {
                    let up = self
                        .forward_within(has_static, budget, name, rtype, ask)
                        .await;
                    let failed = up.rcode == Rcode::ServFail;
                    let a = match stat {
                        ZoneAnswer::Records(r) => {
                            let mut answers: Vec<Rec> = up
                                .answers
                                .iter()
                                .filter(|x| x.rtype() == rtype)
                                .cloned()
                                .collect();
                            for rec in r {
                                if !answers.iter().any(|a| a.data == rec.data) {
                                    answers.push(rec);
                                }
                            }
                            let mut a = Answer::records(answers, Source::Merged);
                            a.additional = up.additional;
                            a.without_dnssec()
                        }
                        ZoneAnswer::Cname(c) if !is_positive(&up, rtype) => {
                            self.chase(data, c, rtype, depth, ask).await
                        }
                        _ if is_positive(&up, rtype) => up,
                        negative => negative_answer(zone, &negative, &up),
                    };
                    if failed {
                        given_because_upstream_failed(a)
                    } else {
                        a
                    }
                }
            }
        }
        .boxed()
    }

    /// Static data wins over upstream's for names in a static zone: when a forwarded
    /// answer's CNAME chain leads into one, the chain is cut there and the rest answered
    /// from the zone (by its merge mode), as if the client had asked for that name.
    async fn static_wins(
        &self,
        data: &Data,
        qname: &DomainName,
        up: Answer,
        rtype: RType,
        depth: usize,
        ask: Ask,
    ) -> Answer {
        if depth >= MAX_CNAME_DEPTH || up.answers.is_empty() || data.zones.is_empty() {
            return up;
        }
        let mut chain = vec![qname.clone()];
        let mut cut = None;
        for _ in 0..MAX_CNAME_DEPTH {
            let Some(last) = chain.last() else { break };
            let next = up.answers.iter().find_map(|r| match &r.data {
                RecordData::Cname(t) if &r.name == last => Some(t.clone()),
                _ => None,
            });
            let Some(next) = next else { break };
            if chain.contains(&next) {
                break;
            }
            if data.zones.find(&next).is_some() {
                cut = Some(next);
                break;
            }
            chain.push(next);
        }
        let Some(target) = cut else { return up };
        let rest = self.lookup_in(data, &target, rtype, depth + 1, ask).await;
        let mut answers: Vec<Rec> = up
            .answers
            .into_iter()
            .filter(|r| chain.contains(&r.name) && r.rtype() == RType::CNAME)
            .collect();
        answers.extend(rest.answers);
        Answer {
            answers,
            authority: rest.authority,
            additional: rest.additional,
            rcode: rest.rcode,
            authoritative: false,
            source: rest.source,
            authentic_data: false,
            reuse: rest.reuse,
        }
        .without_dnssec()
    }

    async fn chase(&self, data: &Data, cname: Rec, rtype: RType, depth: usize, ask: Ask) -> Answer {
        let RecordData::Cname(target) = &cname.data else {
            return static_answer(vec![cname]);
        };
        if depth >= MAX_CNAME_DEPTH {
            return static_answer(vec![cname]);
        }
        let target = target.clone();
        let rest = self.lookup_in(data, &target, rtype, depth + 1, ask).await;
        let mut answers = vec![cname];
        answers.extend(rest.answers);
        Answer {
            rcode: rest.rcode,
            authoritative: true,
            answers,
            authority: rest.authority,
            additional: rest.additional,
            source: Source::Static,
            authentic_data: false,
            reuse: rest.reuse,
        }
        .without_dnssec()
    }

    /// Upstream's answer; with static data at hand (`fallback`, `merge`), no longer than
    /// `budget` (`upstream.stale_answer_after`): past it SERVFAIL, and the static data
    /// answers while the upstream request goes on in the background.
    async fn forward_within(
        &self,
        has_static: bool,
        budget: Duration,
        name: &DomainName,
        rtype: RType,
        ask: Ask,
    ) -> Answer {
        if has_static {
            tokio::time::timeout(budget, self.forward(name, rtype, ask))
                .await
                .unwrap_or_else(|_| Answer::servfail())
        } else {
            self.forward(name, rtype, ask).await
        }
    }

    async fn forward(&self, name: &DomainName, rtype: RType, ask: Ask) -> Answer {
        let want = ask.want;
        if let Some(hit) = self.forwarder.cached_with(name, rtype, want) {
            return hit;
        }
        if ask.wait == Wait::CacheOnly {
            // ADDITIONAL records are a courtesy: never hold an answer for them. Use what
            // the cache has (even stale) and fetch the rest in the background, so the next
            // answer carries it.
            if let Some(stale) = self.forwarder.stale_with(name, rtype, want) {
                return stale;
            }
            if let Ok(permit) = self.prefetch.clone().try_acquire_owned() {
                let (f, name) = (self.forwarder.clone(), name.clone());
                tokio::spawn(async move {
                    let _ = f.lookup_with(&name, rtype, want).await;
                    drop(permit);
                });
            }
            return Answer::servfail();
        }
        let Ok(_permit) = self.inflight.try_acquire() else {
            self.metrics
                .dns_dropped
                .with_label_values(&["overloaded"])
                .inc();
            return self
                .forwarder
                .stale_with(name, rtype, want)
                .unwrap_or_else(Answer::servfail);
        };
        match self.forwarder.lookup_with(name, rtype, want).await {
            Ok(a) => a,
            Err(e) => {
                tracing::debug!(%name, %rtype, error = %e, "upstream lookup failed");
                Answer::servfail()
            }
        }
    }

    /// What a phone gets for (name, qtype): lookup, ADDITIONAL records, NAPTR synthesis and
    /// the health policy.
    pub async fn answer(&self, name: &DomainName, qtype: RType) -> Answer {
        let data = self.data.load_full();
        self.answer_in(&data, name, qtype, Want::default()).await
    }

    /// [`Self::answer`] under a config snapshot the caller loaded once for the whole
    /// query, asking upstream with the client's DNSSEC bits.
    pub async fn answer_in(
        &self,
        data: &Data,
        name: &DomainName,
        qtype: RType,
        want: Want,
    ) -> Answer {
        self.answer_inner(data, name, qtype, want, false).await.0
    }

    /// [`Self::answer`] with the answer before the policy and every decision, for the
    /// explain view.
    pub async fn explain(&self, name: &DomainName, qtype: RType) -> Explanation {
        let data = self.data.load_full();
        let (answer, explained) = self
            .answer_inner(&data, name, qtype, Want::default(), true)
            .await;
        explained.unwrap_or_else(|| Explanation::untouched(name, qtype, &answer))
    }

    /// The answer, and with `explain` its explanation (never built for a phone's query).
    async fn answer_inner(
        &self,
        data: &Data,
        name: &DomainName,
        qtype: RType,
        want: Want,
        explain: bool,
    ) -> (Answer, Option<Explanation>) {
        let ask = Ask::upstream(want);
        let mut answer = self.lookup_in(data, name, qtype, 0, ask).await;
        if answer.source == Source::Synthesized && answer.rcode == Rcode::ServFail {
            // Upstream failed, or the question was turned away at the in-flight bound:
            // nothing to apply a policy to.
            return (answer, None);
        }
        // One health snapshot for the whole answer.
        let health = self.health();
        // The name's own SIP domain, or, for an SRV target host outside it, the domain it
        // was discovered under.
        let domain = data.config.sip.domain_of(name).or_else(|| {
            let d = health.host_domain.get(name)?;
            data.config.sip.domains.iter().find(|x| &x.name == d)
        });

        if qtype == RType::NAPTR
            && let Some(d) = domain
            && d.synthesize_naptr
            && &d.name == name
            && answer.rcode != Rcode::ServFail
            && !answer.answers.iter().any(|r| r.rtype() == RType::NAPTR)
            && let Some(synth) = self.synthesize(data, d, ask).await
        {
            answer = synth;
        }
        if matches!(qtype, RType::NAPTR | RType::SRV)
            && answer.rcode == Rcode::NoError
            && !answer.answers.is_empty()
        {
            self.fill_additional(data, &mut answer, qtype, ask).await;
        }

        let Some(d) = domain else {
            return (answer, None);
        };
        // What the policy shapes is sipdns' own answer: no signature would still match it.
        let answer = answer.without_dnssec();
        let before = explain.then(|| answer.clone());
        let outcome = policy::apply(name, qtype, answer, d, &*health, &mut rand::rng());
        let withheld = outcome.withheld_count();
        if withheld > 0 {
            self.metrics
                .policy_withheld
                .with_label_values(&[qtype.metric_label()])
                .inc_by(withheld as u64);
        }
        if let Some(rule) = outcome.all_down {
            self.metrics
                .policy_all_down
                .with_label_values(&[policy::all_down_label(rule)])
                .inc();
        }
        let explained = before.map(|before| Explanation {
            domain: Some(d.name.clone()),
            ..Explanation::new(name, qtype, &before, &outcome)
        });
        let mut after = outcome.answer;
        // A weighted-random SRV order is drawn per response: the reply must not be reused.
        if d.ordering == crate::config::Ordering::Weighted && has_weighted_choice(&after) {
            after.reuse = Reuse::Never;
        }
        (after, explained)
    }

    /// NAPTR records made from the domain's SRV sets, with ADDITIONAL filled later.
    async fn synthesize(&self, data: &Data, d: &SipDomainConfig, ask: Ask) -> Option<Answer> {
        let names: Vec<(Transport, DomainName)> = d
            .naptr_order
            .iter()
            .filter_map(|t| d.name.prepend(t.srv_prefix()).ok().map(|n| (*t, n)))
            .collect();
        let looks = join_all(
            names
                .iter()
                .map(|(_, n)| self.lookup_in(data, n, RType::SRV, 0, ask)),
        )
        .await;
        let present: Vec<Transport> = names
            .iter()
            .zip(looks)
            .filter(|(_, a)| a.answers.iter().any(|r| r.rtype() == RType::SRV))
            .map(|((t, _), _)| *t)
            .collect();
        if present.is_empty() {
            return None;
        }
        let recs = policy::synthesize_naptr(d, &present, d.ttl);
        if recs.is_empty() {
            return None;
        }
        Some(Answer::records(recs, Source::Synthesized))
    }

    /// RFC 3263 / RFC 2782 additional records, in the order a phone uses them, RRset by
    /// RRset (the encoder keeps every whole RRset that fits, in this order): for NAPTR, the
    /// SRV set of the first NAPTR (by order, then preference), its targets' A then AAAA,
    /// then the next NAPTR's; for SRV, the targets' A then AAAA. Records upstream sent in
    /// ADDITIONAL are used for names outside the static zones; names in a static zone are
    /// looked up there (static data wins, by the zone's merge mode).
    async fn fill_additional(&self, data: &Data, answer: &mut Answer, qtype: RType, ask: Ask) {
        let ask = ask.cache_only();
        let pool = std::mem::take(&mut answer.additional);
        let from_pool = |name: &DomainName, t: RType| -> Option<Vec<Rec>> {
            if data.zones.find(name).is_some() {
                return None;
            }
            let v: Vec<Rec> = pool
                .iter()
                .filter(|r| &r.name == name && (r.rtype() == t || covers(r, t)))
                .cloned()
                .collect();
            v.iter().any(|r| r.rtype() == t).then_some(v)
        };
        // The SRV sets, in NAPTR order.
        let mut sets: Vec<(Option<DomainName>, Vec<Rec>)> = Vec::new();
        if qtype == RType::NAPTR {
            let mut naptrs: Vec<(u16, u16, DomainName)> = answer
                .answers
                .iter()
                .filter_map(|r| match &r.data {
                    RecordData::Naptr {
                        order,
                        preference,
                        flags,
                        replacement,
                        ..
                    } if flags.eq_ignore_ascii_case("s") && !replacement.is_root() => {
                        Some((*order, *preference, replacement.clone()))
                    }
                    _ => None,
                })
                .collect();
            naptrs.sort_by_key(|(o, p, _)| (*o, *p));
            let mut owners: Vec<DomainName> = Vec::new();
            for (_, _, o) in naptrs {
                if !owners.contains(&o) {
                    owners.push(o);
                }
            }
            let found = join_all(owners.iter().map(|o| async {
                match from_pool(o, RType::SRV) {
                    Some(v) => v,
                    None => {
                        let a = self.lookup_in(data, o, RType::SRV, 0, ask).await;
                        a.answers
                            .into_iter()
                            .filter(|r| r.rtype() == RType::SRV)
                            .collect()
                    }
                }
            }))
            .await;
            for (o, recs) in owners.into_iter().zip(found) {
                sets.push((Some(o), recs));
            }
        } else {
            let srv: Vec<Rec> = answer
                .answers
                .iter()
                .filter(|r| r.rtype() == RType::SRV)
                .cloned()
                .collect();
            sets.push((None, srv));
        }
        // Each set's targets, in the set's order, each once, at most MAX_ADDITIONAL_TARGETS.
        let mut seen: Vec<DomainName> = Vec::new();
        let mut per_set: Vec<Vec<DomainName>> = Vec::new();
        for (_, recs) in &sets {
            let mut mine = Vec::new();
            for r in recs {
                if let RecordData::Srv { target, .. } = &r.data
                    && !target.is_root()
                    && !seen.contains(target)
                    && seen.len() < MAX_ADDITIONAL_TARGETS
                {
                    seen.push(target.clone());
                    mine.push(target.clone());
                }
            }
            per_set.push(mine);
        }
        let wanted: Vec<(DomainName, RType)> = seen
            .iter()
            .flat_map(|t| [(t.clone(), RType::A), (t.clone(), RType::AAAA)])
            .collect();
        let found = join_all(wanted.iter().map(|(n, t)| async {
            match from_pool(n, *t) {
                Some(v) => v,
                None => {
                    let a = self.lookup_in(data, n, *t, 0, ask).await;
                    a.answers
                        .into_iter()
                        .filter(|r| r.rtype() == *t || covers(r, *t))
                        .collect()
                }
            }
        }))
        .await;
        let addresses: std::collections::HashMap<(DomainName, RType), Vec<Rec>> =
            wanted.into_iter().zip(found).collect();
        let mut out: Vec<Rec> = Vec::new();
        for ((owner, recs), targets) in sets.into_iter().zip(per_set) {
            if owner.is_some() {
                out.extend(recs);
            }
            for t in targets {
                for rt in [RType::A, RType::AAAA] {
                    if let Some(v) = addresses.get(&(t.clone(), rt)) {
                        out.extend(v.iter().cloned());
                    }
                }
            }
        }
        answer.additional = out;
    }
}

/// True for an RRSIG over type `t`.
fn covers(r: &Rec, t: RType) -> bool {
    matches!(&r.data, RecordData::Opaque { rtype, rdata }
        if *rtype == RType::RRSIG && rdata.len() >= 2
            && u16::from_be_bytes([rdata[0], rdata[1]]) == t.0)
}

/// Marks an answer given because upstream failed: no signature, reused only until the
/// upstream retry interval.
fn given_because_upstream_failed(a: Answer) -> Answer {
    Answer {
        reuse: Reuse::UntilRetry,
        ..a.without_dnssec()
    }
}

/// True if some SRV set in the answer has two records of one priority: the weighted order
/// is drawn per response.
fn has_weighted_choice(answer: &Answer) -> bool {
    let mut seen = HashSet::new();
    answer
        .answers
        .iter()
        .chain(&answer.additional)
        .any(|r| match &r.data {
            RecordData::Srv { priority, .. } => !seen.insert((r.name.clone(), *priority)),
            _ => false,
        })
}

fn static_answer(records: Vec<Rec>) -> Answer {
    Answer {
        authoritative: true,
        ..Answer::records(records, Source::Static)
    }
}

/// True if `a` answers (name, rtype) with records (or a CNAME chain).
fn is_positive(a: &Answer, rtype: RType) -> bool {
    a.rcode == Rcode::NoError
        && a.answers
            .iter()
            .any(|r| r.rtype() == rtype || r.rtype() == RType::CNAME || rtype == RType::ANY)
}

/// A negative answer for a name in a static zone: NODATA if either side knows the name,
/// else NXDOMAIN; the zone's SOA in AUTHORITY either way.
fn negative_answer(zone: &Zone, stat: &ZoneAnswer, up: &Answer) -> Answer {
    let exists = matches!(stat, ZoneAnswer::NoData) || up.rcode == Rcode::NoError;
    Answer {
        rcode: if exists {
            Rcode::NoError
        } else {
            Rcode::NxDomain
        },
        authoritative: true,
        answers: Vec::new(),
        authority: vec![zone.negative_soa()],
        additional: Vec::new(),
        source: Source::Static,
        authentic_data: false,
        reuse: Reuse::Fresh,
    }
}

#[cfg(test)]
mod tests;
