//! The hand-off to a reload: the transferred zones in force laid over the zones of
//! `zones/`, and the catalog members that become managed SIP domains.

use super::Secondaries;
use crate::{config::Config, record::DomainName, zones::ZoneStore};

impl Secondaries {
    /// `store` with the transferred zones in force laid over it (see
    /// [`ZoneStore::with_secondaries`]).
    pub fn overlay(&self, store: &ZoneStore) -> ZoneStore {
        match self.state.lock() {
            Ok(s) => store.with_secondaries(&s.serving),
            Err(_) => store.clone(),
        }
    }

    /// `config` with every served catalog member whose group has a `sip_policy` made a
    /// managed SIP domain: a copy of that `sip.domains` entry under the member's name
    /// (unless the config names the member itself). `None` when there is nothing to add
    /// or take out.
    pub fn overlay_config(&self, config: &Config) -> Option<Config> {
        let wanted: Vec<(DomainName, DomainName)> = {
            let s = self.state.lock().ok()?;
            s.entries
                .iter()
                .filter(|(o, _)| s.serving.contains_key(*o))
                .filter_map(|(o, e)| Some((o.clone(), e.settings.sip_policy.clone()?)))
                .collect()
        };
        let mut added = self.added_domains.lock().ok()?;
        if wanted.is_empty() && added.is_empty() {
            return None;
        }
        let mut c = config.clone();
        c.sip.domains.retain(|d| !added.contains(&d.name));
        added.clear();
        for (member, template) in wanted {
            if c.sip.domains.iter().any(|d| d.name == member) {
                continue;
            }
            if let Some(mut d) = c.sip.domains.iter().find(|d| d.name == template).cloned() {
                d.name = member.clone();
                c.sip.domains.push(d);
                added.insert(member);
            }
        }
        // The same domains: the config in force stays (its followers, such as the
        // forwarder, see no change).
        (c.sip.domains != config.sip.domains).then_some(c)
    }
}
