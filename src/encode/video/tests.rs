//! Unit tests of the video encoder: settings, the still picture, reopens, and the state enums
//! against the flags they replaced.

use super::picture::{dim_chroma, dim_luma};
use super::*;
use crate::media::EncodedPacketBuf;

#[test]
fn gop_is_interval_times_fps() {
    let s = VideoSettings {
        fps: 25,
        keyframe_interval_s: 2.0,
        ..Default::default()
    };
    assert_eq!(s.gop_frames(), 50);
    let s = VideoSettings {
        fps: 30,
        keyframe_interval_s: 0.1,
        ..Default::default()
    };
    assert_eq!(s.gop_frames(), 3);
}

#[test]
fn settings_errors_name_the_key() {
    let s = VideoSettings {
        preset: "warp".into(),
        ..Default::default()
    };
    let msg = s.check_encodable().unwrap_err().to_string();
    assert!(
        msg.contains("[video] preset") && msg.contains("veryfast"),
        "{msg}"
    );
    let s = VideoSettings {
        width: 641,
        ..Default::default()
    };
    assert!(s
        .check_encodable()
        .unwrap_err()
        .to_string()
        .contains("even"));
}

#[test]
fn the_still_is_darker_and_greyer() {
    assert_eq!(dim_luma(235), 89);
    assert_eq!(dim_luma(16), 16);
    assert_eq!(dim_luma(0), 16, "below black stays black");
    assert_eq!(dim_chroma(128), 128);
    assert_eq!(dim_chroma(240), 184);
    assert_eq!(dim_chroma(16), 72);
}

#[test]
fn stills_repeat_the_last_picture_darkened_and_keep_the_gop() {
    let settings = VideoSettings {
        width: 64,
        height: 48,
        fps: 25,
        keyframe_interval_s: 0.4, // GOP of 10
        bitrate_kbps: 200,
        threads: 1,
        ..Default::default()
    };
    let mut encoder = VideoEncoder::open(&settings).unwrap();
    let mut out: Vec<EncodedPacketBuf> = Vec::new();
    // A still before any picture is a dark frame.
    encoder
        .encode_still(0, false, &mut |p| out.push(p.into()))
        .unwrap();
    let mut frame = crate::capture::Captured {
        frame: ffmpeg::frame::Video::new(Pixel::YUV420P, 64, 48),
        pts_us: 40_000,
    };
    for b in frame.frame.data_mut(0) {
        *b = 200;
    }
    for plane in 1..3 {
        for b in frame.frame.data_mut(plane) {
            *b = 128;
        }
    }
    encoder
        .encode(&mut frame, false, &mut |p| out.push(p.into()))
        .unwrap();
    // Encoded as is: the loop keeps the frame and hands it over when the camera is lost.
    assert!(encoder.encoded_as_is());
    encoder.remember_picture(&frame.frame).unwrap();
    encoder.prepare_still().unwrap();
    let still = encoder.still.as_ref().unwrap();
    assert_eq!(still.data(0)[0], dim_luma(200));
    assert_eq!(still.data(1)[0], 128);
    for i in 2..25 {
        encoder
            .encode_still(i * 40_000, false, &mut |p| out.push(p.into()))
            .unwrap();
    }
    let keyframes: Vec<usize> = out
        .iter()
        .enumerate()
        .filter(|(_, p)| p.keyframe)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(keyframes, [0, 10, 20]);
    let dts: Vec<i64> = out.iter().map(|p| p.dts_ms).collect();
    assert!(dts.windows(2).all(|w| w[1] - w[0] == 40), "{dts:?}");
    // Repeated pictures cost next to nothing.
    assert!(out[5..9].iter().all(|p| p.data.len() < 100));
}

#[test]
fn divided_sizes_are_even_and_at_least_16() {
    let s = |width, height| VideoSettings {
        width,
        height,
        ..Default::default()
    };
    assert_eq!(s(1280, 720).frame_size(2), (640, 360));
    assert_eq!(s(854, 480).frame_size(2), (426, 240));
    assert_eq!(s(20, 16).frame_size(2), (16, 16));
    assert_eq!(s(1280, 720).frame_size(0), (1280, 720), "0 is 1");
    assert_eq!(s(1280, 720).frame_size(200), (320, 180), "clamped to 4");
    let s = VideoSettings {
        fps: 25,
        keyframe_interval_s: 2.0,
        ..Default::default()
    };
    assert_eq!((s.gop_frames_at(1), s.gop_frames_at(2)), (50, 25));
}

fn gradient(i: i64, width: u32, height: u32) -> ffmpeg::frame::Video {
    let mut frame = ffmpeg::frame::Video::new(Pixel::YUV420P, width, height);
    for plane in 0..3 {
        let stride = frame.stride(plane);
        for (row, line) in frame.data_mut(plane).chunks_mut(stride).enumerate() {
            for (col, px) in line.iter_mut().enumerate() {
                *px = ((col + row) as i64 + i * 3) as u8;
            }
        }
    }
    frame
}

#[test]
fn a_reopen_goes_on_from_an_idr_with_continuous_timestamps() {
    let settings = VideoSettings {
        width: 320,
        height: 240,
        fps: 25,
        keyframe_interval_s: 1.0, // GOP of 25
        bitrate_kbps: 400,
        threads: 1,
        reopen_on_rate_change: true,
        ..Default::default()
    };
    let mut encoder = VideoEncoder::open(&settings).unwrap();
    assert!(matches!(
        encoder.set_bitrate(300),
        Err(EncodeError::BitrateChangeUnsupported { .. })
    ));
    let first_extradata = encoder.extradata().cloned().unwrap();
    let mut out: Vec<EncodedPacketBuf> = Vec::new();
    let frame_at = |encoder: &mut VideoEncoder, i: i64, out: &mut Vec<EncodedPacketBuf>| {
        let mut frame = crate::capture::Captured {
            frame: gradient(i, 320, 240),
            pts_us: i * 40_000,
        };
        encoder
            .encode(&mut frame, false, &mut |p| out.push(p.into()))
            .unwrap();
    };
    for i in 0..10 {
        frame_at(&mut encoder, i, &mut out);
    }
    // Bitrate alone: the same parameter sets, an IDR, the same grid.
    let r = encoder
        .reopen(Target::kbps(300), &mut |p| out.push(p.into()))
        .unwrap();
    assert!(matches!(r, Reopened::Applied));
    for i in 10..20 {
        frame_at(&mut encoder, i, &mut out);
    }
    let announced = out[10].reopened.clone().expect("announced");
    assert_eq!(
        (announced.width, announced.height, announced.bitrate_kbps),
        (320, 240, 300)
    );
    assert_eq!(announced.extradata.as_ref(), Some(&first_extradata));
    // Half size and half frame rate: new parameter sets; the GOP stays a second.
    encoder
        .reopen(
            Target {
                video_kbps: 200,
                fps_divisor: 2,
                scale_divisor: 2,
            },
            &mut |p| out.push(p.into()),
        )
        .unwrap();
    assert_eq!(encoder.frame_size(), (160, 120));
    assert_eq!(encoder.frame_rate(), (25, 2));
    for i in 10..40 {
        frame_at(&mut encoder, i * 2, &mut out);
    }
    let announced = out[20].reopened.clone().expect("announced");
    assert_eq!((announced.width, announced.height), (160, 120));
    assert_ne!(announced.extradata.as_ref(), Some(&first_extradata));
    assert_eq!(out.iter().filter(|p| p.reopened.is_some()).count(), 2);

    let keyframes: Vec<usize> = out
        .iter()
        .enumerate()
        .filter(|(_, p)| p.keyframe)
        .map(|(i, _)| i)
        .collect();
    // 13 frames (round(12.5)) per GOP after the second reopen.
    assert_eq!(keyframes, [0, 10, 20, 33, 46]);
    let dts: Vec<i64> = out.iter().map(|p| p.dts_ms).collect();
    assert!(dts[..20].windows(2).all(|w| w[1] - w[0] == 40), "{dts:?}");
    assert!(dts[20..].windows(2).all(|w| w[1] - w[0] == 80), "{dts:?}");
    assert_eq!(dts[20] - dts[19], 40, "no gap at the reopen");

    // The last picture survives at the new size for the still.
    encoder.prepare_still().unwrap();
    let still = encoder.still.as_ref().unwrap();
    assert_eq!((still.width(), still.height()), (160, 120));
    assert_ne!(still.data(0)[0], 16, "not a black frame");
    // And a camera frame kept from before the size change is converted.
    encoder.remember_picture(&gradient(0, 320, 240)).unwrap();
    encoder
        .encode_still(40 * 80_000, false, &mut |p| out.push(p.into()))
        .unwrap();
    encoder.flush(&mut |p| out.push(p.into())).unwrap();
    assert!(out.last().unwrap().dts_ms > dts[dts.len() - 1]);
}

#[test]
fn libx264_is_linked_here() {
    assert!(available_h264_encoders().contains(&"libx264".to_string()));
}

/// The states as two flags and two options (the fields they replaced), against the enums,
/// over every sequence of up to six steps.
#[test]
fn the_state_enums_follow_the_flags_they_replaced() {
    fn sequences(len: usize, steps: u8) -> Vec<Vec<u8>> {
        (0..len).fold(vec![Vec::new()], |acc, _| {
            acc.iter()
                .flat_map(|s| (0..steps).map(move |step| [s.clone(), vec![step]].concat()))
                .collect()
        })
    }
    for len in 0..=6 {
        // Last picture: converted frame, frame as is, remember_picture, failed rescale.
        for seq in sequences(len, 4) {
            let (mut has_last, mut as_is) = (false, false);
            let mut last = LastPicture::None;
            for step in seq {
                match step {
                    0 => ((has_last, as_is), last) = ((true, false), LastPicture::Converted),
                    1 => ((has_last, as_is), last) = ((false, true), LastPicture::AsIs),
                    2 => (has_last, last) = (true, last.copied()),
                    _ if last.in_converted() => (has_last, last) = (false, last.lost()),
                    _ => {}
                }
                assert_eq!((last.in_converted(), last.went_as_is()), (has_last, as_is));
            }
        }
        // VBV: lowered to 100 + step, raised, a frame sent, a frame refused by the encoder.
        for seq in sequences(len, 5) {
            let (mut pending, mut after): (Option<u32>, Option<u32>) = (None, None);
            let mut vbv = VbvChange::None;
            for step in seq {
                match step {
                    0 | 1 => {
                        after = Some(100 + u32::from(step));
                        vbv = vbv.lowered(100 + u32::from(step));
                    }
                    2 => (pending, after, vbv) = (None, None, VbvChange::None),
                    _ => {
                        assert_eq!(vbv.take_before_frame(), pending.take());
                        if step == 3 {
                            pending = after.take();
                            vbv = vbv.frame_sent();
                        }
                    }
                }
            }
            assert_eq!(vbv.take_before_frame(), pending.take());
            assert_eq!(vbv.frame_sent().take_before_frame(), after);
        }
    }
}
