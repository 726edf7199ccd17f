//! The poisoning and shadowing checks against two corpora: attacks written after published
//! MCP attack patterns (`attacks/*.json`), each of which must be caught with the kinds it
//! expects, and the 94 real tools of the labelled corpus (`corpus/*.json`), none of which
//! may be flagged by `inspect` — a check that cries wolf on real servers gets switched off.
//!
//! An attack file is `{"attack", "source", "tools": [{"expect": [kinds], "tool": {…}}]}`,
//! optionally with `"server"` and `"others"` (`[[server, tool], …]`): then `shadowing` is
//! run too, as the tool of `server` next to `others`.

use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Instant;
use toolgate_risk::{inspect, shadowing, Flag, FlagKind};

fn json_files(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
}

fn read(file: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(file).expect("read")).expect("JSON")
}

fn kind(name: &str) -> FlagKind {
    [
        FlagKind::HiddenDirective,
        FlagKind::InvisibleUnicode,
        FlagKind::SecretAccess,
        FlagKind::ToolReference,
        FlagKind::Padding,
        FlagKind::Shadowing,
    ]
    .into_iter()
    .find(|k| k.as_str() == name)
    .unwrap_or_else(|| panic!("unknown flag kind {name:?}"))
}

fn report(flags: &[Flag]) -> String {
    flags
        .iter()
        .map(|f| format!("\n      {} at {}: {}", f.kind, f.location, f.evidence))
        .collect()
}

/// The benign corpus as (server, tool) pairs.
fn benign() -> Vec<(String, Value)> {
    let mut tools = Vec::new();
    for file in json_files("corpus") {
        let doc = read(&file);
        let server = doc["server"].as_str().expect("server").to_owned();
        for entry in doc["tools"].as_array().expect("tools") {
            tools.push((server.clone(), entry["tool"].clone()));
        }
    }
    tools
}

#[test]
fn every_attack_is_flagged_with_the_kinds_it_expects() {
    let files = json_files("attacks");
    let (mut total, mut seen) = (0, BTreeSet::new());
    let mut misses = Vec::new();
    for file in &files {
        let doc = read(file);
        let attack = doc["attack"].as_str().expect("attack");
        assert!(
            doc["source"].as_str().is_some_and(|s| !s.is_empty()),
            "{attack}: no source"
        );
        let server = doc["server"].as_str().unwrap_or("attacker");
        let others: Vec<(&str, &str)> = doc["others"]
            .as_array()
            .map(|pairs| {
                pairs
                    .iter()
                    .map(|p| (p[0].as_str().expect("server"), p[1].as_str().expect("tool")))
                    .collect()
            })
            .unwrap_or_default();
        println!("{attack}:");
        for entry in doc["tools"].as_array().expect("tools") {
            let tool = &entry["tool"];
            let name = tool["name"].as_str().expect("name");
            let expected: BTreeSet<FlagKind> = entry["expect"]
                .as_array()
                .expect("expect")
                .iter()
                .map(|k| kind(k.as_str().expect("kind")))
                .collect();
            assert!(!expected.is_empty(), "{attack}/{name} expects nothing");
            let mut flags = inspect(tool);
            flags.extend(shadowing(server, tool, &others));
            let got: BTreeSet<FlagKind> = flags.iter().map(|f| f.kind).collect();
            let missing: Vec<&str> = expected.difference(&got).map(|k| k.as_str()).collect();
            println!("  {name}:{}", report(&flags));
            if !missing.is_empty() {
                misses.push(format!(
                    "{attack}/{name}: missing {missing:?}; got{}",
                    report(&flags)
                ));
            }
            assert!(
                flags.iter().all(|f| f.evidence.chars().count() <= 81),
                "{attack}/{name}: evidence too long{}",
                report(&flags)
            );
            total += 1;
            seen.extend(got);
        }
    }
    assert!(
        misses.is_empty(),
        "attacks not caught:\n{}",
        misses.join("\n")
    );
    assert!(files.len() >= 6, "{} attack files", files.len());
    assert!(total >= 12, "{total} attack tools");
    assert_eq!(seen.len(), 6, "every kind is exercised: {seen:?}");
}

#[test]
fn no_real_tool_is_flagged() {
    let tools = benign();
    assert!(tools.len() >= 94, "the corpus has {} tools", tools.len());
    let false_alarms: Vec<String> = tools
        .iter()
        .filter_map(|(server, tool)| {
            let flags = inspect(tool);
            (!flags.is_empty()).then(|| format!("{server}/{}:{}", tool["name"], report(&flags)))
        })
        .collect();
    assert!(
        false_alarms.is_empty(),
        "real tools flagged:\n{}",
        false_alarms.join("\n")
    );
}

/// Between the real servers only same-name collisions are shadowing (the GitHub and GitLab
/// servers share nine tool names); no description mentions another server's tool.
#[test]
fn real_servers_shadow_each_other_only_by_name() {
    let tools = benign();
    let pairs: Vec<(&str, &str)> = tools
        .iter()
        .map(|(server, tool)| (server.as_str(), tool["name"].as_str().expect("name")))
        .collect();
    let mut found = Vec::new();
    for (server, tool) in &tools {
        for flag in shadowing(server, tool, &pairs) {
            assert_eq!(flag.kind, FlagKind::Shadowing);
            found.push(format!(
                "{server}/{} {}: {}",
                tool["name"].as_str().expect("name"),
                flag.location,
                flag.evidence
            ));
        }
    }
    println!("{} shadowing flags:", found.len());
    for f in &found {
        println!("  {f}");
    }
    // Servers that share a tool name shadow each other by definition (github and gitlab
    // both have `create_issue`); a description of a real server never mentions another
    // server's tool.
    let mentions: Vec<&String> = found
        .iter()
        .filter(|f| !f.contains(" name: also served by "))
        .collect();
    assert!(mentions.is_empty(), "false alarms: {mentions:#?}");
    for name in ["create_issue", "search_repositories", "push_files"] {
        let expected = format!("github/{name} name: also served by \"gitlab\" as \"{name}\"");
        assert!(found.contains(&expected), "missing: {expected}");
    }
}

/// A megabyte of text of several shapes, each worst case for some check, is inspected
/// quickly: every check is one pass. (Timing is printed, not asserted.)
#[test]
fn a_megabyte_description_is_inspected_quickly() {
    const MB: usize = 1 << 20;
    let fill = |unit: &str| unit.repeat(MB / unit.len());
    let shapes = [
        ("prose", fill("Returns the list of files in a directory. ")),
        ("trigger words", fill("ignore do not never call use must ")),
        ("call verbs", fill("call a_b use `x-y` run get_x ")),
        ("passives", fill("x_y is called tool is used ")),
        ("one word", "a".repeat(MB)),
        ("one long sentence", fill("word ")),
        ("zero-width", "\u{200B}".repeat(MB / 3)),
        ("tag characters", "\u{E0061}".repeat(MB / 4)),
        ("blank lines", "\n".repeat(MB)),
        // Every word the length of a name looked for, and none of them one.
        ("names", fill("tool_number_x ")),
    ];
    let others: Vec<(String, String)> = (0..500)
        .map(|i| (format!("s{}", i % 7), format!("tool_number_{i}")))
        .collect();
    let others: Vec<(&str, &str)> = others
        .iter()
        .map(|(s, t)| (s.as_str(), t.as_str()))
        .collect();
    for (shape, text) in shapes {
        let tool = serde_json::json!({"name": "big", "description": text});
        let started = Instant::now();
        let flags = inspect(&tool);
        let shadows = shadowing("me", &tool, &others);
        println!(
            "{shape}: {} flags, {} shadowing, {:?}",
            flags.len(),
            shadows.len(),
            started.elapsed()
        );
        assert!(
            flags.iter().any(|f| f.kind == FlagKind::Padding),
            "{shape}: a megabyte is padding"
        );
    }
}
