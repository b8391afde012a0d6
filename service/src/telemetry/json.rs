//! The JSON log layer: one object per event, written straight into a reused byte buffer.
//!
//! The schema is the one documented in docs/observability.md#logs: `timestamp` (RFC 3339 UTC,
//! microseconds), `level`, `message`, the event's fields, `target`, and inside a request `span`
//! with the request's `name`, `trace_id`, `span_id`, `method` and `route` (from
//! [`super::context`], not from a tracing span). A general-purpose layer (json-subscriber, and
//! tracing-subscriber's before it) builds a map of `serde_json::Value`s per event and writes it
//! piece by piece through UTF-8-checked appends; for this one fixed schema that was most of what
//! a log line cost (docs/observability.md#overhead).

use std::{
    cell::{Cell, RefCell},
    fmt::{self, Write as _},
    io::Write as _,
    time::{SystemTime, UNIX_EPOCH},
};

use tracing::{
    Event, Level, Subscriber,
    field::{Field, Visit},
};
use tracing_log::NormalizeEvent as _;
use tracing_subscriber::{fmt::MakeWriter, layer::Context};

use super::{context, trace::hex_array};

/// Writes each event as one JSON line to `writer`.
pub struct JsonLayer<W> {
    writer: W,
}

impl<W> JsonLayer<W> {
    pub fn new(writer: W) -> Self {
        Self { writer }
    }
}

thread_local! {
    /// The line being built; reused, so a line costs no allocation once it has grown.
    static LINE: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(1024));
    /// `YYYY-MM-DDTHH:MM:SS` of the last second formatted on this thread.
    static SECOND: Cell<(u64, [u8; 19])> = const { Cell::new((u64::MAX, [0; 19])) };
}

impl<S, W> tracing_subscriber::Layer<S> for JsonLayer<W>
where
    S: Subscriber,
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn on_event(&self, event: &Event<'_>, _cx: Context<'_, S>) {
        let write = |line: &mut Vec<u8>| {
            line.clear();
            format_event(event, SystemTime::now(), line);
            let _ = self.writer.make_writer().write_all(line);
        };
        // A field whose `Debug` logs would find the buffer taken: give it a fresh one.
        LINE.with(|cell| match cell.try_borrow_mut() {
            Ok(mut line) => write(&mut line),
            Err(_) => write(&mut Vec::new()),
        });
    }
}

/// Appends `event` as one JSON object and a newline to `out`.
fn format_event(event: &Event<'_>, now: SystemTime, out: &mut Vec<u8>) {
    // Events from the `log` crate carry their real target and level in fields.
    let normalized = event.normalized_metadata();
    let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
    out.extend_from_slice(b"{\"timestamp\":\"");
    timestamp(now, out);
    out.extend_from_slice(b"\",\"level\":\"");
    out.extend_from_slice(level(*meta.level()).as_bytes());
    out.push(b'"');
    // The fields in the order they were written (a macro's message comes last).
    event.record(&mut Fields { out: &mut *out });
    out.extend_from_slice(b",\"target\":");
    string(meta.target(), out);
    context::with_current(|c| {
        out.extend_from_slice(b",\"span\":{\"name\":\"request\",\"trace_id\":\"");
        out.extend_from_slice(&hex_array::<16, 32>(&c.trace_id));
        out.extend_from_slice(b"\",\"span_id\":\"");
        out.extend_from_slice(&hex_array::<8, 16>(&c.span_id));
        out.extend_from_slice(b"\",\"method\":");
        string(c.method, out);
        out.extend_from_slice(b",\"route\":");
        string(&c.route, out);
        out.push(b'}');
    });
    out.extend_from_slice(b"}\n");
}

fn level(level: Level) -> &'static str {
    match level {
        Level::TRACE => "TRACE",
        Level::DEBUG => "DEBUG",
        Level::INFO => "INFO",
        Level::WARN => "WARN",
        Level::ERROR => "ERROR",
    }
}

/// Writes an event's fields as `,"name":value` pairs.
struct Fields<'a> {
    out: &'a mut Vec<u8>,
}

impl Fields<'_> {
    /// Writes `,"name":`, unless the field is `log` crate metadata (already in `target`).
    fn key(&mut self, field: &Field) -> bool {
        let name = field.name();
        if name.starts_with("log.") {
            return false;
        }
        self.out.push(b',');
        string(name.strip_prefix("r#").unwrap_or(name), self.out);
        self.out.push(b':');
        true
    }

    /// `value` as a JSON number through serde_json (itoa, ryu; non-finite floats become null).
    fn number(&mut self, field: &Field, value: impl serde::Serialize) {
        if self.key(field) && serde_json::to_writer(&mut *self.out, &value).is_err() {
            self.out.extend_from_slice(b"null");
        }
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.key(field) {
            string(value, self.out);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.key(field) {
            self.out.push(b'"');
            // `Display` values (`%x`, the message) arrive here too, as `Debug` of `Display`.
            let _ = write!(Escaped(self.out), "{value:?}");
            self.out.push(b'"');
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.number(field, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.number(field, value);
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.number(field, value);
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        self.number(field, value);
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.number(field, value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.key(field) {
            self.out
                .extend_from_slice(if value { b"true" } else { b"false" });
        }
    }
}

/// `s` as a JSON string, quotes included.
fn string(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    escape(s, out);
    out.push(b'"');
}

/// A `fmt::Write` that JSON-escapes what is written through it.
struct Escaped<'a>(&'a mut Vec<u8>);

impl fmt::Write for Escaped<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        escape(s, self.0);
        Ok(())
    }
}

/// Appends `s` JSON-escaped (RFC 8259: quote, backslash and control characters), copying the
/// runs between escapes in one go. Eight bytes are checked at a time: escaping was the largest
/// part of formatting a line when done byte by byte.
fn escape(s: &str, out: &mut Vec<u8>) {
    let bytes = s.as_bytes();
    let mut start = 0;
    for (n, chunk) in bytes.chunks(8).enumerate() {
        // A short last chunk is padded with spaces, which need no escaping.
        let mut word = [b' '; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        if !needs_escape(u64::from_le_bytes(word)) {
            continue;
        }
        for (j, &b) in chunk.iter().enumerate() {
            if let Some((escaped, len)) = escape_byte(b) {
                let at = n * 8 + j;
                out.extend_from_slice(&bytes[start..at]);
                out.extend_from_slice(&escaped[..len]);
                start = at + 1;
            }
        }
    }
    out.extend_from_slice(&bytes[start..]);
}

/// Whether any of the eight bytes of `word` is a control character, `"` or `\` (the classic
/// "has a zero byte" test; it can flag a byte after a real hit, never one without a hit).
fn needs_escape(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero_byte = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let control = word.wrapping_sub(ONES * 0x20) & !word & HIGH;
    let quote = zero_byte(word ^ (ONES * u64::from(b'"')));
    let backslash = zero_byte(word ^ (ONES * u64::from(b'\\')));
    control | quote | backslash != 0
}

/// The escape sequence for `b`, if it needs one, and its length.
fn escape_byte(b: u8) -> Option<([u8; 6], usize)> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let short = match b {
        b'"' => b'"',
        b'\\' => b'\\',
        b'\n' => b'n',
        b'\r' => b'r',
        b'\t' => b't',
        0x08 => b'b',
        0x0c => b'f',
        0x00..=0x1f => {
            let hex = [HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]];
            return Some(([b'\\', b'u', b'0', b'0', hex[0], hex[1]], 6));
        }
        _ => return None,
    };
    Some(([b'\\', short, 0, 0, 0, 0], 2))
}

/// `now` as `2026-11-28T13:56:28.147153Z`; the date and time of day are formatted once per
/// second and thread.
fn timestamp(now: SystemTime, out: &mut Vec<u8>) {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (cached, mut text) = SECOND.get();
    if cached != secs {
        let t = time::OffsetDateTime::from_unix_timestamp(i64::try_from(secs).unwrap_or(0))
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        let mut s = String::with_capacity(19);
        let _ = write!(
            s,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        );
        if let Ok(bytes) = s.as_bytes().try_into() {
            text = bytes;
            SECOND.set((secs, text));
        }
    }
    out.extend_from_slice(&text);
    let mut micros = since.subsec_micros();
    let mut digits = [b'0'; 6];
    for d in digits.iter_mut().rev() {
        *d = b'0' + (micros % 10) as u8;
        micros /= 10;
    }
    out.push(b'.');
    out.extend_from_slice(&digits);
    out.push(b'Z');
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;
    use serde_json::{Value, json};
    use tracing_subscriber::prelude::*;

    use super::*;
    use crate::telemetry::{context::RequestContext, writer::tests::Sink};

    /// Every line the layer wrote, parsed.
    fn lines(sink: &Sink) -> Vec<Value> {
        sink.text()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    fn capture(f: impl FnOnce()) -> Vec<Value> {
        let sink = Sink::default();
        let writer = sink.clone();
        let subscriber =
            tracing_subscriber::registry().with(JsonLayer::new(move || writer.clone()));
        tracing::subscriber::with_default(subscriber, f);
        lines(&sink)
    }

    #[test]
    fn an_event_has_the_documented_fields_and_value_types() {
        let err = std::io::Error::other("disk \"full\"");
        let lines = capture(|| {
            tracing::warn!(
                status = 503_u16,
                delta = -4_i64,
                duration_ms = 1.25,
                ok = true,
                nan = f64::NAN,
                path = "/v1/items",
                client = %"127.0.0.1:80",
                error = %err,
                debugged = ?Some("x"),
                r#type = "raw",
                "done in {}\tms",
                3
            );
        });
        let v = &lines[0];
        assert_eq!(v["level"], "WARN");
        assert_eq!(v["message"], "done in 3\tms");
        assert_eq!(v["target"], module_path!());
        assert_eq!(v["status"], 503);
        assert_eq!(v["delta"], -4);
        assert_eq!(v["duration_ms"], 1.25);
        assert_eq!(v["ok"], true);
        assert_eq!(v["nan"], Value::Null);
        assert_eq!(v["path"], "/v1/items");
        assert_eq!(v["client"], "127.0.0.1:80");
        assert_eq!(v["error"], "disk \"full\"");
        assert_eq!(v["debugged"], "Some(\"x\")");
        assert_eq!(v["type"], "raw");
        assert!(v.get("span").is_none(), "no request, no span: {v}");
        let ts = v["timestamp"].as_str().unwrap();
        assert!(
            time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339).is_ok(),
            "{ts}"
        );
        assert_eq!(ts.len(), "2026-11-28T13:56:28.147153Z".len(), "{ts}");
    }

    #[tokio::test]
    async fn events_inside_a_request_carry_its_context() {
        let ctx = RequestContext {
            trace_id: [0xab; 16],
            span_id: [0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef],
            method: "POST",
            route: "/v1/items/{id}".into(),
            exported: false,
        };
        let sink = Sink::default();
        let writer = sink.clone();
        let subscriber =
            tracing_subscriber::registry().with(JsonLayer::new(move || writer.clone()));
        let _guard = tracing::subscriber::set_default(subscriber);
        ctx.scope(async { tracing::info!(status = 201_u16, "request completed") })
            .await;
        tracing::info!("after");
        let lines = lines(&sink);
        assert_eq!(
            lines[0]["span"],
            json!({"name": "request", "trace_id": "ab".repeat(16), "span_id": "0123456789abcdef",
                   "method": "POST", "route": "/v1/items/{id}"})
        );
        assert!(lines[1].get("span").is_none());
    }

    #[test]
    fn timestamps_match_rfc3339_formatting_across_seconds() {
        let format = time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
        );
        // Same second twice (the cache), the next second, and far apart.
        for offset in [0, 0, 1, 86_399, 31_536_000 * 3 + 17] {
            for micros in [0, 7, 999_999] {
                let t = UNIX_EPOCH
                    + Duration::from_secs(1_795_000_000 + offset)
                    + Duration::from_micros(micros);
                let mut out = Vec::new();
                timestamp(t, &mut out);
                let expected = time::OffsetDateTime::from(t).format(format).unwrap();
                assert_eq!(String::from_utf8(out).unwrap(), expected);
            }
        }
    }

    fn round_trips(s: &str) -> Result<(), TestCaseError> {
        let mut out = Vec::new();
        string(s, &mut out);
        let back: String = serde_json::from_slice(&out).map_err(|e| {
            TestCaseError::fail(format!("{e}: {:?}", String::from_utf8_lossy(&out)))
        })?;
        prop_assert_eq!(back, s);
        Ok(())
    }

    #[test]
    fn every_byte_that_needs_escaping_is_escaped_at_every_position() {
        for b in (0u8..0x20).chain([b'"', b'\\', b'a', 0x7f]) {
            for pos in 0..20 {
                let mut s = "x".repeat(20);
                s.insert(pos, char::from(b));
                round_trips(&s).unwrap();
            }
        }
    }

    proptest! {
        #[test]
        fn any_string_round_trips_through_the_escaping(s in any::<String>()) {
            round_trips(&s)?;
        }

        #[test]
        fn strings_dense_with_escapes_round_trip(
            chars in prop::collection::vec(
                prop::sample::select(vec!['a', '"', '\\', '\n', '\u{0}', '\u{1f}', '\u{7f}', 'é', '€', '😀', ' ']),
                0..64,
            )
        ) {
            round_trips(&chars.into_iter().collect::<String>())?;
        }
    }
}
