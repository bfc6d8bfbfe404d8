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

use std::{collections::HashSet, sync::Arc};

use arc_swap::ArcSwap;
use futures::future::{BoxFuture, FutureExt, join_all};

use crate::{
    config::{MergeMode, SipDomainConfig},
    health::{HealthHandle, HealthSnapshot},
    metrics::Metrics,
    policy::{self, Explanation},
    record::{Answer, DomainName, RType, Rcode, Rec, RecordData, Source},
    state::Data,
    target::Transport,
    upstream::Forwarder,
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
        self.lookup_in(&data, name, rtype, 0, Wait::Upstream).await
    }

    fn lookup_in<'a>(
        &'a self,
        data: &'a Data,
        name: &'a DomainName,
        rtype: RType,
        depth: usize,
        wait: Wait,
    ) -> BoxFuture<'a, Answer> {
        async move {
            let Some(zone) = data.zones.find(name) else {
                return self.forward(name, rtype, wait).await;
            };
            let stat = zone.lookup(name, rtype);
            match zone.mode {
                // The zone is the operator's word for its names: upstream is not asked.
                MergeMode::Override => match stat {
                    ZoneAnswer::Records(r) => static_answer(r),
                    ZoneAnswer::Cname(c) => self.chase(data, c, rtype, depth, wait).await,
                    negative => negative_answer(zone, &negative, &Answer::servfail()),
                },
                MergeMode::Fallback => {
                    let has_static = matches!(stat, ZoneAnswer::Records(_) | ZoneAnswer::Cname(_));
                    let up = if has_static {
                        // Static data is waiting: do not let a dead upstream hold the phone
                        // longer than the RFC 8767 client response timer.
                        let budget = data.config.upstream.stale_answer_after;
                        tokio::time::timeout(budget, self.forward(name, rtype, wait))
                            .await
                            .unwrap_or_else(|_| Answer::servfail())
                    } else {
                        self.forward(name, rtype, wait).await
                    };
                    if is_positive(&up, rtype) {
                        return up;
                    }
                    match stat {
                        ZoneAnswer::Records(r) => static_answer(r),
                        ZoneAnswer::Cname(c) => self.chase(data, c, rtype, depth, wait).await,
                        negative => negative_answer(zone, &negative, &up),
                    }
                }
                MergeMode::Merge => {
                    let up = self.forward(name, rtype, wait).await;
                    match stat {
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
                            a
                        }
                        ZoneAnswer::Cname(c) if !is_positive(&up, rtype) => {
                            self.chase(data, c, rtype, depth, wait).await
                        }
                        _ if is_positive(&up, rtype) => up,
                        negative => negative_answer(zone, &negative, &up),
                    }
                }
            }
        }
        .boxed()
    }

    async fn chase(
        &self,
        data: &Data,
        cname: Rec,
        rtype: RType,
        depth: usize,
        wait: Wait,
    ) -> Answer {
        let RecordData::Cname(target) = &cname.data else {
            return static_answer(vec![cname]);
        };
        if depth >= MAX_CNAME_DEPTH {
            return static_answer(vec![cname]);
        }
        let target = target.clone();
        let rest = self.lookup_in(data, &target, rtype, depth + 1, wait).await;
        let mut answers = vec![cname];
        answers.extend(rest.answers);
        Answer {
            rcode: rest.rcode,
            authoritative: true,
            answers,
            authority: rest.authority,
            additional: rest.additional,
            source: Source::Static,
        }
    }

    async fn forward(&self, name: &DomainName, rtype: RType, wait: Wait) -> Answer {
        if let Some(hit) = self.forwarder.cached(name, rtype) {
            return hit;
        }
        if wait == Wait::CacheOnly {
            // ADDITIONAL records are a courtesy: never hold an answer for them. Use what
            // the cache has (even stale) and fetch the rest in the background, so the next
            // answer carries it.
            if let Some(stale) = self.forwarder.stale(name, rtype) {
                return stale;
            }
            if let Ok(permit) = self.prefetch.clone().try_acquire_owned() {
                let (f, name) = (self.forwarder.clone(), name.clone());
                tokio::spawn(async move {
                    let _ = f.lookup(&name, rtype).await;
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
                .stale(name, rtype)
                .unwrap_or_else(Answer::servfail);
        };
        match self.forwarder.lookup(name, rtype).await {
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
        self.answer_inner(name, qtype, false).await.0
    }

    /// [`Self::answer`] with the answer before the policy and every decision, for the
    /// explain view.
    pub async fn explain(&self, name: &DomainName, qtype: RType) -> Explanation {
        let (answer, explained) = self.answer_inner(name, qtype, true).await;
        explained.unwrap_or_else(|| Explanation::untouched(name, qtype, &answer))
    }

    /// The answer, and with `explain` its explanation (never built for a phone's query).
    async fn answer_inner(
        &self,
        name: &DomainName,
        qtype: RType,
        explain: bool,
    ) -> (Answer, Option<Explanation>) {
        let data = self.data.load_full();
        let mut answer = self.lookup_in(&data, name, qtype, 0, Wait::Upstream).await;
        if answer.source == Source::Synthesized && answer.rcode == Rcode::ServFail {
            // Upstream failed, or the question was turned away at the in-flight bound:
            // nothing to apply a policy to.
            return (answer, None);
        }
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
            && let Some(synth) = self.synthesize(&data, d).await
        {
            answer = synth;
        }
        if matches!(qtype, RType::NAPTR | RType::SRV)
            && answer.rcode == Rcode::NoError
            && !answer.answers.is_empty()
        {
            self.fill_additional(&data, &mut answer, qtype).await;
        }

        let Some(d) = domain else {
            return (answer, None);
        };
        let before = explain.then(|| answer.clone());
        let health = self.health();
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
        (outcome.answer, explained)
    }

    /// NAPTR records made from the domain's SRV sets, with ADDITIONAL filled later.
    async fn synthesize(&self, data: &Data, d: &SipDomainConfig) -> Option<Answer> {
        let names: Vec<(Transport, DomainName)> = d
            .naptr_order
            .iter()
            .filter_map(|t| d.name.prepend(t.srv_prefix()).ok().map(|n| (*t, n)))
            .collect();
        let looks = join_all(
            names
                .iter()
                .map(|(_, n)| self.lookup_in(data, n, RType::SRV, 0, Wait::Upstream)),
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

    /// RFC 3263 / RFC 2782 additional records: for NAPTR the SRV records it points to and
    /// their targets' addresses; for SRV the targets' addresses. What the answer already
    /// carries is not fetched again.
    async fn fill_additional(&self, data: &Data, answer: &mut Answer, qtype: RType) {
        let mut have: HashSet<(DomainName, RType)> = answer
            .additional
            .iter()
            .map(|r| (r.name.clone(), r.rtype()))
            .collect();
        let mut srv_records: Vec<Rec> = Vec::new();
        if qtype == RType::NAPTR {
            let mut owners = Vec::new();
            for r in &answer.answers {
                if let RecordData::Naptr {
                    flags, replacement, ..
                } = &r.data
                    && flags.eq_ignore_ascii_case("s")
                    && !replacement.is_root()
                    && !owners.contains(replacement)
                {
                    owners.push(replacement.clone());
                }
            }
            let missing: Vec<&DomainName> = owners
                .iter()
                .filter(|o| !have.contains(&((*o).clone(), RType::SRV)))
                .collect();
            let found = join_all(
                missing
                    .iter()
                    .map(|o| self.lookup_in(data, o, RType::SRV, 0, Wait::CacheOnly)),
            )
            .await;
            for a in found {
                for r in a.answers.into_iter().filter(|r| r.rtype() == RType::SRV) {
                    have.insert((r.name.clone(), RType::SRV));
                    answer.additional.push(r);
                }
            }
            srv_records.extend(
                answer
                    .additional
                    .iter()
                    .filter(|r| r.rtype() == RType::SRV)
                    .cloned(),
            );
        } else {
            srv_records.extend(
                answer
                    .answers
                    .iter()
                    .filter(|r| r.rtype() == RType::SRV)
                    .cloned(),
            );
        }
        let mut targets: Vec<DomainName> = Vec::new();
        for r in &srv_records {
            if let RecordData::Srv { target, .. } = &r.data
                && !target.is_root()
                && !targets.contains(target)
            {
                targets.push(target.clone());
            }
        }
        targets.truncate(MAX_ADDITIONAL_TARGETS);
        let wanted: Vec<(DomainName, RType)> = targets
            .into_iter()
            .flat_map(|t| [(t.clone(), RType::A), (t, RType::AAAA)])
            .filter(|k| !have.contains(k))
            .collect();
        let found = join_all(
            wanted
                .iter()
                .map(|(n, t)| self.lookup_in(data, n, *t, 0, Wait::CacheOnly)),
        )
        .await;
        for ((_, t), a) in wanted.iter().zip(found) {
            answer
                .additional
                .extend(a.answers.into_iter().filter(|r| r.rtype() == *t));
        }
    }
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
    }
}

#[cfg(test)]
mod tests;
