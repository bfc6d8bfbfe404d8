//! TSIG (RFC 8945) keys of the followed zones, through hickory-proto's `TSigner`: loaded
//! from their secret files, signing the transfer requests ([`super::transfer`]), checking a
//! signed NOTIFY and signing its answer ([`super::notify`]).

use std::time::SystemTime;

use hickory_proto::{
    dnssec::DnsSecError,
    op::Message,
    rr::{
        TSigResponseContext, TSigner,
        rdata::tsig::{TsigAlgorithm, TsigError},
    },
};

use crate::{
    config::{TsigAlgorithmName, TsigConfig},
    hickory as convert,
};

/// Clock skew a signed message may have (RFC 8945 §10 recommends 300 s).
const FUDGE: u16 = 300;

/// A TSIG key ready to sign.
#[derive(Clone)]
pub(crate) struct Key(TSigner);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({})", self.0.signer_name())
    }
}

impl Key {
    /// Reads the secret file of `cfg`: a bare base64 line, or a BIND (`secret "…";`) or
    /// Knot (`secret: …`) key file.
    pub(crate) fn load(cfg: &TsigConfig) -> Result<Self, String> {
        let text = std::fs::read_to_string(&cfg.secret_file).map_err(|e| {
            format!(
                "cannot read the TSIG secret {}: {e}",
                cfg.secret_file.display()
            )
        })?;
        let secret = secret_of(&text)
            .ok_or_else(|| format!("{}: no base64 TSIG secret found", cfg.secret_file.display()))?;
        let bytes = data_encoding::BASE64
            .decode(secret.as_bytes())
            .map_err(|e| {
                format!(
                    "{}: the TSIG secret is not base64: {e}",
                    cfg.secret_file.display()
                )
            })?;
        let algorithm = match cfg.algorithm {
            TsigAlgorithmName::HmacSha256 => TsigAlgorithm::HmacSha256,
            TsigAlgorithmName::HmacSha384 => TsigAlgorithm::HmacSha384,
            TsigAlgorithmName::HmacSha512 => TsigAlgorithm::HmacSha512,
        };
        let name = convert::name_to_hickory(&cfg.name).map_err(|e| e.to_string())?;
        TSigner::new(bytes, algorithm, name, FUDGE)
            .map(Self)
            .map_err(|e| format!("TSIG key {}: {e}", cfg.name))
    }

    /// True when `other` is the same key: name, algorithm and secret.
    pub(super) fn same_secret(&self, other: &Self) -> bool {
        self.0.signer_name() == other.0.signer_name()
            && self.0.algorithm() == other.0.algorithm()
            && self.0.key() == other.0.key()
    }

    /// The hickory signer, for signing a request.
    pub(super) fn signer(&self) -> &TSigner {
        &self.0
    }

    /// Checks the TSIG of a signed request, `bytes` as received and `request` as parsed
    /// (RFC 8945 §5.2), at `now` (Unix seconds): the key's name and algorithm, the MAC,
    /// then the time within the fudge.
    pub(super) fn check_request(&self, bytes: &[u8], request: &Message, now: u64) -> Verdict {
        let id = request.metadata.id;
        match self.0.verify_message_byte(bytes, None, true) {
            Ok((mac, _, window)) if window.contains(&now) || window.end == now => {
                Verdict::Valid(TSigResponseContext::new(id, now, self.0.clone(), mac, None))
            }
            Ok((mac, _, _)) => Verdict::Bad {
                reason: "BADTIME (the clocks differ by more than the fudge)",
                answer: TSigResponseContext::new(
                    id,
                    now,
                    self.0.clone(),
                    mac,
                    Some(TsigError::BadTime),
                ),
            },
            Err(DnsSecError::TsigWrongKey) => Verdict::Bad {
                reason: "BADKEY (signed with another key)",
                answer: unknown_key(request, now),
            },
            Err(_) => Verdict::Bad {
                reason: "BADSIG (the MAC does not match our key)",
                answer: TSigResponseContext::bad_signature(id, now, self.0.clone()),
            },
        }
    }
}

/// What the TSIG of a signed request says, and how to sign the answer.
pub(super) enum Verdict {
    /// Signed with the key and in time: the answer is signed (over the request's MAC).
    Valid(TSigResponseContext),
    /// Not signed with the key, or out of time: the answer is NOTAUTH with this TSIG
    /// (unsigned for BADKEY / BADSIG, as RFC 8945 §5.2 says).
    Bad {
        /// For the log and the zone's status.
        reason: &'static str,
        /// The TSIG of the answer.
        answer: TSigResponseContext,
    },
}

/// The answer's TSIG for a request signed with a key sipdns does not hold for the zone
/// (BADKEY, unsigned), naming the request's key.
pub(super) fn unknown_key(request: &Message, now: u64) -> TSigResponseContext {
    let name = request
        .signature()
        .map(|s| s.name.clone())
        .unwrap_or_default();
    TSigResponseContext::unknown_key(request.metadata.id, now, name)
}

/// `message` with the TSIG `answer` made over it, encoded.
pub(super) fn sign(mut message: Message, answer: TSigResponseContext) -> Option<Vec<u8>> {
    let unsigned = message.to_vec().ok()?;
    message.set_signature(answer.sign(&unsigned).ok()?);
    message.to_vec().ok()
}

/// The base64 secret in a key file's text.
fn secret_of(text: &str) -> Option<String> {
    for line in text.lines() {
        let l = line.trim();
        if let Some(rest) = l.strip_prefix("secret") {
            let v = rest
                .trim_start_matches([':', ' ', '\t'])
                .trim_end_matches(';')
                .trim()
                .trim_matches('"');
            if !v.is_empty() {
                return Some(v.to_owned());
            }
        }
    }
    let bare: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'))
        .collect();
    match bare.as_slice() {
        [one] if !one.contains(' ') => Some((*one).to_owned()),
        _ => None,
    }
}

/// Now, in Unix seconds (the TSIG time).
pub(super) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests;
