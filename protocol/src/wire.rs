//! Byte-level primitives shared by every message: the TLV cursor that applies RFC 5354 §3's
//! unknown-parameter rules, the bounded writer, the list of parameters to report, and [`Seq`], the
//! zero-copy list of repeated parameters.

use core::fmt;
use core::ops::Range;

use crate::error::{DecodeError, EncodeError, ParameterAction};
use crate::{Generation, param_type};

/// Rounds a length up to the next multiple of 4 (RFC 5354 §3, §4 padding).
pub(crate) const fn padded(len: usize) -> usize {
    (len + 3) & !3
}

/// One parameter (TLV) inside a message.
#[derive(Clone, Copy, Debug)]
pub struct Tlv<'a> {
    pub ty: u16,
    pub value: &'a [u8],
    /// Offset of the TLV header within the message.
    pub start: usize,
    /// Offset just past its padding (clipped to the enclosing region).
    pub next: usize,
}

impl Tlv<'_> {
    /// The TLV's bytes (header and value, no padding) as a range within the message.
    pub fn range(&self) -> Range<usize> {
        self.start..self.start + 4 + self.value.len()
    }

    pub fn invalid(&self, what: &'static str, reason: &'static str) -> DecodeError {
        DecodeError::InvalidValue {
            what,
            reason,
            tlv: self.range(),
        }
    }

    /// A reader over the TLV's value, keeping offsets relative to the message.
    pub fn cursor<'a>(&self, msg: &'a [u8]) -> Cursor<'a> {
        Cursor {
            msg,
            pos: self.start + 4,
            end: self.start + 4 + self.value.len(),
        }
    }
}

/// Maximum number of skipped-and-reported parameters remembered per message; more are counted.
pub const MAX_REPORTED: usize = 4;

/// Parameters that were skipped under the `11` rule of RFC 5354 §3 and must be reported back with
/// cause 0x1 (Unrecognized Parameter). Holds ranges into the message; never allocates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Unrecognized {
    ranges: [(u32, u32); MAX_REPORTED],
    len: u8,
    overflow: u32,
}

impl Unrecognized {
    pub(crate) fn push(&mut self, tlv: &Tlv<'_>) {
        let r = tlv.range();
        if usize::from(self.len) < MAX_REPORTED {
            self.ranges[usize::from(self.len)] = (r.start as u32, r.end as u32);
            self.len += 1;
        } else {
            self.overflow = self.overflow.saturating_add(1);
        }
    }

    /// Whether nothing needs to be reported.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Reported parameters beyond [`MAX_REPORTED`], which were skipped but not remembered.
    pub fn overflow(&self) -> u32 {
        self.overflow
    }

    /// The remembered TLVs' ranges within the message, in message order.
    pub fn ranges(&self) -> impl Iterator<Item = Range<usize>> + '_ {
        self.ranges[..usize::from(self.len)]
            .iter()
            .map(|&(s, e)| s as usize..e as usize)
    }
}

/// A reader over a region of a message. Offsets stay relative to the whole message so that errors
/// and reports can point into it.
#[derive(Clone, Copy, Debug)]
pub struct Cursor<'a> {
    pub msg: &'a [u8],
    pub pos: usize,
    pub end: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(msg: &'a [u8], pos: usize, end: usize) -> Self {
        Self { msg, pos, end }
    }

    pub fn at_end(&self) -> bool {
        self.pos >= self.end
    }

    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.end - self.pos < n {
            return Err(DecodeError::Truncated {
                what,
                offset: self.pos,
            });
        }
        let bytes = &self.msg[self.pos..self.pos + n];
        self.pos += n;
        Ok(bytes)
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }

    pub fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    /// Reads a PE or PR identifier of the generation's width.
    pub fn id(&mut self, generation: Generation, what: &'static str) -> Result<u64, DecodeError> {
        match generation {
            Generation::Rfc => self.u32(what).map(u64::from),
            Generation::Ng => self.u64(what),
        }
    }

    /// Parses the TLV header at the cursor without consuming it.
    fn tlv_here(&self) -> Result<Tlv<'a>, DecodeError> {
        let start = self.pos;
        if self.end - start < 4 {
            return Err(DecodeError::Truncated {
                what: "parameter header",
                offset: start,
            });
        }
        let ty = u16::from_be_bytes([self.msg[start], self.msg[start + 1]]);
        let len = usize::from(u16::from_be_bytes([
            self.msg[start + 2],
            self.msg[start + 3],
        ]));
        if len < 4 {
            return Err(DecodeError::BadLength {
                what: "parameter",
                length: len,
                offset: start,
            });
        }
        if len > self.end - start {
            return Err(DecodeError::Truncated {
                what: "parameter value",
                offset: self.end,
            });
        }
        Ok(Tlv {
            ty,
            value: &self.msg[start + 4..start + len],
            start,
            next: (start + padded(len)).min(self.end),
        })
    }

    /// The next parameter that is `wanted` or that this codec knows and must not skip, without
    /// consuming it. Everything in front of it is handled by its upper two bits (RFC 5354 §3):
    /// skipped (and remembered for a report), or turned into
    /// [`DecodeError::UnrecognizedParameter`]. A known parameter whose bits say skip (the
    /// handle-resolution option 0x803f) is skipped like an unknown one unless it is `wanted`.
    fn next_relevant(
        &mut self,
        wanted: Option<u16>,
        unrecognized: &mut Unrecognized,
    ) -> Result<Option<Tlv<'a>>, DecodeError> {
        loop {
            if self.at_end() {
                return Ok(None);
            }
            let tlv = self.tlv_here()?;
            if Some(tlv.ty) == wanted
                || (param_type::is_known(tlv.ty) && !ParameterAction::of(tlv.ty).skips())
            {
                return Ok(Some(tlv));
            }
            self.skip_or_stop(&tlv, unrecognized)?;
        }
    }

    /// The next parameter that cannot be skipped here, without consuming it (see
    /// [`Self::next_relevant`]); `None` at the end of the region.
    pub fn peek(
        &mut self,
        unrecognized: &mut Unrecognized,
    ) -> Result<Option<Tlv<'a>>, DecodeError> {
        self.next_relevant(None, unrecognized)
    }

    /// Consumes a parameter that is not wanted here if its upper bits allow skipping it.
    fn skip_or_stop(
        &mut self,
        tlv: &Tlv<'a>,
        unrecognized: &mut Unrecognized,
    ) -> Result<(), DecodeError> {
        let action = ParameterAction::of(tlv.ty);
        if !action.skips() {
            return Err(DecodeError::UnrecognizedParameter {
                parameter_type: tlv.ty,
                tlv: tlv.range(),
                action,
            });
        }
        if action.reports() {
            unrecognized.push(tlv);
        }
        self.pos = tlv.next;
        Ok(())
    }

    /// The mandatory parameter of type `ty`.
    pub fn expect(
        &mut self,
        ty: u16,
        within: &'static str,
        expected: &'static str,
        unrecognized: &mut Unrecognized,
    ) -> Result<Tlv<'a>, DecodeError> {
        match self.next_relevant(Some(ty), unrecognized)? {
            Some(tlv) if tlv.ty == ty => {
                self.pos = tlv.next;
                Ok(tlv)
            }
            Some(tlv) => Err(DecodeError::UnexpectedParameter {
                within,
                parameter_type: tlv.ty,
                tlv: tlv.range(),
            }),
            None => Err(DecodeError::MissingParameter { within, expected }),
        }
    }

    /// The parameter of type `ty` if it comes next; otherwise nothing is consumed but skippable
    /// parameters in front.
    pub fn optional(
        &mut self,
        ty: u16,
        unrecognized: &mut Unrecognized,
    ) -> Result<Option<Tlv<'a>>, DecodeError> {
        match self.next_relevant(Some(ty), unrecognized)? {
            Some(tlv) if tlv.ty == ty => {
                self.pos = tlv.next;
                Ok(Some(tlv))
            }
            _ => Ok(None),
        }
    }

    /// The next parameter of a list that holds only parameters of type `ty`; `None` at the end of
    /// the region.
    pub fn list_item(
        &mut self,
        ty: u16,
        within: &'static str,
        expected: &'static str,
        unrecognized: &mut Unrecognized,
    ) -> Result<Option<Tlv<'a>>, DecodeError> {
        if self.peek(unrecognized)?.is_none() {
            return Ok(None);
        }
        self.expect(ty, within, expected, unrecognized).map(Some)
    }

    /// Checks that only skippable parameters remain in the region.
    pub fn finish(
        &mut self,
        within: &'static str,
        unrecognized: &mut Unrecognized,
    ) -> Result<(), DecodeError> {
        match self.peek(unrecognized)? {
            Some(tlv) => Err(DecodeError::UnexpectedParameter {
                within,
                parameter_type: tlv.ty,
                tlv: tlv.range(),
            }),
            None => Ok(()),
        }
    }
}

/// Encodes into a caller-provided buffer; fails with [`EncodeError::BufferTooSmall`] instead of
/// growing.
pub(crate) struct Writer<'b> {
    buf: &'b mut [u8],
    pos: usize,
}

impl<'b> Writer<'b> {
    pub fn new(buf: &'b mut [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Reserves the next `N` bytes for the caller to fill at fixed offsets: one bounds check for
    /// a parameter's fixed-size part instead of one per field.
    #[inline]
    pub fn array<const N: usize>(&mut self) -> Result<&mut [u8; N], EncodeError> {
        let end = self.pos + N;
        let dst = self
            .buf
            .get_mut(self.pos..)
            .and_then(<[u8]>::first_chunk_mut::<N>)
            .ok_or(EncodeError::BufferTooSmall { needed: end })?;
        self.pos = end;
        Ok(dst)
    }

    pub fn bytes(&mut self, b: &[u8]) -> Result<(), EncodeError> {
        let end = self.pos + b.len();
        let dst = self
            .buf
            .get_mut(self.pos..end)
            .ok_or(EncodeError::BufferTooSmall { needed: end })?;
        dst.copy_from_slice(b);
        self.pos = end;
        Ok(())
    }

    pub fn u8(&mut self, v: u8) -> Result<(), EncodeError> {
        *self.array()? = [v];
        Ok(())
    }

    pub fn u16(&mut self, v: u16) -> Result<(), EncodeError> {
        *self.array()? = v.to_be_bytes();
        Ok(())
    }

    pub fn u32(&mut self, v: u32) -> Result<(), EncodeError> {
        *self.array()? = v.to_be_bytes();
        Ok(())
    }

    pub fn u64(&mut self, v: u64) -> Result<(), EncodeError> {
        *self.array()? = v.to_be_bytes();
        Ok(())
    }

    /// Writes 32-bit words, with one bounds check for all of them.
    pub fn u32s(&mut self, words: &[u32]) -> Result<(), EncodeError> {
        let end = self.pos + 4 * words.len();
        let dst = self
            .buf
            .get_mut(self.pos..end)
            .ok_or(EncodeError::BufferTooSmall { needed: end })?;
        for (d, v) in dst.chunks_exact_mut(4).zip(words) {
            d.copy_from_slice(&v.to_be_bytes());
        }
        self.pos = end;
        Ok(())
    }

    /// Writes a PE or PR identifier of the generation's width.
    pub fn id(
        &mut self,
        generation: Generation,
        id: u64,
        what: &'static str,
    ) -> Result<(), EncodeError> {
        match generation {
            Generation::Rfc => self.u32(narrow_id(id, what)?),
            Generation::Ng => self.u64(id),
        }
    }

    /// Zero bytes up to the next multiple of 4.
    #[inline]
    pub fn pad(&mut self) -> Result<(), EncodeError> {
        // Fixed-size writes: a copy of a variable 0-3 bytes compiles to a `memset` call, which
        // cost more than the rest of a small TLV's encoding.
        match padded(self.pos) - self.pos {
            1 => self.u8(0),
            2 => self.u16(0),
            3 => self.u16(0).and_then(|()| self.u8(0)),
            _ => Ok(()),
        }
    }

    /// Starts a TLV or message: writes `ty` (16 bits) and a length placeholder.
    pub fn begin_tlv(&mut self, ty: u16) -> Result<usize, EncodeError> {
        let mark = self.pos;
        *self.array()? = tlv_header(ty, 0);
        Ok(mark)
    }

    /// Fills in the length of the TLV begun at `mark` (header and value, without its own padding,
    /// RFC 5354 §3) and pads it.
    #[inline]
    pub fn end_tlv(&mut self, mark: usize, what: &'static str) -> Result<(), EncodeError> {
        self.set_len(mark, self.pos - mark, what)?;
        self.pad()
    }

    /// Writes `len` into the 16-bit length field at `mark + 2`.
    #[inline]
    pub fn set_len(
        &mut self,
        mark: usize,
        len: usize,
        what: &'static str,
    ) -> Result<(), EncodeError> {
        let len = u16::try_from(len).map_err(|_| EncodeError::TooLong { what })?;
        self.buf[mark + 2..mark + 4].copy_from_slice(&len.to_be_bytes());
        Ok(())
    }

    /// A TLV whose value is `value` as is.
    pub fn tlv(&mut self, ty: u16, value: &[u8], what: &'static str) -> Result<(), EncodeError> {
        let mark = self.begin_tlv(ty)?;
        self.bytes(value)?;
        self.end_tlv(mark, what)
    }
}

/// A TLV header: type and length (header and value, without padding), big-endian.
pub(crate) const fn tlv_header(ty: u16, len: u16) -> [u8; 4] {
    let [t0, t1] = ty.to_be_bytes();
    let [l0, l1] = len.to_be_bytes();
    [t0, t1, l0, l1]
}

/// A PE or PR identifier narrowed to the RFC generation's 32 bits.
pub(crate) fn narrow_id(id: u64, what: &'static str) -> Result<u32, EncodeError> {
    u32::try_from(id).map_err(|_| EncodeError::IdTooWide { what, id })
}

/// An item type that can stand in a [`Seq`]. Sealed: implemented by the codec's list items only.
pub trait SeqItem<'a>: Sized + Copy + sealed::Sealed {
    /// Decodes the item at the cursor, advancing it; `None` at the end of the region.
    #[doc(hidden)]
    fn next_item(
        cursor: &mut Cursor<'a>,
        generation: Generation,
        unrecognized: &mut Unrecognized,
    ) -> Result<Option<Self>, DecodeError>;
}

pub(crate) mod sealed {
    /// Keeps [`super::SeqItem`] implementations inside the crate.
    pub trait Sealed {}
}

/// A list of repeated parameters (addresses, pool elements, causes, ...): either a validated
/// region of a decoded message, decoded item by item while iterating (no allocation), or a slice
/// of items supplied by the caller for encoding.
pub struct Seq<'a, T> {
    repr: Repr<'a, T>,
}

enum Repr<'a, T> {
    /// A validated region of a message; items are decoded again while iterating, with offsets
    /// relative to the region (they cannot fail).
    Wire {
        region: &'a [u8],
        count: u32,
        generation: Generation,
    },
    Items(&'a [T]),
}

impl<'a, T> Seq<'a, T> {
    /// A list of the caller's items, to encode.
    pub const fn from_items(items: &'a [T]) -> Self {
        Self {
            repr: Repr::Items(items),
        }
    }

    /// The list over a region whose `count` items the caller has already validated.
    pub(crate) fn validated(cursor: Cursor<'a>, count: usize, generation: Generation) -> Self {
        Self {
            repr: Repr::Wire {
                region: &cursor.msg[cursor.pos..cursor.end],
                // A region is at most 64 KiB and every item takes at least 4 bytes.
                count: count as u32,
                generation,
            },
        }
    }

    /// The caller's items, if the list was made from them: encoders walk them in place
    /// instead of copying each one out through the iterator.
    pub(crate) fn items(&self) -> Option<&'a [T]> {
        match self.repr {
            Repr::Items(items) => Some(items),
            Repr::Wire { .. } => None,
        }
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        match &self.repr {
            Repr::Wire { count, .. } => *count as usize,
            Repr::Items(items) => items.len(),
        }
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<'a, T: SeqItem<'a>> Seq<'a, T> {
    /// Validates every item from the cursor to the end of its region, returns the list over them
    /// and leaves the cursor at the end.
    pub(crate) fn decode(
        cursor: &mut Cursor<'a>,
        generation: Generation,
        unrecognized: &mut Unrecognized,
    ) -> Result<Self, DecodeError> {
        let region = *cursor;
        let mut count = 0;
        while T::next_item(cursor, generation, unrecognized)?.is_some() {
            count += 1;
        }
        Ok(Self::validated(region, count, generation))
    }

    /// The items in wire order.
    pub fn iter(&self) -> SeqIter<'a, T> {
        SeqIter {
            state: match self.repr {
                Repr::Items(items) => IterState::Items(items),
                Repr::Wire {
                    region,
                    count,
                    generation,
                } => IterState::Wire {
                    cursor: Cursor::new(region, 0, region.len()),
                    count,
                    generation,
                },
            },
        }
    }

    /// The first item.
    pub fn first(&self) -> Option<T> {
        self.iter().next()
    }
}

impl<T> Clone for Seq<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Seq<'_, T> {}

impl<T> Clone for Repr<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Repr<'_, T> {}

impl<'a, T: SeqItem<'a>> IntoIterator for Seq<'a, T> {
    type Item = T;
    type IntoIter = SeqIter<'a, T>;
    fn into_iter(self) -> SeqIter<'a, T> {
        self.iter()
    }
}

impl<'a, T: SeqItem<'a> + PartialEq> PartialEq for Seq<'a, T> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl<'a, T: SeqItem<'a> + Eq> Eq for Seq<'a, T> {}

impl<'a, T: SeqItem<'a> + fmt::Debug> fmt::Debug for Seq<'a, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Iterator over a [`Seq`].
pub struct SeqIter<'a, T> {
    state: IterState<'a, T>,
}

enum IterState<'a, T> {
    Wire {
        cursor: Cursor<'a>,
        count: u32,
        generation: Generation,
    },
    Items(&'a [T]),
}

impl<'a, T: SeqItem<'a>> Iterator for SeqIter<'a, T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        match &mut self.state {
            IterState::Items(items) => {
                let (first, rest) = items.split_first()?;
                *items = rest;
                Some(*first)
            }
            IterState::Wire {
                cursor,
                generation,
                count,
            } => {
                // The region was validated when the message was decoded, so this cannot fail.
                let item =
                    T::next_item(cursor, *generation, &mut Unrecognized::default()).ok()??;
                *count = count.saturating_sub(1);
                Some(item)
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = match &self.state {
            IterState::Items(items) => items.len(),
            IterState::Wire { count, .. } => *count as usize,
        };
        (n, Some(n))
    }
}

impl<'a, T: SeqItem<'a>> ExactSizeIterator for SeqIter<'a, T> {}

/// Implements [`SeqItem`] for a type by the crate function that decodes the next one.
macro_rules! seq_item {
    ($lt:lifetime, $ty:ty, $next:path) => {
        impl<$lt> $crate::wire::sealed::Sealed for $ty {}
        impl<$lt> $crate::wire::SeqItem<$lt> for $ty {
            fn next_item(
                cursor: &mut $crate::wire::Cursor<$lt>,
                generation: $crate::Generation,
                unrecognized: &mut $crate::wire::Unrecognized,
            ) -> Result<Option<Self>, $crate::DecodeError> {
                $next(cursor, generation, unrecognized)
            }
        }
    };
}
pub(crate) use seq_item;
