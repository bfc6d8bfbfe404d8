//! The zone transfer client: SOA serial checks and AXFR (RFC 5936) / IXFR (RFC 1995)
//! over TCP, each request signed and every response message verified with TSIG
//! (RFC 8945) through hickory-proto's `TSigner` / `TSigVerifier`. Messages are hickory's
//! `Message`; the records come out as plain [`Rec`]s.
//!
//! Written here rather than with hickory-net's client: that client brings its own runtime
//! plumbing and reports an IXFR as one flat record stream, while sipdns needs the
//! difference sequences themselves to apply an IXFR without touching the unchanged rest of
//! the zone. Every response message must carry a TSIG record when a key is configured
//! (Knot and BIND sign each one; RFC 8945 §5.3.1's unsigned intermediate messages are
//! refused, which fails safe).

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use hickory_proto::{
    op::{Message, MessageType, OpCode, Query, ResponseCode},
    rr::{Name, RecordType, TSigVerifier},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::{
    hickory as convert,
    record::{DomainName, Rec, RecordData},
};

use super::tsig::{Key, unix_now};

/// Largest transfer accepted, in records (a hostile primary cannot exhaust memory).
const MAX_RECORDS: usize = 5_000_000;

/// Why a check or transfer failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransferError {
    /// Connecting, sending or receiving failed, or timed out.
    #[error("{primary}: {reason}")]
    Io {
        /// The primary.
        primary: SocketAddr,
        /// What happened.
        reason: String,
    },
    /// The primary answered with an error code.
    #[error("{primary} answered {rcode}{hint}")]
    Rcode {
        /// The primary.
        primary: SocketAddr,
        /// The code.
        rcode: String,
        /// What it likely means.
        hint: &'static str,
    },
    /// A response failed TSIG verification, or was not signed.
    #[error("{primary}: TSIG verification failed: {reason}")]
    Tsig {
        /// The primary.
        primary: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The response is not a well-formed transfer of the zone.
    #[error("{primary}: malformed transfer: {reason}")]
    Malformed {
        /// The primary.
        primary: SocketAddr,
        /// Why.
        reason: String,
    },
}

impl TransferError {
    /// A metric label: `rejected` for authentication problems, else `failed`.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Self::Tsig { .. } => "rejected",
            Self::Rcode { rcode, .. } if rcode == "NOTAUTH" => "rejected",
            _ => "failed",
        }
    }
}

/// Which transfer was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Full zone (RFC 5936), or an IXFR the primary answered with the full zone.
    Axfr,
    /// Differences (RFC 1995).
    Ixfr,
}

impl Kind {
    /// The metric label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Axfr => "axfr",
            Self::Ixfr => "ixfr",
        }
    }
}

/// One step of an IXFR: the records removed and added to go from one serial to the next.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Diff {
    pub(crate) removed: Vec<Rec>,
    pub(crate) added: Vec<Rec>,
}

/// What a transfer brought.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Body {
    /// The whole zone, SOA included.
    Full(Vec<Rec>),
    /// The differences from the serial we hold to `soa`'s.
    Incremental {
        /// The new SOA.
        soa: Rec,
        /// The steps, in order.
        diffs: Vec<Diff>,
    },
    /// Nothing newer than what we hold.
    UpToDate,
}

/// A finished transfer.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub(crate) kind: Kind,
    pub(crate) body: Body,
    pub(crate) bytes: usize,
    pub(crate) records: usize,
    pub(crate) duration: Duration,
}

/// RFC 1982 serial arithmetic: true if `a` is newer than `b`.
pub(crate) fn newer(a: u32, b: u32) -> bool {
    a != b && (a.wrapping_sub(b) as i32) > 0
}

/// The serial of an SOA record.
pub(crate) fn serial_of(soa: &Rec) -> Option<u32> {
    match soa.data {
        RecordData::Soa { serial, .. } => Some(serial),
        _ => None,
    }
}

/// One TCP exchange: a signed request, then response messages verified in order.
struct Exchange {
    primary: SocketAddr,
    stream: TcpStream,
    verifier: Option<TSigVerifier>,
    id: u16,
    deadline: Instant,
    bytes: usize,
}

impl Exchange {
    async fn start(
        primary: SocketAddr,
        mut request: Message,
        key: Option<&Key>,
        timeout: Duration,
    ) -> Result<Self, TransferError> {
        let io = |reason: String| TransferError::Io { primary, reason };
        let deadline = Instant::now() + timeout;
        let id = request.metadata.id;
        let verifier = match key {
            Some(k) => request
                .finalize(k.signer(), unix_now())
                .map_err(|e| io(format!("signing the request: {e}")))?,
            None => None,
        };
        let bytes = request
            .to_vec()
            .map_err(|e| io(format!("encoding the request: {e}")))?;
        let len = u16::try_from(bytes.len()).map_err(|_| io("request too large".into()))?;
        let mut stream = tokio::time::timeout_at(deadline.into(), TcpStream::connect(primary))
            .await
            .map_err(|_| io("connect timed out".into()))?
            .map_err(|e| io(format!("connect: {e}")))?;
        let mut framed = Vec::with_capacity(bytes.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&bytes);
        tokio::time::timeout_at(deadline.into(), stream.write_all(&framed))
            .await
            .map_err(|_| io("send timed out".into()))?
            .map_err(|e| io(format!("send: {e}")))?;
        Ok(Self {
            primary,
            stream,
            verifier,
            id,
            deadline,
            bytes: 0,
        })
    }

    /// The next response message, checked: ID, QR, rcode, TSIG.
    async fn next(&mut self) -> Result<Message, TransferError> {
        let primary = self.primary;
        let io = |reason: String| TransferError::Io { primary, reason };
        let len = tokio::time::timeout_at(self.deadline.into(), self.stream.read_u16())
            .await
            .map_err(|_| io("timed out waiting for the response".into()))?
            .map_err(|e| io(format!("reading the response: {e}")))?;
        let mut buf = vec![0u8; usize::from(len)];
        tokio::time::timeout_at(self.deadline.into(), self.stream.read_exact(&mut buf))
            .await
            .map_err(|_| io("timed out reading the response".into()))?
            .map_err(|e| io(format!("reading the response: {e}")))?;
        self.bytes += buf.len() + 2;
        let msg = Message::from_vec(&buf).map_err(|e| TransferError::Malformed {
            primary,
            reason: e.to_string(),
        })?;
        if msg.metadata.id != self.id || msg.metadata.message_type != MessageType::Response {
            return Err(TransferError::Malformed {
                primary,
                reason: "a message that is not the response to our request".into(),
            });
        }
        let rcode = msg.metadata.response_code;
        if rcode != ResponseCode::NoError {
            let hint = match rcode {
                ResponseCode::NotAuth => " (the primary does not accept our TSIG key)",
                ResponseCode::Refused => " (not allowed to transfer: check the primary's ACL)",
                _ => "",
            };
            return Err(TransferError::Rcode {
                primary,
                rcode: rcode.to_str().to_uppercase(),
                hint,
            });
        }
        if let Some(v) = &mut self.verifier {
            if msg.signature().is_none() {
                return Err(TransferError::Tsig {
                    primary,
                    reason: "an unsigned response".into(),
                });
            }
            v.verify(&buf).map_err(|e| TransferError::Tsig {
                primary,
                reason: e.to_string(),
            })?;
        }
        Ok(msg)
    }
}

fn request(zone: &DomainName, rtype: RecordType) -> Result<(Message, Name), String> {
    let name = convert::name_to_hickory(zone).map_err(|e| e.to_string())?;
    let mut m = Message::new(rand::random::<u16>(), MessageType::Query, OpCode::Query);
    m.add_query(Query::query(name.clone(), rtype));
    Ok((m, name))
}

/// Asks `primary` for the zone's SOA over TCP.
pub(crate) async fn soa(
    primary: SocketAddr,
    zone: &DomainName,
    key: Option<&Key>,
    timeout: Duration,
) -> Result<Rec, TransferError> {
    let (req, _) =
        request(zone, RecordType::SOA).map_err(|reason| TransferError::Io { primary, reason })?;
    let mut ex = Exchange::start(primary, req, key, timeout).await?;
    let msg = ex.next().await?;
    msg.answers
        .iter()
        .filter_map(convert::rec_from_hickory)
        .find(|r| &r.name == zone && serial_of(r).is_some())
        .ok_or_else(|| TransferError::Malformed {
            primary,
            reason: format!("no SOA for {zone} in the answer (is it authoritative for it?)"),
        })
}

/// Transfers the zone from `primary`: IXFR from `have` (our SOA) when given, else AXFR.
pub(crate) async fn transfer(
    primary: SocketAddr,
    zone: &DomainName,
    key: Option<&Key>,
    have: Option<&Rec>,
    timeout: Duration,
) -> Result<Received, TransferError> {
    let started = Instant::now();
    let malformed = |reason: String| TransferError::Malformed { primary, reason };
    let rtype = if have.is_some() {
        RecordType::IXFR
    } else {
        RecordType::AXFR
    };
    let (mut req, _) =
        request(zone, rtype).map_err(|reason| TransferError::Io { primary, reason })?;
    let have_serial = match have {
        Some(soa) => {
            req.add_authority(convert::soa_to_hickory(soa).map_err(|e| malformed(e.to_string()))?);
            serial_of(soa)
        }
        None => None,
    };
    let mut ex = Exchange::start(primary, req, key, timeout).await?;
    let mut stream = Stream::new(zone.clone(), have_serial);
    loop {
        let msg = ex.next().await?;
        let last = stream.feed(msg.answers.iter().filter_map(convert::rec_from_hickory));
        let last = last.map_err(malformed)?;
        if stream.records > MAX_RECORDS {
            return Err(malformed(format!("more than {MAX_RECORDS} records")));
        }
        if last || stream.up_to_date_after_first_message() {
            break;
        }
    }
    let records = stream.records;
    let (kind, body) = stream.finish().map_err(malformed)?;
    Ok(Received {
        kind,
        body,
        bytes: ex.bytes,
        records,
        duration: started.elapsed(),
    })
}

/// Where an AXFR / IXFR record stream is.
#[derive(Debug)]
enum Phase {
    /// Nothing yet.
    Start,
    /// The first SOA (the new serial) seen; the next record decides the form.
    First,
    /// A full zone: records until the closing SOA.
    Full,
    /// IXFR: records removed since the SOA that opened this step.
    Removing,
    /// IXFR: records added, up to `to`.
    Adding { to: u32 },
    /// The closing SOA was seen.
    Done,
}

/// Reads the records of a transfer response, in order (RFC 5936 §2.2, RFC 1995 §4).
#[derive(Debug)]
pub(crate) struct Stream {
    zone: DomainName,
    have: Option<u32>,
    phase: Phase,
    soa: Option<Rec>,
    full: Vec<Rec>,
    diffs: Vec<Diff>,
    records: usize,
    messages: usize,
}

impl Stream {
    pub(crate) fn new(zone: DomainName, have: Option<u32>) -> Self {
        Self {
            zone,
            have,
            phase: Phase::Start,
            soa: None,
            full: Vec::new(),
            diffs: Vec::new(),
            records: 0,
            messages: 0,
        }
    }

    fn apex_soa(&self, r: &Rec) -> Option<u32> {
        if r.name == self.zone {
            serial_of(r)
        } else {
            None
        }
    }

    /// Takes one message's records; true once the closing SOA has been read.
    pub(crate) fn feed(&mut self, recs: impl Iterator<Item = Rec>) -> Result<bool, String> {
        self.messages += 1;
        for r in recs {
            self.records += 1;
            let soa = self.apex_soa(&r);
            let target = self.soa.as_ref().and_then(serial_of);
            self.phase = match std::mem::replace(&mut self.phase, Phase::Start) {
                Phase::Start => {
                    if soa.is_none() {
                        return Err(format!("the first record is not the SOA of {}", self.zone));
                    }
                    self.soa = Some(r);
                    Phase::First
                }
                Phase::First => match soa {
                    Some(s) if Some(s) == self.have && self.have != target => {
                        self.diffs.push(Diff::default());
                        Phase::Removing
                    }
                    Some(s) if Some(s) == target => {
                        // An empty zone (just its SOA), sent whole.
                        if let Some(first) = self.soa.clone() {
                            self.full.push(first);
                        }
                        Phase::Done
                    }
                    Some(_) => {
                        return Err("an IXFR step from a serial we do not hold".into());
                    }
                    None => {
                        if let Some(first) = self.soa.clone() {
                            self.full.push(first);
                        }
                        self.full.push(r);
                        Phase::Full
                    }
                },
                Phase::Full => {
                    if soa.is_some() {
                        Phase::Done
                    } else {
                        self.full.push(r);
                        Phase::Full
                    }
                }
                Phase::Removing => match soa {
                    Some(to) => Phase::Adding { to },
                    None => {
                        if let Some(d) = self.diffs.last_mut() {
                            d.removed.push(r);
                        }
                        Phase::Removing
                    }
                },
                Phase::Adding { to } => match soa {
                    Some(s) if Some(to) == target && Some(s) == target => Phase::Done,
                    Some(_) => {
                        self.diffs.push(Diff::default());
                        Phase::Removing
                    }
                    None => {
                        if let Some(d) = self.diffs.last_mut() {
                            d.added.push(r);
                        }
                        Phase::Adding { to }
                    }
                },
                Phase::Done => return Err("records after the closing SOA".into()),
            };
        }
        Ok(matches!(self.phase, Phase::Done))
    }

    /// An IXFR answered with only the SOA we already hold, in one message: up to date.
    fn up_to_date_after_first_message(&self) -> bool {
        matches!(self.phase, Phase::First)
            && self.messages == 1
            && match (self.soa.as_ref().and_then(serial_of), self.have) {
                (Some(s), Some(h)) => !newer(s, h),
                _ => false,
            }
    }

    pub(crate) fn finish(self) -> Result<(Kind, Body), String> {
        match self.phase {
            Phase::First if self.up_to_date_after_first_message() => {
                Ok((Kind::Ixfr, Body::UpToDate))
            }
            Phase::Done => {
                if self.diffs.is_empty() {
                    Ok((Kind::Axfr, Body::Full(self.full)))
                } else {
                    let soa = self.soa.ok_or("no SOA")?;
                    Ok((
                        Kind::Ixfr,
                        Body::Incremental {
                            soa,
                            diffs: self.diffs,
                        },
                    ))
                }
            }
            _ => Err("the transfer ended before its closing SOA".into()),
        }
    }
}

#[cfg(test)]
mod tests;
