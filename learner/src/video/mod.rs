//! Pictures of envs: frame images, text on frames and videos.
//!
//! - [`save_png`]: one [`Frame`] as a PNG file;
//! - [`annotate`], [`annotate_at`]: lines of text ("return 12.5", "step 37") in a
//!   corner of a frame, on a semi-opaque box, in the plots' font ([`crate::plot::font`]);
//!   [`upscaled_for_text`] first makes small frames (Procgen's 64x64) big enough;
//! - [`VideoWriter`]: a video written frame by frame, its format picked by the file's
//!   extension: `.mp4` ([`Mp4Writer`], H.264 encoded by Debian's `ffmpeg` program) or
//!   `.gif` ([`GifWriter`], pure Rust); both are [`VideoSink`]s. [`write_video`]
//!   writes a list of frames at once.
//!
//! Every frame of one video has the size of its first frame; another size is an
//! error ([`VideoError::FrameSize`]). Frames per second default to
//! [`VideoFormat::default_fps`]: 30 for MP4, 25 for GIF (a GIF frame lasts a whole
//! number of hundredths of a second, and 25 fps is an exact 4). Output folders are
//! created as needed.

mod animated_gif;
mod mp4;
mod png;
mod text;

use std::path::{Path, PathBuf};

pub use animated_gif::{GifWriter, GIF_MAX_FPS};
pub use mp4::{Mp4Writer, FFMPEG};
pub use png::save_png;
pub use text::{annotate, annotate_at, text_size, upscaled_for_text, Corner, TEXT_MIN_HEIGHT};
pub use volley_common::env::Frame;

/// What can go wrong writing frames and videos.
#[derive(Debug, thiserror::Error)]
pub enum VideoError {
    /// An output file or its folder that cannot be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The encoder of a format failed (PNG, GIF).
    #[error("cannot encode {}: {message}", path.display())]
    Encode {
        /// The output file.
        path: PathBuf,
        /// The encoder's error.
        message: String,
    },
    /// The program that encodes MP4 files is not there.
    #[error(
        "cannot write {}: the program `{program}` is not on PATH (or is not an executable \
         file); MP4 videos are encoded by ffmpeg: run deploy/setup.sh (it installs Debian's \
         ffmpeg package), or write a .gif instead (encoded without ffmpeg)",
        path.display()
    )]
    FfmpegMissing {
        /// The program looked for.
        program: String,
        /// The video that was to be written.
        path: PathBuf,
    },
    /// ffmpeg failed: it could not start, or it exited with an error.
    #[error("ffmpeg failed writing {}: {status}; its last output:\n{stderr}", path.display())]
    Ffmpeg {
        /// The video.
        path: PathBuf,
        /// How it ended (`exit status: 1`), or why it could not run.
        status: String,
        /// The end of what it wrote to its standard error.
        stderr: String,
    },
    /// A frame whose size is not the video's (its first frame's).
    #[error(
        "frame {index} of {} is {got_width}x{got_height}, but the video's frames are \
         {width}x{height} (its first frame's size): every frame of a video has one size",
        path.display()
    )]
    FrameSize {
        /// The video.
        path: PathBuf,
        /// The frame's position, from 0.
        index: usize,
        /// The video's frame size.
        width: u32,
        /// The video's frame size.
        height: u32,
        /// The frame's size.
        got_width: u32,
        /// The frame's size.
        got_height: u32,
    },
    /// Inputs that cannot make a picture or a video (an empty frame, no frames, a bad
    /// frame rate, an unknown extension).
    #[error("{0}")]
    BadInput(String),
    /// No usable font for the text ([`crate::plot::font`]).
    #[error("{0}")]
    Font(String),
}

/// The result of writing frames and videos.
pub type VideoResult<T> = Result<T, VideoError>;

/// A video's file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoFormat {
    /// H.264 in an MP4 file, by `ffmpeg`.
    Mp4,
    /// An animated GIF, looping forever.
    Gif,
}

impl VideoFormat {
    /// The format of a path by its extension (`.mp4`, `.gif`, any case).
    pub fn from_path(path: &Path) -> VideoResult<VideoFormat> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("mp4") => Ok(VideoFormat::Mp4),
            Some("gif") => Ok(VideoFormat::Gif),
            _ => Err(VideoError::BadInput(format!(
                "{}: a video's file name ends in .mp4 (H.264, needs ffmpeg) or .gif",
                path.display()
            ))),
        }
    }

    /// The frame rate used when none is given: 30 for MP4, 25 for GIF.
    pub fn default_fps(self) -> f64 {
        match self {
            VideoFormat::Mp4 => 30.0,
            VideoFormat::Gif => 25.0,
        }
    }

    /// The extension, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            VideoFormat::Mp4 => "mp4",
            VideoFormat::Gif => "gif",
        }
    }
}

/// What a finished video holds.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoInfo {
    /// The file.
    pub path: PathBuf,
    /// Its format.
    pub format: VideoFormat,
    /// Frames written.
    pub frames: usize,
    /// The encoded picture's width: the frames' width, for MP4 rounded up to even.
    pub width: u32,
    /// The encoded picture's height: the frames' height, for MP4 rounded up to even.
    pub height: u32,
    /// Frames per second as encoded (a GIF's is 100 over its whole-hundredths delay).
    pub fps: f64,
}

impl VideoInfo {
    /// How long the video plays, in seconds.
    pub fn duration_s(&self) -> f64 {
        self.frames as f64 / self.fps
    }
}

/// Something frames are written to, one after another, then finished.
pub trait VideoSink {
    /// Appends a frame; it must have the size of the first one.
    fn push(&mut self, frame: &Frame) -> VideoResult<()>;

    /// Frames pushed so far.
    fn frames(&self) -> usize;

    /// Completes the file and says what it holds. A video of no frames is an error.
    fn finish(self) -> VideoResult<VideoInfo>
    where
        Self: Sized;
}

/// A video of the format its file's extension names (see the module docs).
#[derive(Debug)]
pub enum VideoWriter {
    /// `.mp4`.
    Mp4(Mp4Writer),
    /// `.gif`.
    Gif(GifWriter),
}

impl VideoWriter {
    /// A writer for `path`, at `fps` frames per second or the format's default. An
    /// MP4 writer fails here, before any frame, when `ffmpeg` is not on PATH.
    pub fn create(path: impl AsRef<Path>, fps: Option<f64>) -> VideoResult<VideoWriter> {
        let path = path.as_ref();
        let format = VideoFormat::from_path(path)?;
        let fps = fps.unwrap_or(format.default_fps());
        Ok(match format {
            VideoFormat::Mp4 => VideoWriter::Mp4(Mp4Writer::create(path, fps)?),
            VideoFormat::Gif => VideoWriter::Gif(GifWriter::create(path, fps)?),
        })
    }

    /// The video's format.
    pub fn format(&self) -> VideoFormat {
        match self {
            VideoWriter::Mp4(_) => VideoFormat::Mp4,
            VideoWriter::Gif(_) => VideoFormat::Gif,
        }
    }
}

impl VideoSink for VideoWriter {
    fn push(&mut self, frame: &Frame) -> VideoResult<()> {
        match self {
            VideoWriter::Mp4(w) => w.push(frame),
            VideoWriter::Gif(w) => w.push(frame),
        }
    }

    fn frames(&self) -> usize {
        match self {
            VideoWriter::Mp4(w) => w.frames(),
            VideoWriter::Gif(w) => w.frames(),
        }
    }

    fn finish(self) -> VideoResult<VideoInfo> {
        match self {
            VideoWriter::Mp4(w) => w.finish(),
            VideoWriter::Gif(w) => w.finish(),
        }
    }
}

/// Writes `frames` as one video at `path` ([`VideoWriter::create`]).
pub fn write_video<'a>(
    path: impl AsRef<Path>,
    frames: impl IntoIterator<Item = &'a Frame>,
    fps: Option<f64>,
) -> VideoResult<VideoInfo> {
    let mut w = VideoWriter::create(path, fps)?;
    for f in frames {
        w.push(f)?;
    }
    w.finish()
}

/// Checks that a frame has pixels and as many bytes as its size needs.
pub(crate) fn check_frame(frame: &Frame) -> VideoResult<()> {
    let want = frame.width as usize * frame.height as usize * 3;
    if frame.width == 0 || frame.height == 0 {
        return Err(VideoError::BadInput(format!(
            "a {}x{} frame has no pixels",
            frame.width, frame.height
        )));
    }
    if frame.rgb.len() != want {
        return Err(VideoError::BadInput(format!(
            "a {}x{} RGB frame needs {want} bytes, it has {}",
            frame.width,
            frame.height,
            frame.rgb.len()
        )));
    }
    Ok(())
}

/// Checks a frame rate: finite, above 0 and at most 1000.
pub(crate) fn check_fps(fps: f64) -> VideoResult<()> {
    if fps.is_finite() && fps > 0.0 && fps <= 1000.0 {
        Ok(())
    } else {
        Err(VideoError::BadInput(format!(
            "a video's frame rate is above 0 and at most 1000 frames per second, not {fps}"
        )))
    }
}

/// Creates the folder `path` is written into.
pub(crate) fn create_parent(path: &Path) -> VideoResult<()> {
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => std::fs::create_dir_all(dir).map_err(|source| VideoError::Write {
            path: path.to_path_buf(),
            source,
        }),
        None => Ok(()),
    }
}

/// The error of a frame whose size is not the video's.
pub(crate) fn size_error(path: &Path, index: usize, size: (u32, u32), frame: &Frame) -> VideoError {
    VideoError::FrameSize {
        path: path.to_path_buf(),
        index,
        width: size.0,
        height: size.1,
        got_width: frame.width,
        got_height: frame.height,
    }
}

#[cfg(test)]
mod tests;
