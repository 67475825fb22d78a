//! How pages present the operator: name, logo and accent colour.
//!
//! One function, [`current`], answers "what branding applies now": the
//! `LATCHKEY_BRAND_*` settings (validated at start-up) overlaid with what an admin saved
//! on the settings page (the environment wins).

use crate::config::BrandSettings;
use crate::http::AppState;

/// The operator's branding as pages use it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Branding {
    pub name: String,
    pub logo_url: Option<String>,
    /// A validated CSS hex colour (`#rgb` or `#rrggbb`).
    pub colour: String,
}

impl Default for Branding {
    fn default() -> Self {
        Branding::from(&BrandSettings::default())
    }
}

impl From<&BrandSettings> for Branding {
    fn from(settings: &BrandSettings) -> Self {
        Branding {
            name: settings.name.clone(),
            logo_url: settings.logo_url.clone(),
            colour: settings.colour.clone(),
        }
    }
}

impl Branding {
    /// Black or white, whichever reads better on the accent colour (WCAG relative
    /// luminance), so an operator's pale colour never makes white button text unreadable.
    pub fn text_on_colour(&self) -> &'static str {
        let Some((red, green, blue)) = rgb(&self.colour) else {
            return "#ffffff";
        };
        let channel = |value: u8| {
            let value = f64::from(value) / 255.0;
            if value <= 0.039_28 {
                value / 12.92
            } else {
                ((value + 0.055) / 1.055).powf(2.4)
            }
        };
        let luminance = 0.2126 * channel(red) + 0.7152 * channel(green) + 0.0722 * channel(blue);
        // Contrast with white is (1.05)/(L+0.05), with black (L+0.05)/0.05; equal at ~0.179.
        if luminance > 0.179 {
            "#000000"
        } else {
            "#ffffff"
        }
    }

    /// The CSS custom properties every page's `<body>` carries.
    pub fn style(&self) -> String {
        format!(
            "--brand:{};--brand-text:{}",
            self.colour,
            self.text_on_colour()
        )
    }
}

fn rgb(colour: &str) -> Option<(u8, u8, u8)> {
    let digits = colour.strip_prefix('#')?;
    let channel = |hex: &str| u8::from_str_radix(hex, 16).ok();
    match digits.len() {
        3 => {
            let expand = |index: usize| channel(&digits[index..=index].repeat(2));
            Some((expand(0)?, expand(1)?, expand(2)?))
        }
        6 => Some((
            channel(&digits[0..2])?,
            channel(&digits[2..4])?,
            channel(&digits[4..6])?,
        )),
        _ => None,
    }
}

/// The branding that applies to pages right now.
pub async fn current(state: &AppState) -> Branding {
    Branding::from(&state.settings_store.effective().brand)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_colour(colour: &str) -> Branding {
        Branding {
            colour: colour.to_string(),
            ..Branding::default()
        }
    }

    #[test]
    fn text_contrasts_with_the_accent() {
        assert_eq!(with_colour("#1f5fbf").text_on_colour(), "#ffffff");
        assert_eq!(with_colour("#000").text_on_colour(), "#ffffff");
        assert_eq!(with_colour("#ffeb3b").text_on_colour(), "#000000");
        assert_eq!(with_colour("#fff").text_on_colour(), "#000000");
    }
}
