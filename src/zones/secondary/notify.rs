//! NOTIFY (RFC 1996) from a primary: wakes the zone's task for a serial check now.

use std::net::SocketAddr;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};

use super::{
    Secondaries,
    tsig::{self, Verdict},
};
use crate::hickory as convert;

impl Secondaries {
    /// Answers a NOTIFY (RFC 1996) from `src`. For a followed zone from one of its
    /// primaries' addresses, a check is started and NOERROR returned — signed when the
    /// NOTIFY was signed with the zone's TSIG key. A NOTIFY signed with another key, a wrong
    /// MAC or out of time gets NOTAUTH (RFC 8945 §5.2) and starts nothing; anything else is
    /// REFUSED. Each is counted. `None`: not a message to answer.
    pub fn notify(&self, bytes: &[u8], src: SocketAddr) -> Option<Vec<u8>> {
        let msg = Message::from_vec(bytes).ok()?;
        if msg.metadata.message_type != MessageType::Query || msg.metadata.op_code != OpCode::Notify
        {
            return None;
        }
        let id = msg.metadata.id;
        let mut resp = Message::new(id, MessageType::Response, OpCode::Notify);
        if msg.queries.len() != 1 {
            // RFC 1996 §3.7: one question. Nothing is echoed (the answer stays small).
            self.count("refused");
            resp.metadata.response_code = ResponseCode::FormErr;
            return resp.to_vec().ok();
        }
        resp.queries = msg.queries.clone();
        // The zone, when `src` is one of its primaries: its wake-up and its key.
        let zone = msg.queries.first().and_then(|q| {
            let origin = convert::name_from_hickory(q.name());
            let s = self.state.lock().ok()?;
            let e = s.entries.get(&origin)?;
            e.settings
                .primaries
                .iter()
                .any(|p| p.ip().to_canonical() == src.ip().to_canonical())
                .then(|| (origin.clone(), e.wake.clone(), e.settings.key.clone()))
        });
        let Some((origin, wake, key)) = zone else {
            self.count("refused");
            tracing::debug!(%src, "NOTIFY refused: not a followed zone, or not from its primary");
            resp.metadata.response_code = ResponseCode::Refused;
            return resp.to_vec().ok();
        };
        let now = tsig::unix_now();
        // An unsigned NOTIFY is taken on its source address (it only starts a check, which
        // is itself signed); a signed one must be signed with the zone's key.
        let verdict = match (msg.signature().is_some(), key) {
            (false, _) => None,
            (true, Some(key)) => Some(key.check_request(bytes, &msg, now)),
            (true, None) => Some(Verdict::Bad {
                reason: "BADKEY (signed, but the zone has no TSIG key)",
                answer: tsig::unknown_key(&msg, now),
            }),
        };
        match verdict {
            Some(Verdict::Bad { reason, answer }) => {
                self.count("rejected");
                tracing::warn!(%src, zone = %origin, "NOTIFY rejected: TSIG {reason}");
                self.with_entry(&origin, |e| {
                    e.status.error = Some(format!("NOTIFY from {src} rejected: TSIG {reason}"));
                });
                resp.metadata.response_code = ResponseCode::NotAuth;
                tsig::sign(resp, answer)
            }
            verdict => {
                wake.notify_one();
                self.count("accepted");
                resp.metadata.authoritative = true;
                match verdict {
                    Some(Verdict::Valid(answer)) => tsig::sign(resp, answer),
                    _ => resp.to_vec().ok(),
                }
            }
        }
    }

    fn count(&self, result: &str) {
        self.metrics
            .zone_notifies
            .with_label_values(&[result])
            .inc();
    }
}
