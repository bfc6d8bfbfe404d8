//! The health policy: a pure function from (answer, health, domain policy, random source) to
//! (rewritten answer, a reason per record). No I/O, no clock; it works on its own copy.
//!
//! Placeholder until issue #4 lands: passes answers through unchanged.

use serde::Serialize;

use crate::{
    config::{AllDown, SipDomainConfig},
    health::HealthView,
    record::{Answer, DomainName, RType, Rec},
    target::Transport,
};

/// Which section a decision is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Section {
    /// ANSWER.
    Answer,
    /// AUTHORITY.
    Authority,
    /// ADDITIONAL.
    Additional,
}

/// What happened to a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Handed out unchanged.
    Kept,
}

/// One record's fate and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// Section.
    pub section: Section,
    /// The record.
    #[serde(serialize_with = "ser_rec")]
    pub record: Rec,
    /// What happened.
    pub action: Action,
    /// Why.
    pub reason: String,
}

fn ser_rec<S: serde::Serializer>(r: &Rec, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&r.to_string())
}

/// The policy's result.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The rewritten answer.
    pub answer: Answer,
    /// Per record.
    pub decisions: Vec<Decision>,
    /// Set when every target was down.
    pub all_down: Option<AllDown>,
}

/// Applies the policy.
pub fn apply<H: HealthView + ?Sized, R: rand::Rng + ?Sized>(
    _qname: &DomainName,
    _qtype: RType,
    answer: Answer,
    _domain: &SipDomainConfig,
    _health: &H,
    _rng: &mut R,
) -> Outcome {
    Outcome {
        answer,
        decisions: Vec::new(),
        all_down: None,
    }
}

/// Synthesizes NAPTR records.
pub fn synthesize_naptr(_domain: &SipDomainConfig, _present: &[Transport], _ttl: u32) -> Vec<Rec> {
    Vec::new()
}
