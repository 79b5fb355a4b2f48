//! Human-readable reports of a bundle's scores: the link score matrix (target × source) with each
//! target's ensemble score from all sources, as a Markdown table and as an SVG heatmap, written next
//! to the bundle.

use crate::model_set::ModelSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::bundle::Bundle;

/// Markdown table: one row per target, one column per source (link score alone), then the ensemble
/// score from all other models and the no-source (bias only) score.
/// The first line's start of [`scores_markdown`] (how an existing report is recognised).
pub const SCORES_TITLE: &str = "# Link scores: ";

/// `in_sample`: the scored rows were fitted too (`jetlink build --in-sample`, a ceiling), which the
/// bundle does not record.
pub fn scores_markdown(b: &Bundle, in_sample: bool) -> String {
    let n = b.n_models();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{SCORES_TITLE}{}\n\nAgreement with the target model's own output on {} {} \
         (class: top-1; multilabel: F1 at 0.5; regression: all within tolerance; count: |err| < 0.5; \
         embedding: cosine ≥ 0.9; box: IoU ≥ 0.5{}). Rows are targets, columns sources.\n",
        b.workload,
        b.split.holdout_rows,
        if in_sample {
            "of the frames the links were fitted on (an in-sample build: a ceiling, not a held-out score)"
        } else {
            "held-out training frames"
        },
        if b.models.iter().any(|m| m.kind.seq().is_some()) {
            "; sequence: the decoded strings equal (ctc), every step's class equal (argmax), every value within tolerance (raw)"
        } else {
            ""
        }
    );
    let rules: Vec<String> = b
        .models
        .iter()
        .filter(|m| m.scoring.declared())
        .map(|m| format!("{} by {}", m.name, m.scoring.rule.name()))
        .collect();
    if !rules.is_empty() {
        let _ = writeln!(s, "Declared score rules (used instead of the kind's): {}.\n", rules.join(", "));
    }
    s.push_str("| target \\ source |");
    for m in &b.models {
        let _ = write!(s, " {} |", m.name);
    }
    s.push_str(" **ensemble (all)** | no source | constant |\n|---|");
    for _ in 0..n + 3 {
        s.push_str("---:|");
    }
    s.push('\n');
    for (j, m) in b.models.iter().enumerate() {
        let _ = write!(s, "| {} ({} {}) |", m.name, m.kind.name(), m.size);
        for i in 0..n {
            if i == j {
                s.push_str(" — |");
            } else {
                let _ = write!(s, " {:.3} |", b.link_score(i, j));
            }
        }
        let _ = writeln!(
            s,
            " **{:.3}** | {:.3} | {:.3} |",
            b.ensemble_score(j),
            b.subset_score(j, ModelSet::EMPTY),
            b.scores.constant[j]
        );
    }
    let mean_link: f32 = (0..n)
        .flat_map(|j| (0..n).filter(move |&i| i != j).map(move |i| (i, j)))
        .map(|(i, j)| b.link_score(i, j))
        .sum::<f32>()
        / (n * (n - 1)) as f32;
    let mean_ens: f32 = (0..n).map(|j| b.ensemble_score(j)).sum::<f32>() / n as f32;
    let _ = writeln!(s, "\nMean link score {mean_link:.3}; mean ensemble score (all sources) {mean_ens:.3}.");
    let _ = writeln!(
        s,
        "`constant` is the score rule applied to the fit rows' mean target (what a link that learnt \
         nothing would score); `no source` is the trained ensemble's bias alone."
    );
    s
}

/// SVG heatmap of the same matrix (white = 0, dark green = 1), ensemble column set apart.
pub fn scores_svg(b: &Bundle) -> String {
    let n = b.n_models();
    let (cell, left, top) = (56.0, 150.0, 110.0);
    let width = left + (n as f64 + 1.5) * cell + 20.0;
    let height = top + n as f64 * cell + 40.0;
    let mut s = String::new();
    let _ = writeln!(s, "{}", crate::plot::svg_open(width, height));
    let _ = writeln!(
        s,
        r#"<text x="10" y="20" font-size="14">Link scores: {} (rows: target, columns: source)</text>"#,
        esc(&b.workload)
    );
    let col_x = |i: usize| if i < n { left + i as f64 * cell } else { left + (n as f64 + 0.5) * cell };
    for (i, m) in b.models.iter().enumerate() {
        let x = col_x(i) + cell / 2.0;
        let _ = writeln!(
            s,
            r#"<text transform="translate({x},{}) rotate(-45)">{}</text>"#,
            top - 6.0,
            esc(&m.name)
        );
    }
    let _ = writeln!(
        s,
        r#"<text transform="translate({},{}) rotate(-45)" font-weight="bold">ensemble</text>"#,
        col_x(n) + cell / 2.0,
        top - 6.0
    );
    for (j, m) in b.models.iter().enumerate() {
        let y = top + j as f64 * cell;
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{} ({})</text>"#,
            left - 6.0,
            y + cell / 2.0 + 4.0,
            esc(&m.name),
            m.kind.name()
        );
        for i in 0..=n {
            let x = col_x(i);
            if i == j {
                let _ = writeln!(
                    s,
                    r##"<rect x="{x}" y="{y}" width="{cell}" height="{cell}" fill="#ddd" stroke="#fff"/>"##
                );
                continue;
            }
            let v = if i == n { b.ensemble_score(j) } else { b.link_score(i, j) };
            let (r, g, bl) = color(v);
            let text = if v > 0.6 { "#fff" } else { "#000" };
            let _ = writeln!(
                s,
                r##"<rect x="{x}" y="{y}" width="{cell}" height="{cell}" fill="rgb({r},{g},{bl})" stroke="#fff"/><text x="{}" y="{}" text-anchor="middle" fill="{text}">{v:.2}</text>"##,
                x + cell / 2.0,
                y + cell / 2.0 + 4.0
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

fn color(v: f32) -> (u8, u8, u8) {
    let v = v.clamp(0.0, 1.0);
    let lerp = |a: f32, b: f32| (a + (b - a) * v).round() as u8;
    (lerp(255.0, 0.0), lerp(255.0, 109.0), lerp(255.0, 44.0))
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The report files of the bundle `bundle_path`: `<stem>.scores.md` and `<stem>.scores.svg` beside
/// it, with their kinds.
pub fn report_paths(bundle_path: &Path) -> [(PathBuf, crate::output::Kind); 2] {
    [
        (bundle_path.with_extension("scores.md"), crate::output::Kind::ScoresReport),
        (bundle_path.with_extension("scores.svg"), crate::output::Kind::Svg),
    ]
}

/// Write the report files ([`report_paths`]) by the output rule (`force` as the bundle's);
/// returns their paths.
pub fn write_reports(b: &Bundle, bundle_path: &Path, force: bool, in_sample: bool) -> Result<[PathBuf; 2]> {
    let [(md, mk), (svg, sk)] = report_paths(bundle_path);
    crate::output::write(&md, "report", mk, force, scores_markdown(b, in_sample).as_bytes())?;
    crate::output::write(&svg, "report", sk, force, scores_svg(b).as_bytes())?;
    Ok([md, svg])
}
