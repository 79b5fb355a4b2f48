//! The one plotting path: line charts (points joined per series) as SVG, for the benchmarks.
//!
//! Hand-written rather than `plotters`: its chart layout measures label text through a font
//! backend (`ttf` with system fonts, or `ab_glyph` with a font file to ship), which the host tools
//! would pull in for axis labels only; an SVG `<text>` element needs no font at build time, and the
//! whole chart is a few dozen lines.

use std::fmt::Write as _;

/// The opening tag of every SVG jetlink writes (charts here, the DCTA and fleet benches' own plots,
/// the build's link-score matrix): one form, so that an output check can tell jetlink's plots from
/// a user's SVG ([`is_jetlink_svg`]).
pub fn svg_open(width: impl std::fmt::Display, height: impl std::fmt::Display) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">"
    )
}

/// Whether `head` (a file's first bytes) opens as [`svg_open`] writes.
pub fn is_jetlink_svg(head: &[u8]) -> bool {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    line.starts_with(b"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"")
        && line.ends_with(b"\" font-family=\"sans-serif\" font-size=\"12\">")
}

/// One named series of (x, y) points, drawn in the given order.
#[derive(Clone, Debug, Default)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// A line chart over fixed axis ranges.
#[derive(Clone, Debug)]
pub struct LineChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    /// Axis ranges (min, max); values are shown as percentages when `percent` is set.
    pub x_range: (f64, f64),
    pub y_range: (f64, f64),
    pub percent: bool,
    pub series: Vec<Series>,
}

const COLORS: [&str; 12] = [
    "#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#7f7f7f", "#9467bd", "#8c564b", "#e377c2", "#17becf",
    "#bcbd22", "#000000", "#aec7e8",
];

impl LineChart {
    /// The chart as an SVG document (720 × 440, legend on the right).
    pub fn to_svg(&self) -> String {
        let (w, h, ml, mb, legend) = (720.0, 440.0, 60.0, 50.0, 190.0);
        let span = |r: (f64, f64)| if r.1 > r.0 { r.1 - r.0 } else { 1.0 };
        let x = |v: f64| ml + (v - self.x_range.0) / span(self.x_range) * (w - ml - legend);
        let y = |v: f64| h - mb - (v - self.y_range.0) / span(self.y_range) * (h - mb - 30.0);
        let label = |v: f64| if self.percent { format!("{:.0}%", 100.0 * v) } else { format!("{v:.2}") };
        let mut s = format!(
            "{}\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{}\" y=\"18\" text-anchor=\"middle\" font-weight=\"bold\">{}</text>\n",
            svg_open(w, h),
            (ml + w - legend) / 2.0,
            xml(&self.title)
        );
        for k in 0..=10 {
            let f = k as f64 / 10.0;
            let (vx, vy) = (self.x_range.0 + f * span(self.x_range), self.y_range.0 + f * span(self.y_range));
            let _ = writeln!(
                s,
                "<line x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#ddd\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\
                 <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                x(self.x_range.0),
                y(vy),
                x(self.x_range.1),
                y(vy),
                x(self.x_range.0) - 5.0,
                y(vy) + 4.0,
                label(vy),
                x(vx),
                h - mb + 18.0,
                label(vx)
            );
        }
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>\
             <text x=\"15\" y=\"{:.1}\" transform=\"rotate(-90 15 {:.1})\" text-anchor=\"middle\">{}</text>",
            (ml + w - legend) / 2.0,
            h - 10.0,
            xml(&self.x_label),
            y((self.y_range.0 + self.y_range.1) / 2.0),
            y((self.y_range.0 + self.y_range.1) / 2.0),
            xml(&self.y_label)
        );
        for (ci, series) in self.series.iter().enumerate() {
            let c = COLORS[ci % COLORS.len()];
            let path: Vec<String> =
                series.points.iter().map(|&(a, b)| format!("{:.1},{:.1}", x(a), y(b))).collect();
            let _ = writeln!(
                s,
                "<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"2\" points=\"{}\"/>",
                path.join(" ")
            );
            for &(a, b) in &series.points {
                let _ = writeln!(s, "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{c}\"/>", x(a), y(b));
            }
            let ly = 40.0 + 18.0 * ci as f64;
            let _ = writeln!(
                s,
                "<rect x=\"{}\" y=\"{}\" width=\"14\" height=\"3\" fill=\"{c}\"/><text x=\"{}\" y=\"{}\">{}</text>",
                w - legend + 20.0,
                ly,
                w - legend + 40.0,
                ly + 5.0,
                xml(&series.name)
            );
        }
        s.push_str("</svg>\n");
        s
    }
}

/// Text escaped for SVG.
fn xml(t: &str) -> String {
    t.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_places_points_in_its_ranges_and_escapes_text() {
        let c = LineChart {
            title: "a < b".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            x_range: (0.0, 1.0),
            y_range: (0.0, 1.0),
            percent: true,
            series: vec![Series { name: "s&t".into(), points: vec![(0.0, 0.0), (1.0, 1.0)] }],
        };
        let s = c.to_svg();
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
        assert!(s.contains("a &lt; b") && s.contains("s&amp;t"));
        // (0, 0) at the bottom left of the plot area, (1, 1) at its top right.
        assert!(s.contains("points=\"60.0,390.0 530.0,30.0\""), "{s}");
        assert!(s.contains(">100%</text>"));
    }
}
