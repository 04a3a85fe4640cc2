//! SVG charts of benchmark results (plotters): grouped bars, one group per
//! load or proxy, one bar per series, each bar labelled with its value.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// One series of a bar chart: a value per group.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// One value per group (NaN or infinite values are drawn as 0).
    pub values: Vec<f64>,
}

/// A grouped bar chart.
#[derive(Debug, Clone)]
pub struct Bars {
    /// Title above the plot.
    pub title: String,
    /// Y-axis description.
    pub y_desc: String,
    /// Group labels along the x axis.
    pub groups: Vec<String>,
    /// The series; bar `j` of group `i` is `series[j].values[i]`.
    pub series: Vec<Series>,
    /// A horizontal reference line (1.0 for ratio charts).
    pub reference: Option<f64>,
    /// Decimals of the value labels.
    pub decimals: usize,
}

const COLORS: [RGBColor; 4] = [
    RGBColor(0x2b, 0x6c, 0xb0),
    RGBColor(0x7f, 0xb3, 0xe6),
    RGBColor(0xc0, 0x5a, 0x1f),
    RGBColor(0xf0, 0xa8, 0x6e),
];

fn finite(v: f64) -> f64 {
    if v.is_finite() { v } else { 0.0 }
}

impl Bars {
    /// The top of the y axis: the largest value (or the reference) plus
    /// headroom for the value labels and the legend.
    fn y_max(&self) -> f64 {
        let top = self
            .series
            .iter()
            .flat_map(|s| s.values.iter().copied().map(finite))
            .chain(self.reference)
            .fold(0.0_f64, f64::max);
        if top <= 0.0 { 1.0 } else { top * 1.5 }
    }

    /// Renders the chart to an SVG file at `path`.
    pub fn write_svg(&self, path: &Path) -> Result<(), String> {
        let groups = self.groups.len().max(1);
        let width = (220 * groups as u32).clamp(640, 1200);
        let root = SVGBackend::new(path, (width, 420)).into_drawing_area();
        self.draw(&root)
            .and_then(|()| root.present().map_err(|e| e.to_string()))
            .map_err(|e| format!("chart {}: {e}", path.display()))
    }

    fn draw(
        &self,
        root: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    ) -> Result<(), String> {
        let err = |e: DrawingAreaErrorKind<_>| e.to_string();
        root.fill(&WHITE).map_err(err)?;
        let g = self.groups.len().max(1) as f64;
        let y_max = self.y_max();
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(34)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..g, 0.0..y_max)
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .y_max_light_lines(0)
            .x_labels(0)
            .x_label_formatter(&|_| String::new())
            .y_label_formatter(&|v| format!("{:.*}", self.decimals, v))
            .y_desc(self.y_desc.as_str())
            .draw()
            .map_err(err)?;

        let n = self.series.len().max(1) as f64;
        let bar = 0.8 / n;
        let label_style = TextStyle::from(("sans-serif", 11).into_font())
            .pos(Pos::new(HPos::Center, VPos::Bottom));
        for (j, s) in self.series.iter().enumerate() {
            let color = COLORS[j % COLORS.len()];
            let x0 = |i: usize| i as f64 + 0.1 + j as f64 * bar;
            chart
                .draw_series(s.values.iter().enumerate().map(|(i, v)| {
                    Rectangle::new(
                        [(x0(i), 0.0), (x0(i) + bar * 0.92, finite(*v))],
                        color.filled(),
                    )
                }))
                .map_err(err)?
                .label(s.name.as_str())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled())
                });
            chart
                .draw_series(s.values.iter().enumerate().map(|(i, v)| {
                    Text::new(
                        format!("{:.*}", self.decimals, finite(*v)),
                        (x0(i) + bar * 0.46, finite(*v)),
                        label_style.clone(),
                    )
                }))
                .map_err(err)?;
        }
        if let Some(r) = self.reference {
            chart
                .draw_series(LineSeries::new([(0.0, r), (g, r)], BLACK.stroke_width(1)))
                .map_err(err)?;
        }
        let group_style =
            TextStyle::from(("sans-serif", 13).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
        for (i, name) in self.groups.iter().enumerate() {
            let (px, py) = chart.backend_coord(&(i as f64 + 0.5, 0.0));
            root.draw(&Text::new(name.as_str(), (px, py + 8), group_style.clone()))
                .map_err(err)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_an_svg_with_labels() {
        let dir = crate::harness::scratch("chart-test");
        let path = dir.join("c.svg");
        let bars = Bars {
            title: "ratios".into(),
            y_desc: "lb / other".into(),
            groups: vec!["/fixed".into(), "/bytes/1024".into()],
            series: vec![
                Series {
                    name: "req/s lb/HAProxy".into(),
                    values: vec![1.14, 1.04],
                },
                Series {
                    name: "CPU/req lb/nginx".into(),
                    values: vec![0.84, f64::NAN],
                },
            ],
            reference: Some(1.0),
            decimals: 2,
        };
        bars.write_svg(&path).expect("chart");
        let svg = std::fs::read_to_string(&path).expect("svg");
        assert!(svg.starts_with("<svg"));
        for text in ["/bytes/1024", "1.14", "req/s lb/HAProxy", "ratios"] {
            assert!(svg.contains(text), "{text} missing");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn y_axis_has_room_when_all_zero() {
        let bars = Bars {
            title: String::new(),
            y_desc: String::new(),
            groups: vec!["lb".into()],
            series: vec![Series {
                name: "failed".into(),
                values: vec![0.0],
            }],
            reference: None,
            decimals: 0,
        };
        assert_eq!(bars.y_max(), 1.0);
    }
}
