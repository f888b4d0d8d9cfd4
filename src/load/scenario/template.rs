//! Templates of a scenario file: text with `{{ name }}` or `{{ name.field }}` holes, each hole
//! resolved when the file is compiled (an unknown name is an error then, not at run time) and
//! filled per request. No logic: a hole names a value, nothing more (k6's and Artillery's rule).

use std::fmt::Write as _;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;

/// What a hole names, resolved at compile time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ref {
    /// The virtual user's number in the run (`{{user.id}}`).
    UserId,
    /// Its kind's name (`{{user.kind}}`).
    UserKind,
    /// Tasks the user has started (`{{user.iteration}}`, from 0).
    Iteration,
    /// What distinguishes this run from earlier ones (`{{run}}`): e-mail addresses stay unique.
    Run,
    /// A fresh v4 UUID per request (`{{uuid}}`).
    Uuid,
    /// A declared variable (index into the scenario's), or one field of its record.
    Var { index: usize, field: Option<String> },
    /// A value extracted from an earlier answer (index into the user's slots).
    Extracted(usize),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Hole(Ref),
}

/// Resolves a hole's name and optional field when a template is parsed.
pub type Resolve<'a> = dyn FnMut(&str, Option<&str>) -> Result<Ref, String> + 'a;

/// The values a request's holes are filled with.
pub trait Values {
    /// The value `r` names, or the name of what has no value yet (an extraction that has not
    /// happened or failed).
    fn get(&self, r: &Ref) -> Result<Value, String>;
}

/// Characters a path hole keeps as they are: RFC 3986's unreserved set.
const PATH_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

impl Template {
    /// Parses `text`, resolving each hole's name (and optional `.field`) with `resolve`.
    pub fn parse(text: &str, resolve: &mut Resolve<'_>) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            let after = &rest[open + 2..];
            let close = after
                .find("}}")
                .ok_or_else(|| format!("'{{{{' without '}}}}' in \"{text}\""))?;
            let inner = after[..close].trim();
            let (name, field) = match inner.split_once('.') {
                Some((n, f)) => (n, Some(f)),
                None => (inner, None),
            };
            let word = |w: &str| {
                !w.is_empty()
                    && w.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            };
            if !word(name) || !field.is_none_or(word) {
                return Err(format!(
                    "'{{{{{inner}}}}}' in \"{text}\" is not a variable name (letters, digits, _ and -, with an optional .field)"
                ));
            }
            parts.push(Part::Hole(resolve(name, field)?));
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Self { parts })
    }

    /// The text, when the template has no hole.
    pub fn fixed(&self) -> Option<String> {
        let mut s = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => s.push_str(t),
                Part::Hole(_) => return None,
            }
        }
        Some(s)
    }

    /// The one hole, when the template is nothing else (its value keeps its JSON type in a body).
    pub fn sole(&self) -> Option<&Ref> {
        match self.parts.as_slice() {
            [Part::Hole(r)] => Some(r),
            _ => None,
        }
    }

    /// What the holes name.
    pub fn refs(&self) -> impl Iterator<Item = &Ref> {
        self.parts.iter().filter_map(|p| match p {
            Part::Hole(r) => Some(r),
            Part::Text(_) => None,
        })
    }

    /// The filled text; each value percent-encoded when `encode` (a path).
    pub fn render(&self, values: &dyn Values, encode: bool) -> Result<String, String> {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Hole(r) => {
                    let v = values.get(r)?;
                    let text = as_text(&v);
                    if encode {
                        let _ = write!(out, "{}", utf8_percent_encode(&text, PATH_VALUE));
                    } else {
                        out.push_str(&text);
                    }
                }
            }
        }
        Ok(out)
    }
}

/// A value as text: a string as it is, null as nothing, anything else as JSON.
pub fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A JSON body whose strings may be templates.
#[derive(Debug, Clone, PartialEq)]
pub enum JsonTemplate {
    Fixed(Value),
    Text(Template),
    Array(Vec<JsonTemplate>),
    Object(Vec<(String, JsonTemplate)>),
}

impl JsonTemplate {
    /// Parses every string of `v` as a template.
    pub fn parse(v: &Value, resolve: &mut Resolve<'_>) -> Result<Self, String> {
        Ok(match v {
            Value::String(s) => {
                let t = Template::parse(s, resolve)?;
                match t.fixed() {
                    Some(_) => JsonTemplate::Fixed(v.clone()),
                    None => JsonTemplate::Text(t),
                }
            }
            Value::Array(items) => {
                let items = items
                    .iter()
                    .map(|i| Self::parse(i, resolve))
                    .collect::<Result<Vec<_>, _>>()?;
                if items.iter().all(|i| matches!(i, JsonTemplate::Fixed(_))) {
                    JsonTemplate::Fixed(v.clone())
                } else {
                    JsonTemplate::Array(items)
                }
            }
            Value::Object(map) => {
                let fields = map
                    .iter()
                    .map(|(k, i)| Ok((k.clone(), Self::parse(i, resolve)?)))
                    .collect::<Result<Vec<_>, String>>()?;
                if fields
                    .iter()
                    .all(|(_, i)| matches!(i, JsonTemplate::Fixed(_)))
                {
                    JsonTemplate::Fixed(v.clone())
                } else {
                    JsonTemplate::Object(fields)
                }
            }
            other => JsonTemplate::Fixed(other.clone()),
        })
    }

    /// The body when nothing in it is a hole.
    pub fn fixed(&self) -> Option<&Value> {
        match self {
            JsonTemplate::Fixed(v) => Some(v),
            _ => None,
        }
    }

    pub fn refs(&self) -> Vec<&Ref> {
        match self {
            JsonTemplate::Fixed(_) => Vec::new(),
            JsonTemplate::Text(t) => t.refs().collect(),
            JsonTemplate::Array(items) => items.iter().flat_map(Self::refs).collect(),
            JsonTemplate::Object(fields) => fields.iter().flat_map(|(_, i)| i.refs()).collect(),
        }
    }

    /// The filled body: a string that is one hole takes the value's own type (a vector stays an
    /// array, a counter a number); any other template becomes a string.
    pub fn render(&self, values: &dyn Values) -> Result<Value, String> {
        Ok(match self {
            JsonTemplate::Fixed(v) => v.clone(),
            JsonTemplate::Text(t) => match t.sole() {
                Some(r) => values.get(r)?,
                None => Value::String(t.render(values, false)?),
            },
            JsonTemplate::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|i| i.render(values))
                    .collect::<Result<_, _>>()?,
            ),
            JsonTemplate::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(k, i)| Ok((k.clone(), i.render(values)?)))
                    .collect::<Result<_, String>>()?,
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn resolve(name: &str, field: Option<&str>) -> Result<Ref, String> {
        match (name, field) {
            ("user", Some("id")) => Ok(Ref::UserId),
            ("q", f) => Ok(Ref::Var {
                index: 0,
                field: f.map(String::from),
            }),
            ("token", None) => Ok(Ref::Extracted(0)),
            (n, _) => Err(format!("unknown variable '{n}'")),
        }
    }

    struct V;
    impl Values for V {
        fn get(&self, r: &Ref) -> Result<Value, String> {
            match r {
                Ref::UserId => Ok(json!(7)),
                Ref::Var { field: None, .. } => Ok(json!("a b/c")),
                Ref::Var { field: Some(_), .. } => Ok(json!([0.5, 1.0])),
                Ref::Extracted(_) => Err("token".into()),
                _ => Ok(Value::Null),
            }
        }
    }

    #[test]
    fn holes_are_resolved_once_and_filled_per_request() {
        let t = Template::parse("load-{{ user.id }}-{{q}}!", &mut resolve).unwrap();
        assert_eq!(t.fixed(), None);
        assert_eq!(t.render(&V, false).unwrap(), "load-7-a b/c!");
        assert_eq!(t.render(&V, true).unwrap(), "load-7-a%20b%2Fc!");
        let plain = Template::parse("/health", &mut resolve).unwrap();
        assert_eq!(plain.fixed().as_deref(), Some("/health"));
        for bad in ["{{nope}}", "{{q", "{{ a b }}", "{{}}", "{{q.}}"] {
            assert!(Template::parse(bad, &mut resolve).is_err(), "{bad}");
        }
        assert_eq!(
            Template::parse("{{nope}}", &mut resolve).unwrap_err(),
            "unknown variable 'nope'"
        );
        // A value that is not there yet names itself.
        let t = Template::parse("Bearer {{token}}", &mut resolve).unwrap();
        assert_eq!(t.render(&V, false).unwrap_err(), "token");
    }

    #[test]
    fn a_sole_hole_keeps_its_type_in_a_json_body() {
        let body = json!({"q": "{{q}}", "v": "{{q.vector}}", "who": "u{{user.id}}", "limit": 10});
        let t = JsonTemplate::parse(&body, &mut resolve).unwrap();
        assert_eq!(t.fixed(), None);
        assert_eq!(t.refs().len(), 3);
        assert_eq!(
            t.render(&V).unwrap(),
            json!({"q": "a b/c", "v": [0.5, 1.0], "who": "u7", "limit": 10})
        );
        let fixed = JsonTemplate::parse(&json!({"q": "test query"}), &mut resolve).unwrap();
        assert_eq!(fixed.fixed(), Some(&json!({"q": "test query"})));
    }
}
