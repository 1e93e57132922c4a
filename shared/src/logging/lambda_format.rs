//! Log lines as Lambda and CloudWatch read them: one flat JSON object per
//! event, with `timestamp`, `level`, `message` and the invocation's
//! `requestId` at the top level — the fields Lambda's JSON log format,
//! Logs Insights' usual queries and Powertools use — plus `service` and
//! `cold_start`, then the event's own fields. No line is longer than
//! 4,000 characters: a longer value is cut.

use std::borrow::Cow;
use std::fmt;
use std::fmt::Write as _;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// The longest log line (DESIGN §5).
pub(crate) const MAX_LINE: usize = 4_000;
/// What a value is cut to when a line would be longer.
const CUT_VALUE: usize = 200;

/// The event formatter; `service` names the function.
pub(crate) struct LambdaJson {
    pub service: String,
}

/// The first invocation this process served: its lines are the cold start's.
static FIRST_REQUEST: OnceLock<String> = OnceLock::new();

/// One field's value as the event recorded it.
enum FieldValue {
    Text(String),
    Bool(bool),
    I64(i64),
    U64(u64),
    F64(f64),
}

/// The event's fields in the order it names them, its message apart. The
/// line is written from these directly: no JSON map is built per event.
#[derive(Default)]
struct Fields {
    message: String,
    others: Vec<(&'static str, FieldValue)>,
}

impl Fields {
    fn push(&mut self, field: &Field, value: FieldValue) {
        match (field.name(), value) {
            ("message", FieldValue::Text(text)) => self.message = text,
            (name, value) => self.others.push((name, value)),
        }
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.push(field, FieldValue::Text(value.into()));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.push(field, FieldValue::Bool(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.push(field, FieldValue::I64(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.push(field, FieldValue::U64(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.push(field, FieldValue::F64(value));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.push(field, FieldValue::Text(format!("{value:?}")));
    }
}

/// What the runtime's span ("Lambda runtime invoke") carries, as the JSON
/// field formatter wrote it.
#[derive(Deserialize)]
struct InvokeSpan<'a> {
    #[serde(rename = "requestId", borrow, default)]
    request_id: Option<Cow<'a, str>>,
    #[serde(rename = "xrayTraceId", borrow, default)]
    xray_trace_id: Option<Cow<'a, str>>,
}

/// Now, as `2026-11-30T09:20:00.123Z`.
fn timestamp() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let seconds = crate::time::iso_utc(now.as_secs() as i64);
    format!(
        "{}.{:03}Z",
        seconds.trim_end_matches('Z'),
        now.subsec_millis()
    )
}

/// `text` as a JSON string, cut to `limit` characters (with `…`) when given.
fn push_json_string(out: &mut String, text: &str, limit: Option<usize>) {
    out.push('"');
    for (count, c) in text.chars().enumerate() {
        if limit.is_some_and(|limit| count == limit) {
            out.push('…');
            break;
        }
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// One line: the standard fields first, then the event's own (a field named
/// like a standard one is left out); strings cut to `limit` when given.
struct Line<'a> {
    timestamp: &'a str,
    level: &'a str,
    message: &'a str,
    request: Option<(&'a str, bool)>,
    service: &'a str,
    xray_trace_id: Option<&'a str>,
    fields: &'a [(&'static str, FieldValue)],
}

impl Line<'_> {
    fn write(&self, limit: Option<usize>) -> String {
        let mut out = String::with_capacity(256);
        let mut taken: Vec<&'static str> = Vec::with_capacity(7);
        let key = |out: &mut String, taken: &mut Vec<&'static str>, name: &'static str| {
            out.push_str(if taken.is_empty() { "{\"" } else { ",\"" });
            out.push_str(name);
            out.push_str("\":");
            taken.push(name);
        };
        key(&mut out, &mut taken, "timestamp");
        push_json_string(&mut out, self.timestamp, limit);
        key(&mut out, &mut taken, "level");
        push_json_string(&mut out, self.level, limit);
        key(&mut out, &mut taken, "message");
        push_json_string(&mut out, self.message, limit);
        if let Some((request_id, cold)) = self.request {
            key(&mut out, &mut taken, "cold_start");
            out.push_str(if cold { "true" } else { "false" });
            key(&mut out, &mut taken, "requestId");
            push_json_string(&mut out, request_id, limit);
        }
        key(&mut out, &mut taken, "service");
        push_json_string(&mut out, self.service, limit);
        if let Some(trace) = self.xray_trace_id {
            key(&mut out, &mut taken, "xrayTraceId");
            push_json_string(&mut out, trace, limit);
        }
        for (name, value) in self.fields {
            if taken.contains(name) {
                continue;
            }
            key(&mut out, &mut taken, name);
            match value {
                FieldValue::Text(text) => push_json_string(&mut out, text, limit),
                FieldValue::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
                FieldValue::I64(n) => {
                    let _ = write!(out, "{n}");
                }
                FieldValue::U64(n) => {
                    let _ = write!(out, "{n}");
                }
                FieldValue::F64(n) if n.is_finite() => {
                    let _ = write!(out, "{n}");
                }
                FieldValue::F64(_) => out.push_str("null"),
            }
        }
        out.push('}');
        out
    }
}

impl<S, N> FormatEvent<S, N> for LambdaJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        // The runtime's span carries requestId (and xrayTraceId), formatted
        // as JSON by the JSON field formatter; the innermost span wins.
        let mut request_id: Option<String> = None;
        let mut xray_trace_id: Option<String> = None;
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                if let Some(formatted) = span.extensions().get::<FormattedFields<N>>() {
                    if let Ok(invoke) = serde_json::from_str::<InvokeSpan>(&formatted.fields) {
                        if let Some(id) = invoke.request_id {
                            request_id = Some(id.into_owned());
                        }
                        if let Some(trace) = invoke.xray_trace_id {
                            xray_trace_id = Some(trace.into_owned());
                        }
                    }
                }
            }
        }
        let timestamp = timestamp();
        let line = Line {
            timestamp: &timestamp,
            level: event.metadata().level().as_str(),
            message: &fields.message,
            request: request_id.as_deref().map(|id| {
                let first = FIRST_REQUEST.get_or_init(|| id.to_string());
                (id, first == id)
            }),
            service: &self.service,
            xray_trace_id: xray_trace_id.as_deref(),
            fields: &fields.others,
        };
        let mut text = line.write(None);
        if text.len() > MAX_LINE {
            text = line.write(Some(CUT_VALUE));
            if text.len() > MAX_LINE {
                // Still too long (many fields): say so, in a line that fits.
                let mut service = String::new();
                push_json_string(&mut service, &self.service, Some(CUT_VALUE));
                text = format!(
                    "{{\"level\":\"{}\",\"message\":\"a log line over {MAX_LINE} characters was dropped\",\"service\":{service}}}",
                    event.metadata().level().as_str(),
                );
            }
        }
        writeln!(writer, "{text}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(message: &'a str, fields: &'a [(&'static str, FieldValue)]) -> Line<'a> {
        Line {
            timestamp: "2026-12-04T05:00:00.000Z",
            level: "INFO",
            message,
            request: Some(("req-1", true)),
            service: "didomi-to-dynamics",
            xray_trace_id: None,
            fields,
        }
    }

    #[test]
    fn a_line_is_the_json_object_lambda_reads_in_its_order() {
        let fields = [
            ("outcome", FieldValue::Text("updated".into())),
            ("duration_ms", FieldValue::U64(7)),
            ("delta", FieldValue::I64(-2)),
            ("ratio", FieldValue::F64(0.5)),
            ("nan", FieldValue::F64(f64::NAN)),
            ("truncated", FieldValue::Bool(false)),
            ("service", FieldValue::Text("spoofed".into())),
            ("odd", FieldValue::Text("a\"b\\c\n\u{1}é".into())),
        ];
        let text = line("delivery handled", &fields).write(None);
        assert_eq!(
            text,
            "{\"timestamp\":\"2026-12-04T05:00:00.000Z\",\"level\":\"INFO\",\"message\":\"delivery handled\",\"cold_start\":true,\"requestId\":\"req-1\",\"service\":\"didomi-to-dynamics\",\"outcome\":\"updated\",\"duration_ms\":7,\"delta\":-2,\"ratio\":0.5,\"nan\":null,\"truncated\":false,\"odd\":\"a\\\"b\\\\c\\n\\u0001é\"}"
        );
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed["odd"], "a\"b\\c\n\u{1}é");
        assert_eq!(parsed["service"], "didomi-to-dynamics");
    }

    #[test]
    fn long_values_are_cut_to_keep_the_line_bounded() {
        let long = "x".repeat(10_000);
        let fields = [("error", FieldValue::Text(long.clone()))];
        let line = line(&long, &fields);
        let cut = line.write(Some(CUT_VALUE));
        assert!(cut.len() < MAX_LINE, "{}", cut.len());
        let parsed: serde_json::Value = serde_json::from_str(&cut).unwrap();
        assert_eq!(
            parsed["error"].as_str().unwrap().chars().count(),
            CUT_VALUE + 1
        );
        assert!(parsed["message"].as_str().unwrap().ends_with('…'));
    }
}
