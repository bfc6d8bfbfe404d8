//! Catalog zones (RFC 9432, schema version 2): which member zones a catalog names, and the
//! member properties sipdns understands.
//!
//! - `version.<catalog> TXT "2"` must be present (§4.2); any other version: the catalog
//!   is not used (its previous members stay).
//! - `<unique>.zones.<catalog> PTR <member zone>` names a member (§4.3).
//! - `group.<unique>.zones.<catalog> TXT "<name>"` (§4.4.2) selects
//!   `zones.catalog_groups.<name>` from the config (the member's merge mode). A group with
//!   no template there, and every other property (`coo`, `ext`, ...), is ignored and
//!   counted.

use std::collections::BTreeMap;

use super::super::Zone;
use crate::record::{DomainName, RType, RecordData};

/// One member zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Member {
    /// The member zone.
    pub(crate) zone: DomainName,
    /// Its `group` property, if any.
    pub(crate) group: Option<String>,
}

/// What a catalog says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Catalog {
    /// Members by zone name.
    pub(crate) members: BTreeMap<DomainName, Member>,
    /// Properties not understood (ignored).
    pub(crate) unknown: usize,
}

/// Reads the members of catalog `zone`.
pub(crate) fn read(zone: &Zone, known_groups: &dyn Fn(&str) -> bool) -> Result<Catalog, String> {
    let origin = &zone.origin;
    let version = origin
        .prepend("version")
        .map_err(|e| format!("catalog {origin}: {e}"))?;
    let v2 = zone.records_of(&version).iter().any(|r| match &r.data {
        RecordData::Txt(parts) => parts.concat() == "2",
        _ => false,
    });
    if !v2 {
        return Err(format!(
            "catalog {origin}: no `version TXT \"2\"` (RFC 9432 §4.2): not a catalog sipdns can read"
        ));
    }
    let zones = origin
        .prepend("zones")
        .map_err(|e| format!("catalog {origin}: {e}"))?;
    let depth = zones.label_count();
    // unique label -> member zone, then properties by unique label.
    let mut by_unique: BTreeMap<DomainName, DomainName> = BTreeMap::new();
    let mut groups: BTreeMap<DomainName, String> = BTreeMap::new();
    let mut unknown = 0usize;
    let mut recs: Vec<_> = zone.recs.iter().filter(|r| r.name.is_in(&zones)).collect();
    recs.sort_by(|a, b| a.name.cmp(&b.name));
    for r in recs {
        let below = r.name.label_count().saturating_sub(depth);
        match (below, &r.data) {
            (1, RecordData::Ptr(member)) => {
                by_unique.entry(r.name.clone()).or_insert(member.clone());
            }
            (2, RecordData::Txt(parts)) if r.name.as_str().starts_with("group.") => {
                if let Some(unique) = r.name.parent() {
                    groups.insert(unique, parts.concat());
                }
            }
            (0, _) => {}
            _ if r.rtype() == RType::NS => {}
            _ => unknown += 1,
        }
    }
    let mut members = BTreeMap::new();
    for (unique, member) in by_unique {
        let mut group = groups.remove(&unique);
        if let Some(g) = &group
            && !known_groups(g)
        {
            unknown += 1;
            group = None;
        }
        members.entry(member.clone()).or_insert(Member {
            zone: member,
            group,
        });
    }
    // Groups of unique labels that name no member.
    unknown += groups.len();
    Ok(Catalog { members, unknown })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::{config::MergeMode, zones::load_zone_file_text};

    fn catalog(body: &str) -> Zone {
        let text = format!(
            "$ORIGIN catalog.example.net.\n@ 0 IN SOA invalid. invalid. 1 60 10 600 0\n@ 0 IN NS invalid.\n{body}"
        );
        load_zone_file_text(
            std::path::Path::new("catalog.zone"),
            &text,
            None,
            MergeMode::Override,
        )
        .unwrap()
    }

    #[test]
    fn members_groups_and_unknown_properties() {
        let z = catalog(
            "version 0 IN TXT \"2\"\n\
             m1.zones 0 IN PTR office1.example.org.\n\
             group.m1.zones 0 IN TXT \"branch\"\n\
             m2.zones 0 IN PTR office2.example.org.\n\
             group.m2.zones 0 IN TXT \"nobody-knows\"\n\
             coo.m2.zones 0 IN PTR other.example.net.\n",
        );
        let c = read(&z, &|g| g == "branch").unwrap();
        assert_eq!(c.members.len(), 2);
        let m1 = &c.members[&DomainName::parse("office1.example.org").unwrap()];
        assert_eq!(m1.group.as_deref(), Some("branch"));
        let m2 = &c.members[&DomainName::parse("office2.example.org").unwrap()];
        assert_eq!(m2.group, None);
        // coo, and a group without a template.
        assert_eq!(c.unknown, 2);
    }

    #[test]
    fn a_catalog_without_version_2_is_refused() {
        let z = catalog("version 0 IN TXT \"1\"\nm1.zones 0 IN PTR a.example.org.\n");
        assert!(read(&z, &|_| true).unwrap_err().contains("version"));
    }
}
