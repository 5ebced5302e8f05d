//! MP4 videos (H.264) encoded by Debian's `ffmpeg` program, fed raw frames on its
//! standard input:
//!
//! ```text
//! ffmpeg -f rawvideo -pix_fmt rgb24 -s WxH -r FPS -i - \
//!        -c:v libx264 -preset PRESET -crf CRF -pix_fmt yuv420p -movflags +faststart out.mp4
//! ```
//!
//! - yuv420p, the pixel format every player decodes, stores colour per 2x2 block, so
//!   its width and height are even: a frame of odd width (height) gets one more
//!   column (row) that repeats its last one, and the video is that much larger (a
//!   101x61 frame makes a 102x62 video; [`super::VideoInfo`] has the encoded size).
//! - `-movflags +faststart` puts the index first, so a browser (MLflow's artifact
//!   view) plays the file before it has all of it.
//! - ffmpeg is looked for on PATH when the writer is made ([`Mp4Writer::create`]):
//!   a missing one is [`VideoError::FfmpegMissing`], before any frame is rendered.
//!   It starts with the first frame (whose size is the video's).
//! - Its standard error is read on a thread, so a full pipe cannot stall it; when it
//!   fails (it stops reading frames, or exits with an error) the error is
//!   [`VideoError::Ffmpeg`] with its exit status and the end of its output.
//!   [`super::VideoSink::finish`] closes its input and waits for it to exit.
//! - A writer dropped unfinished kills its ffmpeg and leaves a partial file.

use std::ffi::{OsStr, OsString};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;

use super::{
    check_fps, check_frame, create_parent, size_error, Frame, VideoError, VideoFormat, VideoInfo,
    VideoResult, VideoSink,
};

/// The program that encodes MP4 files.
pub const FFMPEG: &str = "ffmpeg";

/// libx264's speed preset: `fast` encodes a 512x512 frame in a few milliseconds on
/// one core, with files a little larger than `medium`'s.
const PRESET: &str = "fast";
/// libx264's constant quality (0 lossless, 23 its default, 51 worst): 20 keeps the
/// flat colours and sharp edges of env renders without visible blocks.
const CRF: &str = "20";
/// How much of ffmpeg's standard error an error quotes, in bytes (its end).
const STDERR_TAIL: usize = 4000;

/// An MP4 video being written (see the module docs).
#[derive(Debug)]
pub struct Mp4Writer {
    /// The ffmpeg program, as found on PATH.
    program: PathBuf,
    /// The video.
    path: PathBuf,
    fps: f64,
    /// The frames' size, once the first frame started ffmpeg.
    size: Option<(u32, u32)>,
    frames: usize,
    /// The running ffmpeg; `None` before the first frame and after a failure.
    encoder: Option<Encoder>,
    /// A frame padded to even width and height.
    scratch: Vec<u8>,
}

/// A running ffmpeg.
#[derive(Debug)]
struct Encoder {
    child: Child,
    stdin: Option<ChildStdin>,
    /// The thread reading its standard error to the end.
    stderr: Option<JoinHandle<Vec<u8>>>,
}

impl Encoder {
    /// Closes its input, waits for it to exit and returns how it ended and the end
    /// of its standard error.
    fn end(mut self) -> (io::Result<ExitStatus>, String) {
        drop(self.stdin.take());
        let status = self.child.wait();
        (status, self.stderr_tail())
    }

    /// Kills it and waits for it (a writer dropped unfinished).
    fn kill(mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = self.stderr_tail();
    }

    /// The end of what it wrote to its standard error, once it has exited.
    fn stderr_tail(&mut self) -> String {
        let bytes = self
            .stderr
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        let text = text.trim();
        if text.is_empty() {
            return "(nothing)".into();
        }
        let mut start = text.len().saturating_sub(STDERR_TAIL);
        while !text.is_char_boundary(start) {
            start += 1;
        }
        text[start..].to_string()
    }
}

impl Mp4Writer {
    /// A writer of `path` at `fps` frames per second, by `ffmpeg` from PATH.
    pub fn create(path: impl AsRef<Path>, fps: f64) -> VideoResult<Mp4Writer> {
        Mp4Writer::with_program(FFMPEG, path, fps)
    }

    /// A writer of `path` at `fps` frames per second, by `program` (a name looked up
    /// on PATH, or a path) instead of `ffmpeg`.
    pub fn with_program(
        program: impl AsRef<OsStr>,
        path: impl AsRef<Path>,
        fps: f64,
    ) -> VideoResult<Mp4Writer> {
        let path = path.as_ref().to_path_buf();
        let program = program.as_ref();
        check_fps(fps)?;
        let Some(found) = find_program(program) else {
            return Err(VideoError::FfmpegMissing {
                program: program.to_string_lossy().into_owned(),
                path,
            });
        };
        create_parent(&path)?;
        Ok(Mp4Writer {
            program: found,
            path,
            fps,
            size: None,
            frames: 0,
            encoder: None,
            scratch: Vec::new(),
        })
    }

    /// The video's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Starts ffmpeg for frames of `width` x `height` pixels.
    fn start(&self, width: u32, height: u32) -> VideoResult<Encoder> {
        let (w, h) = even(width, height);
        // `file:` keeps a name with a colon from being read as a protocol.
        let mut out = OsString::from("file:");
        out.push(self.path.as_os_str());
        let mut child = Command::new(&self.program)
            .args(["-hide_banner", "-nostats", "-loglevel", "error", "-y"])
            .args(["-f", "rawvideo", "-pix_fmt", "rgb24"])
            .args(["-s", &format!("{w}x{h}"), "-r", &self.fps.to_string()])
            .args(["-i", "-", "-an", "-c:v", "libx264", "-preset", PRESET])
            .args([
                "-crf",
                CRF,
                "-pix_fmt",
                "yuv420p",
                "-movflags",
                "+faststart",
            ])
            .args(["-f", "mp4"])
            .arg(out)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => VideoError::FfmpegMissing {
                    program: self.program.display().to_string(),
                    path: self.path.clone(),
                },
                _ => VideoError::Ffmpeg {
                    path: self.path.clone(),
                    status: format!("{} could not start: {e}", self.program.display()),
                    stderr: "(nothing)".into(),
                },
            })?;
        let stdin = child.stdin.take();
        let stderr = child.stderr.take().map(|mut pipe| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = pipe.read_to_end(&mut buf);
                buf
            })
        });
        Ok(Encoder {
            child,
            stdin,
            stderr,
        })
    }

    /// The error of an ffmpeg that stopped taking frames (`why`), once it has exited.
    fn failed(&mut self, why: &io::Error) -> VideoError {
        let path = self.path.clone();
        let Some(encoder) = self.encoder.take() else {
            return VideoError::Ffmpeg {
                path,
                status: format!("it stopped taking frames ({why})"),
                stderr: "(nothing)".into(),
            };
        };
        let (status, stderr) = encoder.end();
        let status = match status {
            Ok(s) if !s.success() => s.to_string(),
            Ok(s) => format!("it stopped taking frames ({why}), then ended with {s}"),
            Err(e) => format!("it stopped taking frames ({why}); waiting for it failed: {e}"),
        };
        VideoError::Ffmpeg {
            path,
            status,
            stderr,
        }
    }
}

impl VideoSink for Mp4Writer {
    fn push(&mut self, frame: &Frame) -> VideoResult<()> {
        check_frame(frame)?;
        match self.size {
            None => {
                self.encoder = Some(self.start(frame.width, frame.height)?);
                self.size = Some((frame.width, frame.height));
            }
            Some(size) if size != (frame.width, frame.height) => {
                return Err(size_error(&self.path, self.frames, size, frame));
            }
            Some(_) => {}
        }
        let data = pad_even(frame, &mut self.scratch);
        let Some(stdin) = self.encoder.as_mut().and_then(|e| e.stdin.as_mut()) else {
            return Err(VideoError::BadInput(format!(
                "{}: ffmpeg failed on an earlier frame; this video cannot go on",
                self.path.display()
            )));
        };
        if let Err(e) = stdin.write_all(data) {
            return Err(self.failed(&e));
        }
        self.frames += 1;
        Ok(())
    }

    fn frames(&self) -> usize {
        self.frames
    }

    fn finish(mut self) -> VideoResult<VideoInfo> {
        let Some((w, h)) = self.size else {
            return Err(VideoError::BadInput(format!(
                "{}: a video needs at least one frame",
                self.path.display()
            )));
        };
        let Some(encoder) = self.encoder.take() else {
            return Err(VideoError::BadInput(format!(
                "{}: ffmpeg failed on an earlier frame; the video is incomplete",
                self.path.display()
            )));
        };
        let (status, stderr) = encoder.end();
        match status {
            Ok(s) if s.success() => {
                let (width, height) = even(w, h);
                Ok(VideoInfo {
                    path: self.path.clone(),
                    format: VideoFormat::Mp4,
                    frames: self.frames,
                    width,
                    height,
                    fps: self.fps,
                })
            }
            Ok(s) => Err(VideoError::Ffmpeg {
                path: self.path.clone(),
                status: s.to_string(),
                stderr,
            }),
            Err(e) => Err(VideoError::Ffmpeg {
                path: self.path.clone(),
                status: format!("waiting for it failed: {e}"),
                stderr,
            }),
        }
    }
}

impl Drop for Mp4Writer {
    fn drop(&mut self) {
        if let Some(encoder) = self.encoder.take() {
            encoder.kill();
        }
    }
}

/// A size rounded up to even width and height.
fn even(width: u32, height: u32) -> (u32, u32) {
    (width + width % 2, height + height % 2)
}

/// The frame's bytes at even width and height: an odd width gets its last column
/// again, an odd height its last row.
fn pad_even<'a>(frame: &'a Frame, scratch: &'a mut Vec<u8>) -> &'a [u8] {
    let (w, h) = (frame.width as usize, frame.height as usize);
    if w % 2 == 0 && h % 2 == 0 {
        return &frame.rgb;
    }
    let (pw, ph) = even(frame.width, frame.height);
    let row = pw as usize * 3;
    scratch.clear();
    scratch.reserve(row * ph as usize);
    for r in frame.rgb.chunks_exact(w * 3) {
        scratch.extend_from_slice(r);
        if w % 2 == 1 {
            scratch.extend_from_slice(&r[(w - 1) * 3..]);
        }
    }
    if h % 2 == 1 {
        let last = scratch.len() - row;
        scratch.extend_from_within(last..);
    }
    scratch
}

/// The file `program` names: itself when it has a folder, else the first executable
/// file of that name in a folder of PATH.
fn find_program(program: &OsStr) -> Option<PathBuf> {
    if program.is_empty() {
        return None;
    }
    let p = Path::new(program);
    if p.components().count() > 1 {
        return is_executable(p).then(|| p.to_path_buf());
    }
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(p))
        .find(|c| is_executable(c))
}

/// Whether `path` is a file this process may run.
fn is_executable(path: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        meta.is_file() && meta.permissions().mode() & 0o111 != 0
    }
    #[cfg(not(unix))]
    {
        meta.is_file()
    }
}
