//! The explain view: an answer before and after the policy, with the reason for each record,
//! in a form the REST API serializes as it is.

use serde::{Serialize, Serializer, ser::SerializeStruct};

use super::{Decision, Outcome};
use crate::{
    config::AllDown,
    record::{Answer, DomainName, RType, Rec},
};

/// One answer's sections, each record in presentation form
/// (`_sip._udp.pbx.example.org. 30 IN SRV 0 1 5060 server1.example.org.`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AnswerView {
    /// Response code (`NOERROR`, `NXDOMAIN`, ...).
    pub rcode: &'static str,
    /// Answer section.
    pub answer: Vec<String>,
    /// Authority section.
    pub authority: Vec<String>,
    /// Additional section.
    pub additional: Vec<String>,
}

impl AnswerView {
    /// The view of one answer.
    pub fn new(answer: &Answer) -> Self {
        let text = |recs: &[Rec]| recs.iter().map(ToString::to_string).collect();
        Self {
            rcode: answer.rcode.metric_label(),
            answer: text(&answer.answers),
            authority: text(&answer.authority),
            additional: text(&answer.additional),
        }
    }
}

/// What the policy did to the answer for one question, for the REST explain view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explanation {
    /// The question's name.
    pub name: DomainName,
    /// The question's type, by name (`SRV`).
    #[serde(rename = "type")]
    pub qtype: String,
    /// The answer as the resolver found it.
    pub before: AnswerView,
    /// The answer as phones get it.
    pub after: AnswerView,
    /// Per record, what was done and why.
    pub decisions: Vec<Decision>,
    /// The all-down rule applied, if every target was down.
    pub all_down: Option<AllDown>,
}

impl Explanation {
    /// Explains `outcome`, the result of applying the policy to `before` for (`name`, `qtype`).
    pub fn new(name: &DomainName, qtype: RType, before: &Answer, outcome: &Outcome) -> Self {
        Self {
            name: name.clone(),
            qtype: qtype.to_string(),
            before: AnswerView::new(before),
            after: AnswerView::new(&outcome.answer),
            decisions: outcome.decisions.clone(),
            all_down: outcome.all_down,
        }
    }
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
