//! A frame as a PNG file, by the `image` crate's encoder (the one plotters' bitmap
//! backend writes the figures with).

use std::path::Path;

use super::{check_frame, create_parent, Frame, VideoError, VideoResult};

/// Writes `frame` to `path` as an 8-bit RGB PNG, creating its folder if needed.
pub fn save_png(frame: &Frame, path: impl AsRef<Path>) -> VideoResult<()> {
    let path = path.as_ref();
    check_frame(frame)?;
    create_parent(path)?;
    ::image::save_buffer_with_format(
        path,
        &frame.rgb,
        frame.width,
        frame.height,
        ::image::ColorType::Rgb8,
        ::image::ImageFormat::Png,
    )
    .map_err(|e| match e {
        ::image::ImageError::IoError(source) => VideoError::Write {
            path: path.to_path_buf(),
            source,
        },
        e => VideoError::Encode {
            path: path.to_path_buf(),
            message: e.to_string(),
        },
    })
}
