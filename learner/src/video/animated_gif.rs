//! Animated GIFs, in pure Rust (the `gif` crate), for where ffmpeg is not there and
//! for pictures a page or a README shows inline.
//!
//! - Each frame has its own palette of at most 256 colours: the exact colours when
//!   the frame has no more (flat env renders), else NeuQuant's choice (speed 10 of
//!   1 to 30, the `gif` crate's compromise of speed and quality).
//! - A GIF frame lasts a whole number of hundredths of a second, at least 2 (players
//!   show shorter delays as 10): `fps` becomes the delay `round(100 / fps)`, so 25
//!   and 50 fps are exact, 30 fps plays at 33.3 and anything above
//!   [`GIF_MAX_FPS`] at 50. [`super::VideoInfo::fps`] is the rate as encoded.
//! - The animation loops forever. Width and height are at most 65535.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use ::gif::{Encoder, EncodingError, Repeat};

use super::{
    check_fps, check_frame, create_parent, size_error, Frame, VideoError, VideoFormat, VideoInfo,
    VideoResult, VideoSink,
};

/// The highest frame rate a GIF plays reliably: a frame of 2 hundredths of a second.
pub const GIF_MAX_FPS: f64 = 50.0;
/// NeuQuant's speed for frames of more than 256 colours (1 best, 30 fastest).
const QUANT_SPEED: i32 = 10;

/// A GIF being written (see the module docs).
pub struct GifWriter {
    path: PathBuf,
    /// Each frame's delay, in hundredths of a second.
    delay: u16,
    /// The frames' size, once the first frame is written.
    size: Option<(u32, u32)>,
    frames: usize,
    /// The file before the first frame.
    file: Option<BufWriter<File>>,
    /// The encoder from the first frame on.
    encoder: Option<Encoder<BufWriter<File>>>,
}

impl std::fmt::Debug for GifWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GifWriter")
            .field("path", &self.path)
            .field("delay", &self.delay)
            .field("size", &self.size)
            .field("frames", &self.frames)
            .finish_non_exhaustive()
    }
}

impl GifWriter {
    /// A writer of `path` at `fps` frames per second (see the module docs); the file
    /// is created here.
    pub fn create(path: impl AsRef<Path>, fps: f64) -> VideoResult<GifWriter> {
        let path = path.as_ref().to_path_buf();
        check_fps(fps)?;
        create_parent(&path)?;
        let file = File::create(&path).map_err(|source| VideoError::Write {
            path: path.clone(),
            source,
        })?;
        Ok(GifWriter {
            path,
            delay: gif_delay(fps),
            size: None,
            frames: 0,
            file: Some(BufWriter::new(file)),
            encoder: None,
        })
    }

    /// The video's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn encode_error(&self, e: EncodingError) -> VideoError {
        match e {
            EncodingError::Io(source) => VideoError::Write {
                path: self.path.clone(),
                source,
            },
            e => VideoError::Encode {
                path: self.path.clone(),
                message: e.to_string(),
            },
        }
    }

    /// The encoder for frames of `width` x `height`, its header written.
    fn start(&mut self, width: u16, height: u16) -> VideoResult<()> {
        let Some(file) = self.file.take() else {
            return Err(self.broken());
        };
        let mut encoder =
            Encoder::new(file, width, height, &[]).map_err(|e| self.encode_error(e))?;
        encoder
            .set_repeat(Repeat::Infinite)
            .map_err(|e| self.encode_error(e))?;
        self.encoder = Some(encoder);
        Ok(())
    }

    fn broken(&self) -> VideoError {
        VideoError::BadInput(format!(
            "{}: writing an earlier frame failed; this GIF cannot go on",
            self.path.display()
        ))
    }
}

impl VideoSink for GifWriter {
    fn push(&mut self, frame: &Frame) -> VideoResult<()> {
        check_frame(frame)?;
        let (Ok(w), Ok(h)) = (u16::try_from(frame.width), u16::try_from(frame.height)) else {
            return Err(VideoError::BadInput(format!(
                "{}: a GIF is at most 65535x65535 pixels, not {}x{}",
                self.path.display(),
                frame.width,
                frame.height
            )));
        };
        match self.size {
            None => {
                self.start(w, h)?;
                self.size = Some((frame.width, frame.height));
            }
            Some(size) if size != (frame.width, frame.height) => {
                return Err(size_error(&self.path, self.frames, size, frame));
            }
            Some(_) => {}
        }
        let mut g = ::gif::Frame::from_rgb_speed(w, h, &frame.rgb, QUANT_SPEED);
        g.delay = self.delay;
        let written = match self.encoder.as_mut() {
            Some(encoder) => encoder.write_frame(&g),
            None => return Err(self.broken()),
        };
        if let Err(e) = written {
            self.encoder = None;
            return Err(self.encode_error(e));
        }
        self.frames += 1;
        Ok(())
    }

    fn frames(&self) -> usize {
        self.frames
    }

    fn finish(mut self) -> VideoResult<VideoInfo> {
        let Some((width, height)) = self.size else {
            drop(self.file.take());
            let _ = std::fs::remove_file(&self.path);
            return Err(VideoError::BadInput(format!(
                "{}: a video needs at least one frame",
                self.path.display()
            )));
        };
        let Some(encoder) = self.encoder.take() else {
            return Err(self.broken());
        };
        let mut out = encoder.into_inner().map_err(|e| self.encode_error(e))?;
        out.flush().map_err(|source| VideoError::Write {
            path: self.path.clone(),
            source,
        })?;
        Ok(VideoInfo {
            path: self.path.clone(),
            format: VideoFormat::Gif,
            frames: self.frames,
            width,
            height,
            fps: 100.0 / f64::from(self.delay),
        })
    }
}

/// A GIF frame's delay for `fps`, in hundredths of a second (see the module docs).
fn gif_delay(fps: f64) -> u16 {
    (100.0 / fps).round().clamp(2.0, f64::from(u16::MAX)) as u16
}
