//! Adding mappings to the configuration's JSON text without touching
//! anything else in it: the stack and the operator put fields there (the
//! webhook key, client ids, their order, spacing and escapes) that `init`
//! has no business rewriting, so the new entries are spliced into the text
//! rather than the document re-serialized.

use serde_json::Value;

/// One new mapping, as `init` writes it: `{ "column": …, "purpose": … }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMapping {
    pub column: String,
    pub purpose: String,
}

impl NewMapping {
    fn to_text(&self) -> String {
        let quoted = |s: &str| serde_json::to_string(s).expect("a string serializes");
        format!(
            "{{ \"column\": {}, \"purpose\": {} }}",
            quoted(&self.column),
            quoted(&self.purpose)
        )
    }
}

/// The text is not the JSON object a configuration is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the configuration is not a JSON object: {0}")]
pub struct NotAnObject(&'static str);

/// Where things are in a JSON object's text: byte offsets.
struct ObjectLayout {
    /// The whitespace between `{` and the first member ("\n  " in a pretty file).
    member_indent: String,
    /// The end of the last member's value (just after it), if any member.
    last_member_end: Option<usize>,
    /// The closing `}`.
    close: usize,
    /// The value of the top-level `mappings` member: its start and end.
    mappings: Option<(usize, usize)>,
}

fn skip_ws(bytes: &[u8], mut at: usize) -> usize {
    while at < bytes.len() && matches!(bytes[at], b' ' | b'\t' | b'\n' | b'\r') {
        at += 1;
    }
    at
}

/// The end (exclusive) of the string starting with the quote at `at`.
fn string_end(bytes: &[u8], at: usize) -> Result<usize, NotAnObject> {
    let mut i = at + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return Ok(i + 1),
            _ => i += 1,
        }
    }
    Err(NotAnObject("a string does not end"))
}

/// The end (exclusive) of the JSON value starting at `at`.
fn value_end(bytes: &[u8], at: usize) -> Result<usize, NotAnObject> {
    match bytes.get(at) {
        Some(b'"') => string_end(bytes, at),
        Some(b'{') | Some(b'[') => {
            let mut depth = 0usize;
            let mut i = at;
            while i < bytes.len() {
                match bytes[i] {
                    b'"' => {
                        i = string_end(bytes, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Ok(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            Err(NotAnObject("an object or array does not end"))
        }
        Some(_) => {
            let mut i = at;
            while i < bytes.len()
                && !matches!(bytes[i], b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
            {
                i += 1;
            }
            Ok(i)
        }
        None => Err(NotAnObject("a value is missing")),
    }
}

fn layout(text: &str) -> Result<ObjectLayout, NotAnObject> {
    let bytes = text.as_bytes();
    let open = skip_ws(bytes, 0);
    if bytes.get(open) != Some(&b'{') {
        return Err(NotAnObject("it does not start with `{`"));
    }
    let first = skip_ws(bytes, open + 1);
    let mut layout = ObjectLayout {
        member_indent: text[open + 1..first].to_string(),
        last_member_end: None,
        close: 0,
        mappings: None,
    };
    let mut at = first;
    loop {
        match bytes.get(at) {
            Some(b'}') => {
                layout.close = at;
                return Ok(layout);
            }
            Some(b'"') => {
                let key_end = string_end(bytes, at)?;
                let key: String = serde_json::from_str(&text[at..key_end])
                    .map_err(|_| NotAnObject("a member name is not a string"))?;
                let colon = skip_ws(bytes, key_end);
                if bytes.get(colon) != Some(&b':') {
                    return Err(NotAnObject("a member name is not followed by `:`"));
                }
                let start = skip_ws(bytes, colon + 1);
                let end = value_end(bytes, start)?;
                if key == "mappings" {
                    layout.mappings = Some((start, end));
                }
                layout.last_member_end = Some(end);
                at = skip_ws(bytes, end);
                if bytes.get(at) == Some(&b',') {
                    at = skip_ws(bytes, at + 1);
                }
            }
            _ => return Err(NotAnObject("a member does not start with a name")),
        }
    }
}

/// `entries` as an array on its own, laid out like the document's members.
fn array_text(entries: &[NewMapping], indent: &str) -> String {
    let texts: Vec<String> = entries.iter().map(NewMapping::to_text).collect();
    if indent.contains('\n') {
        let inner = format!("{indent}  ");
        format!("[{inner}{}{indent}]", texts.join(&format!(",{inner}")))
    } else {
        format!("[{}]", texts.join(", "))
    }
}

/// `text` with `entries` appended to its `mappings` array (or that array
/// added, when absent, empty or null); every other byte as it was. The
/// result is checked to be the same document plus those entries.
pub fn add_mappings(text: &str, entries: &[NewMapping]) -> Result<String, NotAnObject> {
    if entries.is_empty() {
        return Ok(text.to_string());
    }
    let layout = layout(text)?;
    let indent = layout.member_indent.as_str();
    let spliced = match layout.mappings {
        Some((start, end)) if text[start..end].starts_with('[') => {
            let bytes = text.as_bytes();
            let first = skip_ws(bytes, start + 1);
            if bytes[first] == b']' {
                format!(
                    "{}{}{}",
                    &text[..start],
                    array_text(entries, indent),
                    &text[end..]
                )
            } else {
                // After the last element, in the spacing between `[` and the first.
                let mut last = end - 1;
                while matches!(bytes[last - 1], b' ' | b'\t' | b'\n' | b'\r') {
                    last -= 1;
                }
                let separator = &text[start + 1..first];
                let separator = if separator.is_empty() { " " } else { separator };
                let added: String = entries
                    .iter()
                    .map(|e| format!(",{separator}{}", e.to_text()))
                    .collect();
                format!("{}{added}{}", &text[..last], &text[last..])
            }
        }
        Some((start, end)) if &text[start..end] == "null" => {
            format!(
                "{}{}{}",
                &text[..start],
                array_text(entries, indent),
                &text[end..]
            )
        }
        Some(_) => return Err(NotAnObject("`mappings` is not an array")),
        None => {
            let member = format!("\"mappings\": {}", array_text(entries, indent));
            match layout.last_member_end {
                Some(end) => format!("{},{indent}{member}{}", &text[..end], &text[end..]),
                None => {
                    let closing = if indent.contains('\n') { "\n" } else { "" };
                    format!(
                        "{}{indent}{member}{closing}{}",
                        text[..layout.close].trim_end(),
                        &text[layout.close..]
                    )
                }
            }
        }
    };
    check_splice(text, &spliced, entries)?;
    Ok(spliced)
}

/// The spliced text must be the original document with the entries
/// appended to `mappings`, and nothing else changed.
fn check_splice(before: &str, after: &str, entries: &[NewMapping]) -> Result<(), NotAnObject> {
    let parse = |text: &str| serde_json::from_str::<Value>(text).ok();
    let (Some(Value::Object(mut expected)), Some(Value::Object(actual))) =
        (parse(before), parse(after))
    else {
        return Err(NotAnObject("it does not parse as an object"));
    };
    let mut mappings = match expected.remove("mappings") {
        Some(Value::Array(list)) => list,
        _ => Vec::new(),
    };
    mappings.extend(
        entries
            .iter()
            .map(|e| serde_json::json!({"column": e.column, "purpose": e.purpose})),
    );
    expected.insert("mappings".into(), Value::Array(mappings));
    if Value::Object(expected) == Value::Object(actual) {
        Ok(())
    } else {
        Err(NotAnObject("the mappings could not be added in place"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries() -> Vec<NewMapping> {
        vec![
            NewMapping {
                column: "new_newsletter".into(),
                purpose: "newsletter".into(),
            },
            NewMapping {
                column: "new_o_brien".into(),
                purpose: "o\"brien".into(),
            },
        ]
    }

    #[test]
    fn entries_are_appended_after_the_existing_ones_in_their_layout() {
        let text = "{\n  \"client_id\": \"c\",\n  \"mappings\": [\n    {\"column\": \"donotemail\", \"channel\": \"email\", \"invert\": true}\n  ],\n  \"dynamics_webhook_key\": \"k\\u0041\"\n}\n";
        let after = add_mappings(text, &entries()).unwrap();
        assert_eq!(
            after,
            "{\n  \"client_id\": \"c\",\n  \"mappings\": [\n    {\"column\": \"donotemail\", \"channel\": \"email\", \"invert\": true},\n    { \"column\": \"new_newsletter\", \"purpose\": \"newsletter\" },\n    { \"column\": \"new_o_brien\", \"purpose\": \"o\\\"brien\" }\n  ],\n  \"dynamics_webhook_key\": \"k\\u0041\"\n}\n"
        );
    }

    #[test]
    fn an_empty_null_or_absent_mappings_becomes_the_new_array() {
        let one = &entries()[..1];
        assert_eq!(
            add_mappings("{\"a\":1,\"mappings\":[],\"b\":{\"mappings\":[]}}", one).unwrap(),
            "{\"a\":1,\"mappings\":[{ \"column\": \"new_newsletter\", \"purpose\": \"newsletter\" }],\"b\":{\"mappings\":[]}}"
        );
        assert_eq!(
            add_mappings("{\"mappings\": null}", one).unwrap(),
            "{\"mappings\": [{ \"column\": \"new_newsletter\", \"purpose\": \"newsletter\" }]}"
        );
        assert_eq!(
            add_mappings("{\n  \"a\": \"}\"\n}", one).unwrap(),
            "{\n  \"a\": \"}\",\n  \"mappings\": [\n    { \"column\": \"new_newsletter\", \"purpose\": \"newsletter\" }\n  ]\n}"
        );
        assert_eq!(
            add_mappings("{ }", one).unwrap(),
            "{ \"mappings\": [{ \"column\": \"new_newsletter\", \"purpose\": \"newsletter\" }]}"
        );
    }

    #[test]
    fn nothing_to_add_leaves_the_text_as_it_was_and_odd_documents_are_refused() {
        assert_eq!(add_mappings("{\"x\": 1 }", &[]).unwrap(), "{\"x\": 1 }");
        assert!(add_mappings("[1]", &entries()).is_err());
        assert!(add_mappings("{\"mappings\": {}}", &entries()).is_err());
    }
}
