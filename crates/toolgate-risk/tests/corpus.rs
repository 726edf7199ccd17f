//! The classifier against a labelled corpus of real tool definitions (`corpus/*.json`: the
//! official everything, filesystem, memory, github and gitlab servers from npm, the example
//! servers of the official Python SDK, and this repository's SendIt example), each labelled
//! by a careful human reading.
//!
//! The bar (issue 6): at least 90% agreement overall, and never a destructive or financial
//! tool rated Read.

use serde_json::Value;
use std::path::Path;
use toolgate_risk::{classify, Category};

fn category(label: &str) -> Category {
    match label {
        "Read" => Category::Read,
        "Write" => Category::Write,
        "Execute" => Category::Execute,
        "Destructive" => Category::Destructive,
        "Financial" => Category::Financial,
        other => panic!("unknown label {other:?}"),
    }
}

#[test]
fn the_classifier_agrees_with_the_labelled_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("corpus directory")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 6, "the corpus has {} files", files.len());
    let (mut total, mut agreed) = (0, 0);
    let mut disagreements = Vec::new();
    let mut dangerous_as_read = Vec::new();
    for file in &files {
        let doc: Value =
            serde_json::from_slice(&std::fs::read(file).expect("read")).expect("corpus JSON");
        let server = doc["server"].as_str().expect("server");
        for entry in doc["tools"].as_array().expect("tools") {
            let expected = category(entry["expected"].as_str().expect("expected"));
            let verdict = classify(&entry["tool"]);
            let name = entry["tool"]["name"].as_str().expect("name");
            total += 1;
            if verdict.category == expected {
                agreed += 1;
            } else {
                disagreements.push(format!(
                    "{server}/{name}: expected {expected}, got {} ({})",
                    verdict.category,
                    verdict.evidence.join("; ")
                ));
            }
            if expected >= Category::Destructive && verdict.category == Category::Read {
                dangerous_as_read.push(format!("{server}/{name}"));
            }
            assert!(
                !verdict.evidence.is_empty(),
                "{server}/{name} has no evidence"
            );
        }
    }
    println!("agreement: {agreed}/{total}");
    for d in &disagreements {
        println!("  {d}");
    }
    assert!(total >= 80, "the corpus has {total} tools");
    assert!(
        dangerous_as_read.is_empty(),
        "destructive or financial tools rated Read: {dangerous_as_read:?}"
    );
    assert!(
        agreed * 10 >= total * 9,
        "agreement {agreed}/{total} is under 90%:\n{}",
        disagreements.join("\n")
    );
}
