//! SRV sets: health filtering (`withhold` / `demote`), the all-down rules, fallback targets,
//! and RFC 2782 ordering. Used for SRV answers and for the SRV sets that a NAPTR answer
//! carries in ADDITIONAL.

use std::collections::{BTreeMap, BTreeSet};

use rand::{Rng, RngExt};

use super::{Action, Ctx, Glue, GlueNeed, Out, Outcome, Section, fallback_glue, other_reason};
use crate::{
    config::{AllDown, FallbackTargetConfig, OnDown, Ordering},
    health::HealthView,
    record::{Answer, DomainName, RType, Rec, RecordData},
    target::Transport,
};

/// Rewrites the answer to an SRV question.
pub(super) fn srv_query<H: HealthView + ?Sized, R: Rng + ?Sized>(
    ctx: &Ctx<'_, H>,
    qname: &DomainName,
    mut answer: Answer,
    rng: &mut R,
) -> Outcome {
    let (srvs, others): (Vec<Rec>, Vec<Rec>) = std::mem::take(&mut answer.answers)
        .into_iter()
        .partition(|r| r.rtype() == RType::SRV);
    // The SRV records' owner (past any CNAME) names the transport; RFC 3263 §4.1.
    let owner = srvs
        .first()
        .map_or_else(|| qname.clone(), |r| r.name.clone());
    let transport = Transport::from_srv_name(&owner)
        .or_else(|| Transport::from_srv_name(qname))
        .unwrap_or(Transport::Udp);

    let mut ans = Out::new(Section::Answer, ctx.cap());
    for rec in others {
        let reason = other_reason(&rec);
        ans.keep(rec, reason);
    }
    let mut glue = Glue::default();
    let set = SrvSet {
        owner,
        transport,
        records: srvs,
    };
    let all_down = process_set(ctx, &mut ans, &mut glue, set, true, rng);
    let mut add = Out::new(Section::Additional, ctx.cap());
    glue.filter(ctx, std::mem::take(&mut answer.additional), &mut add);

    let mut decisions = Vec::new();
    answer.answers = ans.finish(&mut decisions);
    answer.additional = add.finish(&mut decisions);
    Outcome {
        answer,
        decisions,
        all_down,
    }
}

/// One SRV RRset: its owner, the transport that owner stands for, and its records.
pub(super) struct SrvSet {
    /// Owner name (`_sip._udp.pbx.example.org.`).
    pub(super) owner: DomainName,
    /// Transport of the targets (from the owner prefix or the NAPTR service).
    pub(super) transport: Transport,
    /// The SRV records.
    pub(super) records: Vec<Rec>,
}

/// One SRV record on its way out.
struct Item {
    rec: Rec,
    action: Action,
    reason: String,
}

/// Filters, demotes, completes and orders one SRV set, pushing the result into `out` and
/// the glue it needs into `glue`.
///
/// `allow_fallback`: whether the `fallback` all-down rule may replace this set (for the
/// question's own SRV answer); otherwise an all-down set is served as it is. Returns the
/// all-down rule applied, if every target was down.
pub(super) fn process_set<H: HealthView + ?Sized, R: Rng + ?Sized>(
    ctx: &Ctx<'_, H>,
    out: &mut Out,
    glue: &mut Glue,
    set: SrvSet,
    allow_fallback: bool,
    rng: &mut R,
) -> Option<AllDown> {
    let SrvSet {
        owner,
        transport,
        records,
    } = set;
    let owner = &owner;
    if records.is_empty() {
        return None;
    }
    let cap = ctx.cap();
    let judged: Vec<(Rec, bool, String)> = records
        .into_iter()
        .map(|rec| {
            let (up, reason) = match &rec.data {
                RecordData::Srv { target, port, .. } => {
                    glue.srv_hosts.insert(target.clone());
                    ctx.judge_srv_target(target, *port, transport)
                }
                _ => (true, other_reason(&rec)),
            };
            (rec, up, reason)
        })
        .collect();

    let mut items = Vec::new();
    let mut all_down = None;
    if judged.iter().any(|(_, up, _)| *up) {
        let max_up = judged
            .iter()
            .filter(|(_, up, _)| *up)
            .map(|(rec, _, _)| priority(rec))
            .max()
            .unwrap_or(0);
        // `demote`: the down records' distinct priorities map, in order, to the priorities
        // right after the highest up one, so their relative order and weights survive.
        let demoted: BTreeSet<u16> = match ctx.domain.on_down {
            OnDown::Demote => judged
                .iter()
                .filter(|(_, up, _)| !*up)
                .map(|(rec, _, _)| priority(rec))
                .collect(),
            OnDown::Withhold => BTreeSet::new(),
        };
        for (mut rec, up, reason) in judged {
            if up {
                need_glue(glue, &rec, transport, false, false);
                items.push(Item {
                    rec,
                    action: Action::Kept,
                    reason,
                });
                continue;
            }
            match ctx.domain.on_down {
                OnDown::Withhold => out.withhold(rec, reason),
                OnDown::Demote => {
                    let old = priority(&rec);
                    let rank = demoted.iter().position(|p| *p == old).unwrap_or(0);
                    let rank = u16::try_from(rank).unwrap_or(u16::MAX);
                    let new = max_up.saturating_add(1).saturating_add(rank);
                    set_priority(&mut rec, new);
                    need_glue(glue, &rec, transport, true, false);
                    items.push(Item {
                        rec,
                        action: Action::Moved,
                        reason: format!("{reason}; demoted: priority {old} -> {new}"),
                    });
                }
            }
        }
    } else {
        let mut note = "all targets down: serve_all";
        if allow_fallback && ctx.domain.all_down == AllDown::Fallback {
            let (usable, down) = ctx.fallback_targets(Some(transport));
            if usable.is_empty() {
                note = "all targets down, no usable fallback target: serve_all";
            } else {
                for (rec, _, reason) in judged {
                    out.withhold(rec, format!("{reason}; all targets down: fallback"));
                }
                fallback_set(ctx, out, glue, owner, &usable, &down, rng);
                return Some(AllDown::Fallback);
            }
        }
        // A drain is the operator's intent, not a health guess: drained targets stay out
        // of serve_all (unless `all_down_includes_drained`), except when nothing else is
        // left, since an empty answer is never handed out.
        let skip = ctx.serve_all_skips_drained();
        let drained: Vec<bool> = judged
            .iter()
            .map(|(rec, _, _)| skip && srv_drained(ctx, rec, transport))
            .collect();
        let only_drained = drained.iter().all(|d| *d);
        for ((rec, _, reason), drained) in judged.into_iter().zip(drained) {
            if drained && !only_drained {
                out.withhold(
                    rec,
                    format!(
                        "{reason}; {note} leaves drained targets out \
                         (all_down_includes_drained: false)"
                    ),
                );
                continue;
            }
            let reason = if drained {
                format!("{reason}; {note}: only drained targets left, served rather than none")
            } else {
                format!("{reason}; {note}")
            };
            need_glue(glue, &rec, transport, true, skip && !only_drained);
            items.push(Item {
                rec,
                action: Action::Kept,
                reason,
            });
        }
        all_down = Some(AllDown::ServeAll);
    }

    if ctx.domain.fallback_always {
        // Listed last, below everything else handed out (RFC 2782: higher = later). Only
        // gateways of this set's transport: while servers are up there is no reason to send
        // a phone to a gateway over a transport it does not speak.
        let lowest = items
            .iter()
            .map(|i| priority(&i.rec))
            .max()
            .map_or(0, |p| p.saturating_add(1));
        let (usable, down) = ctx.fallback_targets(Some(transport));
        let usable = usable.into_iter().filter(|f| f.transport == transport);
        let down = down.into_iter().filter(|(f, _)| f.transport == transport);
        for f in usable {
            let already = items.iter().any(|i| {
                matches!(&i.rec.data, RecordData::Srv { target, port, .. }
                    if *target == f.host && *port == f.port)
            });
            if already {
                continue;
            }
            glue.added.push((
                fallback_glue(f, cap),
                "address of fallback target (always listed)".to_owned(),
            ));
            items.push(Item {
                rec: fallback_srv(owner, f, lowest, cap),
                action: Action::Added,
                reason: "fallback target (always listed, lowest priority)".to_owned(),
            });
        }
        for (f, reason) in down {
            out.withhold(fallback_srv(owner, f, lowest, cap), reason);
        }
    }

    emit(ctx.domain.ordering, out, items, rng);
    all_down
}

/// Hands out the fallback gateways `usable` as the SRV set at `owner`, all at priority 0
/// (the all-down `fallback` rule), with their glue; `down` ones are reported withheld.
pub(super) fn fallback_set<H: HealthView + ?Sized, R: Rng + ?Sized>(
    ctx: &Ctx<'_, H>,
    out: &mut Out,
    glue: &mut Glue,
    owner: &DomainName,
    usable: &[&FallbackTargetConfig],
    down: &[(&FallbackTargetConfig, String)],
    rng: &mut R,
) {
    let cap = ctx.cap();
    for (f, reason) in down {
        out.withhold(fallback_srv(owner, f, 0, cap), reason.clone());
    }
    let items = usable
        .iter()
        .map(|f| {
            glue.added.push((
                fallback_glue(f, cap),
                "address of fallback target (all down)".to_owned(),
            ));
            Item {
                rec: fallback_srv(owner, f, 0, cap),
                action: Action::Added,
                reason: "fallback target (all down)".to_owned(),
            }
        })
        .collect();
    emit(ctx.domain.ordering, out, items, rng);
}

/// The SRV record handing out a fallback gateway.
pub(super) fn fallback_srv(
    owner: &DomainName,
    f: &FallbackTargetConfig,
    priority: u16,
    ttl: u32,
) -> Rec {
    Rec::new(
        owner.clone(),
        ttl,
        RecordData::Srv {
            priority,
            weight: f.weight,
            port: f.port,
            target: f.host.clone(),
        },
    )
}

/// Notes which glue a handed-out SRV record needs.
fn need_glue(glue: &mut Glue, rec: &Rec, transport: Transport, as_is: bool, skip_drained: bool) {
    if let RecordData::Srv { target, port, .. } = &rec.data {
        glue.need(
            target,
            GlueNeed {
                port: *port,
                transport,
                as_is,
                skip_drained,
            },
        );
    }
}

/// True if the operator drained every known address of the SRV record's target.
pub(super) fn srv_drained<H: HealthView + ?Sized>(
    ctx: &Ctx<'_, H>,
    rec: &Rec,
    transport: Transport,
) -> bool {
    match &rec.data {
        RecordData::Srv { target, port, .. } => ctx.srv_target_drained(target, *port, transport),
        _ => false,
    }
}

/// Sorts by priority (lowest first, RFC 2782) and orders each priority by `ordering`, then
/// hands the records out.
fn emit<R: Rng + ?Sized>(ordering: Ordering, out: &mut Out, items: Vec<Item>, rng: &mut R) {
    let mut groups: BTreeMap<u16, Vec<Item>> = BTreeMap::new();
    for item in items {
        groups.entry(priority(&item.rec)).or_default().push(item);
    }
    for (_, group) in groups {
        let group = match ordering {
            Ordering::Weighted => weighted_order(group, |i| weight(&i.rec), rng),
            Ordering::Fixed => group,
        };
        for item in group {
            out.push(item.rec, item.action, item.reason);
        }
    }
}

/// Orders records of one priority by RFC 2782's weighted selection, repeated without
/// replacement: so a phone that takes the first record picks each with probability
/// proportional to its weight.
///
/// RFC 2782 (§ "Usage rules"): arrange the remaining records in any order with the weight-0
/// ones first, draw a number between 0 and the sum of the weights inclusive, and take the
/// first record whose running sum is at least the number. The `0` in that range is what
/// gives weight-0 records their "very small chance"; when no weight-0 record remains it only
/// biases the first record (weights 1:2 would come out 50:50), so the draw then starts at 1
/// and the shares are exactly proportional. Weight-0 records are put first in random order
/// ("any order"), so several of them share their chance evenly; a priority whose weights are
/// all 0 comes out uniformly shuffled.
pub(super) fn weighted_order<T, R: Rng + ?Sized>(
    items: Vec<T>,
    weight: impl Fn(&T) -> u16,
    rng: &mut R,
) -> Vec<T> {
    let (mut pool, rest): (Vec<T>, Vec<T>) = items.into_iter().partition(|i| weight(i) == 0);
    // Fisher-Yates over the weight-0 records.
    for i in (1..pool.len()).rev() {
        let j = rng.random_range(0..=i);
        pool.swap(i, j);
    }
    pool.extend(rest);
    let mut out = Vec::with_capacity(pool.len());
    while pool.len() > 1 {
        let sum: u64 = pool.iter().map(|i| u64::from(weight(i))).sum();
        let has_zero = pool.iter().any(|i| weight(i) == 0);
        let draw = if has_zero {
            rng.random_range(0..=sum)
        } else {
            rng.random_range(1..=sum)
        };
        let mut running = 0u64;
        let mut chosen = pool.len() - 1;
        for (idx, item) in pool.iter().enumerate() {
            running += u64::from(weight(item));
            if running >= draw {
                chosen = idx;
                break;
            }
        }
        out.push(pool.remove(chosen));
    }
    out.extend(pool);
    out
}

fn priority(rec: &Rec) -> u16 {
    match &rec.data {
        RecordData::Srv { priority, .. } => *priority,
        _ => 0,
    }
}

fn weight(rec: &Rec) -> u16 {
    match &rec.data {
        RecordData::Srv { weight, .. } => *weight,
        _ => 0,
    }
}

fn set_priority(rec: &mut Rec, new: u16) {
    if let RecordData::Srv { priority, .. } = &mut rec.data {
        *priority = new;
    }
}
