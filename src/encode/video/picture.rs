//! Pixel work on the encoder's pictures: the swscale [`Scaler`] that converts a captured
//! picture to the encoder's format, size and range, the conversion frames it writes, and the
//! "camera away" still made of the last picture ([`darken`], or [`fill_black`] when there is
//! none).

use ffmpeg::format::Pixel;
use ffmpeg_next as ffmpeg;

/// A swscale context converting one input definition to the encoder's format and size.
///
/// We drive `sws_scale` directly rather than through ffmpeg-next's wrapper so that the
/// deprecated full-range "J" formats MJPEG decodes to (`yuvj422p`, `yuvj420p`) can be handed to
/// swscale as their plain equivalents plus an explicit full-range flag: the conversion to the
/// encoder's limited range is the same, without swscale's "deprecated pixel format" warning.
pub(in crate::encode) struct Scaler {
    ctx: *mut ffmpeg::ffi::SwsContext,
    /// Input format, width, height and whether it is full range.
    pub(in crate::encode) from: (Pixel, u32, u32, bool),
    /// Output format, width and height.
    pub(in crate::encode) to: (Pixel, u32, u32),
}

// SAFETY: an SwsContext is plain heap state without thread-local ties; moving it between
// threads is fine as long as it is not used concurrently, which `&mut self` guarantees.
unsafe impl Send for Scaler {}

impl Scaler {
    /// To the encoder's limited range.
    pub(in crate::encode) fn new(
        from: (Pixel, u32, u32, bool),
        to: (Pixel, u32, u32),
    ) -> Result<Self, ffmpeg::Error> {
        Self::with_output_range(from, to, false)
    }

    /// To full range when `full_out` (a JPEG's YUV, for the snapshot), else limited.
    pub(in crate::encode) fn with_output_range(
        from: (Pixel, u32, u32, bool),
        to: (Pixel, u32, u32),
        full_out: bool,
    ) -> Result<Self, ffmpeg::Error> {
        let (src_fmt, full_range) = match from.0 {
            Pixel::YUVJ420P => (Pixel::YUV420P, true),
            Pixel::YUVJ422P => (Pixel::YUV422P, true),
            Pixel::YUVJ444P => (Pixel::YUV444P, true),
            Pixel::YUVJ440P => (Pixel::YUV440P, true),
            other => (other, from.3),
        };
        // SAFETY: sws_getContext returns an owned context or null; the coefficient tables are
        // static.
        unsafe {
            let ctx = ffmpeg::ffi::sws_getContext(
                from.1 as i32,
                from.2 as i32,
                src_fmt.into(),
                to.1 as i32,
                to.2 as i32,
                to.0.into(),
                ffmpeg::ffi::SWS_BILINEAR,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null(),
            );
            if ctx.is_null() {
                return Err(ffmpeg::Error::InvalidData);
            }
            if full_range || full_out {
                let coefficients = ffmpeg::ffi::sws_getCoefficients(ffmpeg::ffi::SWS_CS_DEFAULT);
                ffmpeg::ffi::sws_setColorspaceDetails(
                    ctx,
                    coefficients,
                    i32::from(full_range),
                    coefficients,
                    i32::from(full_out),
                    0,
                    1 << 16,
                    1 << 16,
                );
            }
            Ok(Self { ctx, from, to })
        }
    }

    pub(in crate::encode) fn run(
        &mut self,
        src: &ffmpeg::frame::Video,
        dst: &mut ffmpeg::frame::Video,
    ) -> Result<(), ffmpeg::Error> {
        // SAFETY: `src` matches the definition the context was made for (checked by the
        // caller through `from`), `dst` is a writable frame of the output definition.
        let ret = unsafe {
            let s = &*src.as_ptr();
            let d = &mut *dst.as_mut_ptr();
            ffmpeg::ffi::sws_scale(
                self.ctx,
                s.data.as_ptr() as *const *const u8,
                s.linesize.as_ptr(),
                0,
                self.from.2 as i32,
                d.data.as_ptr(),
                d.linesize.as_ptr(),
            )
        };
        if ret < 0 {
            Err(ffmpeg::Error::from(ret))
        } else {
            Ok(())
        }
    }
}

impl Drop for Scaler {
    fn drop(&mut self) {
        // SAFETY: the context is owned and freed once.
        unsafe { ffmpeg::ffi::sws_freeContext(self.ctx) };
    }
}

/// A conversion target frame: the encoder's format and size, limited range.
pub(super) fn conversion_frame(pix_fmt: Pixel, width: u32, height: u32) -> ffmpeg::frame::Video {
    let mut f = ffmpeg::frame::Video::new(pix_fmt, width, height);
    f.set_color_range(ffmpeg::color::Range::MPEG);
    f
}

/// Luma of the "camera away" still: a third of the way from black (limited range).
pub(super) fn dim_luma(y: u8) -> u8 {
    16 + y.saturating_sub(16) / 3
}

/// Chroma of the still: halfway to grey.
pub(super) fn dim_chroma(c: u8) -> u8 {
    (128 + (i16::from(c) - 128) / 2) as u8
}

/// Darkens an 8-bit limited-range picture in place (the encoder formats polypush picks); other
/// formats are left as they are (the still is then the last picture, repeated).
pub(super) fn darken(frame: &mut ffmpeg::frame::Video, format: Pixel) {
    let chroma_planes = match format {
        Pixel::YUV420P => 1..3,
        Pixel::NV12 => 1..2,
        _ => return,
    };
    for y in frame.data_mut(0) {
        *y = dim_luma(*y);
    }
    for plane in chroma_planes {
        for c in frame.data_mut(plane) {
            *c = dim_chroma(*c);
        }
    }
}

/// Fills a picture with black (limited range).
///
/// # Safety
/// `frame` must be writable and allocated for `format` and its size.
pub(super) unsafe fn fill_black(
    frame: &mut ffmpeg::frame::Video,
    format: Pixel,
) -> Result<(), ffmpeg::Error> {
    let raw = frame.as_mut_ptr();
    let mut linesizes = [0isize; 4];
    for (l, &s) in linesizes.iter_mut().zip((*raw).linesize.iter()) {
        *l = s as isize;
    }
    let ret = ffmpeg::ffi::av_image_fill_black(
        (*raw).data.as_mut_ptr(),
        linesizes.as_ptr(),
        format.into(),
        ffmpeg::ffi::AVColorRange::AVCOL_RANGE_MPEG,
        (*raw).width,
        (*raw).height,
    );
    if ret < 0 {
        Err(ffmpeg::Error::from(ret))
    } else {
        Ok(())
    }
}
