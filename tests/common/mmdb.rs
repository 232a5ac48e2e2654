//! A minimal MaxMind DB writer (format 2.0, as published at
//! maxmind.github.io/MaxMind-DB): an IPv4 database with 24-bit records mapping networks to
//! `{"country": {"iso_code": CODE}}`, the part of a GeoLite2 Country record berth reads.
//! Tests build their GeoIP database with it, as real ones cannot be fetched here.

use std::net::Ipv4Addr;

#[derive(Clone, Copy)]
enum Record {
    Empty,
    Node(usize),
    Data(usize),
}

/// A database where each `(network, prefix length, country code)` maps to its country
/// (networks must not overlap; prefix lengths 1 to 32).
pub fn country_db(networks: &[(Ipv4Addr, u8, &str)]) -> Vec<u8> {
    let mut nodes: Vec<[Record; 2]> = vec![[Record::Empty; 2]];
    let mut data = Vec::new();
    for (network, prefix, code) in networks {
        assert!((1..=32).contains(prefix), "prefix {prefix}");
        let offset = data.len();
        data.extend(country_record(code));
        let bits = u32::from(*network);
        let mut node = 0;
        for depth in 0..*prefix {
            let bit = ((bits >> (31 - depth)) & 1) as usize;
            if depth + 1 == *prefix {
                nodes[node][bit] = Record::Data(offset);
                break;
            }
            node = match nodes[node][bit] {
                Record::Node(next) => next,
                _ => {
                    nodes.push([Record::Empty; 2]);
                    let next = nodes.len() - 1;
                    nodes[node][bit] = Record::Node(next);
                    next
                }
            };
        }
    }
    let count = nodes.len();
    let mut out = Vec::new();
    for node in &nodes {
        for record in node {
            let value = match *record {
                Record::Empty => count,
                Record::Node(n) => n,
                Record::Data(offset) => count + 16 + offset,
            };
            assert!(value < 1 << 24);
            out.extend_from_slice(&(value as u32).to_be_bytes()[1..]);
        }
    }
    out.extend_from_slice(&[0; 16]);
    out.extend(data);
    out.extend_from_slice(b"\xAB\xCD\xEFMaxMind.com");
    out.extend(control(7, 9));
    for (key, value) in [
        ("binary_format_major_version", uint(5, 2)),
        ("binary_format_minor_version", uint(5, 0)),
        ("build_epoch", uint(9, 1_750_000_000)),
        ("database_type", string("Berth-Test-Country")),
        (
            "description",
            [control(7, 1), string("en"), string("berth test database")].concat(),
        ),
        ("ip_version", uint(5, 4)),
        ("languages", [control(11, 1), string("en")].concat()),
        ("node_count", uint(6, count as u64)),
        ("record_size", uint(5, 24)),
    ] {
        out.extend(string(key));
        out.extend(value);
    }
    out
}

/// `{"country": {"iso_code": code}}`.
fn country_record(code: &str) -> Vec<u8> {
    [
        control(7, 1),
        string("country"),
        control(7, 1),
        string("iso_code"),
        string(code),
    ]
    .concat()
}

/// A field's control byte(s): its type (extended types, above 7, in a second byte) and
/// its size (below 29).
fn control(kind: u8, size: usize) -> Vec<u8> {
    assert!(size < 29);
    if kind <= 7 {
        vec![kind << 5 | size as u8]
    } else {
        vec![size as u8, kind - 7]
    }
}

fn string(s: &str) -> Vec<u8> {
    [control(2, s.len()), s.as_bytes().to_vec()].concat()
}

/// An unsigned integer of type `kind` (5: uint16, 6: uint32, 9: uint64), big-endian
/// without leading zero bytes.
fn uint(kind: u8, n: u64) -> Vec<u8> {
    let bytes = n.to_be_bytes();
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(8);
    [control(kind, 8 - first), bytes[first..].to_vec()].concat()
}
