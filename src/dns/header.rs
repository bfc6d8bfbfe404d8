//! The DNS header and OPT bits, by name (RFC 1035 §4.1.1, RFC 4035 §3.2, RFC 6891 §6.1.3).
//! Every module that reads or writes a header bit takes it from here.

/// QR: this message is a response.
pub const QR: u16 = 0x8000;
/// The OPCODE field (4 bits).
pub const OPCODE_MASK: u16 = 0x7800;
/// Shift of the OPCODE field.
pub const OPCODE_SHIFT: u16 = 11;
/// AA: authoritative answer.
pub const AA: u16 = 0x0400;
/// TC: truncated.
pub const TC: u16 = 0x0200;
/// RD: recursion desired (copied from the query).
pub const RD: u16 = 0x0100;
/// RA: recursion available.
pub const RA: u16 = 0x0080;
/// AD: authentic data (RFC 4035 §3.2.3).
pub const AD: u16 = 0x0020;
/// CD: checking disabled (copied from the query, RFC 4035 §3.2.2).
pub const CD: u16 = 0x0010;
/// The RCODE field (low 4 bits; the high 8 are in OPT).
pub const RCODE_MASK: u16 = 0x000F;

/// DO: DNSSEC OK, in the low 16 bits of the OPT record's TTL (RFC 3225 §3).
pub const EDNS_DO: u16 = 0x8000;

/// Opcode QUERY.
pub const OPCODE_QUERY: u8 = 0;
/// Opcode NOTIFY (RFC 1996).
pub const OPCODE_NOTIFY: u8 = 4;

/// Offsets of the header's counts.
pub const QDCOUNT: usize = 4;
/// ANCOUNT offset.
pub const ANCOUNT: usize = 6;
/// NSCOUNT offset.
pub const NSCOUNT: usize = 8;
/// ARCOUNT offset.
pub const ARCOUNT: usize = 10;
/// Length of the header.
pub const LEN: usize = 12;

/// The flags word of a message.
pub fn flags(p: &[u8]) -> u16 {
    u16::from_be_bytes([p[2], p[3]])
}

/// The opcode of a message's flags word.
pub fn opcode(flags: u16) -> u8 {
    ((flags & OPCODE_MASK) >> OPCODE_SHIFT) as u8
}
