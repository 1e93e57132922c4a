//! Log lines as Lambda and CloudWatch read them: one flat JSON object per
//! event, with `timestamp`, `level`, `message` and the invocation's
//! `requestId` at the top level — the fields Lambda's JSON log format,
//! Logs Insights' usual queries and Powertools use — plus `service` and
//! `cold_start`, then the event's own fields. No line is longer than
//! 4,000 characters: a longer value is cut.

use std::fmt;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};
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

#[derive(Default)]
struct Fields(Map<String, Value>);

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().into(), Value::String(value.into()));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), Value::Bool(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), Value::String(format!("{value:?}")));
    }
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

/// `value` cut to `CUT_VALUE` characters when it is a long string.
fn cut(value: &mut Value) {
    if let Value::String(text) = value {
        if text.chars().count() > CUT_VALUE {
            let mut short: String = text.chars().take(CUT_VALUE).collect();
            short.push('…');
            *text = short;
        }
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
        let mut fields = fields.0;
        // The runtime's span ("Lambda runtime invoke") carries requestId
        // (and xrayTraceId), formatted as JSON by the JSON field formatter.
        let mut span_fields = Map::new();
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                if let Some(formatted) = span.extensions().get::<FormattedFields<N>>() {
                    if let Ok(Value::Object(map)) = serde_json::from_str(&formatted.fields) {
                        span_fields.extend(map);
                    }
                }
            }
        }
        let mut line = Map::new();
        line.insert("timestamp".into(), Value::String(timestamp()));
        line.insert(
            "level".into(),
            Value::String(event.metadata().level().as_str().into()),
        );
        line.insert(
            "message".into(),
            fields
                .remove("message")
                .unwrap_or(Value::String(String::new())),
        );
        if let Some(Value::String(request_id)) = span_fields.remove("requestId") {
            let first = FIRST_REQUEST.get_or_init(|| request_id.clone());
            line.insert("cold_start".into(), Value::Bool(*first == request_id));
            line.insert("requestId".into(), Value::String(request_id));
        }
        line.insert("service".into(), Value::String(self.service.clone()));
        if let Some(trace) = span_fields.remove("xrayTraceId") {
            line.insert("xrayTraceId".into(), trace);
        }
        for (name, value) in fields {
            line.entry(name).or_insert(value);
        }
        let mut text = Value::Object(line.clone()).to_string();
        if text.len() > MAX_LINE {
            for value in line.values_mut() {
                cut(value);
            }
            text = Value::Object(line).to_string();
            if text.len() > MAX_LINE {
                // Still too long (many fields): say so, in a line that fits.
                text = format!(
                    "{{\"level\":\"{}\",\"message\":\"a log line over {MAX_LINE} characters was dropped\",\"service\":{}}}",
                    event.metadata().level().as_str(),
                    Value::String(self.service.clone())
                );
            }
        }
        writeln!(writer, "{text}")
    }
}
