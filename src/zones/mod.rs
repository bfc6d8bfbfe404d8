//! The operator's static entries: `zones/*.yaml` (the phones' static-DNS-cache fields, held
//! on the server) and RFC 1035 `zones/*.zone` files, as one read-only [`ZoneStore`].
//!
//! A store is built whole, off to the side, and swapped in atomically by the caller; it is
//! never changed in place. Lookups follow RFC 1034 §4.3.2 for what a static zone can say:
//! records of the asked type, a CNAME, NODATA (the name exists, not that type; empty
//! non-terminals included) or NXDOMAIN, the last two with the zone's SOA.

pub mod edit;
mod flow;
mod load;
pub mod schema;
pub mod secondary;
mod shape;
mod zone_file;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::{Path, PathBuf},
    sync::Arc,
};

use crate::{
    config::{FileError, MergeMode},
    record::{DomainName, RType, Rec, RecordData},
};

pub use load::{
    DEFAULT_MAX_FILE_SIZE, load_dir, load_dir_limited, load_dir_reusing, load_yaml_text,
    load_zone_file_text,
};

/// Items of work below which a zone is read on one thread.
const PARALLEL_FROM: usize = 20_000;

/// How many threads to spread `items` pieces of work over: one below [`PARALLEL_FROM`],
/// else one per core, at most 8.
fn threads_for(items: usize) -> usize {
    if items < PARALLEL_FROM {
        return 1;
    }
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8)
}

/// `f(offset, piece)` over `items` cut into `threads` pieces, each on its own scoped
/// thread; the results in order. Large zones are read this way during a live reload. A
/// piece whose thread cannot be started runs on the caller's; a panic is passed on.
fn par_map<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(usize, &[T]) -> R + Sync,
) -> Vec<R> {
    let n = threads.min(items.len()).max(1);
    if n <= 1 {
        return vec![f(0, items)];
    }
    let size = items.len().div_ceil(n);
    let f = &f;
    std::thread::scope(|scope| {
        let started: Vec<_> = items
            .chunks(size)
            .enumerate()
            .map(|(k, piece)| {
                let offset = k * size;
                let handle = std::thread::Builder::new()
                    .name("sipdns-zones".into())
                    .spawn_scoped(scope, move || f(offset, piece));
                (offset, piece, handle)
            })
            .collect();
        started
            .into_iter()
            .map(|(offset, piece, handle)| match handle {
                Ok(h) => h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
                Err(_) => f(offset, piece),
            })
            .collect()
    })
}

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
    /// Transferred from a primary (`zones.secondary`), kept in `zones.secondary_dir`;
    /// read-only to the API.
    Secondary,
}

/// One static zone.
#[derive(Debug, Clone)]
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
    /// Every record but the SOA, grouped by owner name (owners are all at or below the
    /// origin): one allocation for the zone instead of one per name.
    recs: Vec<Rec>,
    /// Owner name -> its group in `groups`.
    names: HashMap<DomainName, u32>,
    /// Where each owner's records are in `recs`.
    groups: Vec<Group>,
    /// Names with other names below them (every proper ancestor of an owner, down from the
    /// origin): RFC 1034 empty non-terminals and wildcard closest enclosers without a scan.
    interior: HashSet<DomainName>,
}

/// Where one owner's records are in [`Zone::recs`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Group {
    start: u32,
    len: u32,
}

impl PartialEq for Zone {
    /// Same origin, mode, SOA, file, format, and the same records under every name (in the
    /// order they were given).
    fn eq(&self, other: &Self) -> bool {
        self.origin == other.origin
            && self.mode == other.mode
            && self.soa == other.soa
            && self.file == other.file
            && self.format == other.format
            && self.names.len() == other.names.len()
            && self.recs.len() == other.recs.len()
            && self
                .names
                .keys()
                .all(|n| self.records_of(n) == other.records_of(n))
    }
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
        // 100,000-record zones are reloaded live: size the map once, one hash per record,
        // no allocation per name; then the records are placed grouped by owner.
        let mut names: HashMap<DomainName, u32> = HashMap::with_capacity(records.len());
        let mut groups: Vec<Group> = Vec::new();
        let mut interior: HashSet<DomainName> = HashSet::new();
        let mut origin_in = false;
        let mut group_of: Vec<u32> = Vec::with_capacity(records.len());
        let mut kept: Vec<Option<Rec>> = Vec::with_capacity(records.len());
        for r in records {
            if !r.name.is_in(&origin) || r.rtype() == RType::SOA {
                continue;
            }
            let next = u32::try_from(groups.len()).unwrap_or(u32::MAX);
            let g = *names.entry(r.name.clone()).or_insert(next);
            if g == next {
                groups.push(Group { start: 0, len: 0 });
                // A new owner: its ancestors down from the origin have descendants.
                mark_ancestors(&mut interior, &mut origin_in, &origin, &r.name);
            }
            if let Some(group) = groups.get_mut(g as usize) {
                group.len += 1;
            }
            group_of.push(g);
            kept.push(Some(r));
        }
        // Group k's records start after those of groups 0..k.
        let mut at = 0u32;
        for group in &mut groups {
            group.start = at;
            at = at.saturating_add(group.len);
        }
        let mut order = vec![0usize; kept.len()];
        let mut fill: Vec<u32> = groups.iter().map(|g| g.start).collect();
        for (i, g) in group_of.iter().enumerate() {
            if let Some(f) = fill.get_mut(*g as usize) {
                if let Some(slot) = order.get_mut(*f as usize) {
                    *slot = i;
                }
                *f += 1;
            }
        }
        let recs: Vec<Rec> = order
            .into_iter()
            .filter_map(|i| kept.get_mut(i).and_then(Option::take))
            .collect();
        Self {
            origin,
            mode,
            soa,
            file,
            format,
            recs,
            names,
            groups,
            interior,
        }
    }

    /// Number of records (the SOA not counted).
    pub fn len(&self) -> usize {
        self.recs.len()
    }

    /// True if the zone holds no record but its SOA.
    pub fn is_empty(&self) -> bool {
        self.recs.is_empty()
    }

    /// Every record, SOA first, then by owner name.
    pub fn records(&self) -> Vec<Rec> {
        let sorted: BTreeMap<&DomainName, &[Rec]> =
            self.names.keys().map(|n| (n, self.records_of(n))).collect();
        std::iter::once(self.soa.clone())
            .chain(sorted.into_values().flatten().cloned())
            .collect()
    }

    /// The records of `name` (empty if none).
    pub fn records_of(&self, name: &DomainName) -> &[Rec] {
        self.owned_by(name).unwrap_or(&[])
    }

    /// The records of `name` if it is an owner in the zone (one map lookup).
    fn owned_by(&self, name: &DomainName) -> Option<&[Rec]> {
        let g = self.groups.get(*self.names.get(name)? as usize)?;
        let start = g.start as usize;
        self.recs.get(start..start + g.len as usize)
    }

    /// What the zone says about (name, rtype). `name` must be in the zone.
    pub fn lookup(&self, name: &DomainName, rtype: RType) -> ZoneAnswer {
        if rtype == RType::SOA && name == &self.origin {
            return ZoneAnswer::Records(vec![self.soa.clone()]);
        }
        let found = match self.owned_by(name) {
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
        self.interior.contains(name)
    }

    /// RFC 4592 §3.3.1: the wildcard at the closest encloser, if the name itself is absent.
    fn wildcard(&self, name: &DomainName) -> Option<&[Rec]> {
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
                return self.owned_by(&wild);
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

/// Adds every proper ancestor of `name` down from `origin` (included) to `interior`,
/// stopping at the first one already there; allocates only for names not yet in it.
/// `origin_in` says whether the origin is in already (most owners sit right under it: no
/// hashing for those).
fn mark_ancestors(
    interior: &mut HashSet<DomainName>,
    origin_in: &mut bool,
    origin: &DomainName,
    name: &DomainName,
) {
    let mut at = name.as_str();
    while at.len() > origin.as_str().len() {
        let Some((_, up)) = at.split_once('.') else {
            return;
        };
        let up = if up.is_empty() { "." } else { up };
        if up == origin.as_str() {
            if !*origin_in {
                interior.insert(origin.clone());
                *origin_in = true;
            }
            return;
        }
        if interior.contains(up) {
            return;
        }
        interior.insert(DomainName::from_presentation(up));
        at = up;
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

    /// A copy in which exactly the zones of `secondary` are the transferred ones: each is
    /// added unless a zone file of `zones/` defines that origin (the operator's own file
    /// wins), and transferred zones not in `secondary` any more (expired, or removed from
    /// a catalog) are dropped. Zones are shared, not copied.
    pub fn with_secondaries(&self, secondary: &HashMap<DomainName, Arc<Zone>>) -> Self {
        let mut store = self.clone();
        store
            .zones
            .retain(|o, z| z.format != ZoneFormat::Secondary || secondary.contains_key(o));
        for (origin, zone) in secondary {
            let own_file = store
                .zones
                .get(origin)
                .is_some_and(|z| z.format != ZoneFormat::Secondary);
            if !own_file {
                store.zones.insert(origin.clone(), zone.clone());
            }
        }
        store
    }

    /// [`Self::with_zone`] for a zone just written to its file as `source`: the store knows
    /// the file holds that text, so a later change by hand is seen ([`Self::is_source`])
    /// and the next reload reuses the zone instead of parsing the file again.
    pub fn with_zone_from(&self, zone: Zone, source: &str) -> Self {
        let file = zone.file.clone();
        let mut store = self.with_zone(zone);
        store
            .sources
            .insert(file, load::source_digest(source, None));
        store
    }

    /// Whether `text` is what the YAML zone file `file` held when its zone was loaded or
    /// written; `None` when the store does not know the file's source.
    pub fn is_source(&self, file: &Path, text: &str) -> Option<bool> {
        self.sources
            .get(file)
            .map(|d| *d == load::source_digest(text, None))
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
