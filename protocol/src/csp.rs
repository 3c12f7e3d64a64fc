//! RSPLIB's Component Status Protocol report (CSP, UDP port 2960): the status datagram a
//! registrar, PE or PU sends to a `cspmonitor`. Not part of the RFCs; layout from RSPLIB 3.4.4 as
//! Wireshark dissects it.

use crate::Generation;
use crate::error::{DecodeError, EncodeError};
use crate::wire::{Cursor, Seq, Unrecognized, Writer};

/// CSP message type of a component status report.
pub const CSP_REPORT: u8 = 0x01;
/// The only CSP version RSPLIB's monitor accepts.
pub const CSP_VERSION: u32 = 0x0000_0200;
/// Flag bit: the component is shutting down (final report).
pub const CSP_FLAG_FINAL: u8 = 0x01;
/// Default UDP port of a `cspmonitor`.
pub const CSP_PORT: u16 = 2960;
/// Size of the fixed part of a report, before the associations.
pub const CSP_REPORT_FIXED_LEN: usize = 288;
/// Size of one association record.
pub const CSP_ASSOCIATION_LEN: usize = 24;
/// Size of the NUL-padded location and status text fields.
pub const CSP_TEXT_LEN: usize = 128;

/// Component ID group of a registrar.
pub const CSP_GROUP_REGISTRAR: u16 = 0x0001;
/// Component ID group of a pool element.
pub const CSP_GROUP_POOL_ELEMENT: u16 = 0x0002;
/// Component ID group of a pool user.
pub const CSP_GROUP_POOL_USER: u16 = 0x0003;

/// A component ID as RSPLIB's `CID_COMPOUND` builds it: the group shifted left by 56 bits, the
/// object in the low 56 bits.
pub const fn component_id(group: u16, object: u64) -> u64 {
    ((group as u64) << 56) | (object & 0x00ff_ffff_ffff_ffff)
}

/// One association a component reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CspAssociation {
    /// The peer's component ID.
    pub receiver_id: u64,
    /// How long the association has existed, in microseconds (0xffff...ff = unknown).
    pub duration: u64,
    /// Flags (RSPLIB sends 0).
    pub flags: u16,
    /// Transport protocol number (132 = SCTP).
    pub protocol_id: u16,
    /// SCTP payload protocol identifier.
    pub ppid: u32,
}

/// A component status report as a borrowed view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CspReport<'a> {
    /// The component is shutting down.
    pub final_report: bool,
    /// The sender's component ID ([`component_id`]).
    pub sender_id: u64,
    /// Microseconds since the reporter started.
    pub timestamp_us: u64,
    /// Report interval in microseconds (RSPLIB sends 1 000 000 for its 1 s default; Wireshark agrees).
    pub report_interval_us: u32,
    /// Location text (host name and addresses), without its trailing NUL padding.
    pub location: &'a [u8],
    /// Status text, without its trailing NUL padding.
    pub status: &'a [u8],
    /// Workload: `round(w * 0xfffe)`; 0xffff = unknown.
    pub workload: u16,
    /// The component's associations.
    pub associations: Seq<'a, CspAssociation>,
}

fn trim_nul(b: &[u8]) -> &[u8] {
    let end = b.iter().rposition(|&c| c != 0).map_or(0, |i| i + 1);
    &b[..end]
}

fn next_association(
    cur: &mut Cursor<'_>,
    _: Generation,
    _: &mut Unrecognized,
) -> Result<Option<CspAssociation>, DecodeError> {
    if cur.at_end() {
        return Ok(None);
    }
    Ok(Some(CspAssociation {
        receiver_id: cur.u64("association receiver ID")?,
        duration: cur.u64("association duration")?,
        flags: cur.u16("association flags")?,
        protocol_id: cur.u16("association protocol")?,
        ppid: cur.u32("association PPID")?,
    }))
}

impl<'a> CspReport<'a> {
    /// Decodes a report; like RSPLIB's monitor it requires type 1, version 0x0200 and a length
    /// equal to 288 + 24 × associations.
    pub fn decode(msg: &'a [u8]) -> Result<Self, DecodeError> {
        let mut cur = Cursor::new(msg, 0, msg.len());
        let ty = cur.u8("CSP type")?;
        if ty != CSP_REPORT {
            return Err(DecodeError::UnknownMessageType {
                message_type: ty,
                report: false,
            });
        }
        let flags = cur.u8("CSP flags")?;
        let length = usize::from(cur.u16("CSP length")?);
        let version = cur.u32("CSP version")?;
        if version != CSP_VERSION {
            return Err(DecodeError::InvalidValue {
                what: "CSP version",
                reason: "only version 0x0200 is defined",
                tlv: 4..8,
            });
        }
        let sender_id = cur.u64("CSP sender ID")?;
        let timestamp_us = cur.u64("CSP timestamp")?;
        let report_interval_us = cur.u32("CSP report interval")?;
        let location = trim_nul(cur.take(CSP_TEXT_LEN, "CSP location")?);
        let status = trim_nul(cur.take(CSP_TEXT_LEN, "CSP status")?);
        let workload = cur.u16("CSP workload")?;
        let count = usize::from(cur.u16("CSP association count")?);
        let expected = CSP_REPORT_FIXED_LEN + CSP_ASSOCIATION_LEN * count;
        if length != expected || msg.len() != expected {
            return Err(DecodeError::BadLength {
                what: "CSP report",
                length,
                offset: 0,
            });
        }
        let associations = Seq::validated(
            Cursor::new(msg, CSP_REPORT_FIXED_LEN, msg.len()),
            count,
            Generation::Rfc,
        );
        Ok(Self {
            final_report: flags & CSP_FLAG_FINAL != 0,
            sender_id,
            timestamp_us,
            report_interval_us,
            location,
            status,
            workload,
            associations,
        })
    }

    /// Encodes the report into `buf`; location and status are cut to 127 bytes so that a NUL
    /// always ends them.
    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, EncodeError> {
        let count = u16::try_from(self.associations.len()).map_err(|_| EncodeError::TooLong {
            what: "CSP association list",
        })?;
        let len = CSP_REPORT_FIXED_LEN + CSP_ASSOCIATION_LEN * usize::from(count);
        let mut w = Writer::new(buf);
        w.u8(CSP_REPORT)?;
        w.u8(if self.final_report { CSP_FLAG_FINAL } else { 0 })?;
        w.u16(u16::try_from(len).map_err(|_| EncodeError::TooLong { what: "CSP report" })?)?;
        w.u32(CSP_VERSION)?;
        w.u64(self.sender_id)?;
        w.u64(self.timestamp_us)?;
        w.u32(self.report_interval_us)?;
        for text in [self.location, self.status] {
            let mut field = [0u8; CSP_TEXT_LEN];
            let n = text.len().min(CSP_TEXT_LEN - 1);
            field[..n].copy_from_slice(&text[..n]);
            w.bytes(&field)?;
        }
        w.u16(self.workload)?;
        w.u16(count)?;
        for a in self.associations.iter() {
            w.u64(a.receiver_id)?;
            w.u64(a.duration)?;
            w.u16(a.flags)?;
            w.u16(a.protocol_id)?;
            w.u32(a.ppid)?;
        }
        Ok(w.pos())
    }
}

crate::wire::seq_item!('a, CspAssociation, next_association);
