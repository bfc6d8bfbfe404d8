//! The YAML (and REST API JSON) form of a zone: the fields of a phone's static DNS cache
//! (Yealink `dns_cache_naptr/srv/a`), held on the server. Yealink's own field names are
//! accepted as aliases (`ip`, `replace`), so an operator can copy a phone's config across.
//!
//! ```yaml
//! zone: pbx.example.org
//! mode: override          # override | fallback | merge
//! ttl: 300                # default TTL of the records below
//! records:
//!   - { name: "@",       type: NAPTR, order: 90, preference: 50, flags: s, service: SIP+D2T, replacement: _sip._tcp }
//!   - { name: _sip._tcp, type: SRV,   priority: 0, weight: 1, port: 5060, target: server1 }
//!   - { name: server1,   type: A,     address: 192.0.2.10 }
//! ```
//! Names are relative to `zone` unless they end in a dot; `@` is the zone itself.

use std::{fmt::Write as _, net::IpAddr};

use serde::{Deserialize, Serialize};

use crate::{
    config::MergeMode,
    record::{DomainName, RType, Rec, RecordData},
};

/// The largest TTL a record may carry (RFC 2181 §8).
pub const MAX_TTL: u32 = 2_147_483_647;

/// A whole zone document.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneDoc {
    /// The zone apex, e.g. `pbx.example.org`.
    pub zone: DomainName,
    /// How the zone combines with upstream.
    #[serde(default)]
    pub mode: MergeMode,
    /// Default TTL of records that give none.
    #[serde(default = "default_ttl")]
    pub ttl: u32,
    /// The SOA; made up from the zone name when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soa: Option<SoaDoc>,
    /// The records.
    #[serde(default)]
    pub records: Vec<RecordDoc>,
}

/// The zone's SOA.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SoaDoc {
    /// Primary name server.
    #[serde(default = "default_mname")]
    pub mname: String,
    /// Responsible mailbox, as a name (`hostmaster.example.org`).
    #[serde(default = "default_rname")]
    pub rname: String,
    /// Serial.
    #[serde(default = "default_serial")]
    pub serial: u32,
    /// Refresh.
    #[serde(default = "default_refresh")]
    pub refresh: u32,
    /// Retry.
    #[serde(default = "default_retry")]
    pub retry: u32,
    /// Expire.
    #[serde(default = "default_expire")]
    pub expire: u32,
    /// Negative-caching TTL (RFC 2308).
    #[serde(default = "default_minimum")]
    pub minimum: u32,
    /// TTL of the SOA record itself (default: the zone TTL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u32>,
}

/// One record. Which fields apply depends on `type`; a field that does not belong to the
/// type is an error, so typos cannot pass silently.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RecordDoc {
    /// Owner: relative to the zone, `@`, or absolute with a trailing dot.
    pub name: String,
    /// Record type: NAPTR, SRV, A, AAAA, CNAME, TXT.
    #[serde(rename = "type")]
    pub rtype: String,
    /// TTL in seconds (default: the zone's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u32>,
    /// A / AAAA: the address (Yealink: `ip`).
    #[serde(default, alias = "ip", skip_serializing_if = "Option::is_none")]
    pub address: Option<IpAddr>,
    /// SRV: priority (lower first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u16>,
    /// SRV: weight within a priority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u16>,
    /// SRV: port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// SRV / CNAME: the target host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// NAPTR: order (lower first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<u16>,
    /// NAPTR: preference within an order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preference: Option<u16>,
    /// NAPTR: flags (`s` for SRV next).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flags: Option<String>,
    /// NAPTR: service (`SIP+D2U`, `SIP+D2T`, `SIPS+D2T`).
    #[serde(default, alias = "services", skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// NAPTR: regexp (empty for SIP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regexp: Option<String>,
    /// NAPTR: the SRV name to look up next (Yealink: `replace`).
    #[serde(default, alias = "replace", skip_serializing_if = "Option::is_none")]
    pub replacement: Option<String>,
    /// TXT: the text, one string or a list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<TextDoc>,
}

/// TXT data: `"one string"` or `["several", "strings"]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum TextDoc {
    /// One string.
    One(String),
    /// Several strings.
    Many(Vec<String>),
}

/// A problem with one field of a zone document: the field path and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Path such as `records[3].port`.
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

fn fe(field: impl Into<String>, reason: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        reason: reason.into(),
    }
}

fn default_ttl() -> u32 {
    300
}
fn default_mname() -> String {
    "@".to_owned()
}
fn default_rname() -> String {
    "hostmaster".to_owned()
}
fn default_serial() -> u32 {
    1
}
fn default_refresh() -> u32 {
    3600
}
fn default_retry() -> u32 {
    600
}
fn default_expire() -> u32 {
    86_400
}
fn default_minimum() -> u32 {
    30
}

/// Resolves a name written in a zone document against the zone origin.
pub fn absolute(origin: &DomainName, written: &str) -> Result<DomainName, String> {
    let w = written.trim();
    if w == "@" || w.is_empty() {
        return Ok(origin.clone());
    }
    if w.ends_with('.') {
        return DomainName::parse(w).map_err(|e| e.to_string());
    }
    origin.prepend(w).map_err(|e| e.to_string())
}

/// Writes `name` relative to `origin` where it lies inside it.
pub fn relative(origin: &DomainName, name: &DomainName) -> String {
    if name == origin {
        return "@".to_owned();
    }
    if name.is_in(origin) && !origin.is_root() {
        let n = name.as_str();
        return n[..n.len() - origin.as_str().len() - 1].to_owned();
    }
    name.to_string()
}

impl SoaDoc {
    fn to_rec(&self, origin: &DomainName, zone_ttl: u32) -> Result<Rec, FieldError> {
        let mname = absolute(origin, &self.mname).map_err(|e| fe("soa.mname", e))?;
        let rname = absolute(origin, &self.rname).map_err(|e| fe("soa.rname", e))?;
        let ttl = self.ttl.unwrap_or(zone_ttl);
        if ttl > MAX_TTL {
            return Err(fe(
                "soa.ttl",
                format!("{ttl} is above the maximum TTL {MAX_TTL}"),
            ));
        }
        Ok(Rec::new(
            origin.clone(),
            ttl,
            RecordData::Soa {
                mname,
                rname,
                serial: self.serial,
                refresh: self.refresh,
                retry: self.retry,
                expire: self.expire,
                minimum: self.minimum,
            },
        ))
    }
}

/// The SOA of a zone document (made up when absent).
pub fn soa_of(doc: &ZoneDoc) -> Result<Rec, FieldError> {
    let default = SoaDoc {
        mname: default_mname(),
        rname: default_rname(),
        serial: default_serial(),
        refresh: default_refresh(),
        retry: default_retry(),
        expire: default_expire(),
        minimum: default_minimum(),
        ttl: None,
    };
    doc.soa
        .as_ref()
        .unwrap_or(&default)
        .to_rec(&doc.zone, doc.ttl)
}

impl RecordDoc {
    /// The fields set on this record, by name, for "does not belong to" checks.
    fn set_fields(&self) -> impl Iterator<Item = &'static str> {
        [
            (self.address.is_some(), "address"),
            (self.priority.is_some(), "priority"),
            (self.weight.is_some(), "weight"),
            (self.port.is_some(), "port"),
            (self.target.is_some(), "target"),
            (self.order.is_some(), "order"),
            (self.preference.is_some(), "preference"),
            (self.flags.is_some(), "flags"),
            (self.service.is_some(), "service"),
            (self.regexp.is_some(), "regexp"),
            (self.replacement.is_some(), "replacement"),
            (self.text.is_some(), "text"),
        ]
        .into_iter()
        .filter_map(|(set, name)| set.then_some(name))
    }

    /// Checks and converts one record. `at` is its field path (`records[3]`).
    pub fn to_rec(&self, origin: &DomainName, zone_ttl: u32, at: &str) -> Result<Rec, FieldError> {
        let f = |name: &str| format!("{at}.{name}");
        let name = absolute(origin, &self.name).map_err(|e| fe(f("name"), e))?;
        if !name.is_in(origin) {
            return Err(fe(
                f("name"),
                format!("{name} is outside the zone {origin}"),
            ));
        }
        let rtype: RType = self.rtype.parse().map_err(|e: String| fe(f("type"), e))?;
        let ttl = self.ttl.unwrap_or(zone_ttl);
        if ttl > MAX_TTL {
            return Err(fe(
                f("ttl"),
                format!("{ttl} is above the maximum TTL {MAX_TTL}"),
            ));
        }
        let allowed: &[&str] = match rtype {
            RType::A | RType::AAAA => &["address"],
            RType::SRV => &["priority", "weight", "port", "target"],
            RType::NAPTR => &[
                "order",
                "preference",
                "flags",
                "service",
                "regexp",
                "replacement",
            ],
            RType::CNAME => &["target"],
            RType::TXT => &["text"],
            other => {
                return Err(fe(
                    f("type"),
                    format!(
                        "type {other} is not supported in YAML zones (NAPTR, SRV, A, AAAA, CNAME, TXT); use a .zone file"
                    ),
                ));
            }
        };
        if let Some(extra) = self.set_fields().find(|s| !allowed.contains(s)) {
            return Err(fe(
                f(extra),
                format!("`{extra}` does not belong to a {rtype} record"),
            ));
        }
        let need = |v: Option<u16>, field: &str| {
            v.ok_or_else(|| fe(f(field), format!("a {rtype} record needs `{field}`")))
        };
        let target = |field: &str| -> Result<DomainName, FieldError> {
            let t = self
                .target
                .as_deref()
                .ok_or_else(|| fe(f(field), format!("a {rtype} record needs `{field}`")))?;
            absolute(origin, t).map_err(|e| fe(f(field), e))
        };
        let data = match rtype {
            RType::A => match self.address {
                Some(IpAddr::V4(a)) => RecordData::A(a),
                Some(IpAddr::V6(a)) => {
                    return Err(fe(f("address"), format!("{a} is IPv6: use type AAAA")));
                }
                None => return Err(fe(f("address"), "an A record needs `address`")),
            },
            RType::AAAA => match self.address {
                Some(IpAddr::V6(a)) => RecordData::Aaaa(a),
                Some(IpAddr::V4(a)) => {
                    return Err(fe(f("address"), format!("{a} is IPv4: use type A")));
                }
                None => return Err(fe(f("address"), "an AAAA record needs `address`")),
            },
            RType::SRV => RecordData::Srv {
                priority: need(self.priority, "priority")?,
                weight: self.weight.unwrap_or(0),
                port: need(self.port, "port")?,
                target: target("target")?,
            },
            RType::CNAME => RecordData::Cname(target("target")?),
            RType::NAPTR => {
                let flags = self.flags.clone().unwrap_or_default();
                if let Some(c) = flags.chars().find(|c| !c.is_ascii_alphanumeric()) {
                    return Err(fe(
                        f("flags"),
                        format!("flag {c:?} is not A-Z or 0-9 (RFC 3403)"),
                    ));
                }
                let service = self.service.clone().ok_or_else(|| {
                    fe(
                        f("service"),
                        "a NAPTR record needs `service` (e.g. SIP+D2U)",
                    )
                })?;
                for (field, v) in [("flags", &flags), ("service", &service)] {
                    if v.len() > 255 {
                        return Err(fe(f(field), "longer than 255 characters"));
                    }
                }
                let regexp = self.regexp.clone().unwrap_or_default();
                if regexp.len() > 255 {
                    return Err(fe(f("regexp"), "longer than 255 characters"));
                }
                let replacement = match &self.replacement {
                    Some(r) => absolute(origin, r).map_err(|e| fe(f("replacement"), e))?,
                    None if !regexp.is_empty() => DomainName::root(),
                    None => {
                        return Err(fe(
                            f("replacement"),
                            "a NAPTR record needs `replacement` (the SRV name)",
                        ));
                    }
                };
                RecordData::Naptr {
                    order: need(self.order, "order")?,
                    preference: self.preference.unwrap_or(0),
                    flags,
                    services: service,
                    regexp,
                    replacement,
                }
            }
            RType::TXT => {
                let parts = match &self.text {
                    Some(TextDoc::One(s)) => vec![s.clone()],
                    Some(TextDoc::Many(v)) => v.clone(),
                    None => return Err(fe(f("text"), "a TXT record needs `text`")),
                };
                if parts.iter().any(|p| p.len() > 255) {
                    return Err(fe(f("text"), "each string must be at most 255 bytes"));
                }
                RecordData::Txt(parts)
            }
            _ => return Err(fe(f("type"), format!("type {rtype} is not supported"))),
        };
        Ok(Rec::new(name, ttl, data))
    }

    /// The document form of a record of a zone at `origin`; `None` for types YAML zones do
    /// not hold.
    pub fn from_rec(origin: &DomainName, zone_ttl: u32, r: &Rec) -> Option<Self> {
        let mut d = Self {
            name: relative(origin, &r.name),
            rtype: r.rtype().to_string(),
            ttl: (r.ttl != zone_ttl).then_some(r.ttl),
            ..Self::default()
        };
        match &r.data {
            RecordData::A(a) => d.address = Some(IpAddr::V4(*a)),
            RecordData::Aaaa(a) => d.address = Some(IpAddr::V6(*a)),
            RecordData::Cname(t) => d.target = Some(relative(origin, t)),
            RecordData::Srv {
                priority,
                weight,
                port,
                target,
            } => {
                d.priority = Some(*priority);
                d.weight = Some(*weight);
                d.port = Some(*port);
                d.target = Some(relative(origin, target));
            }
            RecordData::Naptr {
                order,
                preference,
                flags,
                services,
                regexp,
                replacement,
            } => {
                d.order = Some(*order);
                d.preference = Some(*preference);
                d.flags = Some(flags.clone());
                d.service = Some(services.clone());
                d.regexp = (!regexp.is_empty()).then(|| regexp.clone());
                d.replacement = Some(relative(origin, replacement));
            }
            RecordData::Txt(parts) => {
                d.text = Some(if parts.len() == 1 {
                    TextDoc::One(parts[0].clone())
                } else {
                    TextDoc::Many(parts.clone())
                });
            }
            _ => return None,
        }
        Some(d)
    }
}

/// Checks a whole document: every record converted, each problem with its field path.
pub fn records_of(doc: &ZoneDoc) -> Result<(Rec, Vec<Rec>), Vec<FieldError>> {
    // Large zones are converted on every core (a live reload of 100,000 records).
    let pieces = super::par_map(
        &doc.records,
        super::threads_for(doc.records.len()),
        |offset, piece| {
            let mut recs = Vec::with_capacity(piece.len());
            let mut errs = Vec::new();
            let mut at = String::new();
            for (i, r) in piece.iter().enumerate() {
                at.clear();
                let _ = write!(at, "records[{}]", offset + i);
                match r.to_rec(&doc.zone, doc.ttl, &at) {
                    Ok(rec) => recs.push(rec),
                    Err(e) => errs.push(e),
                }
            }
            (recs, errs)
        },
    );
    let mut recs = Vec::with_capacity(doc.records.len());
    let mut errors = Vec::new();
    for (r, e) in pieces {
        recs.extend(r);
        errors.extend(e);
    }
    finish(doc, recs, errors)
}

/// The checks of a whole zone once its records are converted (`errors` holds those of
/// the conversion): the zone's own fields, its SOA, and CNAME owners with other data.
pub fn finish(
    doc: &ZoneDoc,
    recs: Vec<Rec>,
    conversion: Vec<FieldError>,
) -> Result<(Rec, Vec<Rec>), Vec<FieldError>> {
    let mut errors = Vec::new();
    if doc.ttl > MAX_TTL {
        errors.push(fe(
            "ttl",
            format!("{} is above the maximum TTL {MAX_TTL}", doc.ttl),
        ));
    }
    if doc.zone.is_root() {
        errors.push(fe("zone", "the root zone cannot be served statically"));
    }
    let soa = soa_of(doc).map_err(|e| errors.push(e)).ok();
    errors.extend(conversion);
    // RFC 1034 §3.6.2: a CNAME owner has no other data.
    let mut cname_owners = std::collections::HashMap::new();
    for (i, r) in recs.iter().enumerate() {
        if r.rtype() == RType::CNAME {
            cname_owners.insert(r.name.clone(), i);
        }
    }
    // (A lookup in an empty map hashes nothing: zones without a CNAME pay no hashing here.)
    for (i, r) in recs.iter().enumerate() {
        if cname_owners.get(&r.name).is_some_and(|&c| c != i) {
            errors.push(fe(
                format!("records[{i}].name"),
                format!("{} has a CNAME, so it can have no other record", r.name),
            ));
        }
    }
    match soa {
        Some(soa) if errors.is_empty() => Ok((soa, recs)),
        _ => Err(errors),
    }
}
