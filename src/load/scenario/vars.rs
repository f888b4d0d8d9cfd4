//! A scenario's variables: their values (an inline list, a CSV or JSON-lines data file, the query
//! sets, a counter), the order they are drawn in (sequential or random) and whose cursor moves
//! (each user's or one shared by the run).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use rand::RngExt;
use rand_xoshiro::Xoshiro256PlusPlus;
use serde_json::{Value, json};

use super::file::VarSpec;

/// Where a variable's values come from.
#[derive(Debug)]
pub enum Source {
    /// Values or records (a data file's rows; the query sets' entries).
    List(Arc<Vec<Value>>),
    /// Numbers from `start`, one per draw.
    Counter(i64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Sequential,
    Random,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    User,
    Shared,
}

/// One declared variable.
#[derive(Debug)]
pub struct Var {
    pub name: String,
    pub source: Source,
    pub order: Order,
    pub scope: Scope,
    /// The fields every record has (`{{name.field}}`); empty for plain values.
    pub fields: BTreeSet<String>,
    /// Its values are the scored query set's (`from = "query_set"`): a request sending one is
    /// scored for recall.
    pub scored: bool,
    /// The run's cursor (shared scope).
    shared_next: AtomicU64,
    shared_counter: AtomicI64,
}

/// What a scenario's variables need from outside the file.
pub struct Context<'a> {
    /// Where relative data files are.
    pub dir: &'a Path,
    /// The dataset whose space `query_vectors` are embedded in.
    pub dataset: &'a crate::config::DatasetParams,
    /// The query set of `load --recall` (`from = "query_set"`).
    pub scorer: Option<&'a crate::load::recall::Scorer>,
}

impl Var {
    /// Reads the variable `name` as declared (`what` names it in errors).
    pub fn load(name: &str, spec: &VarSpec, ctx: &Context<'_>) -> Result<Self, String> {
        let given = [
            spec.values.is_some(),
            spec.file.is_some(),
            spec.from.is_some(),
            spec.counter.is_some(),
        ]
        .iter()
        .filter(|g| **g)
        .count();
        if given != 1 {
            return Err("give exactly one of values, file, from, counter".into());
        }
        let order = match spec.order.as_deref() {
            None | Some("sequential") => Order::Sequential,
            Some("random") => Order::Random,
            Some(o) => return Err(format!("order '{o}' is neither sequential nor random")),
        };
        let scope = match spec.scope.as_deref() {
            None | Some("user") => Scope::User,
            Some("shared") => Scope::Shared,
            Some(s) => return Err(format!("scope '{s}' is neither user nor shared")),
        };
        let source = if let Some(values) = &spec.values {
            let values = values
                .iter()
                .map(|v| serde_json::to_value(v).map_err(|e| e.to_string()))
                .collect::<Result<Vec<_>, _>>()?;
            Source::List(Arc::new(values))
        } else if let Some(file) = &spec.file {
            Source::List(Arc::new(read_data(&ctx.dir.join(file), file)?))
        } else if let Some(from) = spec.from.as_deref() {
            Source::List(Arc::new(query_set(from, ctx)?))
        } else {
            Source::Counter(spec.counter.unwrap_or(0))
        };
        if let Source::List(l) = &source
            && l.is_empty()
        {
            return Err("has no values".into());
        }
        let fields = match &source {
            Source::List(l) => common_fields(l),
            Source::Counter(_) => BTreeSet::new(),
        };
        Ok(Self {
            name: name.to_string(),
            source,
            order,
            scope,
            fields,
            scored: spec.from.as_deref() == Some("query_set"),
            shared_next: AtomicU64::new(0),
            shared_counter: AtomicI64::new(0),
        })
    }

    /// Back to the first value of a shared cursor over the scored query set (each sweep level
    /// goes through the same queries); other variables keep counting.
    pub fn rewind_scored(&self) {
        if self.scored {
            self.shared_next.store(0, Ordering::Relaxed);
        }
    }

    /// Draws the next value: `cursor` is the user's (user scope), `rng` the user's random source.
    pub fn draw(&self, cursor: &mut u64, rng: &mut Xoshiro256PlusPlus) -> Value {
        let n = match self.scope {
            Scope::User => {
                let n = *cursor;
                *cursor += 1;
                n
            }
            Scope::Shared => match self.source {
                Source::Counter(_) => self.shared_counter.fetch_add(1, Ordering::Relaxed) as u64,
                Source::List(_) => self.shared_next.fetch_add(1, Ordering::Relaxed),
            },
        };
        match &self.source {
            Source::Counter(start) => json!(start.wrapping_add(n as i64)),
            Source::List(values) => {
                let i = match self.order {
                    Order::Sequential => (n % values.len() as u64) as usize,
                    Order::Random => rng.random_range(0..values.len()),
                };
                values[i].clone()
            }
        }
    }
}

/// The fields every record of `values` has (none when any value is not an object).
fn common_fields(values: &[Value]) -> BTreeSet<String> {
    let mut fields: Option<BTreeSet<String>> = None;
    for v in values {
        let Value::Object(m) = v else {
            return BTreeSet::new();
        };
        let these: BTreeSet<String> = m.keys().cloned().collect();
        fields = Some(match fields {
            None => these,
            Some(f) => f.intersection(&these).cloned().collect(),
        });
    }
    fields.unwrap_or_default()
}

/// A data file's records: CSV with a header row (each row an object of strings), or JSON lines.
fn read_data(path: &Path, as_written: &str) -> Result<Vec<Value>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("data file '{as_written}' ({}): {e}", path.display()))?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "jsonl" | "ndjson" => text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                serde_json::from_str(l)
                    .map_err(|e| format!("data file '{as_written}' line {}: {e}", i + 1))
            })
            .collect(),
        "csv" => {
            let mut reader = csv::Reader::from_reader(text.as_bytes());
            let header = reader
                .headers()
                .map_err(|e| format!("data file '{as_written}': {e}"))?
                .clone();
            reader
                .records()
                .map(|r| {
                    let r = r.map_err(|e| format!("data file '{as_written}': {e}"))?;
                    Ok(Value::Object(
                        header
                            .iter()
                            .zip(r.iter())
                            .map(|(k, v)| (k.to_string(), json!(v)))
                            .collect(),
                    ))
                })
                .collect()
        }
        _ => Err(format!(
            "data file '{as_written}': a .csv (with a header row) or .jsonl file"
        )),
    }
}

/// A query set as records: `queries` → `{index, text}`, `query_vectors` → `{index, text,
/// vector}`, `query_set` → `{index, vector}` (the scored set of `load --recall`).
fn query_set(from: &str, ctx: &Context<'_>) -> Result<Vec<Value>, String> {
    let texts = crate::workload::SEARCH_QUERIES;
    let dataset = ctx.dataset;
    match from {
        "query_set" => match ctx.scorer {
            Some(s) => Ok(s
                .vectors()
                .iter()
                .enumerate()
                .map(|(i, v)| json!({"index": i, "vector": v.as_slice()}))
                .collect()),
            None => Err(
                "from = 'query_set' is the scored query set: run with --recall (and --query-set heldout, near-duplicate or ood)"
                    .into(),
            ),
        },
        "queries" => Ok(texts
            .iter()
            .enumerate()
            .map(|(i, t)| json!({"index": i, "text": t}))
            .collect()),
        "query_vectors" => Ok(crate::workload::query_vectors(dataset)
            .iter()
            .zip(texts)
            .enumerate()
            .map(|(i, (v, t))| json!({"index": i, "text": t, "vector": v.as_slice()}))
            .collect()),
        other => Err(format!(
            "from = '{other}': the query sets are 'queries', 'query_vectors' and 'query_set'"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn spec(f: impl FnOnce(&mut VarSpec)) -> VarSpec {
        let mut s = VarSpec {
            values: None,
            file: None,
            from: None,
            counter: None,
            order: None,
            scope: None,
        };
        f(&mut s);
        s
    }

    fn ctx<'a>(dir: &'a Path, d: &'a crate::config::DatasetParams) -> Context<'a> {
        Context {
            dir,
            dataset: d,
            scorer: None,
        }
    }

    #[test]
    fn sequential_per_user_random_by_seed_shared_counters() {
        let d = crate::config::DatasetParams::default();
        let dir = std::env::temp_dir();
        let list = spec(|s| s.values = Some(vec!["a".into(), "b".into(), "c".into()]));
        let v = Var::load("q", &list, &ctx(&dir, &d)).unwrap();
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
        let (mut c1, mut c2) = (0, 0);
        let one: Vec<Value> = (0..4).map(|_| v.draw(&mut c1, &mut rng)).collect();
        assert_eq!(one, vec![json!("a"), json!("b"), json!("c"), json!("a")]);
        assert_eq!(
            v.draw(&mut c2, &mut rng),
            json!("a"),
            "each user its own cursor"
        );

        let random = spec(|s| {
            s.values = Some((0..100).map(toml::Value::from).collect());
            s.order = Some("random".into());
        });
        let v = Var::load("r", &random, &ctx(&dir, &d)).unwrap();
        let draws = |seed| {
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
            (0..20)
                .map(|_| v.draw(&mut 0, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(draws(7), draws(7));
        assert_ne!(draws(7), draws(8));

        let counter = spec(|s| {
            s.counter = Some(100);
            s.scope = Some("shared".into());
        });
        let v = Var::load("n", &counter, &ctx(&dir, &d)).unwrap();
        assert_eq!(v.draw(&mut 0, &mut rng), json!(100));
        assert_eq!(
            v.draw(&mut 0, &mut rng),
            json!(101),
            "one counter for the run"
        );
    }

    #[test]
    fn data_files_and_query_sets_are_records() {
        let d = crate::config::DatasetParams {
            dims: 8,
            ..Default::default()
        };
        let dir = std::env::temp_dir().join(format!("capbench-vars-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("u.csv"), "email,password\na@x,1\nb@x,2\n").unwrap();
        std::fs::write(
            dir.join("d.jsonl"),
            "{\"id\": 1, \"t\": \"x\"}\n\n{\"id\": 2}\n",
        )
        .unwrap();
        let c = ctx(&dir, &d);
        let users = Var::load("u", &spec(|s| s.file = Some("u.csv".into())), &c).unwrap();
        assert_eq!(
            users.fields,
            BTreeSet::from(["email".to_string(), "password".to_string()])
        );
        let docs = Var::load("d", &spec(|s| s.file = Some("d.jsonl".into())), &c).unwrap();
        assert_eq!(docs.fields, BTreeSet::from(["id".to_string()]));
        let e = Var::load("m", &spec(|s| s.file = Some("missing.csv".into())), &c).unwrap_err();
        assert!(e.starts_with("data file 'missing.csv'"), "{e}");
        std::fs::write(dir.join("bad.jsonl"), "{\"id\": 1}\n{oops\n").unwrap();
        let e = Var::load("b", &spec(|s| s.file = Some("bad.jsonl".into())), &c).unwrap_err();
        assert!(e.contains("line 2"), "{e}");
        let qv = Var::load("qv", &spec(|s| s.from = Some("query_vectors".into())), &c).unwrap();
        assert!(qv.fields.contains("vector") && qv.fields.contains("text"));
        let Source::List(l) = &qv.source else {
            panic!()
        };
        assert_eq!(l[0]["vector"].as_array().unwrap().len(), 8);
        assert!(Var::load("x", &spec(|s| s.from = Some("rows".into())), &c).is_err());
        assert!(Var::load("x", &spec(|_| {}), &c).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }
}
