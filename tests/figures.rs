//! Figures that cannot go stale. A figure that README.md or a page under docs/ quotes from a
//! benchmark is written as a link to the committed JSON it comes from, with a JSON pointer:
//! `[89.8%](docs/bench/mlink.json#/main/accuracy/overall)`. This test resolves every such link and
//! checks that the text is the JSON value, printed as the text prints it (a percentage of a share,
//! or the number itself, with the text's decimals). README.md may state no percentage otherwise.

use std::path::{Path, PathBuf};

/// A figure link: its text, the JSON file and the pointer.
#[derive(Debug)]
struct Figure {
    text: String,
    file: PathBuf,
    pointer: String,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `[text](path.json#/pointer)` in `md`, with `path` resolved against `dir`.
fn figures(md: &str, dir: &Path) -> Vec<Figure> {
    let mut out = Vec::new();
    let mut rest = md;
    while let Some(at) = rest.find("](") {
        let (before, after) = rest.split_at(at);
        let Some(close) = after.find(')') else { break };
        let target = &after[2..close];
        if let (Some(open), Some((file, pointer))) = (before.rfind('['), target.split_once(".json#")) {
            out.push(Figure {
                text: before[open + 1..].to_string(),
                file: dir.join(format!("{file}.json")),
                pointer: pointer.to_string(),
            });
        }
        rest = &after[close..];
    }
    out
}

/// The number a figure's text shows, and how: (digits without separators, decimals, percent).
fn shown(text: &str) -> Option<(String, usize, bool)> {
    let t = text.trim().trim_start_matches(['~', '≈']);
    let num: String =
        t.chars().take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ',' || *c == '-').collect();
    if num.is_empty() {
        return None;
    }
    let percent = t[num.len()..].trim_start().starts_with('%');
    let plain = num.replace(',', "");
    let decimals = plain.split_once('.').map_or(0, |(_, d)| d.len());
    Some((plain, decimals, percent))
}

fn check(md_path: &Path) -> (usize, Vec<String>) {
    let md = std::fs::read_to_string(md_path).unwrap();
    let dir = md_path.parent().unwrap();
    let mut errors = Vec::new();
    let figs = figures(&md, dir);
    for f in &figs {
        let where_ = format!("{}: [{}]({}#{})", md_path.display(), f.text, f.file.display(), f.pointer);
        let Ok(json) = std::fs::read_to_string(&f.file) else {
            errors.push(format!("{where_}: no such JSON file"));
            continue;
        };
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        let Some(value) = v.pointer(&f.pointer).and_then(|x| x.as_f64()) else {
            errors.push(format!("{where_}: the pointer names no number"));
            continue;
        };
        let Some((digits, decimals, percent)) = shown(&f.text) else {
            errors.push(format!("{where_}: the text shows no number"));
            continue;
        };
        let expected = format!("{:.*}", decimals, if percent { 100.0 * value } else { value });
        if expected != digits {
            errors.push(format!("{where_}: the text says {digits}, the JSON {expected}"));
        }
    }
    (figs.len(), errors)
}

#[test]
fn every_quoted_figure_matches_its_json() {
    let mut pages = vec![root().join("README.md")];
    for e in std::fs::read_dir(root().join("docs")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            pages.push(p);
        }
    }
    let (mut total, mut errors) = (0, Vec::new());
    for p in &pages {
        let (n, e) = check(p);
        total += n;
        errors.extend(e);
    }
    assert!(
        errors.is_empty(),
        "{} of {total} figures disagree with their JSON:\n{}",
        errors.len(),
        errors.join("\n")
    );
    assert!(total >= 20, "only {total} linked figures: the README and docs/mlink.md quote theirs by link");
}

/// Outside code, every percentage in the README is a linked figure.
#[test]
fn the_readme_states_no_unlinked_percentage() {
    let md = std::fs::read_to_string(root().join("README.md")).unwrap();
    let mut bad = Vec::new();
    let mut in_fence = false;
    for line in md.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence || line.starts_with("    ") {
            continue;
        }
        // Drop inline code and linked figures, then look for what is left.
        let mut prose = String::new();
        for (k, part) in line.split('`').enumerate() {
            if k % 2 == 0 {
                prose.push_str(part);
            }
        }
        let mut kept = prose.clone();
        for f in figures(&prose, &root()) {
            kept = kept.replacen(&format!("[{}]", f.text), "", 1);
        }
        let b = kept.as_bytes();
        for i in 1..b.len() {
            if b[i] == b'%' && b[i - 1].is_ascii_digit() {
                bad.push(line.to_string());
                break;
            }
        }
    }
    assert!(
        bad.is_empty(),
        "percentages in README.md that are not linked to a bench JSON:\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_link_parser_reads_what_the_pages_write() {
    let f =
        figures("kept [89.8%](docs/bench/mlink.json#/main/accuracy/overall) and [a](b.md)", Path::new("/r"));
    assert_eq!(f.len(), 1);
    assert_eq!((f[0].text.as_str(), f[0].pointer.as_str()), ("89.8%", "/main/accuracy/overall"));
    assert_eq!(f[0].file, Path::new("/r/docs/bench/mlink.json"));
    assert_eq!(shown("13,000"), Some(("13000".into(), 0, false)));
    assert_eq!(shown("5.45 µs"), Some(("5.45".into(), 2, false)));
    assert_eq!(shown("72.4%"), Some(("72.4".into(), 1, true)));
}
