//! The operator's static entries: `zones/*.yaml` (the phones' static-DNS-cache fields, held
//! on the server) and RFC 1035 `zones/*.zone` files, as one read-only [`ZoneStore`].
//!
//! A store is built whole, off to the side, and swapped in atomically by the caller; it is
//! never changed in place. Lookups follow RFC 1034 §4.3.2 for what a static zone can say:
//! records of the asked type, a CNAME, NODATA (the name exists, not that type; empty
//! non-terminals included) or NXDOMAIN, the last two with the zone's SOA.

mod flow;
mod load;
pub mod schema;

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::Arc,
};

use crate::{
    config::{FileError, MergeMode},
    record::{DomainName, RType, Rec, RecordData},
};

pub use load::{load_dir, load_dir_reusing, load_yaml_text, load_zone_file_text};

/// Errors from loading zones: every problem found, each with file and line.
#[derive(Debug, thiserror::Error)]
#[error("{}", .errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct ZoneError {
    /// The problems.
    pub errors: Vec<FileError>,
}

impl From<FileError> for ZoneError {
    fn from(e: FileError) -> Self {
        Self { errors: vec![e] }
    }
}

/// Which kind of file a zone came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ZoneFormat {
    /// `zones/<zone>.yaml`, editable through the API.
    Yaml,
    /// RFC 1035 `zones/<zone>.zone`, read-only to the API.
    ZoneFile,
}

/// One static zone.
#[derive(Debug, Clone, PartialEq)]
pub struct Zone {
    /// The zone apex.
    pub origin: DomainName,
    /// How it combines with upstream.
    pub mode: MergeMode,
    /// The SOA record (given, or made up for YAML zones without one).
    pub soa: Rec,
    /// Where it was read from.
    pub file: PathBuf,
    /// File format.
    pub format: ZoneFormat,
    /// Records by owner name (owners are all at or below the origin).
    names: HashMap<DomainName, Vec<Rec>>,
    /// Number of records.
    len: usize,
}

/// What a static zone says about (name, type).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ZoneAnswer {
    /// Records of the asked type (for ANY: every record of the name).
    Records(Vec<Rec>),
    /// The name is an alias: its CNAME record.
    Cname(Rec),
    /// The name exists, but has no record of that type.
    NoData,
    /// The name does not exist in the zone.
    NxDomain,
}

impl Zone {
    /// Builds a zone from records; owners outside `origin` are an error for the caller to
    /// have caught (they are dropped here).
    pub fn new(
        origin: DomainName,
        mode: MergeMode,
        soa: Rec,
        file: PathBuf,
        format: ZoneFormat,
        records: Vec<Rec>,
    ) -> Self {
        // Most owners have one or two records: size the map once instead of growing it
        // through every power of two (100,000-record zones are reloaded live).
        let mut names: HashMap<DomainName, Vec<Rec>> = HashMap::with_capacity(records.len());
        let mut len = 0;
        for r in records {
            if r.name.is_in(&origin) && r.rtype() != RType::SOA {
                len += 1;
                names.entry(r.name.clone()).or_default().push(r);
            }
        }
        Self {
            origin,
            mode,
            soa,
            file,
            format,
            names,
            len,
        }
    }

    /// Number of records (the SOA not counted).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if the zone holds no record but its SOA.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every record, SOA first, then by owner name.
    pub fn records(&self) -> Vec<Rec> {
        let sorted: BTreeMap<&DomainName, &Vec<Rec>> = self.names.iter().collect();
        std::iter::once(self.soa.clone())
            .chain(sorted.into_values().flatten().cloned())
            .collect()
    }

    /// The records of `name` (empty if none).
    pub fn records_of(&self, name: &DomainName) -> &[Rec] {
        self.names.get(name).map_or(&[], Vec::as_slice)
    }

    /// What the zone says about (name, rtype). `name` must be in the zone.
    pub fn lookup(&self, name: &DomainName, rtype: RType) -> ZoneAnswer {
        if rtype == RType::SOA && name == &self.origin {
            return ZoneAnswer::Records(vec![self.soa.clone()]);
        }
        let found = match self.names.get(name) {
            Some(recs) => Some((recs, None)),
            None => self.wildcard(name).map(|recs| (recs, Some(name))),
        };
        let Some((recs, synth_owner)) = found else {
            return if self.has_descendants(name) || name == &self.origin {
                ZoneAnswer::NoData
            } else {
                ZoneAnswer::NxDomain
            };
        };
        let owned = |r: &Rec| match synth_owner {
            // RFC 4592: records synthesized from a wildcard carry the query name.
            Some(owner) => Rec::new(owner.clone(), r.ttl, r.data.clone()),
            None => r.clone(),
        };
        if rtype != RType::CNAME
            && let Some(c) = recs.iter().find(|r| r.rtype() == RType::CNAME)
        {
            return ZoneAnswer::Cname(owned(c));
        }
        let matching: Vec<Rec> = recs
            .iter()
            .filter(|r| rtype == RType::ANY || r.rtype() == rtype)
            .map(owned)
            .collect();
        if matching.is_empty() {
            ZoneAnswer::NoData
        } else {
            ZoneAnswer::Records(matching)
        }
    }

    fn has_descendants(&self, name: &DomainName) -> bool {
        self.names.keys().any(|n| n != name && n.is_in(name))
    }

    /// RFC 4592 §3.3.1: the wildcard at the closest encloser, if the name itself is absent.
    fn wildcard(&self, name: &DomainName) -> Option<&Vec<Rec>> {
        let mut encloser = name.parent()?;
        loop {
            if !encloser.is_in(&self.origin) {
                return None;
            }
            if self.names.contains_key(&encloser)
                || self.has_descendants(&encloser)
                || encloser == self.origin
            {
                let wild = encloser.prepend("*").ok()?;
                return self.names.get(&wild);
            }
            encloser = encloser.parent()?;
        }
    }

    /// The SOA with its TTL lowered to the negative TTL (RFC 2308 §3: min(TTL, minimum)).
    pub fn negative_soa(&self) -> Rec {
        let mut soa = self.soa.clone();
        if let RecordData::Soa { minimum, .. } = &soa.data {
            soa.ttl = soa.ttl.min(*minimum);
        }
        soa
    }
}

/// Every static zone, read-only.
#[derive(Debug, Clone, Default)]
pub struct ZoneStore {
    zones: HashMap<DomainName, Arc<Zone>>,
    /// Digest of the text (and merge mode) each zone file was read from, by file: a reload
    /// reuses the parsed zone of a file that has not changed instead of parsing it again.
    sources: HashMap<PathBuf, u64>,
}

impl ZoneStore {
    /// A store of the given zones. Two zones with one origin: the caller rejects that.
    pub fn new(zones: impl IntoIterator<Item = Zone>) -> Self {
        Self {
            zones: zones
                .into_iter()
                .map(|z| (z.origin.clone(), Arc::new(z)))
                .collect(),
            sources: HashMap::new(),
        }
    }

    /// A store of zones read from files, with the digest of each file's source.
    fn from_files(zones: Vec<(Arc<Zone>, u64)>) -> Self {
        let mut store = Self::default();
        for (z, digest) in zones {
            store.sources.insert(z.file.clone(), digest);
            store.zones.insert(z.origin.clone(), z);
        }
        store
    }

    /// The zone read from `file`, if its source had this digest.
    fn unchanged(&self, file: &Path, digest: u64) -> Option<Arc<Zone>> {
        if self.sources.get(file) != Some(&digest) {
            return None;
        }
        self.zones.values().find(|z| z.file == file).cloned()
    }

    /// The most specific zone that contains `name`.
    pub fn find(&self, name: &DomainName) -> Option<&Arc<Zone>> {
        if self.zones.is_empty() {
            return None;
        }
        let mut n = Some(name.clone());
        while let Some(cur) = n {
            if let Some(z) = self.zones.get(&cur) {
                return Some(z);
            }
            n = cur.parent();
        }
        None
    }

    /// The zone with this origin.
    pub fn get(&self, origin: &DomainName) -> Option<&Arc<Zone>> {
        self.zones.get(origin)
    }

    /// Every zone, by origin.
    pub fn zones(&self) -> impl Iterator<Item = &Arc<Zone>> {
        self.zones.values()
    }

    /// Number of zones.
    pub fn len(&self) -> usize {
        self.zones.len()
    }

    /// True with no zones.
    pub fn is_empty(&self) -> bool {
        self.zones.is_empty()
    }

    /// Total records over every zone.
    pub fn record_count(&self) -> usize {
        self.zones.values().map(|z| z.len()).sum()
    }

    /// A copy with one zone added or replaced.
    pub fn with_zone(&self, zone: Zone) -> Self {
        let mut store = self.without_zone(&zone.origin);
        // The zone no longer matches any file digest: the next reload parses its file.
        store.sources.remove(&zone.file);
        store.zones.insert(zone.origin.clone(), Arc::new(zone));
        store
    }

    /// A copy without the zone at `origin`.
    pub fn without_zone(&self, origin: &DomainName) -> Self {
        let mut store = self.clone();
        if let Some(old) = store.zones.remove(origin) {
            store.sources.remove(&old.file);
        }
        store
    }
}

#[cfg(test)]
mod tests;
