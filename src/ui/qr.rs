//! QR codes: SVG for pages and stickers, text blocks for the demo's terminal.

use qrcode::render::{svg, unicode};
use qrcode::{EcLevel, QrCode};

/// A QR code as an inline `<svg>` element (no XML declaration) that screen readers
/// announce as an image called `label`.
pub fn inline_svg(data: &str, label: &str) -> Result<String, qrcode::types::QrError> {
    let document = standalone_svg(data, label)?;
    let start = document.find("<svg").unwrap_or(0);
    Ok(document[start..].to_string())
}

/// A QR code as a standalone SVG document (a sticker to print), titled `label`.
pub fn standalone_svg(data: &str, label: &str) -> Result<String, qrcode::types::QrError> {
    let code = QrCode::with_error_correction_level(data.as_bytes(), EcLevel::M)?;
    let document = code
        .render::<svg::Color<'_>>()
        .min_dimensions(240, 240)
        .quiet_zone(true)
        .build();
    let label = escape(label);
    // qrcode writes `<svg xmlns=…` then the shapes: name the image and give it a title.
    Ok(document
        .replacen(
            "<svg ",
            &format!(r#"<svg role="img" aria-label="{label}" "#),
            1,
        )
        .replacen("<rect ", &format!("<title>{label}</title><rect "), 1))
}

/// A QR code drawn with half-block characters, two modules per character cell; light
/// modules are dark on screen so terminals with dark backgrounds scan well.
pub fn terminal(data: &str) -> Result<String, qrcode::types::QrError> {
    let code = QrCode::with_error_correction_level(data.as_bytes(), EcLevel::L)?;
    Ok(code
        .render::<unicode::Dense1x2>()
        .dark_color(unicode::Dense1x2::Light)
        .light_color(unicode::Dense1x2::Dark)
        .quiet_zone(true)
        .build())
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
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

    #[test]
    fn svg_codes_are_labelled_images() {
        let svg = inline_svg("https://pay.example/pay/7", "Pay <here>").unwrap();
        assert!(svg.starts_with(r#"<svg role="img" aria-label="Pay &lt;here&gt;""#));
        assert!(svg.contains("<title>Pay &lt;here&gt;</title>"));
        assert!(svg.ends_with("</svg>"));
        let document = standalone_svg("x", "x").unwrap();
        assert!(document.starts_with("<?xml"));
    }

    #[test]
    fn terminal_codes_are_square_blocks_of_text() {
        let text = terminal("http://127.0.0.1:3000/pay/4410021").unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines.len() > 10);
        let width = lines[0].chars().count();
        assert!(lines.iter().all(|line| line.chars().count() == width));
        // Two modules per character: roughly twice as wide as tall.
        assert!(width > lines.len());
    }
}
