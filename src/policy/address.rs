//! A / AAAA answers, for the SIP domain itself (a phone configured with an explicit port
//! asks only for these) and for SRV target hosts (phones that ignore the glue ask for them).

use std::net::IpAddr;

use super::{Action, Ctx, Out, Outcome, Section, address_data, other_reason};
use crate::{
    config::AllDown,
    health::HealthView,
    record::{Answer, DomainName, RType, Rec},
    target::TargetKey,
};

/// Rewrites the answer to an A or AAAA question.
///
/// For the SIP domain itself each address is the target (address, `a_port`,
/// `a_transport`). For any other name the targets are those the prober found at that host
/// ([`HealthView::host_targets`]); an address with no target there is not judged (kept),
/// and a host with no target at all is left exactly as it is. The fallback rule only
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

    let judged: Vec<(Rec, Option<(bool, String)>)> = addrs
        .into_iter()
        .map(|rec| {
            let Some(ip) = rec.data.ip() else {
                return (rec, None);
            };
            let verdict = if is_domain {
                ctx.judge_keys([TargetKey {
                    ip,
                    port: domain.a_port,
                    transport: domain.a_transport,
                }])
            } else {
                let mut targets = ctx.health.host_targets(&rec.name);
                if targets.is_empty() && rec.name != *qname {
                    targets = ctx.health.host_targets(qname);
                }
                ctx.judge_keys(targets.into_iter().filter(|k| k.ip == ip))
            };
            (rec, verdict)
        })
        .collect();

    let mut ans = Out::new(Section::Answer, cap);
    let mut add = Out::new(Section::Additional, cap);
    let mut decisions = Vec::new();

    if !is_domain && judged.iter().all(|(_, v)| v.is_none()) {
        // Not a host the prober knows: not the policy's business.
        for rec in others {
            let reason = other_reason(&rec);
            ans.pass(rec, reason);
        }
        for (rec, _) in judged {
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
    let all_down = !judged.is_empty() && judged.iter().all(|(_, v)| matches!(v, Some((false, _))));
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
            for (rec, verdict) in judged {
                let why = verdict.map(|(_, r)| r).unwrap_or_default();
                ans.keep(rec, format!("{why}; {note}"));
            }
            rule = Some(AllDown::ServeAll);
        } else {
            let owner = judged
                .first()
                .map_or_else(|| qname.clone(), |(r, _)| r.name.clone());
            for (rec, verdict) in judged {
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
        for (rec, verdict) in judged {
            match verdict {
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
