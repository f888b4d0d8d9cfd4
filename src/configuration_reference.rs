//! The test behind docs/configuration.md: the page and the binaries' `--help` cannot drift apart.

use std::collections::{BTreeMap, BTreeSet};

use clap::CommandFactory;

const PAGE: &str = include_str!("../docs/configuration.md");

/// Flags whose variable the binary reads itself rather than through clap: `report
/// --fail-on-regression`'s `CAPBENCH_FAIL_ON_REGRESSION` is read by `report::fail_on_regression_env`,
/// which the benches share.
const READ_BY_HAND: &[(&str, &str)] = &[("report", "--fail-on-regression")];

/// One binary's flags: long name → its environment variable, if any.
fn flags(cmd: clap::Command) -> BTreeMap<String, Option<String>> {
    cmd.get_arguments()
        .filter_map(|a| {
            let long = a.get_long()?;
            Some((
                format!("--{long}"),
                a.get_env().map(|e| e.to_string_lossy().into_owned()),
            ))
        })
        .filter(|(l, _)| l != "--help" && l != "--version")
        .collect()
}

/// The binaries, by the name a row of the page starts with ("" for setup and serve, whose
/// shared flags the page lists bare).
fn binaries() -> BTreeMap<&'static str, BTreeMap<String, Option<String>>> {
    let mut bare = flags(crate::setup::SetupArgs::command());
    bare.extend(flags(crate::config::Config::command()));
    BTreeMap::from([
        ("", bare),
        ("load", flags(crate::load::LoadArgs::command())),
        ("report", flags(crate::report::ReportArgs::command())),
    ])
}

/// A row of the page's table: (binary, flags named in its first cell, environment variable).
fn rows(page: &str) -> Vec<(String, Vec<String>, Option<String>)> {
    page.lines()
        .filter(|l| l.starts_with("| ") || l.starts_with("| |") || l.starts_with("||"))
        .filter_map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            if cells.len() < 4 || cells[0] == "flag" || cells[0].starts_with("---") {
                return None;
            }
            let codes = |cell: &str| -> Vec<String> {
                cell.split('`')
                    .skip(1)
                    .step_by(2)
                    .map(str::to_string)
                    .collect()
            };
            let mut binary = String::new();
            let mut named = Vec::new();
            for code in codes(cells[0]) {
                let mut words = code.split_whitespace();
                let first = words.next().unwrap_or_default();
                let flag = if first.starts_with('-') {
                    first
                } else {
                    binary = first.to_string();
                    words.next().unwrap_or_default()
                };
                if flag.starts_with("--") {
                    named.push(flag.to_string());
                }
            }
            let env = codes(cells[1]).into_iter().next();
            Some((binary, named, env))
        })
        .collect()
}

#[test]
fn every_flag_on_the_page_exists_with_its_variable() {
    let binaries = binaries();
    let rows = rows(PAGE);
    assert!(rows.len() > 40, "the table was read: {} rows", rows.len());
    let mut wrong = Vec::new();
    for (binary, named, env) in &rows {
        let Some(known) = binaries.get(binary.as_str()) else {
            wrong.push(format!(
                "a row names the binary '{binary}', which has no flags here"
            ));
            continue;
        };
        for flag in named {
            match known.get(flag) {
                None => wrong.push(format!("{binary} {flag}: on the page, not in --help")),
                // A row of several flags gives one variable at most, the first flag's.
                Some(actual)
                    if named.len() == 1
                        && env.is_some()
                        && actual != env
                        && !READ_BY_HAND.contains(&(binary.as_str(), flag.as_str())) =>
                {
                    wrong.push(format!(
                        "{binary} {flag}: the page says {env:?}, --help says {actual:?}"
                    ))
                }
                Some(_) => {}
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "docs/configuration.md:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn every_flag_of_every_binary_is_on_the_page() {
    let documented: BTreeSet<(String, String)> = rows(PAGE)
        .into_iter()
        .flat_map(|(b, named, _)| named.into_iter().map(move |f| (b.clone(), f)))
        .collect();
    let shared = flags(crate::config::Config::command());
    let missing: Vec<String> = binaries()
        .into_iter()
        .flat_map(|(b, flags)| flags.into_keys().map(move |f| (b.to_string(), f)))
        // A shared flag is listed once, bare, for every binary that takes it.
        .filter(|(b, f)| {
            let listed = documented.contains(&(b.clone(), f.clone()));
            let listed_bare = documented.contains(&(String::new(), f.clone()));
            !(listed || (shared.contains_key(f) && listed_bare))
        })
        .map(|(b, f)| format!("{b} {f}").trim().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "flags missing from docs/configuration.md: {}",
        missing.join(", ")
    );
}

#[test]
fn the_page_reader_sees_binaries_flags_and_variables() {
    let rows = rows(
        "| flag | environment | default | meaning |\n|---|---|---|---|\n\
         | `--rows` | `CAPBENCH_ROWS` | 1 | x |\n\
         | `load --users`, `-u` | `CAPBENCH_USERS` | 10 | x |\n\
         | `report --noise-threshold`, `--nresamples` | | 0.05 | x |\n\
         | | `CAPBENCH_QUICK` | off | x |\n",
    );
    assert_eq!(
        rows,
        vec![
            (
                "".into(),
                vec!["--rows".into()],
                Some("CAPBENCH_ROWS".into())
            ),
            (
                "load".into(),
                vec!["--users".into()],
                Some("CAPBENCH_USERS".into())
            ),
            (
                "report".into(),
                vec!["--noise-threshold".into(), "--nresamples".into()],
                None
            ),
            ("".into(), vec![], Some("CAPBENCH_QUICK".into())),
        ]
    );
}
