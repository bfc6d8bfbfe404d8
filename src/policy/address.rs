//! A / AAAA answers, for the SIP domain itself (a phone configured with an explicit port
//! asks only for these) and for SRV target hosts (phones that ignore the glue ask for them).
//! Down addresses are withheld, or with `on_down: demote` moved after the up ones.

use std::net::IpAddr;

use super::{Action, Ctx, Out, Outcome, Section, address_data, other_reason};
use crate::{
    config::{AllDown, OnDown},
    health::HealthView,
    record::{Answer, DomainName, RType, Rec},
    target::TargetKey,
};

/// One address record, its verdict (`None`: not a probed address) and whether the operator
/// drained every target at it.
type Judged = (Rec, Option<(bool, String)>, bool);

/// Rewrites the answer to an A or AAAA question.
///
/// For the SIP domain itself each address is the target (address, `a_port`,
/// `a_transport`). For any other name the targets are those the prober found at that host
/// ([`HealthView::host_targets`]); an address with no target there is not judged (kept),
/// and a host with no target at all is left exactly as it is. Unusable addresses are
/// withheld (`on_down: withhold`) or moved after the usable ones (`demote`). The fallback rule only
/// applies to the domain's own addresses: a target host's name is never made to point at
/// another machine, so a target host whose addresses are all down is served as it is.
pub(super) fn address_query<H: HealthView + ?Sized>(
    ctx: &Ctx<'_, H>,
    qname: &DomainName,
    qtype: RType,
    mut answer: Answer,
) -> Outcome {
    let cap = ctx.cap();
    let domain = ctx.domain;
    let is_domain = *qname == domain.name;
    let (addrs, others): (Vec<Rec>, Vec<Rec>) = std::mem::take(&mut answer.answers)
        .into_iter()
        .partition(|r| r.rtype() == qtype);

    let judged: Vec<Judged> = addrs
        .into_iter()
        .map(|rec| {
            let Some(ip) = rec.data.ip() else {
                return (rec, None, false);
            };
            let keys: Vec<TargetKey> = if is_domain {
                vec![TargetKey {
                    ip,
                    port: domain.a_port,
                    transport: domain.a_transport,
                }]
            } else {
                let mut targets = ctx.health.host_targets(&rec.name);
                if targets.is_empty() && rec.name != *qname {
                    targets = ctx.health.host_targets(qname);
                }
                targets.into_iter().filter(|k| k.ip == ip).collect()
            };
            let drained = ctx.all_drained(keys.iter().copied());
            (rec, ctx.judge_keys(keys), drained)
        })
        .collect();

    let mut ans = Out::new(Section::Answer, cap);
    let mut add = Out::new(Section::Additional, cap);
    let mut decisions = Vec::new();

    if !is_domain && judged.iter().all(|(_, v, _)| v.is_none()) {
        // Not a host the prober knows: not the policy's business.
        for rec in others {
            let reason = other_reason(&rec);
            ans.pass(rec, reason);
        }
        for (rec, _, _) in judged {
            let reason = format!("no SIP target known at {}: unchanged", rec.name);
            ans.pass(rec, reason);
        }
        for rec in std::mem::take(&mut answer.additional) {
            let reason = other_reason(&rec);
            add.pass(rec, reason);
        }
        answer.answers = ans.finish(&mut decisions);
        answer.additional = add.finish(&mut decisions);
        return Outcome {
            answer,
            decisions,
            all_down: None,
        };
    }

    for rec in others {
        let reason = other_reason(&rec);
        ans.keep(rec, reason);
    }
    let all_down =
        !judged.is_empty() && judged.iter().all(|(_, v, _)| matches!(v, Some((false, _))));
    let mut rule = None;
    if all_down {
        let want_v4 = qtype == RType::A;
        let gateways: Vec<IpAddr> = if is_domain && domain.all_down == AllDown::Fallback {
            let mut ips: Vec<IpAddr> = Vec::new();
            for f in ctx.fallback_targets(None).0 {
                if f.address.is_ipv4() == want_v4 && !ips.contains(&f.address) {
                    ips.push(f.address);
                }
            }
            ips
        } else {
            Vec::new()
        };
        if gateways.is_empty() {
            let note = if is_domain && domain.all_down == AllDown::Fallback {
                "all targets down, no usable fallback address of this family: serve_all"
            } else {
                "all targets down: serve_all"
            };
            // Drained addresses stay out unless `all_down_includes_drained`, or unless
            // nothing else is left (never an empty answer).
            let skip = ctx.serve_all_skips_drained();
            let only_drained = judged.iter().all(|(_, _, d)| *d);
            for (rec, verdict, drained) in judged {
                let why = verdict.map(|(_, r)| r).unwrap_or_default();
                if skip && drained && !only_drained {
                    ans.withhold(
                        rec,
                        format!(
                            "{why}; {note} leaves drained targets out \
                             (all_down_includes_drained: false)"
                        ),
                    );
                } else if skip && drained {
                    ans.keep(
                        rec,
                        format!(
                            "{why}; {note}: only drained targets left, served rather than none"
                        ),
                    );
                } else {
                    ans.keep(rec, format!("{why}; {note}"));
                }
            }
            rule = Some(AllDown::ServeAll);
        } else {
            let owner = judged
                .first()
                .map_or_else(|| qname.clone(), |(r, _, _)| r.name.clone());
            for (rec, verdict, _) in judged {
                let why = verdict.map(|(_, r)| r).unwrap_or_default();
                ans.withhold(rec, format!("{why}; all targets down: fallback"));
            }
            for ip in gateways {
                ans.push(
                    Rec::new(owner.clone(), cap, address_data(ip)),
                    Action::Added,
                    "fallback target (all down)".to_owned(),
                );
            }
            rule = Some(AllDown::Fallback);
        }
    } else {
        for (rec, verdict, _) in judged {
            match verdict {
                // `demote`: after the up addresses, which keep their order.
                Some((false, why)) if domain.on_down == OnDown::Demote => {
                    ans.defer(rec, format!("{why}; demoted: after the up addresses"));
                }
                Some((false, why)) => ans.withhold(rec, why),
                Some((true, why)) => ans.keep(rec, why),
                None => {
                    let reason = format!("not a probed address of {}: kept", rec.name);
                    ans.keep(rec, reason);
                }
            }
        }
    }

    for rec in std::mem::take(&mut answer.additional) {
        let reason = other_reason(&rec);
        add.keep(rec, reason);
    }
    answer.answers = ans.finish(&mut decisions);
    answer.additional = add.finish(&mut decisions);
    Outcome {
        answer,
        decisions,
        all_down: rule,
    }
}
