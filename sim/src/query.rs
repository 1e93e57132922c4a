//! The OData query options every simulated table answers, as Dataverse
//! reads them: `$filter` (terms joined by `and`: `column eq|ne|gt|ge|lt|le
//! literal`, string literals quoted with doubled quotes, numbers, `true`,
//! `false`, `null`, and unquoted date-times), `$orderby` (one column, `asc`
//! or `desc`) and `$top`. One engine for the contact table and the
//! registration tables.

use std::cmp::Ordering;
use std::collections::HashMap;

use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

/// One `column operator literal` term.
#[derive(Debug, Clone, PartialEq)]
pub struct Term {
    pub column: String,
    pub operator: Operator,
    pub literal: Value,
}

/// A parsed query: what to keep, in which order, how many.
#[derive(Debug, Default)]
pub struct Query {
    pub terms: Vec<Term>,
    order: Option<(String, bool)>,
    top: Option<usize>,
}

impl Query {
    /// The query options of a request; the error is Dataverse's message.
    pub fn parse(params: &HashMap<String, String>) -> Result<Query, String> {
        let terms = match params.get("$filter") {
            Some(filter) => parse_filter(filter)?,
            None => Vec::new(),
        };
        let order = match params.get("$orderby") {
            None => None,
            Some(order) => {
                let mut words = order.split_whitespace();
                let column = words.next().ok_or_else(|| syntax(order))?.to_string();
                let descending = match words.next() {
                    None => false,
                    Some(d) if d.eq_ignore_ascii_case("asc") => false,
                    Some(d) if d.eq_ignore_ascii_case("desc") => true,
                    Some(_) => return Err(syntax(order)),
                };
                Some((column, descending))
            }
        };
        let top = match params.get("$top") {
            None => None,
            Some(top) => Some(
                top.trim()
                    .parse::<usize>()
                    .map_err(|_| format!("Invalid value '{top}' for $top."))?,
            ),
        };
        Ok(Query { terms, order, top })
    }

    /// Every column the query names, to check against the table's.
    pub fn columns(&self) -> impl Iterator<Item = &str> {
        self.terms
            .iter()
            .map(|t| t.column.as_str())
            .chain(self.order.iter().map(|(c, _)| c.as_str()))
    }

    /// The rows that match, ordered and cut as asked.
    pub fn apply<'a>(
        &self,
        rows: impl Iterator<Item = &'a Map<String, Value>>,
    ) -> Vec<&'a Map<String, Value>> {
        let mut kept: Vec<_> = rows
            .filter(|row| self.terms.iter().all(|t| t.holds(row)))
            .collect();
        if let Some((column, descending)) = &self.order {
            // Stable: rows of equal value keep their creation order.
            kept.sort_by(|a, b| {
                let order = compare(a.get(column), b.get(column));
                if *descending {
                    order.reverse()
                } else {
                    order
                }
            });
        }
        if let Some(top) = self.top {
            kept.truncate(top);
        }
        kept
    }
}

fn syntax(text: &str) -> String {
    format!("Syntax error in '{text}'.")
}

/// Orders values as Dataverse sorts a column: null first, numbers by value,
/// text (dates in ISO 8601 among them) by its characters.
fn compare(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    let rank = |v: Option<&Value>| match v {
        None | Some(Value::Null) => 0,
        _ => 1,
    };
    match (a, b) {
        (Some(Value::Number(a)), Some(Value::Number(b))) => a
            .as_f64()
            .partial_cmp(&b.as_f64())
            .unwrap_or(Ordering::Equal),
        (Some(Value::String(a)), Some(Value::String(b))) => a.cmp(b),
        (Some(Value::Bool(a)), Some(Value::Bool(b))) => a.cmp(b),
        (a, b) => rank(a).cmp(&rank(b)),
    }
}

impl Term {
    pub fn holds(&self, row: &Map<String, Value>) -> bool {
        let value = row.get(&self.column).unwrap_or(&Value::Null);
        let equal = match (&self.literal, value) {
            // String comparison in Dataverse is case-insensitive.
            (Value::String(a), Value::String(b)) => a.to_lowercase() == b.to_lowercase(),
            (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
            (a, b) => a == b,
        };
        if matches!(self.operator, Operator::Eq | Operator::Ne) {
            return equal == (self.operator == Operator::Eq);
        }
        if value.is_null() || self.literal.is_null() {
            return false;
        }
        let order = compare(Some(value), Some(&self.literal));
        match self.operator {
            Operator::Gt => order.is_gt(),
            Operator::Ge => order.is_ge(),
            Operator::Lt => order.is_lt(),
            Operator::Le => order.is_le(),
            Operator::Eq | Operator::Ne => unreachable!("handled above"),
        }
    }
}

/// `a eq 'x' and b ge 2026-11-29T10:00:00Z and c ne null`.
pub fn parse_filter(filter: &str) -> Result<Vec<Term>, String> {
    let mut terms = Vec::new();
    let mut rest = filter.trim();
    loop {
        let (column, after) = rest.split_once(' ').ok_or_else(|| syntax(filter))?;
        let after = after.trim_start();
        let (operator, after) = after.split_once(' ').ok_or_else(|| syntax(filter))?;
        let operator = match operator {
            "eq" => Operator::Eq,
            "ne" => Operator::Ne,
            "gt" => Operator::Gt,
            "ge" => Operator::Ge,
            "lt" => Operator::Lt,
            "le" => Operator::Le,
            _ => return Err(syntax(filter)),
        };
        let after = after.trim_start();
        let (literal, after) = if let Some(quoted) = after.strip_prefix('\'') {
            let mut value = String::new();
            let mut chars = quoted.char_indices().peekable();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                if c == '\'' {
                    if chars.peek().map(|(_, c)| *c) == Some('\'') {
                        chars.next();
                        value.push('\'');
                    } else {
                        end = Some(i + 1);
                        break;
                    }
                } else {
                    value.push(c);
                }
            }
            let end = end.ok_or_else(|| syntax(filter))?;
            (Value::String(value), &quoted[end..])
        } else {
            let (token, after) = after.split_once(' ').unwrap_or((after, ""));
            let literal = match token {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                "null" => Value::Null,
                t => t
                    .parse::<i64>()
                    .map(Value::from)
                    .unwrap_or_else(|_| Value::String(t.to_string())),
            };
            (literal, after)
        };
        terms.push(Term {
            column: column.to_string(),
            operator,
            literal,
        });
        let after = after.trim();
        if after.is_empty() {
            return Ok(terms);
        }
        rest = after.strip_prefix("and ").ok_or_else(|| syntax(filter))?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn filters_join_terms_with_and_and_unescape_doubled_quotes() {
        let terms = parse_filter("emailaddress1 eq 'o''brien+news&co@example.com' and stage eq 40")
            .unwrap();
        assert_eq!(terms[0].literal, json!("o'brien+news&co@example.com"));
        assert_eq!(terms[1].literal, json!(40));
        assert!(parse_filter("emailaddress1 eq 'o'brien@example.com'")
            .unwrap_err()
            .starts_with("Syntax error"));
        assert!(parse_filter("emailaddress1 like 'a'").is_err());
    }

    #[test]
    fn dates_compare_and_nulls_match_only_ne_null() {
        let terms = parse_filter("modifiedon ge 2026-11-29T10:00:00Z and key ne null").unwrap();
        let row = |at: &str, key: Value| {
            json!({"modifiedon": at, "key": key})
                .as_object()
                .unwrap()
                .clone()
        };
        let holds = |r: &Map<String, Value>| terms.iter().all(|t| t.holds(r));
        assert!(holds(&row("2026-11-29T10:00:00Z", json!("a"))));
        assert!(!holds(&row("2026-11-29T09:59:59Z", json!("a"))));
        assert!(!holds(&row("2026-11-30T00:00:00Z", Value::Null)));
    }
}
