//! Helpers shared by the codec's integration tests.
#![allow(dead_code)] // each test binary uses its own subset

/// Hex string (whitespace ignored) to bytes.
pub fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    assert!(digits.len().is_multiple_of(2), "odd number of hex digits");
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

/// One message of the RSPLIB corpus.
pub struct CorpusMessage {
    /// Frame number in the capture.
    pub frame: u32,
    /// `asap`, `enrp` or `csp`.
    pub protocol: String,
    /// `sctp` or `udp`.
    pub transport: String,
    /// The message bytes.
    pub bytes: Vec<u8>,
}

/// Every message of `tests/data/rsplib-messages.txt` (a copy of `shared/corpus/`).
pub fn corpus() -> Vec<CorpusMessage> {
    let text = include_str!("../data/rsplib-messages.txt");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f.len(), 4, "bad corpus line {l}");
            CorpusMessage {
                frame: f[0].parse().unwrap(),
                protocol: f[1].to_string(),
                transport: f[2].to_string(),
                bytes: hex(f[3]),
            }
        })
        .collect()
}
