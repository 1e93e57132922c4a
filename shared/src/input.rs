//! Bounds on what callers send (DESIGN §5): input no system could accept is
//! the request's fault, refused where it enters; a caller's value is quoted
//! back in an answer cut to 64 characters, and reaches a log line only when
//! it is one the function knows — anything else is described, not copied.

/// The longest value a Dataverse text column holds, and so the longest
/// `organization_user_id` that can match a contact.
pub const MAX_KEY_CHARS: usize = 4_000;
/// The most of a caller's value an answer quotes back.
pub(crate) const MAX_QUOTED_CHARS: usize = 64;

/// Didomi's delivery types.
pub(crate) const DELIVERY_TYPES: &[&str] = &[
    "event.created",
    "event.updated",
    "event.deleted",
    "user.created",
    "user.updated",
    "user.deleted",
];
/// Didomi's consent event statuses.
pub(crate) const EVENT_STATUSES: &[&str] = &["confirmed", "pending_approval"];
/// Regulations Didomi names in events.
pub(crate) const REGULATIONS: &[&str] = &[
    "gdpr", "ccpa", "cpra", "lgpd", "pipeda", "pipl", "appi", "pdpa", "popia", "kvkk", "vcdpa",
    "cpa", "ctdpa", "ucpa", "tdpsa", "ocpa", "mcdpa", "fdbr", "nhpa", "njdpa", "dpdpa", "none",
];
/// Dataverse messages a webhook step can fire for.
pub(crate) const MESSAGES: &[&str] = &[
    "Create",
    "Update",
    "Delete",
    "Assign",
    "SetState",
    "SetStateDynamicEntity",
    "Merge",
    "Associate",
    "Disassociate",
    "Retrieve",
    "RetrieveMultiple",
    "Upsert",
];
/// The tables consent-sync registers steps on.
pub const TABLES: &[&str] = &["contact", CONSENT_RECORD_TABLE];
/// Customer Insights – Journeys' Contact Point Consent table (DESIGN §11).
pub const CONSENT_RECORD_TABLE: &str = "msdynmkt_contactpointconsent4";

/// A caller's value quoted for an answer: JSON-escaped, at most 64
/// characters of it, with `…` when cut.
pub(crate) fn quoted(value: &str) -> String {
    let mut cut: String = value.chars().take(MAX_QUOTED_CHARS).collect();
    if cut.len() < value.len() {
        cut.push('…');
    }
    format!("{cut:?}")
}

/// `text` with every quoted part (`"…"` or `` `…` ``) cut to 64
/// characters, as serde's messages quote the offending value whole.
pub(crate) fn cut_quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(1_024));
    let mut quoted: Option<usize> = None;
    let mut quote = '"';
    let mut escaped = false;
    for c in text.chars() {
        match quoted {
            None => {
                out.push(c);
                if c == '"' || c == '`' {
                    quote = c;
                    quoted = Some(0);
                }
            }
            Some(n) => {
                let closing = c == quote && !escaped;
                escaped = c == '\\' && !escaped;
                if closing {
                    if n > MAX_QUOTED_CHARS {
                        out.push('…');
                    }
                    out.push(c);
                    quoted = None;
                } else {
                    if n < MAX_QUOTED_CHARS {
                        out.push(c);
                    }
                    quoted = Some(n + 1);
                }
            }
        }
    }
    out
}

/// A caller's value for a sentence in an answer or a log line: itself,
/// quoted, when it is one of `known`; otherwise only its length.
pub fn shown(value: &str, known: &[&str], what: &str) -> String {
    if known.contains(&value) {
        format!("{value:?}")
    } else {
        described(value, what)
    }
}

/// A caller's value for a log field: itself when it is one of `known`,
/// otherwise only its length.
pub fn logged(value: &str, known: &[&str], what: &str) -> String {
    if known.contains(&value) {
        value.to_string()
    } else {
        described(value, what)
    }
}

fn described(value: &str, what: &str) -> String {
    format!("(unknown {what}, {} characters)", value.chars().count())
}

/// Why an identifier that goes into a Dataverse query or a Didomi URL
/// cannot be used; `None` when it can.
pub(crate) fn key_problem(value: &str) -> Option<String> {
    let length = value.chars().count();
    if length > MAX_KEY_CHARS {
        return Some(format!(
            "is {length} characters long; a Dataverse text column holds at most {MAX_KEY_CHARS}"
        ));
    }
    if value.chars().any(char::is_control) {
        return Some("contains a control character".into());
    }
    None
}

/// Whether `value` is a GUID in the form Dataverse writes
/// (`6d81597f-0d1a-4b8c-9f1a-2d3e4f5a6b7c`, either case).
pub fn is_guid(value: &str) -> bool {
    let bytes = value.as_bytes();
    bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_callers_value_is_cut_in_answers_and_described_in_logs() {
        assert_eq!(quoted("gdpr"), "\"gdpr\"");
        let long = "x".repeat(100_000);
        assert_eq!(quoted(&long).chars().count(), 64 + 3);
        assert_eq!(
            shown("confirmed", EVENT_STATUSES, "status"),
            "\"confirmed\""
        );
        assert_eq!(
            shown("jane.doe@example.com", EVENT_STATUSES, "status"),
            "(unknown status, 20 characters)"
        );
    }

    #[test]
    fn quoted_parts_of_a_message_are_cut() {
        let long = "x".repeat(5_000);
        let message = format!("invalid type: string \"{long}\", expected a map");
        let cut = cut_quoted(&message);
        assert_eq!(
            cut,
            format!(
                "invalid type: string \"{}…\", expected a map",
                "x".repeat(64)
            )
        );
        assert_eq!(cut_quoted("a \"b\\\"c\" d"), "a \"b\\\"c\" d");
        let variant = format!("unknown variant `{long}`, expected `jwt` or `none`");
        assert_eq!(
            cut_quoted(&variant),
            format!(
                "unknown variant `{}…`, expected `jwt` or `none`",
                "x".repeat(64)
            )
        );
    }

    #[test]
    fn keys_are_bounded_and_guids_exact() {
        assert_eq!(key_problem("o'brien+news&co@example.com"), None);
        assert!(key_problem(&"a".repeat(4_001)).unwrap().contains("4001"));
        assert!(key_problem("a\u{0}b").is_some());
        assert!(is_guid("6d81597f-0d1a-4b8c-9f1a-2d3e4f5a6b7c"));
        assert!(is_guid("6D81597F-0D1A-4B8C-9F1A-2D3E4F5A6B7C"));
        assert!(!is_guid("6d81597f0d1a-4b8c-9f1a-2d3e4f5a6b7c-"));
        assert!(!is_guid("x') or (1 eq 1"));
    }
}
