//! The user-space SCTP's packet codec ([`SctpPacket`], [`SctpPacketBuilder`]) against packets of
//! Linux's kernel SCTP between RSPLIB 3.4.4's registrars, pool elements and pool users (a peer
//! nobody here wrote), and against hostile input.
//!
//! Two captures, both Linux cooked captures v2 (SLL2, what `tcpdump -i any` writes) made in
//! user-mode Linux:
//!
//! - `data/rsplib-scope.pcap`, the corpus of `../shared/corpus/` (its README says what runs in it):
//!   2,098 SCTP packets over IPv4. **Its checksums are all zero**: the kernel leaves the CRC32c
//!   to interfaces that offload it (`NETIF_F_SCTP_CRC`), loopback and dummy among them, and the
//!   capture sees the packets before anyone fills it in (tshark with `sctp.checksum:CRC-32c`:
//!   `0x00000000 incorrect` for every one). So this capture checks framing, every chunk's fields
//!   and re-building byte for byte except the checksum field, which the builder fills in.
//!   (tshark's own CRC32c of each packet, its "should be", equals `computed_checksum` byte-swapped
//!   for all 2,098: checked by hand when this test was written, as it needs tshark.)
//! - `data/rsplib-udp-encap.pcap`, made for this test: `rspregistrar` (two, ENRP peers),
//!   `rspserver` and `rspterminal` on kernel SCTP in user-mode Linux 7.2 with
//!   `net.sctp.udp_port = net.sctp.encap_port = 9899`, so that every SCTP packet travels in UDP
//!   (RFC 6951), for which the kernel always computes the CRC32c in software; captured with
//!   `tcpdump -i any 'ip and udp port 9899'` (`data/capture-udp-encap.sh`). 288 packets, every
//!   chunk type of the corpus among them; tshark finds all 288 checksums correct. So this
//!   capture checks the CRC32c against the kernel's, and re-building byte for byte with the
//!   checksum.

use rserpool_net::sctp_udp::{
    GapAckBlock, InitParameter, SctpBuildError, SctpChunkBody, SctpErrorCause, SctpPacket,
    SctpPacketBuilder, SctpPacketError,
};

/// An SCTP packet from a capture.
struct Captured {
    /// Its frame number (from 1, as tshark counts).
    frame: usize,
    /// The SCTP packet: common header and chunks.
    sctp: Vec<u8>,
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The SCTP packets of the pcap file `name` in `tests/data/`: pcap (24-byte global header,
/// 16-byte record headers, little-endian), Linux cooked capture v2 (20-byte SLL2 header), IPv4
/// (with its IHL), then SCTP (protocol 132) or SCTP in UDP (protocol 17, port 9899). Other
/// frames are skipped.
fn captured(name: &str) -> Vec<Captured> {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    let file = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(le32(&file, 0), 0xa1b2_c3d4, "{name}: a little-endian pcap");
    assert_eq!(le32(&file, 20), 276, "{name}: LINKTYPE_LINUX_SLL2");
    let mut packets = Vec::new();
    let (mut at, mut frame) = (24, 0);
    while at < file.len() {
        frame += 1;
        let (incl, orig) = (le32(&file, at + 8) as usize, le32(&file, at + 12) as usize);
        assert_eq!(incl, orig, "{name} frame {frame}: captured whole");
        let record = &file[at + 16..at + 16 + incl];
        at += 16 + incl;
        // SLL2: protocol type, reserved, interface index, ARPHRD type, packet type, address.
        if be16(record, 0) != 0x0800 {
            continue;
        }
        let ip = &record[20..];
        assert_eq!(ip[0] >> 4, 4, "{name} frame {frame}: IPv4");
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        assert_eq!(
            be16(ip, 6) & 0x3fff,
            0,
            "{name} frame {frame}: not a fragment"
        );
        let payload = &ip[ihl..usize::from(be16(ip, 2))];
        let sctp = match ip[9] {
            132 => payload,
            17 if be16(payload, 0) == 9899 || be16(payload, 2) == 9899 => {
                &payload[8..usize::from(be16(payload, 4))]
            }
            _ => continue,
        };
        packets.push(Captured {
            frame,
            sctp: sctp.to_vec(),
        });
    }
    packets
}

/// Reads every chunk of `packet` with all parameters and error causes inside; the first error.
fn decode_all(packet: &SctpPacket<'_>) -> Result<(), SctpPacketError> {
    for chunk in packet.chunks() {
        match chunk.body()? {
            SctpChunkBody::Init(init) | SctpChunkBody::InitAck(init) => {
                for param in init.params {
                    param?;
                }
            }
            SctpChunkBody::Abort { causes, .. } | SctpChunkBody::Error { causes } => {
                for cause in causes {
                    cause?;
                }
            }
            SctpChunkBody::Sack(sack) => {
                let _ = (sack.gap_blocks.count(), sack.duplicate_tsns.count());
            }
            _ => {}
        }
    }
    Ok(())
}

/// `packet` written again from its parsed chunks with the same header. `typed`: INIT and INIT
/// ACK parameters, SACK blocks and error causes as typed values (`push_init`, `push_sack`,
/// `push_abort`, ...); else every chunk with [`SctpPacketBuilder::push`].
fn rebuild(packet: &SctpPacket<'_>, typed: bool) -> Vec<u8> {
    let mut buf = vec![0xa5; packet.as_bytes().len() + 64];
    let mut b = SctpPacketBuilder::new(
        &mut buf,
        packet.source_port(),
        packet.destination_port(),
        packet.verification_tag(),
    )
    .unwrap();
    for chunk in packet.chunks() {
        let body = chunk.body().unwrap();
        match (typed, &body) {
            (true, SctpChunkBody::Init(init)) => {
                let params: Vec<InitParameter<'_>> =
                    init.params.clone().map(Result::unwrap).collect();
                b.push_init(&init.fields, &params)
            }
            (true, SctpChunkBody::InitAck(init)) => {
                let params: Vec<InitParameter<'_>> =
                    init.params.clone().map(Result::unwrap).collect();
                b.push_init_ack(&init.fields, &params)
            }
            (true, SctpChunkBody::Sack(sack)) => {
                let gaps: Vec<GapAckBlock> = sack.gap_blocks.clone().collect();
                let dups: Vec<u32> = sack.duplicate_tsns.clone().collect();
                b.push_sack(sack.cumulative_tsn_ack, sack.a_rwnd, &gaps, &dups)
            }
            (
                true,
                SctpChunkBody::Abort {
                    tag_reflected,
                    causes,
                },
            ) => {
                let causes: Vec<SctpErrorCause<'_>> = causes.clone().map(Result::unwrap).collect();
                b.push_abort(*tag_reflected, &causes)
            }
            (true, SctpChunkBody::Error { causes }) => {
                let causes: Vec<SctpErrorCause<'_>> = causes.clone().map(Result::unwrap).collect();
                b.push_error(&causes)
            }
            _ => b.push(&body),
        }
        .unwrap();
    }
    b.finish().to_vec()
}

/// The chunk types of `packets`, counted by type code.
fn chunk_counts(packets: &[Captured]) -> [usize; 256] {
    let mut counts = [0; 256];
    for p in packets {
        for chunk in SctpPacket::parse(&p.sctp).unwrap().chunks() {
            counts[usize::from(chunk.chunk_type())] += 1;
        }
    }
    counts
}

/// Every chunk of RSPLIB's kernel SCTP traffic decodes, with its parameters and error causes,
/// and re-building each packet from its parsed chunks gives the same bytes but the checksum
/// field, which is zero in the capture (see the top of this file).
#[test]
fn corpus_packets_decode_and_rebuild() {
    let packets = captured("rsplib-scope.pcap");
    assert_eq!(packets.len(), 2098);
    let counts = chunk_counts(&packets);
    let expected = [
        (0, 871),
        (1, 113),
        (2, 16),
        (3, 805),
        (4, 120),
        (5, 120),
        (6, 97),
        (7, 16),
        (8, 16),
        (10, 16),
        (11, 16),
        (14, 16),
    ];
    for (chunk_type, n) in expected {
        assert_eq!(counts[chunk_type], n, "chunks of type {chunk_type}");
    }
    assert_eq!(
        counts.iter().sum::<usize>(),
        expected.iter().map(|(_, n)| n).sum::<usize>()
    );
    // DATA chunks by PPID: the PU's and PE's echo (0), ASAP (11), ENRP (12).
    let mut ppids = [0usize; 3];
    for p in &packets {
        let packet =
            SctpPacket::parse(&p.sctp).unwrap_or_else(|e| panic!("frame {}: {e}", p.frame));
        decode_all(&packet).unwrap_or_else(|e| panic!("frame {}: {e}", p.frame));
        assert_eq!(
            packet.checksum(),
            0,
            "frame {}: offloaded checksum",
            p.frame
        );
        assert!(packet.verify_checksum().is_err());
        for chunk in packet.chunks() {
            if let SctpChunkBody::Data(data) = chunk.body().unwrap() {
                assert!(data.beginning && data.ending && !data.unordered);
                match data.ppid {
                    0 => ppids[0] += 1,
                    11 => ppids[1] += 1,
                    12 => ppids[2] += 1,
                    ppid => panic!("frame {}: PPID {ppid}", p.frame),
                }
                // Every ASAP and ENRP message is whole, its length field its size (the corpus's
                // README): the user data is sliced right.
                if data.ppid != 0 {
                    assert_eq!(usize::from(be16(data.user_data, 2)), data.user_data.len());
                }
            }
        }
        for typed in [false, true] {
            let again = rebuild(&packet, typed);
            assert_eq!(again.len(), p.sctp.len(), "frame {}", p.frame);
            assert_eq!(again[..8], p.sctp[..8], "frame {}", p.frame);
            assert_eq!(again[12..], p.sctp[12..], "frame {}", p.frame);
            let again = SctpPacket::parse(&again).unwrap();
            again.verify_checksum().unwrap();
            assert_eq!(again.checksum(), packet.computed_checksum());
        }
    }
    // ASAP (PPID 11) and ENRP (12) messages over SCTP, as the corpus's README counts them, and
    // the echo's 10 messages (5 lines there and back).
    assert_eq!(
        ppids,
        [
            10,
            82 + 5 + 82 + 5 + 2 + 2 + 157 + 157,
            211 + 2 + 2 + 140 + 6 + 6 + 1 + 1
        ]
    );
}

/// The kernel's own CRC32c: every checksum of the UDP-encapsulated capture verifies, and each
/// packet re-built from its parsed chunks is the same, byte for byte, checksum included.
#[test]
fn kernel_checksums_verify_and_packets_rebuild_exactly() {
    let packets = captured("rsplib-udp-encap.pcap");
    assert_eq!(packets.len(), 288);
    let counts = chunk_counts(&packets);
    for chunk_type in [0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 14] {
        assert!(counts[chunk_type] > 0, "no chunk of type {chunk_type}");
    }
    for p in &packets {
        let packet =
            SctpPacket::parse(&p.sctp).unwrap_or_else(|e| panic!("frame {}: {e}", p.frame));
        packet
            .verify_checksum()
            .unwrap_or_else(|e| panic!("frame {}: {e}", p.frame));
        assert_ne!(packet.checksum(), 0);
        decode_all(&packet).unwrap_or_else(|e| panic!("frame {}: {e}", p.frame));
        for typed in [false, true] {
            assert_eq!(rebuild(&packet, typed), p.sctp, "frame {}", p.frame);
        }
    }
    // CRC32c catches every single-bit error; the framing may still parse, the checksum not.
    for p in packets.iter().step_by(7) {
        for bit in 0..p.sctp.len() * 8 {
            let mut bad = p.sctp.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            if let Ok(packet) = SctpPacket::parse(&bad) {
                assert!(matches!(
                    packet.verify_checksum(),
                    Err(SctpPacketError::ChecksumMismatch { .. })
                ));
            }
        }
    }
}

/// Every packet of both captures cut at every length: a cut parses if and only if it falls
/// between chunks, and never panics.
#[test]
fn every_truncation_is_an_error_or_whole_chunks() {
    let mut cuts = 0;
    for name in ["rsplib-scope.pcap", "rsplib-udp-encap.pcap"] {
        for p in captured(name) {
            let mut boundaries = vec![12];
            let whole = SctpPacket::parse(&p.sctp).unwrap();
            for chunk in whole.chunks() {
                let end = boundaries.last().unwrap() + chunk.as_bytes().len().div_ceil(4) * 4;
                boundaries.push(end);
            }
            assert_eq!(*boundaries.last().unwrap(), p.sctp.len());
            for len in 0..p.sctp.len() {
                cuts += 1;
                match SctpPacket::parse(&p.sctp[..len]) {
                    Ok(packet) => {
                        assert!(boundaries.contains(&len), "frame {} cut at {len}", p.frame);
                        decode_all(&packet).unwrap();
                    }
                    Err(SctpPacketError::TooShort { .. }) => assert!(len < 12),
                    Err(
                        SctpPacketError::ChunkHeaderTruncated { .. }
                        | SctpPacketError::ChunkPastEnd { .. }
                        | SctpPacketError::ChunkPaddingMissing { .. },
                    ) => assert!(!boundaries.contains(&len), "frame {} cut at {len}", p.frame),
                    Err(e) => panic!("frame {} cut at {len}: {e}", p.frame),
                }
            }
        }
    }
    assert!(cuts > 140_000, "{cuts} cuts");
}

/// A xorshift64* generator: seeded, reproducible, no dependency.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// 300 000 mutations of the captured packets (bytes set at random, bits flipped, length fields
/// of chunks and parameters overwritten with lies): never a panic, and whatever decodes whole
/// decodes to the same values after re-building.
#[test]
fn mutations_never_panic_and_what_decodes_rebuilds() {
    let mut packets = captured("rsplib-scope.pcap");
    packets.extend(captured("rsplib-udp-encap.pcap"));
    let mut rng = XorShift(0x5eed_0020_5c7b_0001);
    let (mut refused, mut decoded) = (0, 0);
    let lies = [0u16, 1, 2, 3, 4, 5, 6, 7, 8, 16, 17, 20, 0xfffc, 0xffff];
    for _ in 0..300_000 {
        let mut bytes = packets[rng.below(packets.len())].sctp.clone();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(bytes.len());
            match rng.below(4) {
                0 => bytes[at] = rng.next() as u8,
                1 => bytes[at] ^= 1 << rng.below(8),
                // A length field: chunk lengths sit at offsets 2 mod 4 from the header on, so do
                // parameter and error cause lengths.
                _ => {
                    let at = (at & !3) + 2;
                    if at + 2 <= bytes.len() {
                        let lie = match rng.below(3) {
                            0 => lies[rng.below(lies.len())],
                            1 => be16(&bytes, at)
                                .wrapping_add(rng.below(9) as u16)
                                .wrapping_sub(4),
                            _ => rng.next() as u16,
                        };
                        bytes[at..at + 2].copy_from_slice(&lie.to_be_bytes());
                    }
                }
            }
        }
        if rng.below(8) == 0 {
            bytes.truncate(rng.below(bytes.len() + 1));
        }
        let Ok(packet) = SctpPacket::parse(&bytes) else {
            refused += 1;
            continue;
        };
        let _ = packet.verify_checksum();
        if decode_all(&packet).is_err() {
            refused += 1;
            continue;
        }
        decoded += 1;
        let again = rebuild(&packet, rng.below(2) == 0);
        let again = SctpPacket::parse(&again).unwrap();
        again.verify_checksum().unwrap();
        assert_eq!(again.chunks().count(), packet.chunks().count());
        for (a, b) in again.chunks().zip(packet.chunks()) {
            assert_eq!(normalized(a.body().unwrap()), normalized(b.body().unwrap()));
        }
    }
    // Both outcomes are common: the mutations reach past the framing into the chunks' fields.
    assert!(
        refused > 30_000 && decoded > 30_000,
        "{refused} refused, {decoded} decoded"
    );
}

/// A chunk's values with what a re-build does not keep (flags that a type does not define,
/// which a sender sets to 0) taken out, and parameters and causes read as lists.
fn normalized(body: SctpChunkBody<'_>) -> String {
    match body {
        SctpChunkBody::Init(init) | SctpChunkBody::InitAck(init) => {
            format!("{:?} {:?}", init.fields, init.params.collect::<Vec<_>>())
        }
        SctpChunkBody::Abort {
            tag_reflected,
            causes,
        } => format!("abort {tag_reflected} {:?}", causes.collect::<Vec<_>>()),
        SctpChunkBody::Error { causes } => format!("error {:?}", causes.collect::<Vec<_>>()),
        other => format!("{other:?}"),
    }
}

/// A packet of one chunk of `chunk_type` with `value`, its length field then set to `length`
/// and the packet cut or extended to `packet_len` bytes (zeros).
fn lying(chunk_type: u8, value: &[u8], length: u16, packet_len: usize) -> Vec<u8> {
    let mut buf = [0; 256];
    let mut b = SctpPacketBuilder::new(&mut buf, 1, 2, 3).unwrap();
    b.push_raw(chunk_type, 0, value).unwrap();
    let mut bytes = b.finish().to_vec();
    bytes[14..16].copy_from_slice(&length.to_be_bytes());
    bytes.resize(packet_len, 0);
    bytes
}

/// Chunk-length lies give the typed errors of the framing (§3.2).
#[test]
fn chunk_length_lies() {
    use SctpPacketError::*;
    for length in 0..4 {
        assert_eq!(
            SctpPacket::parse(&lying(11, &[], length, 16)),
            Err(ChunkLengthTooSmall { offset: 12, length })
        );
    }
    assert_eq!(
        SctpPacket::parse(&lying(11, &[], 5, 16)),
        Err(ChunkPastEnd {
            offset: 12,
            length: 5,
            remaining: 4
        })
    );
    assert_eq!(
        SctpPacket::parse(&lying(10, &[0; 8], 0xffff, 24)),
        Err(ChunkPastEnd {
            offset: 12,
            length: 0xffff,
            remaining: 12
        })
    );
    // A cookie of 5 bytes: length 9, padded to 12; the packet ends after 1, 2 or 3 of them.
    for cut in 0..3 {
        assert_eq!(
            SctpPacket::parse(&lying(10, &[0; 5], 9, 12 + 9 + cut)),
            Err(ChunkPaddingMissing {
                offset: 12,
                length: 9
            })
        );
    }
    assert!(SctpPacket::parse(&lying(10, &[0; 5], 9, 24)).is_ok());
    // Stray bytes after the last chunk.
    for extra in 1..4 {
        assert_eq!(
            SctpPacket::parse(&lying(11, &[], 4, 16 + extra)),
            Err(ChunkHeaderTruncated { offset: 16 })
        );
    }
    assert_eq!(SctpPacket::parse(&[0; 11]), Err(TooShort { len: 11 }));
    // A lie in the second chunk names the second chunk.
    let mut two = lying(11, &[], 4, 16);
    two.extend_from_slice(&[8, 0, 0, 2]);
    assert_eq!(
        SctpPacket::parse(&two),
        Err(ChunkLengthTooSmall {
            offset: 16,
            length: 2
        })
    );
    for e in [
        ChunkLengthTooSmall {
            offset: 16,
            length: 2,
        },
        ChecksumMismatch {
            stored: 1,
            computed: 2,
        },
    ] {
        assert!(e.to_string().contains("RFC 4960"), "{e}");
    }
}

/// The body of the one chunk of `packet`.
fn body_of(packet: &[u8]) -> Result<SctpChunkBody<'_>, SctpPacketError> {
    SctpPacket::parse(packet)
        .unwrap()
        .chunks()
        .next()
        .unwrap()
        .body()
}

/// Lengths inside chunks: fixed fields that do not fit, SACK counts that disagree with the
/// length, parameter and error cause lengths that lie (§3.2.1, §3.3).
#[test]
fn value_length_lies() {
    use SctpPacketError::*;
    let wrong = |chunk_type: u8, length: u16| Err(ChunkValueLength { chunk_type, length });
    // DATA needs 12 bytes of fields, INIT 16, SHUTDOWN exactly 4, COOKIE ACK none.
    assert_eq!(body_of(&lying(0, &[0; 11], 15, 28)), wrong(0, 15));
    assert!(matches!(
        body_of(&lying(0, &[0; 12], 16, 28)),
        Ok(SctpChunkBody::Data(_))
    ));
    assert_eq!(body_of(&lying(1, &[0; 15], 19, 32)), wrong(1, 19));
    assert_eq!(body_of(&lying(2, &[0; 12], 16, 28)), wrong(2, 16));
    assert_eq!(body_of(&lying(7, &[0; 3], 7, 20)), wrong(7, 7));
    assert_eq!(body_of(&lying(7, &[0; 8], 12, 24)), wrong(7, 12));
    assert_eq!(body_of(&lying(11, &[0; 4], 8, 20)), wrong(11, 8));
    assert_eq!(body_of(&lying(8, &[0; 4], 8, 20)), wrong(8, 8));
    assert_eq!(body_of(&lying(14, &[0; 4], 8, 20)), wrong(14, 8));
    // SACK: 1 gap block and 1 duplicate TSN announced, 1 block's bytes there; and too few.
    let sack = [0, 0, 0, 1, 0, 0, 0, 2, 0, 1, 0, 1, 0, 1, 0, 2];
    assert_eq!(body_of(&lying(3, &sack, 20, 32)), wrong(3, 20));
    assert_eq!(body_of(&lying(3, &sack[..8], 12, 24)), wrong(3, 12));
    let mut sack_ok = sack.to_vec();
    sack_ok.extend_from_slice(&[0, 0, 0, 9]);
    assert!(matches!(
        body_of(&lying(3, &sack_ok, 24, 36)),
        Ok(SctpChunkBody::Sack(_))
    ));

    // INIT parameters: fields, then an IPv4 address parameter whose length lies.
    let init = |param: &[u8]| {
        let mut value = vec![0, 0, 0, 1, 0, 0, 1, 0, 0, 1, 0, 1, 0, 0, 0, 1];
        value.extend_from_slice(param);
        let len = value.len();
        lying(1, &value, 4 + len as u16, 12 + (4 + len).div_ceil(4) * 4)
    };
    fn first_param(packet: &[u8]) -> Result<InitParameter<'_>, SctpPacketError> {
        match body_of(packet) {
            Ok(SctpChunkBody::Init(mut init)) => init.params.next().unwrap(),
            other => panic!("not an INIT: {other:?}"),
        }
    }
    for length in [0u16, 3] {
        let mut param = vec![0, 5];
        param.extend_from_slice(&length.to_be_bytes());
        param.extend_from_slice(&[192, 0, 2, 1]);
        assert_eq!(
            first_param(&init(&param)),
            Err(ParameterLength {
                offset: 20,
                length,
                remaining: 8
            })
        );
    }
    assert_eq!(
        first_param(&init(&[0, 5, 0, 12, 192, 0, 2, 1])),
        Err(ParameterLength {
            offset: 20,
            length: 12,
            remaining: 8
        })
    );
    assert_eq!(
        first_param(&init(&[0, 5, 0, 8, 192, 0, 2, 1])),
        Ok(InitParameter::Ipv4Address([192, 0, 2, 1].into()))
    );
    // Wrong sizes for fixed-size parameters; half an address type.
    assert_eq!(
        first_param(&init(&[0, 5, 0, 7, 192, 0, 2, 0])),
        Err(ParameterValueLength {
            param_type: 5,
            length: 7
        })
    );
    assert_eq!(
        first_param(&init(&[0, 6, 0, 8, 0, 0, 0, 0])),
        Err(ParameterValueLength {
            param_type: 6,
            length: 8
        })
    );
    assert_eq!(
        first_param(&init(&[0, 9, 0, 6, 0, 0, 0, 0])),
        Err(ParameterValueLength {
            param_type: 9,
            length: 6
        })
    );
    assert_eq!(
        first_param(&init(&[0, 12, 0, 7, 0, 5, 0, 0])),
        Err(ParameterValueLength {
            param_type: 12,
            length: 7
        })
    );
    // A parameter of 6 bytes followed by another: its padding is cut by 1 byte.
    let mut params = init(&[0, 12, 0, 6, 0, 5, 0]);
    params.truncate(12 + 4 + 16 + 7);
    params[14..16].copy_from_slice(&27u16.to_be_bytes());
    params.resize(12 + 28, 0);
    let Ok(SctpChunkBody::Init(mut init_chunk)) = body_of(&params) else {
        panic!("not an INIT")
    };
    assert_eq!(
        init_chunk.params.next(),
        Some(Err(ParameterLength {
            offset: 20,
            length: 6,
            remaining: 7
        }))
    );
    assert_eq!(
        init_chunk.params.next(),
        None,
        "an error ends the iteration"
    );
    // Two stray bytes after the last parameter.
    assert_eq!(
        first_param(&init(&[0, 0xff])),
        Err(ParameterHeaderTruncated { offset: 20 })
    );

    // HEARTBEAT: one Heartbeat Info parameter (type 1), no other.
    assert_eq!(
        body_of(&lying(4, &[0, 2, 0, 5, 9], 9, 24)),
        Err(UnexpectedParameter {
            chunk_type: 4,
            param_type: 2
        })
    );
    assert_eq!(
        body_of(&lying(5, &[0, 1, 0, 4, 0, 7, 0, 4], 12, 24)),
        Err(UnexpectedParameter {
            chunk_type: 5,
            param_type: 7
        })
    );
    assert_eq!(
        body_of(&lying(4, &[0, 1, 0, 9, 9], 9, 24)),
        Err(ParameterLength {
            offset: 4,
            length: 9,
            remaining: 5
        })
    );
    assert_eq!(body_of(&lying(4, &[], 4, 16)), wrong(4, 4));
    assert_eq!(
        body_of(&lying(4, &[0, 1, 0, 5, 9], 9, 24)),
        Ok(SctpChunkBody::Heartbeat { info: &[9] })
    );

    // ABORT: an error cause whose length runs past the chunk.
    let abort = lying(6, &[0, 13, 0, 9, b'x', b'y', b'z', 0], 12, 24);
    let Ok(SctpChunkBody::Abort { mut causes, .. }) = body_of(&abort) else {
        panic!("not an ABORT")
    };
    assert_eq!(
        causes.next(),
        Some(Err(ParameterLength {
            offset: 4,
            length: 9,
            remaining: 8
        }))
    );
}

/// The builder refuses what does not fit and keeps what it has.
#[test]
fn builder_refusals() {
    let mut buf = [0; 20];
    let mut b = SctpPacketBuilder::new(&mut buf, 1, 2, 3).unwrap();
    b.push_shutdown(1).unwrap();
    assert_eq!(
        b.push_cookie_ack(),
        Err(SctpBuildError::NoRoom {
            needed: 4,
            available: 0
        })
    );
    let packet = b.finish();
    assert_eq!(packet.len(), 20);
    SctpPacket::parse(packet)
        .unwrap()
        .verify_checksum()
        .unwrap();
}
