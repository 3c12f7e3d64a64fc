//! Hostile input: decoding never allocates and never panics, whatever the bytes (arbitrary,
//! structurally plausible, mutated corpus, golden and generated messages, every truncation); what
//! decodes re-encodes to a message that decodes equal; RFC 5354's rules for unknown parameters and
//! message types (checklist C-04 to C-10, C-13) hold at every position of every message type;
//! impossible lengths are typed errors; stream framing reassembles messages split anywhere.
#![allow(unsafe_code)] // the counting global allocator needs `unsafe impl GlobalAlloc`

mod common;
#[path = "common/gen.rs"]
mod wiregen;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::hint::black_box;

use common::{corpus, hex};
use proptest::prelude::*;
use proptest::sample::Index;
use rserpool_protocol::csp::CspReport;
use rserpool_protocol::framing::{self, Frame, Frames, FramingError};
use rserpool_protocol::*;
use wiregen::*;

const GENERATIONS: [Generation; 2] = [Generation::Rfc, Generation::Ng];

// ---------------------------------------------------------------------------------------------
// Counting allocator
// ---------------------------------------------------------------------------------------------

/// `System`, counting the allocations of threads that asked for it.
struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn note_allocation() {
    let _ = COUNTING.try_with(|on| {
        if on.get() {
            let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        }
    });
}

// SAFETY: every call is forwarded unchanged to `System`; the counting touches only
// const-initialised thread-locals without destructors, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f` and returns its result and the number of heap allocations this thread made in it.
fn allocations_in<R>(f: impl FnOnce() -> R) -> (R, u64) {
    ALLOCATIONS.with(|n| n.set(0));
    COUNTING.with(|on| on.set(true));
    let r = f();
    COUNTING.with(|on| on.set(false));
    (r, ALLOCATIONS.with(Cell::get))
}

/// A `fmt::Write` that counts and discards (formatting into it never allocates).
struct Sink(usize);

impl fmt::Write for Sink {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0 += black_box(s).len();
        Ok(())
    }
}

/// Decodes `b` every way there is, walks everything decoded, formats errors and messages into a
/// discarding sink; returns the number of items and bytes visited.
fn decode_everything(b: &[u8]) -> usize {
    let mut sink = Sink(0);
    let mut items = 0;
    for g in GENERATIONS {
        match AsapMessage::decode(b, g) {
            Ok(d) => {
                items += touch_asap(&d.message);
                items += d.unrecognized.ranges().count();
                write!(sink, "{:?}", d.message).unwrap();
            }
            Err(e) => {
                black_box((e.reply_cause(), e.cause_info(b)));
                write!(sink, "{e}").unwrap();
            }
        }
        match EnrpMessage::decode(b, g) {
            Ok(d) => {
                items += touch_enrp(&d.message);
                items += d.unrecognized.ranges().count();
                write!(sink, "{:?}", d.message).unwrap();
            }
            Err(e) => {
                black_box((e.reply_cause(), e.cause_info(b)));
                write!(sink, "{e}").unwrap();
            }
        }
    }
    match CspReport::decode(b) {
        Ok(r) => {
            items += touch_csp(&r);
            write!(sink, "{r:?}").unwrap();
        }
        Err(e) => write!(sink, "{e}").unwrap(),
    }
    let mut frames = Frames::new(b, MAX_MESSAGE_LEN);
    items += frames.by_ref().count();
    black_box((frames.consumed(), frames.needed(), frames.error()));
    black_box(framing::next_frame(b, 1024).ok());
    items + sink.0
}

/// xorshift64*: a deterministic source of hostile bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Inputs
// ---------------------------------------------------------------------------------------------

/// A valid message to start from.
#[derive(Clone, Debug)]
struct Sample {
    proto: Proto,
    g: Generation,
    name: String,
    bytes: Vec<u8>,
}

/// CSP is not ASAP or ENRP; it is tagged ASAP here and told apart by `is_csp`.
fn is_csp(s: &Sample) -> bool {
    s.name.starts_with("csp")
}

/// The test vectors of wire-format.md §7.
fn golden() -> Vec<Sample> {
    let v = |proto, name: &str, h: &str| Sample {
        proto,
        g: Generation::Rfc,
        name: format!("golden {name}"),
        bytes: hex(h),
    };
    vec![
        v(
            Proto::Asap,
            "registration",
            "01 00 00 38 00 09 00 0c 45 63 68 6f 50 6f 6f 6c 00 0a 00 28 12 34 56 78 00 00 00 00
             00 04 93 e0 00 04 00 10 00 07 00 00 00 01 00 08 c0 00 02 01 00 08 00 08 00 00 00 01",
        ),
        v(
            Proto::Asap,
            "handle resolution",
            "05 00 00 18 00 09 00 0c 45 63 68 6f 50 6f 6f 6c 80 3f 00 08 00 00 00 05",
        ),
        v(
            Proto::Asap,
            "keep alive",
            "07 01 00 1c 0a 0b 0c 0d 00 09 00 0c 45 63 68 6f 50 6f 6f 6c 00 0e 00 08 12 34 56 78",
        ),
        v(
            Proto::Enrp,
            "presence",
            "01 01 00 2c 0a 0b 0c 0d 00 00 00 00 00 0f 00 06 29 a5 00 00 00 0b 00 18 0a 0b 0c 0d
             00 04 00 10 26 ad 00 00 00 01 00 08 c0 00 02 01",
        ),
    ]
}

/// Every corpus message (RFC generation).
fn corpus_samples() -> Vec<Sample> {
    corpus()
        .into_iter()
        .map(|m| Sample {
            proto: if m.protocol == "enrp" {
                Proto::Enrp
            } else {
                Proto::Asap
            },
            g: Generation::Rfc,
            name: format!("{} frame {}", m.protocol, m.frame),
            bytes: m.bytes,
        })
        .collect()
}

/// One corpus message per (protocol, type, length).
fn corpus_representatives() -> Vec<Sample> {
    let mut seen = std::collections::BTreeSet::new();
    corpus_samples()
        .into_iter()
        .filter(|s| seen.insert((s.name[..4].to_string(), s.bytes[0], s.bytes.len())))
        .collect()
}

/// `per_type` generated messages of every ASAP and ENRP type in both generations.
fn generated(per_type: usize) -> Vec<Sample> {
    let mut out = Vec::new();
    for g in GENERATIONS {
        for (i, s) in asap_variants(g).iter().enumerate() {
            for (k, m) in samples(s, per_type).iter().enumerate() {
                out.push(Sample {
                    proto: Proto::Asap,
                    g,
                    name: format!("generated ASAP {g:?} type {:#04x} #{k}", i + 1),
                    bytes: m.with_view(|v| encode_asap(&v, g)).unwrap(),
                });
            }
        }
        for (i, s) in enrp_variants(g).iter().enumerate() {
            for (k, m) in samples(s, per_type).iter().enumerate() {
                out.push(Sample {
                    proto: Proto::Enrp,
                    g,
                    name: format!("generated ENRP {g:?} type {:#04x} #{k}", i + 1),
                    bytes: m.with_view(|v| encode_enrp(&v, g)).unwrap(),
                });
            }
        }
    }
    out
}

/// Decodes with the sample's protocol; `Ok` carries whether the message equals the decoding of
/// `reference` and what was reported under the `11` rule. Walks every list of what decodes.
fn decode_vs(
    proto: Proto,
    g: Generation,
    reference: &[u8],
    msg: &[u8],
) -> Result<(bool, Unrecognized), DecodeError> {
    match proto {
        Proto::Asap => {
            let r = AsapMessage::decode(reference, g).expect("reference decodes");
            let d = AsapMessage::decode(msg, g)?;
            touch_asap(&d.message);
            Ok((d.message == r.message, d.unrecognized))
        }
        Proto::Enrp => {
            let r = EnrpMessage::decode(reference, g).expect("reference decodes");
            let d = EnrpMessage::decode(msg, g)?;
            touch_enrp(&d.message);
            Ok((d.message == r.message, d.unrecognized))
        }
    }
}

fn decode_any(proto: Proto, g: Generation, msg: &[u8]) -> Result<(), DecodeError> {
    match proto {
        Proto::Asap => AsapMessage::decode(msg, g).map(|d| {
            touch_asap(&d.message);
        }),
        Proto::Enrp => EnrpMessage::decode(msg, g).map(|d| {
            touch_enrp(&d.message);
        }),
    }
}

/// Runs every decoder with every consistency check on `bytes`; returns whether the protocol and
/// generation the bytes were made for accepted them.
fn check_all_decoders(bytes: &[u8], proto: Proto, g: Generation, csp: bool) -> bool {
    let mut own = false;
    for gg in GENERATIONS {
        let a = deep_check_asap(bytes, gg);
        let e = deep_check_enrp(bytes, gg);
        if gg == g && !csp {
            own |= match proto {
                Proto::Asap => a,
                Proto::Enrp => e,
            };
        }
    }
    let c = deep_check_csp(bytes);
    own | (csp & c)
}

// ---------------------------------------------------------------------------------------------
// Zero allocations
// ---------------------------------------------------------------------------------------------

#[test]
fn the_allocation_counter_counts() {
    let (v, n) = allocations_in(|| black_box(Vec::<u8>::with_capacity(16)));
    assert!(n >= 1, "counter saw {n} allocations");
    drop(v);
    let (_, n) = allocations_in(|| black_box(format!("{}", black_box(7))));
    assert!(n >= 1);
    let (_, n) = allocations_in(|| black_box(1 + black_box(2)));
    assert_eq!(n, 0);
}

#[test]
fn decoding_and_walking_never_allocates() {
    let mut inputs: Vec<Vec<u8>> = Vec::new();
    let valid: Vec<Sample> = corpus_samples()
        .into_iter()
        .chain(golden())
        .chain(generated(3))
        .collect();
    let mut rng = Rng(0x5eed_0001);
    for s in &valid {
        inputs.push(s.bytes.clone());
        for _ in 0..4 {
            let mut m = s.bytes.clone();
            for _ in 0..=rng.below(3) {
                let i = rng.below(m.len());
                m[i] ^= 1 << rng.below(8);
            }
            inputs.push(m);
        }
    }
    for _ in 0..3000 {
        let len = rng.below(300);
        let mut b = rng.bytes(len);
        if len >= 4 && rng.below(2) == 0 {
            b[0] = 1 + rng.below(14) as u8;
            b[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        }
        inputs.push(b);
    }

    let mut visited = 0;
    for (i, input) in inputs.iter().enumerate() {
        let (n, allocations) = allocations_in(|| decode_everything(input));
        assert_eq!(allocations, 0, "input #{i} {input:02x?} allocated");
        visited += n;
    }
    // Make sure the walk went deep: every valid message decoded and was walked.
    let (valid_items, allocations) = allocations_in(|| {
        valid
            .iter()
            .map(|s| decode_everything(&s.bytes))
            .sum::<usize>()
    });
    assert_eq!(allocations, 0);
    assert!(visited > valid_items && valid_items > 0);
    // The valid inputs decoded (so the walk above went through every list of every type).
    for s in &valid {
        if !is_csp(s) {
            decode_any(s.proto, s.g, &s.bytes).unwrap_or_else(|e| panic!("{}: {e}", s.name));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Arbitrary and plausible bytes
// ---------------------------------------------------------------------------------------------

/// Values that look like parameters' contents.
fn plausible_value() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        bytes(0, 24),
        any::<[u8; 4]>().prop_map(|a| a.to_vec()),
        any::<[u8; 8]>().prop_map(|a| a.to_vec()),
        any::<[u8; 16]>().prop_map(|a| a.to_vec()),
        (
            prop::sample::select(vec![
                1u32,
                2,
                3,
                4,
                5,
                0x4000_0001,
                0x4000_0002,
                0x4000_0003,
                0x4000_0004,
                0xb000_1001,
                0xb000_2003,
                0xb000_2005,
                7
            ]),
            bytes(0, 16)
        )
            .prop_map(|(code, rest)| {
                let mut v = code.to_be_bytes().to_vec();
                v.extend(rest);
                v
            }),
    ]
    .boxed()
}

/// A parameter type, mostly known ones.
fn plausible_type() -> BoxedStrategy<u16> {
    prop_oneof![
        6 => 0x0001u16..=0x0010,
        1 => Just(0x803f),
        1 => prop::sample::select(vec![0x0000u16, 0x0011, 0x4011, 0x8011, 0xc011]),
        1 => any::<u16>(),
    ]
    .boxed()
}

/// A tree of parameters whose lengths are (mostly) right: deep paths get exercised.
fn plausible_params() -> BoxedStrategy<Vec<u8>> {
    let leaf = (plausible_type(), plausible_value()).prop_map(|(t, v)| tlv(t, &v));
    leaf.prop_recursive(3, 48, 5, |inner| {
        (
            plausible_type(),
            prop::sample::select(vec![0usize, 4, 8, 12, 16, 20]),
            any::<u64>(),
            prop::collection::vec(inner, 0..5),
        )
            .prop_map(|(t, fixed, seed, children)| {
                let mut v = Rng(seed | 1).bytes(fixed);
                if fixed >= 12 && seed % 3 != 0 {
                    // A plausible registration life.
                    let at = fixed - 4;
                    v[at..].copy_from_slice(&[0, 0, 0x23, 0x28]);
                }
                v.extend(children.concat());
                tlv(t, &v)
            })
    })
    .boxed()
}

/// A message: a known (or any) type, fixed fields of plausible width, plausible parameters.
fn plausible_message() -> BoxedStrategy<Vec<u8>> {
    (
        prop_oneof![4 => 0u8..=0x10, 1 => any::<u8>()],
        any::<u8>(),
        prop::sample::select(vec![0usize, 4, 8, 12, 16, 20, 24]),
        bytes(0, 24),
        prop::collection::vec(plausible_params(), 0..6),
        0usize..4,
    )
        .prop_map(|(ty, flags, fixed, seed, params, trailing)| {
            let mut body: Vec<u8> = seed.iter().cycle().take(fixed).copied().collect();
            body.resize(fixed, 0);
            body.extend(params.concat());
            let mut m = message(ty, flags, &body);
            m.extend(std::iter::repeat_n(0, trailing));
            m
        })
        .boxed()
}

fn check_frames(bytes: &[u8], max: usize) {
    let mut frames = Frames::new(bytes, max);
    let mut pos = 0;
    for f in frames.by_ref() {
        assert_eq!(
            f.as_ptr(),
            bytes[pos..].as_ptr(),
            "frames are not contiguous"
        );
        assert!(f.len() >= 4 && f.len().is_multiple_of(4));
        assert_eq!(f.len(), len_at(f, 0).next_multiple_of(4));
        assert!(len_at(f, 0) <= max);
        pos += f.len();
    }
    assert_eq!(frames.consumed(), pos);
    assert!(frames.next().is_none(), "Frames resumed after stopping");
    let rest = &bytes[pos..];
    match (framing::next_frame(rest, max), frames.error()) {
        (Err(e), Some(stored)) => {
            assert_eq!(e, stored);
            assert!(!e.to_string().is_empty());
        }
        (Ok(Frame::Incomplete { needed }), None) => {
            assert_eq!(frames.needed(), needed);
            assert!(needed > 0 && rest.len() + needed >= 4);
        }
        other => panic!("Frames stopped with {other:?}"),
    }
}

proptest! {
    #![proptest_config(config(1024))]

    /// Arbitrary bytes never panic any decoder or the framer; errors describe themselves.
    #[test]
    fn arbitrary_bytes_never_panic(b in bytes(0, 2048), max in 4usize..=65535) {
        check_all_decoders(&b, Proto::Asap, Generation::Rfc, false);
        check_frames(&b, max);
        check_frames(&b, MAX_MESSAGE_LEN);
        if let Err(e) = framing::next_frame(&b, max) {
            prop_assert!(!e.to_string().is_empty());
        }
    }

    /// Arbitrary bytes behind a valid header (type, length) get past the header check.
    #[test]
    fn arbitrary_bodies_never_panic(
        ty in 0u8..=0x10,
        flags in any::<u8>(),
        body in bytes(0, 2044),
    ) {
        let m = message(ty, flags, &body);
        check_all_decoders(&m, Proto::Asap, Generation::Rfc, false);
        check_frames(&m, MAX_MESSAGE_LEN);
    }

    /// Structurally plausible messages (well-formed TLV trees of mostly known types) reach deep
    /// into the decoders; whatever decodes re-encodes consistently.
    #[test]
    fn plausible_messages_never_panic(m in plausible_message()) {
        check_all_decoders(&m, Proto::Asap, Generation::Rfc, false);
        let mut csp = m.clone();
        csp.resize(csp::CSP_REPORT_FIXED_LEN + 24 * (m.len() % 3), 0);
        csp[0] = csp::CSP_REPORT;
        let l = csp.len();
        set_len_at(&mut csp, 0, l);
        csp[4..8].copy_from_slice(&csp::CSP_VERSION.to_be_bytes());
        csp[286..288].copy_from_slice(&((l - 288) as u16 / 24).to_be_bytes());
        prop_assert!(deep_check_csp(&csp), "a well-formed CSP report did not decode");
    }
}

#[test]
fn plausible_messages_reach_deep() {
    // The generator is worth having only if a fair share of its messages decode.
    let ms = samples(&plausible_message(), 3000);
    let decoded = ms
        .iter()
        .filter(|m| check_all_decoders(m, Proto::Asap, Generation::Rfc, false))
        .count();
    let enrp = ms
        .iter()
        .filter(|m| GENERATIONS.iter().any(|&g| deep_check_enrp(m, g)))
        .count();
    assert!(
        decoded + enrp >= 30,
        "only {decoded} + {enrp} of 3000 decoded"
    );
}

// ---------------------------------------------------------------------------------------------
// Mutations
// ---------------------------------------------------------------------------------------------

/// A change to a length field.
#[derive(Clone, Debug)]
enum LenChange {
    Set(u16),
    Delta(i16),
    Tiny(u16),
    PastEnd(u16),
}

#[derive(Clone, Debug)]
enum Mutation {
    FlipBit {
        at: Index,
        bit: u8,
    },
    Overwrite {
        at: Index,
        value: u8,
    },
    Truncate {
        at: Index,
        fix_header: bool,
    },
    Insert {
        at: Index,
        bytes: Vec<u8>,
        fix_header: bool,
    },
    Delete {
        at: Index,
        n: usize,
        fix_header: bool,
    },
    HeaderLength(LenChange),
    ParamLength {
        which: Index,
        change: LenChange,
    },
    DuplicateParam {
        which: Index,
    },
    RemoveParam {
        which: Index,
    },
}

fn len_change() -> impl Strategy<Value = LenChange> {
    prop_oneof![
        any::<u16>().prop_map(LenChange::Set),
        (-8i16..=8).prop_map(LenChange::Delta),
        (0u16..4).prop_map(LenChange::Tiny),
        (1u16..=8).prop_map(LenChange::PastEnd),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let i = any::<Index>;
    prop_oneof![
        1 => (i(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit { at, bit }),
        1 => (i(), any::<u8>()).prop_map(|(at, value)| Mutation::Overwrite { at, value }),
        1 => (i(), any::<bool>())
            .prop_map(|(at, fix_header)| Mutation::Truncate { at, fix_header }),
        1 => (i(), bytes(1, 12), any::<bool>())
            .prop_map(|(at, bytes, fix_header)| Mutation::Insert { at, bytes, fix_header }),
        1 => (i(), 1usize..=8, any::<bool>()).prop_map(|(at, n, fix_header)| Mutation::Delete {
            at,
            n,
            fix_header
        }),
        1 => len_change().prop_map(Mutation::HeaderLength),
        2 => (i(), len_change())
            .prop_map(|(which, change)| Mutation::ParamLength { which, change }),
        1 => (i()).prop_map(|which| Mutation::DuplicateParam { which }),
        1 => (i()).prop_map(|which| Mutation::RemoveParam { which }),
    ]
}

fn changed(old: usize, change: &LenChange, region: usize) -> usize {
    match *change {
        LenChange::Set(v) => usize::from(v),
        LenChange::Delta(d) => old.saturating_add_signed(isize::from(d)).min(0xffff),
        LenChange::Tiny(v) => usize::from(v),
        LenChange::PastEnd(k) => (region + usize::from(k)).min(0xffff),
    }
}

fn fix_header(m: &mut [u8]) {
    if m.len() >= 4 && m.len() <= 0xffff {
        let l = m.len();
        set_len_at(m, 0, l);
    }
}

/// Every parameter with the offsets of the parameters enclosing it (and the header at 0).
fn params_with_parents(nodes: &[Node], parents: &[usize], out: &mut Vec<(Node, Vec<usize>)>) {
    for n in nodes {
        out.push((n.clone(), parents.to_vec()));
        let mut p = parents.to_vec();
        p.push(n.start);
        params_with_parents(&n.children, &p, out);
    }
}

fn apply(m: &mut Vec<u8>, mutation: &Mutation, proto: Proto, g: Generation) {
    let params = || {
        let mut v = Vec::new();
        params_with_parents(&parse_message(m, proto, g), &[0], &mut v);
        v
    };
    match mutation {
        Mutation::FlipBit { at, bit } => {
            if !m.is_empty() {
                let i = at.index(m.len());
                m[i] ^= 1 << bit;
            }
        }
        Mutation::Overwrite { at, value } => {
            if !m.is_empty() {
                let i = at.index(m.len());
                m[i] = *value;
            }
        }
        Mutation::Truncate { at, fix_header: f } => {
            m.truncate(at.index(m.len() + 1));
            if *f {
                fix_header(m);
            }
        }
        Mutation::Insert {
            at,
            bytes,
            fix_header: f,
        } => {
            let i = at.index(m.len() + 1);
            m.splice(i..i, bytes.iter().copied());
            if *f {
                fix_header(m);
            }
        }
        Mutation::Delete {
            at,
            n,
            fix_header: f,
        } => {
            if !m.is_empty() {
                let i = at.index(m.len());
                let j = (i + n).min(m.len());
                m.drain(i..j);
                if *f {
                    fix_header(m);
                }
            }
        }
        Mutation::HeaderLength(c) => {
            if m.len() >= 4 {
                let l = changed(len_at(m, 0), c, m.len());
                set_len_at(m, 0, l);
            }
        }
        Mutation::ParamLength { which, change } => {
            let p = params();
            if !p.is_empty() {
                let (n, _) = &p[which.index(p.len())];
                let l = changed(n.len, change, n.region_end - n.start);
                set_len_at(m, n.start, l);
            }
        }
        Mutation::DuplicateParam { which } => {
            let p = params();
            if !p.is_empty() {
                let (n, parents) = &p[which.index(p.len())];
                let copy =
                    m[n.start..n.start + n.len.next_multiple_of(4).min(m.len() - n.start)].to_vec();
                if m.len() + copy.len() <= 0xffff && copy.len().is_multiple_of(4) {
                    let slot = Slot {
                        at: n.start,
                        enclosing: parents.clone(),
                        within: 0,
                        at_end: false,
                    };
                    *m = insert(m, &slot, &copy, false);
                }
            }
        }
        Mutation::RemoveParam { which } => {
            let p = params();
            if !p.is_empty() {
                let (n, parents) = &p[which.index(p.len())];
                let size = n.len.next_multiple_of(4).min(m.len() - n.start);
                m.drain(n.start..n.start + size);
                for &e in parents {
                    let l = len_at(m, e);
                    set_len_at(m, e, l.saturating_sub(size));
                }
            }
        }
    }
}

/// The corpus, the golden vectors and generated messages of every type, both generations.
fn mutation_sources() -> Vec<Sample> {
    corpus_samples()
        .into_iter()
        .chain(golden())
        .chain(generated(4))
        .collect()
}

#[test]
fn mutated_messages_never_panic_and_what_decodes_is_consistent() {
    let sources = mutation_sources();
    let strategy = (any::<Index>(), prop::collection::vec(mutation(), 1..=3));
    let mut runner = proptest::test_runner::TestRunner::new(config(8192));
    runner
        .run(&strategy, |(which, mutations)| {
            let s = &sources[which.index(sources.len())];
            let mut m = s.bytes.clone();
            for mu in &mutations {
                apply(&mut m, mu, s.proto, s.g);
            }
            check_all_decoders(&m, s.proto, s.g, is_csp(s));
            check_frames(&m, MAX_MESSAGE_LEN);
            Ok(())
        })
        .unwrap();
}

/// Every single-bit flip, and every deletion and insertion of one byte (header length adjusted) of
/// the golden vectors, one corpus message of every shape, and generated messages of every type.
#[test]
fn every_single_byte_mutation_is_handled() {
    let sources: Vec<Sample> = golden()
        .into_iter()
        .chain(corpus_representatives())
        .chain(generated(1))
        .collect();
    let mut decoded = 0usize;
    let mut total = 0usize;
    for s in &sources {
        let csp = is_csp(s);
        for i in 0..s.bytes.len() {
            for bit in 0..8 {
                let mut m = s.bytes.clone();
                m[i] ^= 1 << bit;
                decoded += usize::from(check_all_decoders(&m, s.proto, s.g, csp));
                total += 1;
            }
            let mut m = s.bytes.clone();
            m.remove(i);
            fix_header(&mut m);
            check_all_decoders(&m, s.proto, s.g, csp);
            for v in [0x00, 0xff] {
                let mut m = s.bytes.clone();
                m.insert(i, v);
                fix_header(&mut m);
                check_all_decoders(&m, s.proto, s.g, csp);
            }
        }
    }
    // Many bit flips land in values (IDs, addresses, policy fields) and must still decode.
    assert!(
        decoded * 4 > total,
        "only {decoded} of {total} bit flips decoded"
    );
}

/// Every prefix of every valid message is an error of the header (the length field says the
/// message is longer), except that prefixes which only lose padding decode to the same message.
/// With the length field set to the prefix's length the decoders go deeper and must stay
/// consistent.
#[test]
fn every_truncation_is_a_typed_error() {
    let sources: Vec<Sample> = corpus_samples()
        .into_iter()
        .chain(golden())
        .chain(generated(2))
        .collect();
    for s in &sources {
        let full = &s.bytes;
        let length = len_at(full, 0);
        assert!(length <= full.len() && full.len() - length <= 3);
        for p in 0..full.len() {
            let prefix = &full[..p];
            if is_csp(s) {
                let e = CspReport::decode(prefix).expect_err("CSP prefix decoded");
                assert!(matches!(
                    e,
                    DecodeError::Truncated { .. } | DecodeError::BadLength { .. }
                ));
                check_error(&e, prefix);
            } else {
                let r = decode_any(s.proto, s.g, prefix);
                match r {
                    Err(DecodeError::Truncated { what, offset }) if p < 4 => {
                        assert_eq!((what, offset), ("message header", p));
                    }
                    Err(DecodeError::BadLength {
                        what: "message",
                        length: l,
                        offset: 0,
                    }) if p >= 4 && p < length => assert_eq!(l, length),
                    Ok(()) if p >= length => {}
                    other => panic!("{}: prefix of {p} bytes: {other:?}", s.name),
                }
            }
            let mut fixed = prefix.to_vec();
            fix_header(&mut fixed);
            check_all_decoders(&fixed, s.proto, s.g, is_csp(s));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// RFC 5354 §3: unknown parameters (C-04 to C-07)
// ---------------------------------------------------------------------------------------------

/// Unknown parameter types of every action class (including the HROPT code with other action
/// bits, and the reserved type 0).
const UNKNOWN_TYPES: [u16; 12] = [
    0x0000, 0x0011, 0x003f, 0x3fff, 0x4011, 0x403f, 0x7fff, 0x8011, 0xbfff, 0xc011, 0xc03f, 0xffff,
];

fn unknown_samples() -> Vec<Sample> {
    golden()
        .into_iter()
        .chain(corpus_representatives().into_iter().filter(|s| !is_csp(s)))
        .chain(generated(2))
        .collect()
}

/// What RFC 5354 §3 requires of an unknown parameter of type `ty` occupying `range` of `msg`.
fn check_unknown_outcome(
    s: &Sample,
    msg: &[u8],
    ty: u16,
    range: std::ops::Range<usize>,
) -> Result<(), String> {
    let r = decode_vs(s.proto, s.g, &s.bytes, msg);
    match (ty >> 14, r) {
        (0b00 | 0b01, Err(e)) => {
            let want = if ty >> 14 == 0 {
                ParameterAction::Stop
            } else {
                ParameterAction::StopAndReport
            };
            match &e {
                DecodeError::UnrecognizedParameter {
                    parameter_type,
                    tlv,
                    action,
                } if *parameter_type == ty && *tlv == range && *action == want => {}
                other => return Err(format!("got {other:?}")),
            }
            if want == ParameterAction::Stop {
                e.reply_cause()
                    .is_none()
                    .then_some(())
                    .ok_or("class 00 asks for a report")?;
            } else {
                (e.reply_cause() == Some(cause::UNRECOGNIZED_PARAMETER))
                    .then_some(())
                    .ok_or("class 01 does not report cause 0x1")?;
                (e.cause_info(msg) == &msg[range.clone()])
                    .then_some(())
                    .ok_or("cause info is not the TLV")?;
            }
            Ok(())
        }
        (0b10 | 0b11, Ok((equal, u))) => {
            if !equal {
                return Err("skipping changed the message".into());
            }
            let ranges: Vec<_> = u.ranges().collect();
            let want = if ty >> 14 == 0b11 {
                vec![range]
            } else {
                vec![]
            };
            if ranges != want || u.overflow() != 0 {
                return Err(format!("reported {ranges:?}, want {want:?}"));
            }
            Ok(())
        }
        (_, r) => Err(format!("got {r:?}")),
    }
}

/// An unknown parameter of each class, with an aligned and an unaligned value, at every position
/// of every message type: between top-level parameters, at the end of the message, and inside
/// pool elements, transports and server information. At the end of a region it is also tried with
/// the enclosing length excluding its padding (RFC 5354 §2 convention, C-03).
#[test]
fn unknown_parameters_follow_their_action_bits_everywhere() {
    let mut failures = BTreeMap::new();
    let mut checked = 0usize;
    for s in &unknown_samples() {
        for slot in slots(&s.bytes, s.proto, s.g) {
            for ty in UNKNOWN_TYPES {
                for value in [&b""[..], &b"\x01\x02\x03\x04\x05"[..]] {
                    let param = tlv(ty, value);
                    let range = slot.at..slot.at + 4 + value.len();
                    let variants: &[bool] = if slot.at_end && !value.is_empty() {
                        &[false, true]
                    } else {
                        &[false]
                    };
                    for &unpadded in variants {
                        let m = insert(&s.bytes, &slot, &param, unpadded);
                        checked += 1;
                        if let Err(why) = check_unknown_outcome(s, &m, ty, range.clone()) {
                            failures
                                .entry(format!(
                                    "{} {:#06x} in {:#06x}{} (unpadded {unpadded}): {why}",
                                    s.proto_name(),
                                    ty,
                                    slot.within,
                                    if slot.at_end { " at end" } else { "" }
                                ))
                                .or_insert_with(|| format!("{} @{}: {m:02x?}", s.name, slot.at));
                        }
                    }
                }
            }
        }
    }
    assert!(checked > 10_000, "only {checked} placements");
    assert!(
        failures.is_empty(),
        "{} kinds of failure:\n{}",
        failures.len(),
        failures
            .iter()
            .map(|(k, v)| format!("{k}\n    e.g. {v}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

impl Sample {
    fn proto_name(&self) -> String {
        format!(
            "{} {:?} type {:#04x}",
            match self.proto {
                Proto::Asap => "ASAP",
                Proto::Enrp => "ENRP",
            },
            self.g,
            self.bytes[0]
        )
    }
}

/// Explicit instances of C-04 to C-07 on the golden registration, placed (a) between top-level
/// parameters, (b) at the end, (c) inside the Pool Element.
#[test]
fn unknown_parameter_classes_on_the_golden_registration() {
    let s = &golden()[0];
    let reg = &s.bytes;
    let all = slots(reg, Proto::Asap, Generation::Rfc);
    let between = all.iter().find(|x| x.within == 0 && x.at == 16).unwrap();
    let end = all.iter().find(|x| x.within == 0 && x.at_end).unwrap();
    let in_pe = all
        .iter()
        .find(|x| x.within == param_type::POOL_ELEMENT && x.at == 32)
        .unwrap();
    for slot in [between, end, in_pe] {
        let value = b"hostile";
        for ty in [0x0011u16, 0x4011, 0x8011, 0xc011] {
            let m = insert(reg, slot, &tlv(ty, value), false);
            let range = slot.at..slot.at + 4 + value.len();
            let r = AsapMessage::decode(&m, Generation::Rfc);
            match ty >> 14 {
                0 => {
                    let e = r.unwrap_err();
                    assert_eq!(
                        e,
                        DecodeError::UnrecognizedParameter {
                            parameter_type: ty,
                            tlv: range,
                            action: ParameterAction::Stop
                        }
                    );
                    assert_eq!(e.reply_cause(), None);
                }
                1 => {
                    let e = r.unwrap_err();
                    assert_eq!(
                        e,
                        DecodeError::UnrecognizedParameter {
                            parameter_type: ty,
                            tlv: range.clone(),
                            action: ParameterAction::StopAndReport
                        }
                    );
                    assert_eq!(e.reply_cause(), Some(cause::UNRECOGNIZED_PARAMETER));
                    let mut want = ty.to_be_bytes().to_vec();
                    want.extend_from_slice(&11u16.to_be_bytes());
                    want.extend_from_slice(value);
                    assert_eq!(e.cause_info(&m), &want[..]);
                }
                2 => {
                    let d = r.unwrap();
                    assert_eq!(
                        d.message,
                        AsapMessage::decode(reg, Generation::Rfc).unwrap().message
                    );
                    assert!(d.unrecognized.is_empty());
                }
                _ => {
                    let d = r.unwrap();
                    assert_eq!(
                        d.message,
                        AsapMessage::decode(reg, Generation::Rfc).unwrap().message
                    );
                    assert_eq!(d.unrecognized.ranges().collect::<Vec<_>>(), vec![range]);
                    assert_eq!(d.unrecognized.overflow(), 0);
                }
            }
        }
    }
}

/// More `11` parameters than `MAX_REPORTED` are all skipped; the first ones are remembered in
/// message order, the rest counted.
#[test]
fn reported_parameters_beyond_the_limit_are_counted() {
    for s in unknown_samples() {
        let end = slots(&s.bytes, s.proto, s.g)
            .into_iter()
            .find(|x| x.within == 0 && x.at_end)
            .unwrap();
        let extra = MAX_REPORTED + 2;
        let mut params = Vec::new();
        for i in 0..extra {
            params.extend(tlv(0xc011 + i as u16, &[i as u8; 3]));
        }
        let m = insert(&s.bytes, &end, &params, false);
        let (equal, u) = decode_vs(s.proto, s.g, &s.bytes, &m).unwrap();
        assert!(equal, "{}", s.name);
        let want: Vec<_> = (0..MAX_REPORTED)
            .map(|i| end.at + 8 * i..end.at + 8 * i + 7)
            .collect();
        assert_eq!(u.ranges().collect::<Vec<_>>(), want, "{}", s.name);
        assert_eq!(u.overflow(), 2);
    }
}

// ---------------------------------------------------------------------------------------------
// RFC 5354 §4: unknown message types (C-08, C-09)
// ---------------------------------------------------------------------------------------------

#[test]
fn unknown_message_types_follow_their_upper_bits() {
    let mut rng = Rng(0xdead_beef);
    for ty in 0..=255u8 {
        for body_len in [0usize, 8, 17, 40] {
            let flags = rng.next() as u8;
            let m = message(ty, flags, &rng.bytes(body_len));
            for g in GENERATIONS {
                for (proto, known) in [(Proto::Asap, 0x01..=0x0e), (Proto::Enrp, 0x01..=0x0a)] {
                    let r = decode_any(proto, g, &m);
                    if known.contains(&ty) {
                        assert!(
                            !matches!(r, Err(DecodeError::UnknownMessageType { .. })),
                            "{proto:?} type {ty:#04x} is known"
                        );
                        continue;
                    }
                    let e = r.unwrap_err();
                    let report = ty >> 6 == 0b01;
                    assert_eq!(
                        e,
                        DecodeError::UnknownMessageType {
                            message_type: ty,
                            report
                        }
                    );
                    assert_eq!(
                        e.reply_cause(),
                        report.then_some(cause::UNRECOGNIZED_MESSAGE)
                    );
                    assert_eq!(e.cause_info(&m), &m[..]);
                    assert!(!e.to_string().is_empty());
                }
            }
        }
    }
    // The checklist's cases by name.
    let asap_0f = message(0x0f, 0, &[]);
    let e = AsapMessage::decode(&asap_0f, Generation::Rfc).unwrap_err();
    assert_eq!(
        e,
        DecodeError::UnknownMessageType {
            message_type: 0x0f,
            report: false
        }
    );
    assert_eq!(e.reply_cause(), None);
    let enrp_0b = message(0x0b, 0, &[0; 8]);
    let e = EnrpMessage::decode(&enrp_0b, Generation::Rfc).unwrap_err();
    assert_eq!(
        e,
        DecodeError::UnknownMessageType {
            message_type: 0x0b,
            report: false
        }
    );
    let m40 = message(0x40, 0x5a, &tlv(param_type::POOL_HANDLE, b"EchoPool"));
    for e in [
        AsapMessage::decode(&m40, Generation::Rfc).unwrap_err(),
        EnrpMessage::decode(&m40, Generation::Ng).unwrap_err(),
    ] {
        assert_eq!(
            e,
            DecodeError::UnknownMessageType {
                message_type: 0x40,
                report: true
            }
        );
        assert_eq!(e.reply_cause(), Some(cause::UNRECOGNIZED_MESSAGE));
        assert_eq!(e.cause_info(&m40), &m40[..]);
    }
}

// ---------------------------------------------------------------------------------------------
// Handle resolution option (C-13)
// ---------------------------------------------------------------------------------------------

fn hropt(items: u32) -> Vec<u8> {
    tlv(param_type::HANDLE_RESOLUTION_OPTION, &items.to_be_bytes())
}

#[test]
fn hropt_is_decoded_by_position_in_a_handle_resolution() {
    let handle = tlv(param_type::POOL_HANDLE, b"EchoPool");
    let hr = |params: &[Vec<u8>]| message(0x05, 0, &params.concat());
    fn decode(m: &[u8]) -> Result<Decoded<AsapMessage<'_>>, DecodeError> {
        AsapMessage::decode(m, Generation::Rfc)
    }
    let items = |m: &[u8]| match decode(m).unwrap() {
        Decoded {
            message: AsapMessage::HandleResolution { items, .. },
            unrecognized,
        } => {
            assert!(unrecognized.is_empty());
            items
        }
        other => panic!("{other:?}"),
    };
    // After the pool handle: the option.
    assert_eq!(items(&hr(&[handle.clone(), hropt(5)])), Some(5));
    assert_eq!(
        items(&hr(&[handle.clone(), hropt(u32::MAX)])),
        Some(u32::MAX)
    );
    // A second one is out of place and skipped by its `10` bits.
    assert_eq!(items(&hr(&[handle.clone(), hropt(5), hropt(9)])), Some(5));
    // Before the pool handle it is out of place: skipped.
    assert_eq!(items(&hr(&[hropt(5), handle.clone()])), None);
    // A class-10 unknown parameter in front of it does not hide it.
    assert_eq!(
        items(&hr(&[handle.clone(), tlv(0x8011, b"x"), hropt(7)])),
        Some(7)
    );
    // Wrong lengths are invalid values, reported with the TLV.
    for v in [&b""[..], &b"\0\0"[..], &b"\0\0\0\0\0\0\0\x05"[..]] {
        let bad = tlv(param_type::HANDLE_RESOLUTION_OPTION, v);
        let m = hr(&[handle.clone(), bad.clone()]);
        let e = decode(&m).unwrap_err();
        assert!(matches!(e, DecodeError::InvalidValue { .. }), "{e:?}");
        assert_eq!(e.reply_cause(), Some(cause::INVALID_VALUES));
        assert_eq!(e.cause_info(&m), &bad[..4 + v.len()]);
    }
}

#[test]
fn hropt_in_a_deregistration_is_skipped_silently() {
    let handle = tlv(param_type::POOL_HANDLE, b"EchoPool");
    let id = tlv(param_type::PE_IDENTIFIER, &0x1234_5678u32.to_be_bytes());
    let plain = message(0x02, 0, &[handle.clone(), id.clone()].concat());
    let want = AsapMessage::decode(&plain, Generation::Rfc)
        .unwrap()
        .message;
    for params in [
        vec![hropt(5), handle.clone(), id.clone()],
        vec![handle.clone(), hropt(5), id.clone()],
        vec![handle.clone(), id.clone(), hropt(5)],
    ] {
        let m = message(0x02, 0, &params.concat());
        let d = AsapMessage::decode(&m, Generation::Rfc).unwrap();
        assert_eq!(d.message, want);
        assert!(d.unrecognized.is_empty());
    }
}

/// The name of the region a slot is in.
fn region_name(within: u16) -> &'static str {
    match within {
        0 => "message",
        param_type::POOL_ELEMENT => "pool element",
        param_type::SERVER_INFORMATION => "server information",
        _ => "transport",
    }
}

/// Where in its region a slot is (and, inside a pool element, next to what).
fn position(slot: &Slot, s: &Sample) -> &'static str {
    let parent = *slot.enclosing.last().unwrap();
    let first = match content_of(slot.within, s.g) {
        _ if slot.within == 0 => fixed_prefix(s.proto, s.bytes[0], s.g),
        Content::Params { prefix } => parent + 4 + prefix,
        _ => unreachable!(),
    };
    let pe = slot.within == param_type::POOL_ELEMENT;
    match (slot.at_end, slot.at == first) {
        (true, _) => "after the last parameter",
        (false, true) if pe => "before the user transport",
        (false, true) => "before the first parameter",
        (false, false) if pe && s.bytes[slot.at + 1] == 0x08 => "before the policy",
        (false, false) if pe => "before the ASAP transport",
        (false, false) => "between parameters",
    }
}

/// HROPT (type 0x803f, action bits `10`) anywhere outside a handle resolution is skipped like any
/// class-10 parameter: between, before and after parameters at every nesting level of every other
/// message type.
#[test]
fn hropt_outside_a_handle_resolution_is_skipped_everywhere() {
    // Failure kind -> (message types, shortest example).
    let mut failures: BTreeMap<String, (std::collections::BTreeSet<String>, Vec<u8>)> =
        BTreeMap::new();
    let mut checked = 0;
    for s in &unknown_samples() {
        if s.proto == Proto::Asap && s.bytes[0] == 0x05 {
            continue;
        }
        for slot in slots(&s.bytes, s.proto, s.g) {
            let m = insert(&s.bytes, &slot, &hropt(5), false);
            checked += 1;
            let outcome = match decode_vs(s.proto, s.g, &s.bytes, &m) {
                Ok((true, u)) if u.is_empty() => continue,
                Err(e) => format!("{e:?}"),
                Ok(x) => format!("{x:?}"),
            };
            let kind = format!(
                "in a {} {}: {}",
                region_name(slot.within),
                position(&slot, s),
                outcome.split([' ', '(']).next().unwrap_or_default()
            );
            let entry = failures
                .entry(kind)
                .or_insert_with(|| (Default::default(), m.clone()));
            entry.0.insert(format!(
                "{} {:?} {:#04x}",
                match s.proto {
                    Proto::Asap => "ASAP",
                    Proto::Enrp => "ENRP",
                },
                s.g,
                s.bytes[0]
            ));
            if m.len() < entry.1.len() {
                entry.1 = m;
            }
        }
    }
    assert!(checked > 500, "only {checked} placements");
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    assert!(
        failures.is_empty(),
        "HROPT is not skipped in {} situations:\n{}",
        failures.len(),
        failures
            .iter()
            .map(|(k, (types, m))| format!(
                "  {k}\n    in {}\n    e.g. {}",
                types.iter().cloned().collect::<Vec<_>>().join(", "),
                hex(m)
            ))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Impossible lengths (C-10) and wrong widths for the generation
// ---------------------------------------------------------------------------------------------

/// Every parameter and error cause of every sample with a length below 4 is `BadLength` at its
/// offset; with a length beyond its enclosing region it is `Truncated`. Never a panic, never
/// accepted.
#[test]
fn impossible_parameter_lengths_are_typed_errors() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for s in &unknown_samples() {
        let nodes = parse_message(&s.bytes, s.proto, s.g);
        for n in flatten(&nodes) {
            for l in 0..4 {
                let mut m = s.bytes.clone();
                set_len_at(&mut m, n.start, l);
                checked += 1;
                match decode_any(s.proto, s.g, &m) {
                    Err(DecodeError::BadLength { length, offset, .. })
                        if length == l && offset == n.start => {}
                    other => failures.push(format!(
                        "{}: parameter {:#06x}@{} length {l}: {other:?}",
                        s.name, n.ty, n.start
                    )),
                }
            }
            let room = n.region_end - n.start;
            for l in [room + 1, room + 4, 0xffff] {
                if l > 0xffff || l <= room {
                    continue;
                }
                let mut m = s.bytes.clone();
                set_len_at(&mut m, n.start, l);
                checked += 1;
                match decode_any(s.proto, s.g, &m) {
                    Err(e @ DecodeError::Truncated { .. }) => check_error(&e, &m),
                    other => failures.push(format!(
                        "{}: parameter {:#06x}@{} length {l} (room {room}): {other:?}",
                        s.name, n.ty, n.start
                    )),
                }
            }
        }
    }
    assert!(checked > 1000);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A PE Identifier or PE Checksum parameter of the other generation's (or any wrong) width is an
/// invalid value, answered with cause 0x3 carrying the parameter.
#[test]
fn wrong_width_identifiers_and_checksums_are_invalid_values() {
    let handle = tlv(param_type::POOL_HANDLE, b"EchoPool");
    for g in GENERATIONS {
        let w = id_width(g);
        for bad_len in [0usize, 2, 4, 6, 8, 12, 16] {
            if bad_len == w {
                continue;
            }
            let id = tlv(param_type::PE_IDENTIFIER, &vec![0x42; bad_len][..]);
            let range_of = |m: &[u8], at: usize| {
                assert_eq!(&m[at..at + 2], &param_type::PE_IDENTIFIER.to_be_bytes());
                at..at + 4 + bad_len
            };
            for ty in [0x02u8, 0x03, 0x04, 0x08, 0x09] {
                let m = message(ty, 0, &[handle.clone(), id.clone()].concat());
                let e = AsapMessage::decode(&m, g).unwrap_err();
                let want = range_of(&m, 16);
                assert!(
                    matches!(&e, DecodeError::InvalidValue { tlv, .. } if *tlv == want),
                    "{g:?} type {ty:#04x} PE ID of {bad_len} bytes: {e:?}"
                );
                assert_eq!(e.reply_cause(), Some(cause::INVALID_VALUES));
                assert_eq!(e.cause_info(&m), &m[want]);
            }
            // The keep-alive's optional PE Identifier.
            let mut body = vec![0x0a; w];
            body.extend(&handle);
            body.extend(&id);
            let m = message(0x07, 0, &body);
            let e = AsapMessage::decode(&m, g).unwrap_err();
            let want = range_of(&m, 4 + w + 12);
            assert!(matches!(&e, DecodeError::InvalidValue { tlv, .. } if *tlv == want));
            assert_eq!(e.cause_info(&m), &m[want]);
        }
        let cw = match g {
            Generation::Rfc => 2,
            Generation::Ng => 8,
        };
        for bad_len in [0usize, 1, 2, 4, 8, 16] {
            if bad_len == cw {
                continue;
            }
            let mut body = vec![0x11; 2 * w];
            let at = 4 + body.len();
            body.extend(tlv(param_type::PE_CHECKSUM, &vec![0x29; bad_len][..]));
            let m = message(0x01, 0, &body);
            let e = EnrpMessage::decode(&m, g).unwrap_err();
            let want = at..at + 4 + bad_len;
            assert!(
                matches!(&e, DecodeError::InvalidValue { tlv, .. } if *tlv == want),
                "{g:?} checksum of {bad_len} bytes: {e:?}"
            );
            assert_eq!(e.reply_cause(), Some(cause::INVALID_VALUES));
            assert_eq!(e.cause_info(&m), &m[want]);
        }
    }
    // Every RFC message carrying a PE Identifier, read as NG, is refused the same way.
    for s in corpus_samples() {
        if s.proto != Proto::Asap || ![0x02, 0x03, 0x04, 0x08, 0x09].contains(&s.bytes[0]) {
            continue;
        }
        let e = AsapMessage::decode(&s.bytes, Generation::Ng).unwrap_err();
        assert_eq!(e.reply_cause(), Some(cause::INVALID_VALUES), "{}", s.name);
        let info = e.cause_info(&s.bytes);
        assert_eq!(&info[..4], &[0x00, 0x0e, 0x00, 0x08], "{}", s.name);
    }
}

// ---------------------------------------------------------------------------------------------
// Framing
// ---------------------------------------------------------------------------------------------

/// Messages as they stand on a stream: golden vectors, a presence whose length field excludes
/// its final padding (18, extent 20), the corpus's largest handle table, a few generated ones.
fn stream_messages() -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = golden().into_iter().map(|s| s.bytes).collect();
    let mut short = message(
        0x01,
        0,
        &[[0x11; 8].as_slice(), &tlv(0x000f, &[0x29, 0xa5])].concat(),
    );
    set_len_at(&mut short, 0, 18);
    assert_eq!(short.len(), 20);
    assert!(EnrpMessage::decode(&short, Generation::Rfc).is_ok());
    v.push(short.clone());
    let big = corpus_samples()
        .into_iter()
        .filter(|s| !is_csp(s))
        .max_by_key(|s| s.bytes.len())
        .unwrap();
    v.push(big.bytes);
    v.push(short);
    v.extend(generated(1).into_iter().take(6).map(|s| s.bytes));
    v
}

/// Accumulates chunks and extracts whole frames, with `next_frame` or with `Frames`.
struct Reassembler {
    buf: Vec<u8>,
    out: Vec<Vec<u8>>,
    with_iterator: bool,
}

impl Reassembler {
    fn new(with_iterator: bool) -> Self {
        Self {
            buf: Vec::new(),
            out: Vec::new(),
            with_iterator,
        }
    }

    fn feed(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
        let needed = if self.with_iterator {
            let mut frames = Frames::new(&self.buf, MAX_MESSAGE_LEN);
            self.out.extend(frames.by_ref().map(<[u8]>::to_vec));
            assert_eq!(frames.error(), None);
            let (consumed, needed) = (frames.consumed(), frames.needed());
            self.buf.drain(..consumed);
            needed
        } else {
            loop {
                match framing::next_frame(&self.buf, MAX_MESSAGE_LEN).unwrap() {
                    Frame::Complete { len } => {
                        self.out.push(self.buf[..len].to_vec());
                        self.buf.drain(..len);
                    }
                    Frame::Incomplete { needed } => break needed,
                }
            }
        };
        // Once the header is there, `needed` is exact.
        if self.buf.len() >= 4 {
            assert_eq!(
                needed,
                len_at(&self.buf, 0).next_multiple_of(4) - self.buf.len()
            );
        } else {
            assert_eq!(needed, 4 - self.buf.len());
        }
    }
}

fn reassemble(chunks: &[&[u8]], with_iterator: bool) -> Vec<Vec<u8>> {
    let mut r = Reassembler::new(with_iterator);
    for c in chunks {
        r.feed(c);
    }
    assert!(r.buf.is_empty(), "{} bytes left over", r.buf.len());
    r.out
}

#[test]
fn framing_reassembles_a_stream_split_anywhere() {
    let msgs = stream_messages();
    let stream = msgs.concat();
    for with_iterator in [false, true] {
        // Every single split point.
        for k in 0..=stream.len() {
            let out = reassemble(&[&stream[..k], &stream[k..]], with_iterator);
            assert_eq!(out, msgs, "split at {k}");
        }
        // Every boundary at once.
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(reassemble(&bytes, with_iterator), msgs);
    }
    // Every pair of split points of the golden part of the stream.
    let small: Vec<Vec<u8>> = msgs[..5].to_vec();
    let s = small.concat();
    for i in 0..=s.len() {
        for j in i..=s.len() {
            assert_eq!(
                reassemble(&[&s[..i], &s[i..j], &s[j..]], j.is_multiple_of(2)),
                small
            );
        }
    }
    // The frames decode to what was sent.
    for m in &msgs {
        assert!(
            GENERATIONS.iter().any(|&g| {
                AsapMessage::decode(m, g).is_ok() || EnrpMessage::decode(m, g).is_ok()
            }),
            "{m:02x?}"
        );
    }
}

proptest! {
    #![proptest_config(config(512))]

    /// Random messages of both protocols and generations, cut into random chunks, come back
    /// whole.
    #[test]
    fn framing_reassembles_random_chunkings(
        asap in prop::collection::vec(asap(Generation::Ng), 0..4),
        enrp in prop::collection::vec(enrp(Generation::Rfc), 0..4),
        cuts in prop::collection::vec(any::<Index>(), 0..12),
        with_iterator in any::<bool>(),
    ) {
        let mut msgs: Vec<Vec<u8>> = asap
            .iter()
            .map(|m| m.with_view(|v| encode_asap(&v, Generation::Ng)).unwrap())
            .collect();
        msgs.extend(
            enrp.iter()
                .map(|m| m.with_view(|v| encode_enrp(&v, Generation::Rfc)).unwrap()),
        );
        let stream = msgs.concat();
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
        points.sort_unstable();
        let mut chunks = Vec::new();
        let mut last = 0;
        for p in points.into_iter().chain([stream.len()]) {
            chunks.push(&stream[last..p]);
            last = p;
        }
        prop_assert_eq!(reassemble(&chunks, with_iterator), msgs);
    }
}

#[test]
fn incomplete_frames_say_exactly_what_is_missing() {
    for m in stream_messages() {
        let extent = m.len();
        assert_eq!(extent, len_at(&m, 0).next_multiple_of(4));
        for p in 0..extent {
            let needed = match framing::next_frame(&m[..p], MAX_MESSAGE_LEN) {
                Ok(Frame::Incomplete { needed }) => needed,
                other => panic!("prefix {p}: {other:?}"),
            };
            if p >= 4 {
                assert_eq!(needed, extent - p);
            } else {
                assert_eq!(needed, 4 - p);
                assert!(needed <= extent - p, "lower bound");
            }
        }
        assert_eq!(
            framing::next_frame(&m, MAX_MESSAGE_LEN),
            Ok(Frame::Complete { len: extent })
        );
        let mut more = m.clone();
        more.extend_from_slice(&[1, 0, 0, 4, 9, 9]);
        assert_eq!(
            framing::next_frame(&more, MAX_MESSAGE_LEN),
            Ok(Frame::Complete { len: extent })
        );
    }
}

#[test]
fn framing_rejects_impossible_lengths() {
    let good = golden()[1].bytes.clone();
    for length in 0..4u16 {
        let mut bad = vec![0x05, 0x00];
        bad.extend_from_slice(&length.to_be_bytes());
        bad.extend_from_slice(&[0; 12]);
        for prefix in [4, bad.len()] {
            let e = framing::next_frame(&bad[..prefix], MAX_MESSAGE_LEN).unwrap_err();
            assert_eq!(
                e,
                FramingError::TooShort {
                    length: usize::from(length)
                }
            );
            assert!(!e.to_string().is_empty());
        }
        // Behind a good message: the good one comes out, then the stream is broken for good.
        let stream = [good.clone(), bad.clone()].concat();
        let mut frames = Frames::new(&stream, MAX_MESSAGE_LEN);
        assert_eq!(frames.next(), Some(&good[..]));
        assert_eq!(frames.next(), None);
        assert_eq!(
            frames.error(),
            Some(FramingError::TooShort {
                length: usize::from(length)
            })
        );
        assert_eq!(frames.consumed(), good.len());
        assert_eq!(frames.next(), None);
    }
    for max in [4usize, 24, 1000, 65534] {
        let mut over = vec![0x05, 0x00];
        over.extend_from_slice(&u16::try_from(max + 1).unwrap().to_be_bytes());
        let e = framing::next_frame(&over, max).unwrap_err();
        assert_eq!(
            e,
            FramingError::TooLong {
                length: max + 1,
                max
            }
        );
        assert!(!e.to_string().is_empty());
        let mut frames = Frames::new(&over, max);
        assert_eq!(frames.next(), None);
        assert_eq!(frames.error(), Some(e));
        // Exactly the maximum is fine.
        let mut at_max = over.clone();
        set_len_at(&mut at_max, 0, max);
        assert!(matches!(
            framing::next_frame(&at_max, max),
            Ok(Frame::Incomplete { .. } | Frame::Complete { .. })
        ));
    }
    // With the largest maximum, only lengths below 4 are errors.
    for length in 0..=u16::MAX {
        let mut h = vec![0x01, 0x00];
        h.extend_from_slice(&length.to_be_bytes());
        match framing::next_frame(&h, MAX_MESSAGE_LEN) {
            Err(FramingError::TooShort { .. }) => assert!(length < 4),
            Ok(Frame::Complete { len }) => assert_eq!((length, len), (4, 4)),
            Ok(Frame::Incomplete { needed }) => {
                assert_eq!(needed, usize::from(length).next_multiple_of(4) - 4)
            }
            other => panic!("{length}: {other:?}"),
        }
    }
}
