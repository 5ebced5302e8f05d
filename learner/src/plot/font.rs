//! The TrueType font the figures are drawn with. No font ships with volley: one is
//! found at run time, in this order:
//!
//! 1. `VOLLEY_FONT`, the path of a `.ttf` file (when set, it must be readable);
//! 2. `fonts/*.ttf` in the `.deps/` folder of `deploy/setup.sh`
//!    ([`volley_common::deps::deps_dir`]), `DejaVuSans.ttf` first;
//! 3. common system paths ([`SYSTEM_FONTS`]), Debian's `fonts-dejavu-core` first
//!    (`deploy/setup.sh` installs it when no `DejaVuSans.ttf` is on the machine).
//!
//! The font is registered once per process as plotters' `sans-serif` family; the
//! SVG files name that family and leave the glyphs to the viewer.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use plotters::style::{register_font, FontStyle};

use super::{PlotError, PlotResult};

/// The variable naming the font file to use.
pub const FONT_ENV: &str = "VOLLEY_FONT";

/// The family the font is registered as (plotters' default family).
pub(crate) const FAMILY: &str = "sans-serif";

/// System fonts tried after `VOLLEY_FONT` and `.deps/fonts/`, in order.
pub const SYSTEM_FONTS: &[&str] = &[
    // Debian and Ubuntu: fonts-dejavu-core.
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    // Fedora: dejavu-sans-fonts.
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    // Arch: ttf-dejavu.
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    // Debian and Ubuntu: fonts-liberation.
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
    // macOS.
    "/System/Library/Fonts/Supplemental/Arial.ttf",
    "/Library/Fonts/Arial.ttf",
];

/// The font registered so far, if any: its file and its bytes.
static REGISTERED: Mutex<Option<(PathBuf, &'static [u8])>> = Mutex::new(None);

/// The font file the figures would use (see the module docs).
pub fn find_font() -> PlotResult<PathBuf> {
    let deps_fonts = volley_common::deps::deps_dir().join("fonts");
    find_font_in(std::env::var_os(FONT_ENV), &deps_fonts, SYSTEM_FONTS)
}

/// [`find_font`] with its three places given.
fn find_font_in(env: Option<OsString>, deps_fonts: &Path, system: &[&str]) -> PlotResult<PathBuf> {
    if let Some(p) = env.filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        return Err(PlotError::Font(format!(
            "{FONT_ENV}={} is not a font file: point it at a .ttf file, or unset it",
            p.display()
        )));
    }
    if let Some(p) = deps_font(deps_fonts) {
        return Ok(p);
    }
    if let Some(p) = system.iter().map(PathBuf::from).find(|p| p.is_file()) {
        return Ok(p);
    }
    Err(PlotError::Font(format!(
        "no font for the plots: run deploy/setup.sh (it installs Debian's fonts-dejavu-core), \
         or set {FONT_ENV} to a .ttf file; looked in {}/*.ttf and {}",
        deps_fonts.display(),
        system.join(", ")
    )))
}

/// A `.ttf` file of `dir`: `DejaVuSans.ttf` if there, else the first by name.
fn deps_font(dir: &Path) -> Option<PathBuf> {
    let mut fonts: Vec<PathBuf> = fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e.eq_ignore_ascii_case("ttf")))
        .collect();
    fonts.sort();
    let dejavu = fonts
        .iter()
        .position(|p| p.file_name().is_some_and(|n| n == "DejaVuSans.ttf"));
    match dejavu {
        Some(i) => Some(fonts.swap_remove(i)),
        None => fonts.into_iter().next(),
    }
}

/// Registers the font (once per process) and returns its file.
pub fn ensure_font() -> PlotResult<PathBuf> {
    loaded().map(|(path, _)| path)
}

/// The font's file and bytes, registered with plotters on the first call.
pub(crate) fn loaded() -> PlotResult<(PathBuf, &'static [u8])> {
    let mut registered = REGISTERED
        .lock()
        .map_err(|_| PlotError::Font("the font registry is poisoned".into()))?;
    if let Some((p, bytes)) = registered.as_ref() {
        return Ok((p.clone(), bytes));
    }
    let path = find_font()?;
    let bytes = fs::read(&path).map_err(|source| PlotError::Read {
        path: path.clone(),
        source,
    })?;
    // plotters keeps fonts for the life of the process; this is the one copy.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    register_font(FAMILY, FontStyle::Normal, bytes).map_err(|_| {
        PlotError::Font(format!(
            "{} is not a TrueType font plotters can read",
            path.display()
        ))
    })?;
    *registered = Some((path.clone(), bytes));
    Ok((path, bytes))
}

/// `text` laid out on one line with kerning, glyph by glyph on the baseline from
/// x = 0, and the line's advance: what the figures' and the videos' text share.
pub(crate) fn lay_out<F: ab_glyph::Font, S: ab_glyph::ScaleFont<F>>(
    scaled: &S,
    scale: ab_glyph::PxScale,
    text: &str,
) -> (Vec<ab_glyph::Glyph>, f32) {
    let mut glyphs = Vec::with_capacity(text.len());
    let mut x = 0.0;
    let mut prev = None;
    for c in text.chars() {
        let id = scaled.glyph_id(c);
        if let Some(p) = prev {
            x += scaled.kern(p, id);
        }
        glyphs.push(id.with_scale_and_position(scale, ab_glyph::point(x, 0.0)));
        x += scaled.h_advance(id);
        prev = Some(id);
    }
    (glyphs, x)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> volley_common::testing::TempDir {
        volley_common::testing::TempDir::named(&format!("plot-font-{name}"))
    }

    #[test]
    fn the_variable_comes_first_and_must_name_a_file() {
        let d = scratch("env");
        let f = d.join("mine.ttf");
        fs::write(&f, b"x").unwrap();
        let sys = d.join("sys.ttf");
        fs::write(&sys, b"x").unwrap();
        let sys_s = sys.to_str().unwrap();
        let got = find_font_in(Some(f.clone().into()), &d.join("none"), &[sys_s]).unwrap();
        assert_eq!(got, f);
        let err = find_font_in(Some(d.join("gone.ttf").into()), &d, &[sys_s]).unwrap_err();
        assert!(err.to_string().contains("VOLLEY_FONT="), "{err}");
    }

    #[test]
    fn deps_fonts_prefer_dejavu_then_system_paths() {
        let d = scratch("deps");
        let fonts = d.join("fonts");
        fs::create_dir_all(&fonts).unwrap();
        let sys = d.join("sys.ttf");
        fs::write(&sys, b"x").unwrap();
        let sys_s = sys.to_str().unwrap();
        assert_eq!(find_font_in(None, &fonts, &[sys_s]).unwrap(), sys);
        fs::write(fonts.join("Aaa.ttf"), b"x").unwrap();
        assert_eq!(
            find_font_in(None, &fonts, &[sys_s]).unwrap(),
            fonts.join("Aaa.ttf")
        );
        fs::write(fonts.join("DejaVuSans.ttf"), b"x").unwrap();
        assert_eq!(
            find_font_in(None, &fonts, &[sys_s]).unwrap(),
            fonts.join("DejaVuSans.ttf")
        );
    }

    #[test]
    fn no_font_names_the_setup_script() {
        let d = scratch("none");
        let err = find_font_in(None, &d.join("fonts"), &["/no/such/font.ttf"]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("deploy/setup.sh"), "{msg}");
        assert!(msg.contains("/no/such/font.ttf"), "{msg}");
    }
}
