//! NOTIFY (RFC 1996) from a primary: wakes the zone's task for a serial check now.

use std::net::SocketAddr;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};

use super::Secondaries;
use crate::hickory as convert;

impl Secondaries {
    /// Answers a NOTIFY (RFC 1996) from `src`: for a followed zone from one of its
    /// primaries' addresses, a check is started and NOERROR returned; anything else is
    /// REFUSED and counted. `None`: not a message to answer.
    pub fn notify(&self, bytes: &[u8], src: SocketAddr) -> Option<Vec<u8>> {
        let msg = Message::from_vec(bytes).ok()?;
        if msg.metadata.message_type != MessageType::Query || msg.metadata.op_code != OpCode::Notify
        {
            return None;
        }
        let wake = msg.queries.first().and_then(|q| {
            let origin = convert::name_from_hickory(q.name());
            let s = self.state.lock().ok()?;
            let e = s.entries.get(&origin)?;
            e.settings
                .primaries
                .iter()
                .any(|p| p.ip().to_canonical() == src.ip().to_canonical())
                .then(|| e.wake.clone())
        });
        let rcode = match &wake {
            Some(w) => {
                w.notify_one();
                self.metrics
                    .zone_notifies
                    .with_label_values(&["accepted"])
                    .inc();
                ResponseCode::NoError
            }
            None => {
                self.metrics
                    .zone_notifies
                    .with_label_values(&["refused"])
                    .inc();
                tracing::debug!(%src, "NOTIFY refused: not a followed zone, or not from its primary");
                ResponseCode::Refused
            }
        };
        let mut resp = Message::new(msg.metadata.id, MessageType::Response, OpCode::Notify);
        resp.metadata.authoritative = rcode == ResponseCode::NoError;
        resp.metadata.response_code = rcode;
        resp.queries = msg.queries;
        resp.to_vec().ok()
    }
}
