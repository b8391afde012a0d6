//! Trace context: W3C `traceparent` parsing and fresh trace and span ids.

use std::cell::Cell;

use uuid::Uuid;

/// The trace a request belongs to and the id of the server span that handles it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// The caller's span, when the request carried a valid `traceparent`.
    pub parent_span_id: Option<[u8; 8]>,
    pub sampled: bool,
}

/// A parsed, valid `traceparent` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub parent_id: [u8; 8],
    pub flags: u8,
}

impl TraceContext {
    /// Continues `parent`'s trace with a new span, or starts a new sampled trace.
    pub fn new(parent: Option<TraceParent>) -> Self {
        let span_id = random_id::<8>();
        match parent {
            Some(p) => Self {
                trace_id: p.trace_id,
                span_id,
                parent_span_id: Some(p.parent_id),
                sampled: p.flags & 1 == 1,
            },
            None => Self {
                trace_id: random_id::<16>(),
                span_id,
                parent_span_id: None,
                sampled: true,
            },
        }
    }

    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }

    pub fn span_id_hex(&self) -> String {
        hex(&self.span_id)
    }

    /// The trace id as 32 lower-case hex digits, on the stack (the `X-Trace-ID` value).
    pub fn trace_id_hex_bytes(&self) -> [u8; 32] {
        hex_array(&self.trace_id)
    }

    /// The `traceparent` value naming this server span as the parent,
    /// `00-{trace id}-{span id}-{flags}`, on the stack.
    pub fn traceparent_bytes(&self) -> [u8; 55] {
        let mut out = [b'-'; 55];
        out[..2].copy_from_slice(b"00");
        out[3..35].copy_from_slice(&self.trace_id_hex_bytes());
        out[36..52].copy_from_slice(&hex_array::<8, 16>(&self.span_id));
        out[53..].copy_from_slice(if self.sampled { b"01" } else { b"00" });
        out
    }

    /// [`Self::traceparent_bytes`] as a string (the tests' form; the service sends the bytes).
    #[cfg(test)]
    pub fn traceparent(&self) -> String {
        String::from_utf8_lossy(&self.traceparent_bytes()).into_owned()
    }
}

/// The trace id of the request being served by this task, if any.
pub fn current_trace_id() -> Option<String> {
    super::context::with_current(|c| hex(&c.trace_id))
}

fn hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

/// `bytes` in lower-case hex into an array of twice their length (`M` = 2 `N` at every call,
/// which is all `encode_to_slice` checks; the tests compare with [`hex`]).
pub(crate) fn hex_array<const N: usize, const M: usize>(bytes: &[u8; N]) -> [u8; M] {
    let mut out = [b'0'; M];
    let _ = hex::encode_to_slice(bytes, &mut out);
    out
}

thread_local! {
    /// SplitMix64 state, seeded once per thread from the OS (a `getrandom` call per id cost two
    /// system calls per request). Trace and span ids must be unique and well spread, not secret.
    static RNG: Cell<u64> = Cell::new(u64::from_le_bytes(
        Uuid::new_v4().as_bytes()[..8].try_into().unwrap_or([0x5e; 8]),
    ));
}

fn next_u64() -> u64 {
    RNG.with(|state| {
        let mut z = state.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        state.set(z);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    })
}

/// A random id of N bytes (8 or 16), never all zero (which W3C Trace Context forbids).
fn random_id<const N: usize>() -> [u8; N] {
    let mut id = [0u8; N];
    for chunk in id.chunks_mut(8) {
        let n = chunk.len();
        chunk.copy_from_slice(&next_u64().to_le_bytes()[..n]);
    }
    if id.iter().all(|b| *b == 0) {
        id[N - 1] = 1;
    }
    id
}

fn lower_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != N * 2
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let mut out = [0u8; N];
    for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
        let pair = std::str::from_utf8(chunk).ok()?;
        out[i] = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

/// Parses a W3C Trace Context `traceparent` header; anything invalid is `None`.
///
/// Version `00` must be exactly 55 characters; later versions may append `-` fields, which are
/// ignored. Version `ff`, all-zero trace or parent ids and upper-case hex are invalid.
pub fn parse_traceparent(value: &str) -> Option<TraceParent> {
    if value.len() < 55 || !value.is_ascii() {
        return None;
    }
    let version = &value[0..2];
    let v = lower_hex::<1>(version)?[0];
    if v == 0xff
        || (v == 0 && value.len() != 55)
        || (value.len() > 55 && value.as_bytes()[55] != b'-')
    {
        return None;
    }
    let b = value.as_bytes();
    if b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
        return None;
    }
    let trace_id = lower_hex::<16>(&value[3..35])?;
    let parent_id = lower_hex::<8>(&value[36..52])?;
    let flags = lower_hex::<1>(&value[53..55])?[0];
    if trace_id == [0; 16] || parent_id == [0; 8] {
        return None;
    }
    Some(TraceParent {
        trace_id,
        parent_id,
        flags,
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_the_spec_example() {
        let p = parse_traceparent(VALID).unwrap();
        assert_eq!(hex(&p.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex(&p.parent_id), "00f067aa0ba902b7");
        assert_eq!(p.flags, 1);
        let ctx = TraceContext::new(Some(p));
        assert_eq!(ctx.trace_id, p.trace_id);
        assert!(
            ctx.traceparent()
                .starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-")
        );
        assert_eq!(
            parse_traceparent(&ctx.traceparent()).unwrap().trace_id,
            p.trace_id
        );
    }

    #[test]
    fn rejects_invalid_headers() {
        for bad in [
            "",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", // upper case
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01", // zero trace id
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", // zero parent id
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", // forbidden version
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", // v00 too long
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad}");
        }
        assert!(
            parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future")
                .is_some()
        );
    }

    #[test]
    fn new_traces_are_random_and_valid() {
        let a = TraceContext::new(None);
        let b = TraceContext::new(None);
        assert_ne!(a.trace_id, b.trace_id);
        assert!(parse_traceparent(&a.traceparent()).is_some());
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,80}") {
            let _ = parse_traceparent(&s);
        }

        /// The stack forms of the header values are the formatted ones, and parse back.
        #[test]
        fn header_bytes_match_the_formatted_values(
            trace_id in any::<[u8; 16]>(), span_id in any::<[u8; 8]>(), sampled in any::<bool>(),
        ) {
            let ctx = TraceContext { trace_id, span_id, parent_span_id: None, sampled };
            let trace_hex = hex(&trace_id);
            prop_assert_eq!(&ctx.trace_id_hex_bytes()[..], trace_hex.as_bytes());
            let formatted = format!("00-{}-{}-0{}", hex(&trace_id), hex(&span_id), u8::from(sampled));
            prop_assert_eq!(&ctx.traceparent_bytes()[..], formatted.as_bytes());
            if trace_id != [0; 16] && span_id != [0; 8] {
                let back = parse_traceparent(&ctx.traceparent()).unwrap();
                prop_assert_eq!((back.trace_id, back.parent_id, back.flags & 1 == 1), (trace_id, span_id, sampled));
            }
        }

        #[test]
        fn round_trips(trace in any::<[u8; 16]>(), parent in any::<[u8; 8]>(), flags in any::<u8>()) {
            prop_assume!(trace != [0; 16] && parent != [0; 8]);
            let header = format!("00-{}-{}-{:02x}", hex(&trace), hex(&parent), flags);
            let p = parse_traceparent(&header).unwrap();
            prop_assert_eq!((p.trace_id, p.parent_id, p.flags), (trace, parent, flags));
        }
    }
}
