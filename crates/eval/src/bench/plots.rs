//! SVG plots of a bench run (plotters, SVG backend only).
//!
//! Every function writes one self-contained SVG file and returns its path; the data comes from
//! the report, so a plot never shows anything the report does not have.

use std::path::{Path, PathBuf};

use plotters::prelude::*;

use super::{BenchError, BenchReport};

const SIZE: (u32, u32) = (900, 520);
// Solid greys (not black with opacity): every SVG renderer shows them the same.
const LIGHT: RGBColor = RGBColor(244, 244, 244);
const BOLD: RGBColor = RGBColor(214, 214, 214);

fn color(i: usize) -> RGBColor {
    const P: [RGBColor; 8] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
    ];
    P[i % P.len()]
}

fn err(path: &Path) -> impl Fn(String) -> BenchError + '_ {
    move |message| BenchError::Plot { path: path.to_path_buf(), message }
}

fn span(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) =
        values.filter(|v| v.is_finite()).fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if hi - lo < 1e-9 { (lo - 0.5, hi + 0.5) } else { (lo, hi) }
}

/// A line chart: one line per series (name, points); `marks` draws vertical lines at those x.
pub fn lines(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[(String, Vec<(f64, f64)>)],
    y_range: Option<(f64, f64)>,
    marks: &[f64],
) -> Result<PathBuf, BenchError> {
    let e = err(path);
    let (x0, x1) = span(series.iter().flat_map(|(_, p)| p.iter().map(|q| q.0)));
    let (y0, y1) = y_range.unwrap_or_else(|| {
        let (a, b) = span(series.iter().flat_map(|(_, p)| p.iter().map(|q| q.1)));
        let pad = (b - a) * 0.05;
        (a - pad, b + pad)
    });
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(|x| e(x.to_string()))?;
    chart
        .configure_mesh()
        .light_line_style(LIGHT)
        .bold_line_style(BOLD)
        .x_desc(x_desc)
        .y_desc(y_desc)
        .draw()
        .map_err(|x| e(x.to_string()))?;
    for &m in marks {
        chart
            .draw_series(LineSeries::new([(m, y0), (m, y1)], RGBColor(150, 150, 150)))
            .map_err(|x| e(x.to_string()))?;
    }
    for (i, (name, points)) in series.iter().enumerate() {
        let c = color(i);
        let pts: Vec<(f64, f64)> = points.iter().copied().filter(|p| p.0.is_finite() && p.1.is_finite()).collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
            .map_err(|x| e(x.to_string()))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
        if pts.len() <= 40 {
            chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, c.filled()))).map_err(|x| e(x.to_string()))?;
        }
    }
    if series.len() > 1 || series.iter().any(|(n, _)| !n.is_empty()) {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|x| e(x.to_string()))?;
    }
    root.present().map_err(|x| e(x.to_string()))?;
    Ok(path.to_path_buf())
}

/// Histograms side by side, one panel per (name, values), on a shared x range and `bins` bins.
pub fn histograms(
    path: &Path,
    title: &str,
    x_desc: &str,
    sets: &[(String, Vec<f64>)],
    bins: usize,
) -> Result<PathBuf, BenchError> {
    let e = err(path);
    let bins = bins.max(1);
    let (lo, hi) = span(sets.iter().flat_map(|(_, v)| v.iter().copied()));
    let (lo, hi) = (lo.min(0.0), hi);
    let width = (hi - lo) / bins as f64;
    let counts: Vec<Vec<u32>> = sets
        .iter()
        .map(|(_, v)| {
            let mut c = vec![0u32; bins];
            for &x in v.iter().filter(|x| x.is_finite()) {
                c[(((x - lo) / width) as usize).min(bins - 1)] += 1;
            }
            c
        })
        .collect();
    let root = SVGBackend::new(path, (SIZE.0, 200 + 160 * sets.len().max(1) as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
    let root = root.margin(8, 0, 0, 0).titled(title, ("sans-serif", 20)).map_err(|x| e(x.to_string()))?;
    let panels = root.split_evenly((sets.len().max(1), 1));
    for (i, ((name, values), panel)) in sets.iter().zip(&panels).enumerate() {
        let top = counts[i].iter().copied().max().unwrap_or(1).max(1);
        let mean = values.iter().sum::<f64>() / values.len().max(1) as f64;
        let mut chart = ChartBuilder::on(panel)
            .caption(format!("{name}: {} chunks, mean {mean:.1}", values.len()), ("sans-serif", 15))
            .margin(8)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d(lo..hi, 0u32..top + top / 10 + 1)
            .map_err(|x| e(x.to_string()))?;
        chart
            .configure_mesh()
            .light_line_style(LIGHT)
            .bold_line_style(BOLD)
            .x_desc(if i + 1 == sets.len() { x_desc } else { "" })
            .y_desc("chunks")
            .draw()
            .map_err(|x| e(x.to_string()))?;
        let c = color(i);
        chart
            .draw_series(counts[i].iter().enumerate().map(|(b, &n)| {
                let x = lo + b as f64 * width;
                Rectangle::new([(x, 0), (x + width, n)], c.mix(0.75).filled())
            }))
            .map_err(|x| e(x.to_string()))?;
    }
    root.present().map_err(|x| e(x.to_string()))?;
    Ok(path.to_path_buf())
}

/// Horizontal bars: (label, value) from top to bottom.
pub fn bars(path: &Path, title: &str, x_desc: &str, items: &[(String, f64)]) -> Result<PathBuf, BenchError> {
    let e = err(path);
    let n = items.len().max(1);
    let top = items.iter().map(|i| i.1).fold(0.0, f64::max).max(1e-9) * 1.1;
    let label_width = items.iter().map(|i| i.0.len()).max().unwrap_or(4).clamp(4, 40) as u32 * 8;
    let root = SVGBackend::new(path, (SIZE.0, 120 + 34 * n as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(label_width)
        .build_cartesian_2d(0.0..top, (0..n.saturating_sub(1).max(1)).into_segmented())
        .map_err(|x| e(x.to_string()))?;
    let labels: Vec<String> = items.iter().map(|i| i.0.clone()).collect();
    chart
        .configure_mesh()
        .light_line_style(LIGHT)
        .bold_line_style(BOLD)
        .x_desc(x_desc)
        .disable_y_mesh()
        .y_labels(n)
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => labels.get(n - 1 - *i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .draw()
        .map_err(|x| e(x.to_string()))?;
    chart
        .draw_series(items.iter().enumerate().map(|(i, (_, v))| {
            let row = n - 1 - i;
            Rectangle::new(
                [(0.0, SegmentValue::Exact(row)), (*v, SegmentValue::Exact(row + 1))],
                color(0).mix(0.8).filled(),
            )
        }))
        .map_err(|x| e(x.to_string()))?;
    root.present().map_err(|x| e(x.to_string()))?;
    Ok(path.to_path_buf())
}

/// The plots of a bench run (SVG) in `out`, from its report: chunk lengths per configuration,
/// the perplexity curve, recall@k, accuracy vs samples and vs steps, stage times. Plots of an
/// earlier run in `out` are removed first; a plot that cannot be drawn is returned as an error
/// beside the ones written (a run never fails for a plot).
pub fn draw_all(out: &Path, report: &BenchReport, lengths: &[(String, Vec<f64>)]) -> (Vec<PathBuf>, Vec<BenchError>) {
    for stale in [
        "chunk_lengths.svg",
        "ppl_curve.svg",
        "recall_at_k.svg",
        "accuracy_vs_samples.svg",
        "accuracy_vs_steps.svg",
        "stage_times.svg",
    ] {
        let _ = std::fs::remove_file(out.join(stale));
    }
    let mut results = Vec::new();
    if !lengths.is_empty() {
        results.push(histograms(
            &out.join("chunk_lengths.svg"),
            "Chunk length per chunker",
            "words per chunk",
            lengths,
            30,
        ));
    }
    if let Some(c) = &report.ppl_curve {
        let points: Vec<(f64, f64)> = c.scores.iter().enumerate().map(|(i, &s)| (i as f64, f64::from(s))).collect();
        let marks: Vec<f64> = c.boundaries.iter().map(|&b| b as f64 - 0.5).collect();
        results.push(lines(
            &out.join("ppl_curve.svg"),
            &format!("Perplexity curve of {} (grey: chunk boundaries)", c.document),
            "sentence",
            "mean NLL (nats)",
            &[(String::new(), points)],
            None,
            &marks,
        ));
    }
    let recall: Vec<(String, Vec<(f64, f64)>)> = report
        .runs
        .iter()
        .flat_map(|r| {
            r.modes.iter().map(move |m| {
                let pts = m.metrics.recall.iter().enumerate().map(|(k, &v)| ((k + 1) as f64, v)).collect();
                (format!("{} {}", r.chunker, m.mode), pts)
            })
        })
        .collect();
    if !recall.is_empty() {
        results.push(lines(&out.join("recall_at_k.svg"), "Recall@k", "k", "recall", &recall, Some((0.0, 1.0)), &[]));
    }
    if let Some(a) = report.answers.as_ref().filter(|a| !a.samples_curve.is_empty()) {
        let series: Vec<(String, Vec<(f64, f64)>)> = a
            .samples_curve
            .iter()
            .map(|c| {
                (format!("{} {}", c.infill, c.method), c.points.iter().map(|p| (p.samples as f64, p.em)).collect())
            })
            .collect();
        results.push(lines(
            &out.join("accuracy_vs_samples.svg"),
            "Exact match vs number of samples (first N of the same candidates)",
            "samples N",
            "exact match",
            &series,
            None,
            &[],
        ));
    }
    if !report.steps_curve.is_empty() {
        let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
        for p in &report.steps_curve {
            let name = format!("{} {}", p.infill, p.method);
            match series.iter_mut().find(|(n, _)| *n == name) {
                Some((_, pts)) => pts.push((p.steps as f64, p.em)),
                None => series.push((name, vec![(p.steps as f64, p.em)])),
            }
        }
        for (_, pts) in &mut series {
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        results.push(lines(
            &out.join("accuracy_vs_steps.svg"),
            "Exact match vs denoising steps (masked decoder)",
            "steps",
            "exact match",
            &series,
            None,
            &[],
        ));
    }
    if !report.stages.is_empty() {
        let items: Vec<(String, f64)> = report.stages.iter().map(|s| (s.stage.clone(), s.seconds)).collect();
        results.push(bars(&out.join("stage_times.svg"), "Time per stage", "seconds", &items));
    }
    let (mut written, mut failed) = (Vec::new(), Vec::new());
    for r in results {
        match r {
            Ok(p) => written.push(p),
            Err(e) => failed.push(e),
        }
    }
    (written, failed)
}
