//! Tests of frame images, text and videos. The video tests decode what they wrote
//! with `ffprobe` and `ffmpeg` (Debian's ffmpeg package, which deploy/setup.sh
//! installs); without them they fail, naming the script.

use std::path::{Path, PathBuf};
use std::process::Command;

use rand::SeedableRng;
use volley_common::env::cartpole::CartPole;
use volley_common::env::{ActionRef, Env, EnvRng};

use super::*;

const FRAMES: usize = 37;
const W: u32 = 101;
const H: u32 = 61;
const BACKGROUND: [u8; 3] = [20, 30, 60];
const SQUARE: [u8; 3] = [230, 40, 30];
const SIDE: i64 = 12;

fn scratch(name: &str) -> volley_common::testing::TempDir {
    volley_common::testing::TempDir::named(&format!("video-{name}"))
}

/// Where the top left corner of the square is in frame `i`.
fn square_at(i: usize) -> (i64, i64) {
    (2 + 2 * i as i64, 5 + i as i64)
}

/// `FRAMES` frames of `W` x `H`: a red square moving right and down.
fn moving_square() -> Vec<Frame> {
    (0..FRAMES)
        .map(|i| {
            let mut f = Frame::filled(W, H, BACKGROUND);
            let (x, y) = square_at(i);
            f.fill_rect(x, y, x + SIDE, y + SIDE, SQUARE);
            f
        })
        .collect()
}

/// The centre of the reddish pixels of an RGB image `width` pixels wide.
fn red_centre(rgb: &[u8], width: usize, channels: usize) -> (f64, f64) {
    let (mut sx, mut sy, mut n) = (0.0, 0.0, 0.0);
    for (i, p) in rgb.chunks_exact(channels).enumerate() {
        if p[0] > 150 && p[1] < 110 && p[2] < 110 {
            sx += (i % width) as f64;
            sy += (i / width) as f64;
            n += 1.0;
        }
    }
    assert!(n > 0.0, "no red pixels in the frame");
    (sx / n, sy / n)
}

/// The centre the square's pixels have in frame `i`.
fn expected_centre(i: usize) -> (f64, f64) {
    let (x, y) = square_at(i);
    let half = (SIDE - 1) as f64 / 2.0;
    (x as f64 + half, y as f64 + half)
}

fn assert_near(got: (f64, f64), want: (f64, f64), what: &str) {
    assert!(
        (got.0 - want.0).abs() < 1.0 && (got.1 - want.1).abs() < 1.0,
        "{what}: the square's centre is {got:?}, not {want:?}"
    );
}

/// A program of Debian's ffmpeg package, or a failure naming deploy/setup.sh.
fn run_tool(program: &str, args: &[&std::ffi::OsStr]) -> std::process::Output {
    match Command::new(program).args(args).output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "`{program}` is not on PATH: the video tests decode with it; run deploy/setup.sh \
             (it installs Debian's ffmpeg package, which has ffmpeg and ffprobe)"
        ),
        Err(e) => panic!("cannot run {program}: {e}"),
    }
}

/// What ffprobe reads in a video's first stream.
#[derive(Debug, PartialEq)]
struct Probe {
    codec: String,
    width: u64,
    height: u64,
    frames: u64,
}

fn ffprobe(path: &Path) -> Probe {
    let args = [
        "-v",
        "error",
        "-count_frames",
        "-select_streams",
        "v:0",
        "-show_entries",
        "stream=nb_read_frames,width,height,codec_name",
        "-of",
        "json",
    ];
    let mut a: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
    a.push(path.as_os_str());
    let out = run_tool("ffprobe", &a);
    assert!(
        out.status.success(),
        "ffprobe {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = &v["streams"][0];
    Probe {
        codec: s["codec_name"].as_str().unwrap().to_string(),
        width: s["width"].as_u64().unwrap(),
        height: s["height"].as_u64().unwrap(),
        frames: s["nb_read_frames"].as_str().unwrap().parse().unwrap(),
    }
}

/// Every frame of a video decoded by ffmpeg to RGB.
fn ffmpeg_decode(path: &Path) -> Vec<u8> {
    let mut a: Vec<&std::ffi::OsStr> = ["-v", "error", "-i"]
        .iter()
        .map(std::ffi::OsStr::new)
        .collect();
    a.push(path.as_os_str());
    a.extend(
        ["-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
            .iter()
            .map(std::ffi::OsStr::new),
    );
    let out = run_tool("ffmpeg", &a);
    assert!(
        out.status.success(),
        "ffmpeg -i {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn an_mp4_of_a_moving_square_has_every_frame_at_even_size() {
    let d = scratch("mp4");
    let path = d.join("square.mp4");
    let info = write_video(&path, &moving_square(), None).unwrap();
    assert_eq!(info.format, VideoFormat::Mp4);
    assert_eq!((info.frames, info.width, info.height), (FRAMES, 102, 62));
    assert_eq!(info.fps, 30.0);
    let probe = ffprobe(&path);
    assert_eq!(
        probe,
        Probe {
            codec: "h264".into(),
            width: 102,
            height: 62,
            frames: FRAMES as u64
        }
    );
    // The pictures: the square where it was drawn in the first and last frames, so
    // rows were not skewed by the padding.
    let raw = ffmpeg_decode(&path);
    let size = 102 * 62 * 3;
    assert_eq!(raw.len(), FRAMES * size);
    for i in [0, FRAMES / 2, FRAMES - 1] {
        let got = red_centre(&raw[i * size..(i + 1) * size], 102, 3);
        assert_near(got, expected_centre(i), &format!("mp4 frame {i}"));
    }
}

#[test]
fn a_gif_of_a_moving_square_has_every_frame_and_loops() {
    let d = scratch("gif");
    let path = d.join("square.gif");
    let info = write_video(&path, &moving_square(), None).unwrap();
    assert_eq!(info.format, VideoFormat::Gif);
    assert_eq!((info.frames, info.width, info.height), (FRAMES, W, H));
    assert_eq!(info.fps, 25.0);
    let probe = ffprobe(&path);
    assert_eq!(
        probe,
        Probe {
            codec: "gif".into(),
            width: u64::from(W),
            height: u64::from(H),
            frames: FRAMES as u64
        }
    );

    let mut opts = ::gif::DecodeOptions::new();
    opts.set_color_output(::gif::ColorOutput::RGBA);
    let mut dec = opts.read_info(std::fs::File::open(&path).unwrap()).unwrap();
    assert_eq!((dec.width(), dec.height()), (W as u16, H as u16));
    let mut centres = Vec::new();
    while let Some(frame) = dec.read_next_frame().unwrap() {
        assert_eq!(frame.delay, 4, "25 fps is 4 hundredths a frame");
        assert_eq!((frame.width, frame.height), (W as u16, H as u16));
        centres.push(red_centre(&frame.buffer, W as usize, 4));
    }
    assert_eq!(dec.repeat(), ::gif::Repeat::Infinite);
    assert_eq!(centres.len(), FRAMES);
    for (i, c) in centres.iter().enumerate() {
        assert_near(*c, expected_centre(i), &format!("gif frame {i}"));
    }
    assert!(
        centres[FRAMES - 1].0 - centres[0].0 > 60.0,
        "the square moved"
    );
}

#[test]
fn a_frame_of_another_size_is_an_error() {
    let d = scratch("size");
    for name in ["a.mp4", "a.gif"] {
        let mut w = VideoWriter::create(d.join(name), None).unwrap();
        w.push(&Frame::filled(W, H, BACKGROUND)).unwrap();
        let err = w.push(&Frame::filled(100, 60, BACKGROUND)).unwrap_err();
        assert!(
            matches!(
                err,
                VideoError::FrameSize {
                    index: 1,
                    width: W,
                    height: H,
                    got_width: 100,
                    got_height: 60,
                    ..
                }
            ),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains("100x60") && msg.contains("101x61"), "{msg}");
        // The frames before stay a video.
        let info = w.finish().unwrap();
        assert_eq!(info.frames, 1, "{name}");
    }
    // Bytes that do not fit the frame's size.
    let mut w = VideoWriter::create(d.join("b.gif"), None).unwrap();
    let bad = Frame {
        width: 4,
        height: 4,
        rgb: vec![0; 5],
    };
    assert!(matches!(w.push(&bad), Err(VideoError::BadInput(_))));
}

#[test]
fn a_missing_ffmpeg_is_a_clear_error_before_any_frame() {
    let d = scratch("missing");
    let out = d.join("x.mp4");
    let by_name = Mp4Writer::with_program("volley-no-such-ffmpeg", &out, 30.0).unwrap_err();
    let by_path = Mp4Writer::with_program(d.join("ffmpeg"), &out, 30.0).unwrap_err();
    for err in [by_name, by_path] {
        assert!(matches!(err, VideoError::FfmpegMissing { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("deploy/setup.sh"), "{msg}");
        assert!(msg.contains(".gif"), "{msg}");
        assert!(msg.contains("not on PATH"), "{msg}");
    }
    // A file that is not executable is not a program either.
    std::fs::write(d.join("ffmpeg"), b"#!/bin/sh\n").unwrap();
    let err = Mp4Writer::with_program(d.join("ffmpeg"), &out, 30.0).unwrap_err();
    assert!(matches!(err, VideoError::FfmpegMissing { .. }), "{err:?}");
}

#[test]
fn a_failing_encoder_is_reported_with_its_status_not_waited_for() {
    let d = scratch("fails");
    // `false` exits 1 at once without reading: the frames fill the pipe, the write
    // fails, and the error has the exit status.
    let mut w = Mp4Writer::with_program("false", d.join("x.mp4"), 30.0).unwrap();
    let frame = Frame::filled(W, H, BACKGROUND);
    let mut err = None;
    for _ in 0..100 {
        if let Err(e) = w.push(&frame) {
            err = Some(e);
            break;
        }
    }
    let err = match err {
        Some(e) => e,
        None => w.finish().unwrap_err(),
    };
    match &err {
        VideoError::Ffmpeg { status, .. } => assert!(status.contains("exit status: 1"), "{err}"),
        _ => panic!("not an ffmpeg error: {err:?}"),
    }

    // ffmpeg itself failing: the output is a folder. Its own words come back.
    let dir_out = d.join("folder.mp4");
    std::fs::create_dir_all(&dir_out).unwrap();
    let mut w = Mp4Writer::create(&dir_out, 30.0).unwrap();
    let mut err = None;
    for _ in 0..100 {
        if let Err(e) = w.push(&frame) {
            err = Some(e);
            break;
        }
    }
    let err = match err {
        Some(e) => e,
        None => w.finish().unwrap_err(),
    };
    match &err {
        VideoError::Ffmpeg { stderr, status, .. } => {
            assert!(status.contains("exit status"), "{err}");
            assert_ne!(stderr, "(nothing)", "{err}");
        }
        _ => panic!("not an ffmpeg error: {err:?}"),
    }
}

#[test]
fn formats_rates_and_empty_videos_are_checked() {
    let d = scratch("inputs");
    assert_eq!(
        VideoFormat::from_path(Path::new("a/B.MP4")).unwrap(),
        VideoFormat::Mp4
    );
    assert!(VideoWriter::create(d.join("a.avi"), None).is_err());
    assert!(VideoWriter::create(d.join("a"), None).is_err());
    for fps in [0.0, -1.0, f64::NAN, 5000.0] {
        assert!(
            VideoWriter::create(d.join("a.gif"), Some(fps)).is_err(),
            "{fps}"
        );
        assert!(
            VideoWriter::create(d.join("a.mp4"), Some(fps)).is_err(),
            "{fps}"
        );
    }
    for name in ["empty.mp4", "empty.gif"] {
        let w = VideoWriter::create(d.join(name), None).unwrap();
        let err = w.finish().unwrap_err();
        assert!(err.to_string().contains("at least one frame"), "{err}");
    }
    // A GIF's rate is whole hundredths of a second, at most 50 frames a second.
    let mut w = GifWriter::create(d.join("fast.gif"), 120.0).unwrap();
    w.push(&Frame::filled(8, 8, BACKGROUND)).unwrap();
    assert_eq!(w.finish().unwrap().fps, GIF_MAX_FPS);
    let mut w = VideoWriter::create(d.join("30.gif"), Some(30.0)).unwrap();
    w.push(&Frame::filled(8, 8, BACKGROUND)).unwrap();
    assert!((w.finish().unwrap().fps - 100.0 / 3.0).abs() < 1e-9);
    // Folders are made.
    let info = write_video(d.join("deep/er/x.gif"), &moving_square()[..2], Some(10.0)).unwrap();
    assert_eq!((info.frames, info.duration_s()), (2, 0.2));
}

#[test]
fn a_png_reads_back_as_the_frame() {
    let d = scratch("png");
    let f = &moving_square()[3];
    let path = d.join("sub/square.png");
    save_png(f, &path).unwrap();
    let back = ::image::open(&path).unwrap().to_rgb8();
    assert_eq!(back.dimensions(), (W, H));
    assert_eq!(back.as_raw(), &f.rgb);
}

/// Pixels of `f` in the rectangle that differ from `rgb`, and the brightest.
fn changed(f: &Frame, x: (u32, u32), y: (u32, u32), rgb: [u8; 3]) -> (usize, u8) {
    let (mut n, mut bright) = (0, 0);
    for yy in y.0..y.1 {
        for xx in x.0..x.1 {
            let p = f.pixel(xx, yy);
            if p != rgb {
                n += 1;
            }
            bright = bright.max(p[0].min(p[1]).min(p[2]));
        }
    }
    (n, bright)
}

#[test]
fn text_goes_in_its_corner_on_a_dark_box() {
    let grey = [128, 128, 128];
    let mut f = Frame::filled(600, 400, grey);
    annotate(&mut f, &["return 12.5", "step 37"]).unwrap();
    // The top left: the box darkens the grey, the letters are near white.
    let (n, bright) = changed(&f, (0, 150), (0, 60), grey);
    assert!(n > 100 * 40, "{n} pixels changed");
    assert!(bright > 230, "the brightest pixel is {bright}");
    assert_eq!(
        f.pixel(8, 8)[0],
        (128.0f32 * 0.4).round() as u8,
        "box colour"
    );
    // Nothing elsewhere.
    assert_eq!(changed(&f, (300, 600), (0, 400), grey).0, 0);
    assert_eq!(changed(&f, (0, 600), (200, 400), grey).0, 0);
    assert_eq!(text_size(400), 20.0);

    let mut g = Frame::filled(600, 400, grey);
    annotate_at(&mut g, &["step 37"], Corner::BottomRight).unwrap();
    assert_eq!(changed(&g, (0, 300), (0, 400), grey).0, 0);
    let (n, bright) = changed(&g, (450, 600), (350, 400), grey);
    assert!(n > 1000 && bright > 230, "{n} {bright}");
    annotate_at(&mut g, &[], Corner::TopLeft).unwrap();
    assert_eq!(changed(&g, (0, 300), (0, 400), grey).0, 0);
}

#[test]
fn small_frames_get_text_inside_them_and_can_be_upscaled_first() {
    let grey = [128, 128, 128];
    let small = Frame::filled(64, 64, grey);
    let mut s = small.clone();
    // Longer than the frame is wide: cut at its edge, never outside it.
    annotate(&mut s, &["return 12.5 over many steps", "step 37"]).unwrap();
    assert_eq!(s.rgb.len(), 64 * 64 * 3);
    assert!(changed(&s, (0, 64), (0, 30), grey).1 > 180);
    let up = upscaled_for_text(&small, TEXT_MIN_HEIGHT);
    assert_eq!((up.width, up.height), (256, 256));
    let same = upscaled_for_text(&up, TEXT_MIN_HEIGHT);
    assert!(matches!(same, std::borrow::Cow::Borrowed(_)));
    let tall = Frame::filled(10, 100, grey);
    let odd = upscaled_for_text(&tall, 256);
    assert_eq!(odd.height, 300);
}

/// A CartPole episode under a simple controller, each frame with its step and return.
fn cartpole_episode(steps: usize) -> Vec<Frame> {
    let mut env = CartPole::default();
    let mut rng = EnvRng::seed_from_u64(7);
    let mut obs = [0.0f32; 4];
    env.reset(&mut rng, &mut obs).unwrap();
    let mut ret = 0.0;
    let mut frames = Vec::new();
    for t in 0..steps {
        let mut f = env.render().unwrap();
        annotate(
            &mut f,
            &[
                "CartPole-v1",
                &format!("step {t}"),
                &format!("return {ret:.1}"),
            ],
        )
        .unwrap();
        frames.push(f);
        let right = obs[2] + 0.3 * obs[3] > 0.0;
        let step = env
            .step(ActionRef::Discrete(i64::from(right)), &mut rng, &mut obs)
            .unwrap();
        ret += step.reward;
    }
    frames
}

/// Writes the samples a person looks at: an annotated 600x400 CartPole frame, an
/// annotated 64x64 frame upscaled, and a short GIF. They go to `$VOLLEY_VIDEO_SAMPLES`,
/// else to the temp folder.
#[test]
fn annotated_samples_are_written() {
    let dir = std::env::var_os("VOLLEY_VIDEO_SAMPLES")
        .map(|p| volley_common::testing::TempDir::kept(PathBuf::from(p)))
        .unwrap_or_else(|| scratch("samples"));
    let mut env = CartPole {
        state: [0.4, 0.0, 0.12, 0.0],
    };
    let mut f = env.render().unwrap();
    annotate(&mut f, &["CartPole-v1", "step 37", "return 12.5"]).unwrap();
    save_png(&f, dir.join("annotated.png")).unwrap();

    let mut small = Frame::filled(64, 64, [40, 90, 40]);
    small.fill_rect(20, 30, 34, 44, [220, 200, 60]);
    let mut up = upscaled_for_text(&small, TEXT_MIN_HEIGHT).into_owned();
    annotate(&mut up, &["step 37", "return 12.5"]).unwrap();
    save_png(&up, dir.join("annotated-64.png")).unwrap();

    let info = write_video(dir.join("sample.gif"), &cartpole_episode(40), Some(25.0)).unwrap();
    assert_eq!((info.frames, info.width, info.height), (40, 600, 400));
}

/// How long 300 frames of 512x512 take to encode as MP4 and as GIF:
/// `cargo test --release -p volley-learner --lib video::tests::encode_speed -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, not a check"]
fn encode_speed() {
    let d = scratch("speed");
    let frames: Vec<Frame> = (0..300)
        .map(|i| {
            let mut f = Frame::filled(512, 512, [250, 250, 250]);
            let x = (i as f64 * 0.05).sin() * 150.0 + 256.0;
            f.fill_rect(0, 400, 512, 402, [0, 0, 0]);
            f.fill_rect(x as i64 - 25, 385, x as i64 + 25, 415, [0, 0, 0]);
            let a = i as f64 * 0.03;
            let (s, c) = a.sin_cos();
            let tip = (x + 150.0 * s, 392.0 - 150.0 * c);
            f.fill_convex(
                &[
                    (x - 5.0 * c, 392.0 - 5.0 * s),
                    (x + 5.0 * c, 392.0 + 5.0 * s),
                    (tip.0 + 5.0 * c, tip.1 + 5.0 * s),
                    (tip.0 - 5.0 * c, tip.1 - 5.0 * s),
                ],
                [202, 152, 101],
            );
            annotate(&mut f, &[&format!("step {i}")]).unwrap();
            f
        })
        .collect();
    // A frame of many colours too: a gradient with noise, NeuQuant's case for GIF.
    let noisy: Vec<Frame> = (0..300u32)
        .map(|i| {
            let rgb = (0..512u32 * 512)
                .flat_map(|p| {
                    let (x, y) = (p % 512, p / 512);
                    let n = (p.wrapping_mul(2654435761).wrapping_add(i * 97) >> 27) as u8;
                    [(x / 2) as u8 ^ n, (y / 2) as u8, ((x + y + i) / 4) as u8]
                })
                .collect();
            Frame::from_rgb(512, 512, rgb).unwrap()
        })
        .collect();
    for (name, set) in [("flat", &frames), ("noisy", &noisy)] {
        for ext in ["mp4", "gif"] {
            let path = d.join(format!("{name}.{ext}"));
            let t = std::time::Instant::now();
            let info = write_video(&path, set.iter(), None).unwrap();
            let s = t.elapsed().as_secs_f64();
            let bytes = std::fs::metadata(&path).unwrap().len();
            println!(
                "{name} 300 frames 512x512 -> {ext}: {s:.2} s ({:.1} ms a frame), {} KiB, {} frames",
                1000.0 * s / 300.0,
                bytes / 1024,
                info.frames
            );
        }
    }
}
