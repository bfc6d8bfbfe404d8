//! The health policy: a pure function from (answer, health, domain policy, random source) to
//! (rewritten answer, a reason per record). No I/O, no clock; it works on its own copy.
//!
//! [`apply`] takes the answer the resolver found for one question, *before* policy, with the
//! ADDITIONAL section already filled per RFC 3263 (for NAPTR: the SRV records of each
//! replacement and their targets' A/AAAA; for SRV: the targets' A/AAAA). That ADDITIONAL
//! section is all the policy knows about which addresses stand behind a host name; a name
//! without addresses there has unknown health, and unknown counts as up.
//!
//! What happens, by question type (docs/policy.md):
//!
//! - **SRV** (`srv.rs`): a record is up if one address of its target is usable on the
//!   record's port and the owner's transport. `on_down: withhold` drops the others, `demote`
//!   moves them after every up record. Records are sorted by priority; within a priority
//!   they are ordered by an RFC 2782 weighted draw (or kept in source order).
//! - **NAPTR** (`naptr.rs`): a SIP record whose SRV set has no usable target is withheld, so
//!   phones switch transport (RFC 3263 §4.1). The SRV sets in ADDITIONAL are filtered the
//!   same way as an SRV answer.
//! - **A / AAAA** (`address.rs`): of the SIP domain itself, each address is the target
//!   (address, `a_port`, `a_transport`); of a target host, the targets the prober found at
//!   that host. Unusable addresses are withheld (`demote`: moved after the usable ones).
//! - **ADDITIONAL** is kept consistent: no address of a withheld target is handed out as
//!   glue, and neither are the down addresses of kept targets.
//! - **All down**: never an empty answer; `serve_all` hands out the unfiltered answer
//!   except drained targets (an operator's drain is intent; `all_down_includes_drained`
//!   hands them out too, and they are served when nothing else is left), `fallback` the
//!   operator's survivability targets. [`Outcome::all_down`] says which.
//! - **TTL**: every record the policy touches carries `min(original, domain.ttl)`; negative
//!   answers have their SOA TTL and negative TTL (`minimum`, RFC 2308 §5) capped too.
//!
//! Every record in and out is explained by a [`Decision`], for the REST explain view
//! ([`Explanation`]).

mod address;
mod explain;
mod naptr;
mod srv;

#[cfg(test)]
mod tests;

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
};

use serde::Serialize;

use crate::{
    config::{AllDown, FallbackTargetConfig, OnDown, SipDomainConfig},
    health::{AdminState, Health, HealthView, TargetStatus},
    record::{Answer, DomainName, RType, Rcode, Rec, RecordData},
    target::{TargetKey, Transport},
};

pub use explain::Explanation;

/// The section of a DNS message a [`Decision`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Section {
    /// The answer section.
    Answer,
    /// The authority section (the SOA of a negative answer).
    Authority,
    /// The additional section (SRV sets and addresses that save phones round trips).
    Additional,
}

/// What the policy did with one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Handed out unchanged.
    Kept,
    /// Handed out with only its TTL lowered to the domain's cap.
    TtlCapped,
    /// Handed out later than it came (`on_down: demote`): an SRV record at a priority
    /// behind every up record; an address after the up addresses of its name.
    Moved,
    /// Not handed out.
    Withheld,
    /// Handed out although the input did not have it (fallback targets and their glue).
    Added,
}

/// Why one record is (or is not) in the rewritten answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// Where the record is (or would have been).
    pub section: Section,
    /// The record as handed out; for [`Action::Withheld`], as it came in.
    #[serde(serialize_with = "explain::serialize_rec")]
    pub record: Rec,
    /// What was done.
    pub action: Action,
    /// Human-readable why, e.g. `target 192.0.2.10:5060/udp down`.
    pub reason: String,
}

/// The result of [`apply`]: the rewritten answer and how it came about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The answer to send.
    pub answer: Answer,
    /// One decision per record of the input and output answer, additional and (for negative
    /// answers) authority sections: records handed out in output order, then those withheld.
    pub decisions: Vec<Decision>,
    /// Set when every target behind the question was unusable, to the rule that was applied.
    /// `serve_all` is also reported when `fallback` was configured but no fallback target
    /// was usable (or none fits the question), since the unfiltered answer was served then.
    pub all_down: Option<AllDown>,
}

impl Outcome {
    /// The answer unchanged, TTLs included (types and rcodes the policy leaves alone); each
    /// record is still explained.
    fn unchanged(answer: Answer) -> Self {
        let mut decisions = Vec::new();
        for (section, recs) in [
            (Section::Answer, &answer.answers),
            (Section::Additional, &answer.additional),
        ] {
            decisions.extend(recs.iter().map(|rec| Decision {
                section,
                record: rec.clone(),
                action: Action::Kept,
                reason: other_reason(rec),
            }));
        }
        Self {
            answer,
            decisions,
            all_down: None,
        }
    }

    /// How many records were withheld (for `sipdns_policy_withheld_records_total`).
    pub fn withheld_count(&self) -> usize {
        self.decisions
            .iter()
            .filter(|d| d.action == Action::Withheld)
            .count()
    }
}

/// A bounded metric label for the all-down rule (`sipdns_policy_all_down_total{rule}`).
pub fn all_down_label(rule: AllDown) -> &'static str {
    match rule {
        AllDown::ServeAll => "serve_all",
        AllDown::Fallback => "fallback",
    }
}

/// Applies the domain's health policy to the answer for (`qname`, `qtype`).
///
/// `answer` is the resolver's answer before policy, with ADDITIONAL filled per RFC 3263;
/// the policy owns it and never touches shared data. `domain` is the managed SIP domain the
/// question belongs to (for a target host outside the domain: the domain whose SRV records
/// name it). `rng` drives the RFC 2782 weighted ordering; pass a seeded one in tests.
///
/// Only NOERROR and NXDOMAIN answers are rewritten. Negative answers (NXDOMAIN, NODATA) get
/// their TTLs capped. Positive answers are rewritten for SRV, NAPTR, A and AAAA questions;
/// answers to other types are returned unchanged.
pub fn apply<H: HealthView + ?Sized, R: rand::Rng + ?Sized>(
    qname: &DomainName,
    qtype: RType,
    answer: Answer,
    domain: &SipDomainConfig,
    health: &H,
    rng: &mut R,
) -> Outcome {
    if !matches!(answer.rcode, Rcode::NoError | Rcode::NxDomain) {
        return Outcome::unchanged(answer);
    }
    if answer.is_negative(qtype) {
        return negative(answer, domain.ttl);
    }
    let ctx = Ctx::new(domain, health, &answer.additional);
    match qtype {
        RType::SRV => srv::srv_query(&ctx, qname, answer, rng),
        RType::NAPTR => naptr::naptr_query(&ctx, qname, answer, rng),
        RType::A | RType::AAAA => address::address_query(&ctx, qname, qtype, answer),
        _ => Outcome::unchanged(answer),
    }
}

/// The NAPTR records sipdns hands out for a domain that has none (RFC 3263 §4.1, Yealink's
/// `naptr_build` done once for every phone): one per SRV set in `srv_sets_present`, in the
/// domain's `naptr_order` (transports not listed there get none), with order 10, 20, 30...,
/// preference 10, flags `s`, the transport's service, an empty regexp and the replacement
/// `<srv prefix>.<domain>`, each with TTL `ttl`.
pub fn synthesize_naptr(
    domain: &SipDomainConfig,
    srv_sets_present: &[Transport],
    ttl: u32,
) -> Vec<Rec> {
    let transports = domain
        .naptr_order
        .iter()
        .copied()
        .filter(|t| srv_sets_present.contains(t));
    naptr_records(&domain.name, &domain.name, transports, ttl)
}

/// NAPTR records at `owner` pointing at `<prefix>.<domain>` for each transport, in the
/// order given (duplicates skipped).
fn naptr_records(
    owner: &DomainName,
    domain: &DomainName,
    transports: impl Iterator<Item = Transport>,
    ttl: u32,
) -> Vec<Rec> {
    let mut seen = Vec::new();
    let mut out = Vec::new();
    for t in transports {
        if seen.contains(&t) {
            continue;
        }
        seen.push(t);
        // A domain name that is valid stays valid with a two-label SIP prefix unless it is
        // already at the length limit; such a domain has no SRV sets to point at either.
        let Ok(replacement) = domain.prepend(t.srv_prefix()) else {
            continue;
        };
        let order = u16::try_from(10 * (out.len() + 1)).unwrap_or(u16::MAX);
        out.push(Rec::new(
            owner.clone(),
            ttl,
            RecordData::Naptr {
                order,
                preference: 10,
                flags: "s".to_owned(),
                services: t.naptr_service().to_owned(),
                regexp: String::new(),
                replacement,
            },
        ));
    }
    out
}

/// NXDOMAIN / NODATA for a managed name: cap every TTL, and the SOA's negative TTL, so a
/// record that appears later (or a recovered server's name) reaches phones within the cap
/// (RFC 2308 §5: the negative TTL is min(SOA TTL, SOA minimum)).
fn negative(mut answer: Answer, cap: u32) -> Outcome {
    let mut ans = Out::new(Section::Answer, cap);
    for rec in std::mem::take(&mut answer.answers) {
        let reason = other_reason(&rec);
        ans.keep(rec, reason);
    }
    let mut auth = Out::new(Section::Authority, cap);
    for mut rec in std::mem::take(&mut answer.authority) {
        let old_ttl = rec.ttl;
        if let RecordData::Soa { minimum, .. } = &mut rec.data {
            let old_min = *minimum;
            *minimum = old_min.min(cap);
            rec.ttl = old_ttl.min(cap);
            let (action, reason) = if old_ttl > cap || old_min > cap {
                (
                    Action::TtlCapped,
                    format!(
                        "negative answer: soa ttl {old_ttl} -> {}, negative ttl (minimum) \
                         {old_min} -> {}",
                        rec.ttl, *minimum
                    ),
                )
            } else {
                (
                    Action::Kept,
                    "negative answer: ttls already within the cap".to_owned(),
                )
            };
            auth.push(rec, action, reason);
        } else {
            // Other authority records (NS) are not the policy's business.
            auth.records.push(rec);
        }
    }
    let mut add = Out::new(Section::Additional, cap);
    for rec in std::mem::take(&mut answer.additional) {
        let reason = other_reason(&rec);
        add.keep(rec, reason);
    }
    let mut decisions = Vec::new();
    answer.answers = ans.finish(&mut decisions);
    answer.authority = auth.finish(&mut decisions);
    answer.additional = add.finish(&mut decisions);
    Outcome {
        answer,
        decisions,
        all_down: None,
    }
}

/// The reason for a record the policy passes through without judging it.
fn other_reason(rec: &Rec) -> String {
    match rec.rtype() {
        RType::CNAME => "alias, kept ahead of the records it leads to".to_owned(),
        t => format!("{t} record, not judged by the policy"),
    }
}

/// What the policy reads while rewriting one answer.
struct Ctx<'a, H: HealthView + ?Sized> {
    domain: &'a SipDomainConfig,
    health: &'a H,
    /// Addresses per host name, from the input's ADDITIONAL section, in order.
    addrs: HashMap<DomainName, Vec<IpAddr>>,
}

impl<'a, H: HealthView + ?Sized> Ctx<'a, H> {
    fn new(domain: &'a SipDomainConfig, health: &'a H, additional: &[Rec]) -> Self {
        let mut addrs: HashMap<DomainName, Vec<IpAddr>> = HashMap::new();
        for rec in additional {
            if let Some(ip) = rec.data.ip() {
                let list = addrs.entry(rec.name.clone()).or_default();
                if !list.contains(&ip) {
                    list.push(ip);
                }
            }
        }
        Self {
            domain,
            health,
            addrs,
        }
    }

    fn cap(&self) -> u32 {
        self.domain.ttl
    }

    /// Judges a set of targets: usable if one of them is. The reason names the first usable
    /// target, or every unusable one. `None` if there are no targets.
    fn judge_keys(&self, keys: impl IntoIterator<Item = TargetKey>) -> Option<(bool, String)> {
        let mut bad = Vec::new();
        for key in keys {
            let status = self.health.status(&key);
            if status.is_usable() {
                return Some((true, describe(&key, status)));
            }
            bad.push(describe(&key, status));
        }
        if bad.is_empty() {
            None
        } else {
            Some((false, bad.join(", ")))
        }
    }

    /// True if there is at least one of `keys` and the operator drained every one: such a
    /// target stays out of `all_down: serve_all` unless `all_down_includes_drained`.
    fn all_drained(&self, keys: impl IntoIterator<Item = TargetKey>) -> bool {
        let mut any = false;
        for key in keys {
            if self.health.status(&key).admin != AdminState::Drained {
                return false;
            }
            any = true;
        }
        any
    }

    /// The targets behind the SRV target `target` on `port`/`transport`: one per address
    /// of it in ADDITIONAL.
    fn keys_of<'s>(
        &'s self,
        target: &DomainName,
        port: u16,
        transport: Transport,
    ) -> impl Iterator<Item = TargetKey> + 's {
        self.addrs
            .get(target)
            .into_iter()
            .flatten()
            .map(move |ip| TargetKey {
                ip: *ip,
                port,
                transport,
            })
    }

    /// True if every known address of the SRV target `target` on `port`/`transport` is
    /// drained (see [`Ctx::all_drained`]).
    fn srv_target_drained(&self, target: &DomainName, port: u16, transport: Transport) -> bool {
        let keys = self.keys_of(target, port, transport);
        self.all_drained(keys)
    }

    /// Whether `serve_all` leaves drained targets out (`all_down_includes_drained: false`).
    fn serve_all_skips_drained(&self) -> bool {
        !self.domain.all_down_includes_drained
    }

    /// Judges the SRV target `target` on `port`/`transport` by its addresses in ADDITIONAL.
    fn judge_srv_target(
        &self,
        target: &DomainName,
        port: u16,
        transport: Transport,
    ) -> (bool, String) {
        if target.is_root() {
            // RFC 2782: target "." means the service is decidedly not available here.
            return (
                true,
                "target \".\": service not offered (RFC 2782), passed through".to_owned(),
            );
        }
        let keys = self.keys_of(target, port, transport);
        self.judge_keys(keys).unwrap_or_else(|| {
            (
                true,
                format!("no address of {target} in additional: health unknown (counts as up)"),
            )
        })
    }

    /// The fallback targets fitting `transport` (all of them if none does), split into
    /// usable ones and the reasons the others are not.
    fn fallback_targets(
        &self,
        transport: Option<Transport>,
    ) -> (
        Vec<&'a FallbackTargetConfig>,
        Vec<(&'a FallbackTargetConfig, String)>,
    ) {
        let all = &self.domain.fallback;
        let fitting: Vec<&FallbackTargetConfig> = match transport {
            Some(t) if all.iter().any(|f| f.transport == t) => {
                all.iter().filter(|f| f.transport == t).collect()
            }
            _ => all.iter().collect(),
        };
        let mut usable = Vec::new();
        let mut down = Vec::new();
        for f in fitting {
            let key = fallback_key(f);
            let status = self.health.status(&key);
            if status.is_usable() {
                usable.push(f);
            } else {
                down.push((f, format!("fallback {}", describe(&key, status))));
            }
        }
        (usable, down)
    }
}

/// The target key a fallback gateway is probed as.
fn fallback_key(f: &FallbackTargetConfig) -> TargetKey {
    TargetKey {
        ip: f.address,
        port: f.port,
        transport: f.transport,
    }
}

/// The A or AAAA record of a fallback gateway.
fn fallback_glue(f: &FallbackTargetConfig, ttl: u32) -> Rec {
    Rec::new(f.host.clone(), ttl, address_data(f.address))
}

/// A or AAAA data for an address.
fn address_data(ip: IpAddr) -> RecordData {
    match ip {
        IpAddr::V4(a) => RecordData::A(a),
        IpAddr::V6(a) => RecordData::Aaaa(a),
    }
}

/// `target 192.0.2.10:5060/udp down`, `... drained by operator`, `... up`.
fn describe(key: &TargetKey, status: TargetStatus) -> String {
    match (status.admin, status.health) {
        (AdminState::Drained, _) => format!("target {key} drained by operator"),
        (AdminState::Enabled, Health::Down) => format!("target {key} down"),
        (AdminState::Enabled, Health::Up) => format!("target {key} up"),
        (AdminState::Enabled, Health::Unknown) => {
            format!("target {key} not probed yet (counts as up)")
        }
    }
}

/// One section being rebuilt: the records handed out, in order, with their decisions, and
/// the decisions about records withheld.
struct Out {
    section: Section,
    cap: u32,
    records: Vec<Rec>,
    decisions: Vec<Decision>,
    withheld: Vec<Decision>,
    /// Records demoted behind the others of their RRset (placed by [`Out::finish`]).
    deferred: Vec<(Rec, String)>,
}

impl Out {
    fn new(section: Section, cap: u32) -> Self {
        Self {
            section,
            cap,
            records: Vec::new(),
            decisions: Vec::new(),
            withheld: Vec::new(),
            deferred: Vec::new(),
        }
    }

    /// Hands `rec` out as [`Action::Moved`], after every record of its RRset (same owner
    /// and type) handed out otherwise: how `on_down: demote` treats a down address.
    fn defer(&mut self, rec: Rec, reason: String) {
        self.deferred.push((rec, reason));
    }

    /// Hands `rec` out with its TTL capped: [`Action::Kept`] or [`Action::TtlCapped`].
    fn keep(&mut self, rec: Rec, reason: String) {
        self.push(rec, Action::Kept, reason);
    }

    /// Hands `rec` out with `action` and its TTL capped; the cap is added to the reason.
    fn push(&mut self, mut rec: Rec, action: Action, mut reason: String) {
        let mut action = action;
        if rec.ttl > self.cap {
            reason.push_str(&format!("; ttl capped {} -> {}", rec.ttl, self.cap));
            rec.ttl = self.cap;
            if action == Action::Kept {
                action = Action::TtlCapped;
            }
        }
        self.decisions.push(Decision {
            section: self.section,
            record: rec.clone(),
            action,
            reason,
        });
        self.records.push(rec);
    }

    /// Hands `rec` out unchanged, TTL included (names the policy does not manage).
    fn pass(&mut self, rec: Rec, reason: String) {
        self.decisions.push(Decision {
            section: self.section,
            record: rec.clone(),
            action: Action::Kept,
            reason,
        });
        self.records.push(rec);
    }

    /// Records that `rec` is not handed out.
    fn withhold(&mut self, rec: Rec, reason: String) {
        self.withheld.push(Decision {
            section: self.section,
            record: rec,
            action: Action::Withheld,
            reason,
        });
    }

    /// True if a record with this owner and data is already handed out.
    fn has(&self, rec: &Rec) -> bool {
        self.records
            .iter()
            .any(|r| r.name == rec.name && r.data == rec.data)
    }

    /// The records to hand out; the decisions (handed out first, then withheld) go to `all`.
    /// Deferred records go right after the last record of their RRset (at the end if none).
    fn finish(mut self, all: &mut Vec<Decision>) -> Vec<Rec> {
        for (mut rec, mut reason) in std::mem::take(&mut self.deferred) {
            if rec.ttl > self.cap {
                reason.push_str(&format!("; ttl capped {} -> {}", rec.ttl, self.cap));
                rec.ttl = self.cap;
            }
            let at = self
                .records
                .iter()
                .rposition(|r| r.name == rec.name && r.rtype() == rec.rtype())
                .map_or(self.records.len(), |i| i + 1);
            self.decisions.insert(
                at,
                Decision {
                    section: self.section,
                    record: rec.clone(),
                    action: Action::Moved,
                    reason,
                },
            );
            self.records.insert(at, rec);
        }
        all.extend(self.decisions);
        all.extend(self.withheld);
        self.records
    }
}

/// How the glue (A/AAAA in ADDITIONAL) of one handed-out SRV record is filtered.
#[derive(Debug, Clone)]
struct GlueNeed {
    port: u16,
    transport: Transport,
    /// The record is handed out although down (demoted, or all down and served anyway):
    /// all of its addresses go with it (drained ones excepted with `skip_drained`).
    as_is: bool,
    /// With `as_is`: addresses the operator drained stay out (`all_down: serve_all`
    /// without `all_down_includes_drained`).
    skip_drained: bool,
}

/// What the SRV records handed out (in the answer and in ADDITIONAL) need as glue.
#[derive(Debug, Default)]
struct Glue {
    /// Every host named by an SRV target in the input; glue for other names is not ours.
    srv_hosts: HashSet<DomainName>,
    /// Per host, the handed-out records that point at it.
    needs: HashMap<DomainName, Vec<GlueNeed>>,
    /// Fallback gateway addresses to add, with the reason.
    added: Vec<(Rec, String)>,
}

impl Glue {
    fn need(&mut self, host: &DomainName, need: GlueNeed) {
        self.needs.entry(host.clone()).or_default().push(need);
    }

    /// Rebuilds ADDITIONAL from the input's non-SRV records (the SRV sets were handled by the
    /// caller into `out`): unrelated records pass with capped TTL; addresses of SRV targets
    /// follow the records handed out; fallback glue is added at the end.
    fn filter<H: HealthView + ?Sized>(self, ctx: &Ctx<'_, H>, input: Vec<Rec>, out: &mut Out) {
        for rec in input {
            let Some(ip) = rec.data.ip() else {
                let reason = other_reason(&rec);
                out.keep(rec, reason);
                continue;
            };
            if !self.srv_hosts.contains(&rec.name) {
                out.keep(
                    rec,
                    "address, not of an SRV target in this answer".to_owned(),
                );
                continue;
            }
            let needs = self.needs.get(&rec.name).map(Vec::as_slice).unwrap_or(&[]);
            let key = |n: &GlueNeed| TargetKey {
                ip,
                port: n.port,
                transport: n.transport,
            };
            let drained = |n: &GlueNeed| ctx.all_drained([key(n)]);
            let judged: Vec<&GlueNeed> = needs.iter().filter(|n| !n.as_is).collect();
            if needs.is_empty() {
                let reason = format!("address of withheld target {}", rec.name);
                out.withhold(rec, reason);
            } else if needs
                .iter()
                .any(|n| n.as_is && !(n.skip_drained && drained(n)))
            {
                out.keep(
                    rec,
                    "address of a target handed out although down".to_owned(),
                );
            } else if judged.is_empty() {
                out.withhold(
                    rec,
                    "address drained by operator: all targets down, serve_all leaves drained \
                     targets out (all_down_includes_drained: false)"
                        .to_owned(),
                );
            } else {
                match ctx.judge_keys(judged.into_iter().map(key)) {
                    Some((false, reason)) if ctx.domain.on_down == OnDown::Demote => {
                        out.defer(rec, format!("{reason}; demoted: after the up addresses"));
                    }
                    Some((false, reason)) => out.withhold(rec, reason),
                    Some((true, reason)) => out.keep(rec, reason),
                    None => out.keep(rec, "address of a kept target".to_owned()),
                }
            }
        }
        for (rec, reason) in self.added {
            if !out.has(&rec) {
                out.push(rec, Action::Added, reason);
            }
        }
    }
}
