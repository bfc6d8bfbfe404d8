//! The explain view: what a phone gets for one question, the answer before and after the
//! policy, and per record what was done and why. The one type behind the REST explain
//! route (which serializes it as it is) and `Resolver::explain`.

use serde::{Serialize, Serializer, ser::SerializeStruct};

use super::{Decision, Outcome};
use crate::{
    config::AllDown,
    record::{Answer, DomainName, RType, Rec, Source},
};

/// What the policy did to the answer for one question.
///
/// Serialized, each answer is `{rcode, authoritative, source, answer, authority,
/// additional}`, its records in presentation form
/// (`_sip._udp.pbx.example.org. 30 IN SRV 0 1 5060 server1.example.org.`).
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    /// The question's name.
    pub name: DomainName,
    /// The question's type, serialized by name (`SRV`).
    #[serde(rename = "type", serialize_with = "serialize_display")]
    pub qtype: RType,
    /// The managed SIP domain the name belongs to, if any (none: no policy applied).
    pub domain: Option<DomainName>,
    /// The answer as the resolver found it.
    #[serde(serialize_with = "serialize_answer")]
    pub before: Answer,
    /// The answer as phones get it.
    #[serde(serialize_with = "serialize_answer")]
    pub after: Answer,
    /// Per record, what was done and why.
    pub decisions: Vec<Decision>,
    /// The all-down rule applied, if every target was down.
    pub all_down: Option<AllDown>,
}

impl Explanation {
    /// Explains `outcome`, the result of applying the policy to `before` for (`name`,
    /// `qtype`); `domain` is left for the caller, who knows it.
    pub fn new(name: &DomainName, qtype: RType, before: &Answer, outcome: &Outcome) -> Self {
        Self {
            name: name.clone(),
            qtype,
            domain: None,
            before: before.clone(),
            after: outcome.answer.clone(),
            decisions: outcome.decisions.clone(),
            all_down: outcome.all_down,
        }
    }

    /// An answer no policy touched (outside a SIP domain, or upstream failed).
    pub fn untouched(name: &DomainName, qtype: RType, answer: &Answer) -> Self {
        Self {
            name: name.clone(),
            qtype,
            domain: None,
            before: answer.clone(),
            after: answer.clone(),
            decisions: Vec::new(),
            all_down: None,
        }
    }
}

/// One answer's sections, each record in presentation form.
#[derive(Serialize)]
struct AnswerView {
    rcode: &'static str,
    authoritative: bool,
    source: Source,
    answer: Vec<String>,
    authority: Vec<String>,
    additional: Vec<String>,
}

fn serialize_answer<S: Serializer>(a: &Answer, s: S) -> Result<S::Ok, S::Error> {
    let text = |recs: &[Rec]| recs.iter().map(ToString::to_string).collect();
    AnswerView {
        rcode: a.rcode.metric_label(),
        authoritative: a.authoritative,
        source: a.source,
        answer: text(&a.answers),
        authority: text(&a.authority),
        additional: text(&a.additional),
    }
    .serialize(s)
}

fn serialize_display<S: Serializer>(v: &RType, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// Serializes a record as `{name, ttl, type, data}`, the data in presentation form.
pub(super) fn serialize_rec<S: Serializer>(rec: &Rec, s: S) -> Result<S::Ok, S::Error> {
    let mut st = s.serialize_struct("Rec", 4)?;
    st.serialize_field("name", &rec.name)?;
    st.serialize_field("ttl", &rec.ttl)?;
    st.serialize_field("type", &rec.rtype().to_string())?;
    st.serialize_field("data", &rec.data.to_string())?;
    st.end()
}
