//! Bar charts as hand-written SVG, rendered on the server: one bar per bucket, a zero
//! line, a y axis with round ticks and thinned x labels. No JavaScript and no chart
//! library (the whole thing is a few hundred bytes of markup per bucket); the chart
//! carries `<title>` and `<desc>` and `role="img"`, so screen readers announce it, and
//! the page shows the same numbers in a table.

use std::fmt::Write as _;

/// Drawing area, in SVG user units (the SVG scales to its container's width).
const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 260.0;
const LEFT: f64 = 72.0;
const RIGHT: f64 = 8.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 44.0;
/// At most this many x labels, fewer when they are long: the others are skipped so that
/// none overlap (every bar keeps its own tooltip, and the table has every bucket).
const MAX_X_LABELS: usize = 12;
/// Rough width of one label character at the chart's font size, in user units.
const CHAR_WIDTH: f64 = 6.6;

/// One bar: its label on the x axis and its value (minor units, may be negative).
#[derive(Clone, Debug, PartialEq)]
pub struct Bar {
    pub label: String,
    pub value: i64,
}

/// A chart to draw.
#[derive(Clone)]
pub struct BarChart<'a> {
    /// Short name read first by screen readers, e.g. "Net revenue per day, EUR".
    pub title: &'a str,
    /// One sentence saying what is shown.
    pub description: &'a str,
    pub bars: &'a [Bar],
    /// How a value is written on the axis and in tooltips.
    pub format: &'a dyn Fn(i64) -> String,
}

/// The chart as an `<svg>` element. With no bars, a small SVG that says so.
pub fn render(chart: &BarChart<'_>) -> String {
    let mut svg = String::new();
    let id = element_id(chart.title);
    let _ = write!(
        svg,
        r#"<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="{id}-title {id}-desc"><title id="{id}-title">{}</title><desc id="{id}-desc">{}</desc>"#,
        escape(chart.title),
        escape(chart.description)
    );
    if chart.bars.is_empty() {
        let _ = write!(
            svg,
            r#"<text class="no-data" x="{}" y="{}" text-anchor="middle">No data in this range</text></svg>"#,
            WIDTH / 2.0,
            HEIGHT / 2.0
        );
        return svg;
    }
    let scale = Scale::of(chart.bars);
    draw_y_axis(&mut svg, &scale, chart.format);
    draw_bars(&mut svg, &scale, chart);
    svg.push_str("</svg>");
    svg
}

/// Maps values to heights: from `low` (≤ 0) to `high` (≥ 0), both round numbers.
struct Scale {
    low: i64,
    high: i64,
    step: i64,
}

impl Scale {
    fn of(bars: &[Bar]) -> Scale {
        let max = bars.iter().map(|bar| bar.value).max().unwrap_or(0).max(0);
        let min = bars.iter().map(|bar| bar.value).min().unwrap_or(0).min(0);
        let step = nice_step((max - min).max(1) / 4);
        Scale {
            low: round_away(min, step),
            high: round_away(max, step).max(step),
            step,
        }
    }

    /// The y coordinate of a value.
    fn y(&self, value: i64) -> f64 {
        let span = (self.high - self.low) as f64;
        TOP + (self.high - value) as f64 / span * (HEIGHT - TOP - BOTTOM)
    }
}

/// 1, 2 or 5 times a power of ten, at least `rough`.
fn nice_step(rough: i64) -> i64 {
    let mut power = 1_i64;
    loop {
        for factor in [1, 2, 5] {
            let step = factor * power;
            if step >= rough {
                return step.max(1);
            }
        }
        power = power.saturating_mul(10);
        if power == i64::MAX {
            return power;
        }
    }
}

/// The next multiple of `step` away from zero.
fn round_away(value: i64, step: i64) -> i64 {
    if value >= 0 {
        (value + step - 1) / step * step
    } else {
        -((-value + step - 1) / step * step)
    }
}

fn draw_y_axis(svg: &mut String, scale: &Scale, format: &dyn Fn(i64) -> String) {
    let mut tick = scale.low;
    while tick <= scale.high {
        let y = scale.y(tick);
        let class = if tick == 0 { "axis zero" } else { "grid" };
        let _ = write!(
            svg,
            r#"<line class="{class}" x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}"/><text class="tick" x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
            WIDTH - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            escape(&format(tick))
        );
        tick += scale.step;
    }
}

fn draw_bars(svg: &mut String, scale: &Scale, chart: &BarChart<'_>) {
    let count = chart.bars.len();
    let slot = (WIDTH - LEFT - RIGHT) / count as f64;
    let gap = (slot * 0.2).min(8.0);
    let widest = chart
        .bars
        .iter()
        .map(|bar| bar.label.chars().count())
        .max()
        .unwrap_or(1) as f64;
    let fitting = ((WIDTH - LEFT - RIGHT) / (widest * CHAR_WIDTH + 12.0)).floor() as usize;
    let label_every = count.div_ceil(fitting.clamp(1, MAX_X_LABELS)).max(1);
    for (index, bar) in chart.bars.iter().enumerate() {
        let x = LEFT + index as f64 * slot + gap / 2.0;
        let top = scale.y(bar.value.max(0));
        let height = (scale.y(bar.value.min(0)) - top).max(0.0);
        let sign = if bar.value < 0 { "bar negative" } else { "bar" };
        let _ = write!(
            svg,
            r#"<rect class="{sign}" x="{x:.1}" y="{top:.1}" width="{:.1}" height="{height:.1}"><title>{}: {}</title></rect>"#,
            slot - gap,
            escape(&bar.label),
            escape(&(chart.format)(bar.value))
        );
        if index % label_every == 0 {
            let _ = write!(
                svg,
                r#"<text class="label" x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                x + (slot - gap) / 2.0,
                HEIGHT - BOTTOM + 16.0,
                escape(&bar.label)
            );
        }
    }
}

/// An id for the title and description, unique enough within one page.
fn element_id(title: &str) -> String {
    let slug: String = title
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    format!("chart-{slug}")
}

/// Escapes text for SVG content and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(value: i64) -> String {
        value.to_string()
    }

    fn bars(values: &[i64]) -> Vec<Bar> {
        values
            .iter()
            .enumerate()
            .map(|(i, value)| Bar {
                label: format!("day {i}"),
                value: *value,
            })
            .collect()
    }

    /// The `height` of every `<rect class="bar…">`, in order.
    fn heights(svg: &str) -> Vec<f64> {
        svg.split("<rect ")
            .skip(1)
            .map(|rect| {
                let start = rect.find("height=\"").unwrap() + 8;
                let end = start + rect[start..].find('"').unwrap();
                rect[start..end].parse().unwrap()
            })
            .collect()
    }

    fn chart<'a>(bars: &'a [Bar], format: &'a dyn Fn(i64) -> String) -> BarChart<'a> {
        BarChart {
            title: "Net revenue per day, EUR",
            description: "Net revenue of each day",
            bars,
            format,
        }
    }

    #[test]
    fn bar_heights_are_proportional_to_values() {
        let bars = bars(&[100, 200, 400, 0]);
        let svg = render(&chart(&bars, &plain));
        let heights = heights(&svg);
        assert_eq!(heights.len(), 4);
        assert!(heights[0] > 0.0);
        assert!((heights[1] / heights[0] - 2.0).abs() < 0.02, "{heights:?}");
        assert!((heights[2] / heights[0] - 4.0).abs() < 0.04, "{heights:?}");
        assert_eq!(heights[3], 0.0);
    }

    #[test]
    fn negative_values_hang_below_the_zero_line() {
        let bars = bars(&[300, -100]);
        let svg = render(&chart(&bars, &plain));
        let heights = heights(&svg);
        assert!((heights[0] / heights[1] - 3.0).abs() < 0.05, "{heights:?}");
        assert!(svg.contains(r#"class="bar negative""#));
        assert!(svg.contains(r#"class="axis zero""#));
    }

    #[test]
    fn an_empty_chart_says_there_is_no_data() {
        let svg = render(&chart(&[], &plain));
        assert!(svg.contains("No data in this range"));
        assert!(!svg.contains("<rect"));
        assert!(svg.starts_with("<svg"));
        assert!(svg.ends_with("</svg>"));
    }

    #[test]
    fn the_chart_is_labelled_for_screen_readers_and_escapes_text() {
        let bars = vec![Bar {
            label: "<script>".into(),
            value: 5,
        }];
        let svg = render(&BarChart {
            title: "Revenue & refunds",
            ..chart(&bars, &plain)
        });
        assert!(svg.contains(r#"role="img""#));
        assert!(svg
            .contains("<title id=\"chart-revenue---refunds-title\">Revenue &amp; refunds</title>"));
        assert!(svg.contains("<desc id="));
        assert!(svg.contains("&lt;script&gt;"));
        assert!(!svg.contains("<script>"));
    }

    #[test]
    fn x_labels_are_thinned_and_ticks_are_round() {
        let bars = bars(&(0..90).map(|i| i * 1000).collect::<Vec<_>>());
        let svg = render(&chart(&bars, &plain));
        let labels = svg.matches(r#"class="label""#).count();
        assert!((8..=MAX_X_LABELS).contains(&labels), "{labels} labels");
        assert_eq!(svg.matches("<rect ").count(), 90, "every bar is drawn");
        let dates: Vec<Bar> = (0..30)
            .map(|day| Bar {
                label: format!("2026-11-{:02}", day + 1),
                value: 100,
            })
            .collect();
        let svg = render(&chart(&dates, &plain));
        let labels = svg.matches(r#"class="label""#).count();
        assert!((4..=8).contains(&labels), "long labels are fewer: {labels}");
        assert_eq!(nice_step(17), 20);
        assert_eq!(nice_step(3), 5);
        assert_eq!(nice_step(1), 1);
        assert_eq!(round_away(89_000, 20_000), 100_000);
        assert_eq!(round_away(-5, 2), -6);
    }
}
