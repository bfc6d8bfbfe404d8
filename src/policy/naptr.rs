//! NAPTR answers: withhold a SIP NAPTR whose SRV set has no usable target, so a phone that
//! follows RFC 3263 §4.1 picks another transport; filter the SRV sets in ADDITIONAL like an
//! SRV answer; and the all-down rules at the NAPTR level.

use std::collections::HashSet;

use rand::Rng;

use super::{
    Action, Ctx, Glue, Out, Outcome, Section, naptr_records, other_reason,
    srv::{SrvSet, fallback_set, process_set},
};
use crate::{
    config::AllDown,
    health::HealthView,
    record::{Answer, DomainName, RType, Rec, RecordData},
    target::Transport,
};

/// The SIP transport and SRV name a NAPTR record leads to, if it is a SIP record that says
/// "look up SRV next" (flags `s`, RFC 3263 §4.1). Other NAPTRs are not the policy's.
fn sip_target(rec: &Rec) -> Option<(Transport, &DomainName)> {
    match &rec.data {
        RecordData::Naptr {
            flags,
            services,
            replacement,
            ..
        } if flags.eq_ignore_ascii_case("s") => {
            Transport::from_naptr_service(services).map(|t| (t, replacement))
        }
        _ => None,
    }
}

/// What the policy thinks of one NAPTR record.
enum Verdict {
    /// Not a SIP `s` record: passed through.
    NotSip,
    /// Its SRV set has a usable target, or is not known.
    Up(String),
    /// Its SRV set has no usable target; `true` if the operator drained every one.
    Down(String, bool),
}

/// Rewrites the answer to a NAPTR question.
pub(super) fn naptr_query<H: HealthView + ?Sized, R: Rng + ?Sized>(
    ctx: &Ctx<'_, H>,
    qname: &DomainName,
    mut answer: Answer,
    rng: &mut R,
) -> Outcome {
    let cap = ctx.cap();
    let (naptrs, others): (Vec<Rec>, Vec<Rec>) = std::mem::take(&mut answer.answers)
        .into_iter()
        .partition(|r| r.rtype() == RType::NAPTR);
    let (srv_add, rest_add): (Vec<Rec>, Vec<Rec>) = std::mem::take(&mut answer.additional)
        .into_iter()
        .partition(|r| r.rtype() == RType::SRV);

    // The SRV sets in ADDITIONAL, by owner, in order of first appearance. Their transport is
    // the service of the NAPTR that points at them, else their owner's prefix.
    let mut sets: Vec<SrvSet> = Vec::new();
    for rec in srv_add {
        if let Some(set) = sets.iter_mut().find(|s| s.owner == rec.name) {
            set.records.push(rec);
            continue;
        }
        let transport = naptrs
            .iter()
            .filter_map(sip_target)
            .find(|(_, r)| **r == rec.name)
            .map(|(t, _)| t)
            .or_else(|| Transport::from_srv_name(&rec.name))
            .unwrap_or(Transport::Udp);
        sets.push(SrvSet {
            owner: rec.name.clone(),
            transport,
            records: vec![rec],
        });
    }

    let verdicts: Vec<Verdict> = naptrs.iter().map(|rec| judge(ctx, &sets, rec)).collect();
    let sip = verdicts
        .iter()
        .filter(|v| !matches!(v, Verdict::NotSip))
        .count();
    let up = verdicts
        .iter()
        .filter(|v| matches!(v, Verdict::Up(_)))
        .count();
    // Under serve_all, NAPTRs whose targets are all drained stay out (unless
    // `all_down_includes_drained`) as long as another SIP NAPTR is left to hand out.
    let skip_drained = ctx.serve_all_skips_drained()
        && verdicts
            .iter()
            .any(|v| matches!(v, Verdict::Down(_, false)));

    // Fallback NAPTRs go where the SIP NAPTRs were (past any CNAME).
    let owner = naptrs
        .iter()
        .find(|r| sip_target(r).is_some())
        .map_or_else(|| qname.clone(), |r| r.name.clone());

    let mut ans = Out::new(Section::Answer, cap);
    for rec in others {
        let reason = other_reason(&rec);
        ans.keep(rec, reason);
    }
    let mut add = Out::new(Section::Additional, cap);
    let mut glue = Glue::default();
    let mut all_down = None;

    // All down: the fallback rule, when it has a usable gateway.
    let fallback = if sip > 0 && up == 0 && ctx.domain.all_down == AllDown::Fallback {
        Some(ctx.fallback_targets(None)).filter(|(usable, _)| !usable.is_empty())
    } else {
        None
    };
    let note = if sip > 0 && up == 0 {
        match (&fallback, ctx.domain.all_down) {
            (Some(_), _) => "all targets down: fallback",
            (None, AllDown::Fallback) => "all targets down, no usable fallback target: serve_all",
            (None, AllDown::ServeAll) => "all targets down: serve_all",
        }
    } else {
        ""
    };

    // Which SRV sets are handed out: those of NAPTRs handed out, and those no SIP NAPTR
    // points at.
    let mut kept_sets: HashSet<DomainName> = HashSet::new();
    let mut withheld_sets: HashSet<DomainName> = HashSet::new();
    for (rec, verdict) in naptrs.into_iter().zip(verdicts) {
        let set = sip_target(&rec).map(|(_, r)| r.clone());
        match verdict {
            Verdict::NotSip => ans.keep(rec, "not a SIP service: passed through".to_owned()),
            Verdict::Up(reason) => {
                kept_sets.extend(set);
                ans.keep(rec, reason);
            }
            Verdict::Down(reason, _) if up > 0 || fallback.is_some() => {
                withheld_sets.extend(set);
                let reason = if note.is_empty() {
                    reason
                } else {
                    format!("{reason}; {note}")
                };
                ans.withhold(rec, reason);
            }
            Verdict::Down(reason, true) if skip_drained => {
                withheld_sets.extend(set);
                ans.withhold(
                    rec,
                    format!(
                        "{reason}, every target drained by operator; {note} leaves drained \
                         targets out (all_down_includes_drained: false)"
                    ),
                );
            }
            Verdict::Down(reason, _) => {
                // All down and nothing to fall back to: serve it anyway.
                kept_sets.extend(set);
                ans.keep(rec, format!("{reason}; {note}"));
            }
        }
    }
    if sip > 0 && up == 0 {
        all_down = Some(if fallback.is_some() {
            AllDown::Fallback
        } else {
            AllDown::ServeAll
        });
    }

    for set in sets {
        if withheld_sets.contains(&set.owner) && !kept_sets.contains(&set.owner) {
            for rec in set.records {
                if let RecordData::Srv { target, port, .. } = &rec.data {
                    glue.srv_hosts.insert(target.clone());
                    let (_, why) = ctx.judge_srv_target(target, *port, set.transport);
                    let reason = format!("SRV set {} of a withheld NAPTR ({why})", set.owner);
                    add.withhold(rec, reason);
                } else {
                    let reason = other_reason(&rec);
                    add.keep(rec, reason);
                }
            }
        } else {
            process_set(ctx, &mut add, &mut glue, set, false, rng);
        }
    }

    if let Some((usable, down)) = fallback {
        // NAPTRs for the gateways' transports, in the domain's NAPTR order (then any other),
        // each pointing at an SRV set of the gateways with that transport.
        let transports: Vec<Transport> = ctx
            .domain
            .naptr_order
            .iter()
            .chain(Transport::ALL.iter())
            .copied()
            .filter(|t| usable.iter().any(|f| f.transport == *t))
            .collect();
        for rec in naptr_records(&owner, &ctx.domain.name, transports.into_iter(), cap) {
            let Some((t, replacement)) = sip_target(&rec).map(|(t, r)| (t, r.clone())) else {
                continue;
            };
            ans.push(rec, Action::Added, "fallback target (all down)".to_owned());
            let of_t: Vec<_> = usable
                .iter()
                .copied()
                .filter(|f| f.transport == t)
                .collect();
            let down_t: Vec<_> = down
                .iter()
                .filter(|(f, _)| f.transport == t)
                .cloned()
                .collect();
            fallback_set(ctx, &mut add, &mut glue, &replacement, &of_t, &down_t, rng);
        }
    }

    glue.filter(ctx, rest_add, &mut add);
    let mut decisions = Vec::new();
    answer.answers = ans.finish(&mut decisions);
    answer.additional = add.finish(&mut decisions);
    Outcome {
        answer,
        decisions,
        all_down,
    }
}

/// Judges one NAPTR by its SRV set in ADDITIONAL.
fn judge<H: HealthView + ?Sized>(ctx: &Ctx<'_, H>, sets: &[SrvSet], rec: &Rec) -> Verdict {
    let Some((_, replacement)) = sip_target(rec) else {
        return Verdict::NotSip;
    };
    let Some(set) = sets.iter().find(|s| s.owner == *replacement) else {
        return Verdict::Up(format!(
            "SRV set {replacement} not in additional: health unknown (counts as up)"
        ));
    };
    let mut usable = 0;
    let mut total = 0;
    let mut drained = 0;
    for srv in &set.records {
        if let RecordData::Srv { target, port, .. } = &srv.data {
            total += 1;
            if ctx.judge_srv_target(target, *port, set.transport).0 {
                usable += 1;
            }
            if ctx.srv_target_drained(target, *port, set.transport) {
                drained += 1;
            }
        }
    }
    if total == 0 || usable > 0 {
        Verdict::Up(format!(
            "{usable} of {total} targets usable in {replacement}"
        ))
    } else {
        Verdict::Down(
            format!("no usable target in {replacement}"),
            drained == total,
        )
    }
}
