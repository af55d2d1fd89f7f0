//! Device discovery for `polypush devices` and for error messages that name what exists.
//!
//! Cameras are found by scanning `/dev/video*` and asking each node with the V4L2 ioctls
//! (`VIDIOC_QUERYCAP`, `VIDIOC_ENUM_FMT`, `VIDIOC_ENUM_FRAMESIZES`, `VIDIOC_ENUM_FRAMEINTERVALS`)
//! rather than libavdevice's `list_formats`, which only prints to the FFmpeg log. Nodes that are
//! not video capture devices (metadata nodes, the Pi's codec and ISP m2m nodes) are skipped.
//! Microphones come from `/proc/asound/pcm` lines with a `capture` stream. A machine without
//! either yields empty lists, never an error.

use std::fmt;
use std::fs;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// What capture devices this machine has.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Devices {
    pub cameras: Vec<Camera>,
    pub microphones: Vec<Microphone>,
}

/// A V4L2 video capture node.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Camera {
    pub path: PathBuf,
    /// The card name the driver reports (e.g. `HD Pro Webcam C920`).
    pub name: String,
    /// The kernel driver (e.g. `uvcvideo`).
    pub driver: String,
    pub formats: Vec<CameraFormat>,
}

/// One pixel format a camera offers.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CameraFormat {
    /// The V4L2 fourcc, e.g. `MJPG`.
    pub fourcc: String,
    /// The name to put in `input_format` (FFmpeg's), e.g. `mjpeg`, `yuyv422`; `None` if FFmpeg's
    /// v4l2 input has no name for it.
    pub input_format: Option<String>,
    /// The driver's description, e.g. `Motion-JPEG`.
    pub description: String,
    pub sizes: Vec<FrameSize>,
}

/// A frame size a camera offers for a format.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub enum FrameSize {
    Discrete {
        width: u32,
        height: u32,
        /// Discrete frame rates, highest first (may be empty if the driver does not say).
        fps: Vec<f64>,
    },
    /// Any size in a range (continuous or stepwise).
    Range {
        min_width: u32,
        max_width: u32,
        min_height: u32,
        max_height: u32,
    },
}

/// An ALSA PCM device with a capture stream.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Microphone {
    /// What to put in `[audio] device`, e.g. `hw:1,0`.
    pub device: String,
    pub card: u32,
    pub pcm: u32,
    pub name: String,
}

/// Scans for cameras and microphones. Never fails: unreadable devices are left out.
pub fn list_devices() -> Devices {
    Devices {
        cameras: list_cameras(),
        microphones: list_microphones(),
    }
}

/// The V4L2 video capture nodes under `/dev`, in numeric order.
pub(super) fn list_cameras() -> Vec<Camera> {
    let mut nodes: Vec<(u32, PathBuf)> = match fs::read_dir("/dev") {
        Ok(dir) => dir
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let n: u32 = name.strip_prefix("video")?.parse().ok()?;
                Some((n, e.path()))
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    nodes.sort();
    nodes
        .into_iter()
        .filter_map(|(_, path)| v4l2::query(&path))
        .collect()
}

/// The ALSA capture PCMs listed in `/proc/asound/pcm`.
pub(super) fn list_microphones() -> Vec<Microphone> {
    fs::read_to_string("/proc/asound/pcm")
        .map(|text| parse_asound_pcm(&text))
        .unwrap_or_default()
}

/// Parses `/proc/asound/pcm`: `CC-DD: id : name : playback N : capture N` per line.
pub(super) fn parse_asound_pcm(text: &str) -> Vec<Microphone> {
    text.lines()
        .filter_map(|line| {
            let (ids, rest) = line.split_once(": ")?;
            let (card, pcm) = ids.trim().split_once('-')?;
            let (card, pcm): (u32, u32) = (card.parse().ok()?, pcm.parse().ok()?);
            let parts: Vec<&str> = rest.split(" : ").map(str::trim).collect();
            if !parts.iter().any(|p| p.starts_with("capture")) {
                return None;
            }
            let name = parts
                .get(1)
                .or(parts.first())
                .copied()
                .unwrap_or("")
                .to_string();
            Some(Microphone {
                device: format!("hw:{card},{pcm}"),
                card,
                pcm,
                name,
            })
        })
        .collect()
}

/// FFmpeg's v4l2 `input_format` name for a V4L2 fourcc (libavdevice's v4l2-common table).
pub(super) fn input_format_for_fourcc(fourcc: &str) -> Option<&'static str> {
    Some(match fourcc {
        "MJPG" | "JPEG" => "mjpeg",
        "YUYV" => "yuyv422",
        "UYVY" => "uyvy422",
        "YU12" => "yuv420p",
        "YV12" => "yuv420p",
        "422P" => "yuv422p",
        "NV12" => "nv12",
        "NV21" => "nv21",
        "RGB3" => "rgb24",
        "BGR3" => "bgr24",
        "GREY" => "gray",
        "H264" => "h264",
        _ => return None,
    })
}

impl Camera {
    /// The formats as names for `input_format` (fourcc when FFmpeg has no name).
    pub fn format_names(&self) -> Vec<String> {
        self.formats.iter().map(CameraFormat::name).collect()
    }

    /// One line: `/dev/video2 (mjpeg 1280x720, 640x480; yuyv422 640x480)`.
    pub fn summary(&self) -> String {
        let formats: Vec<String> = self
            .formats
            .iter()
            .map(|f| format!("{} {}", f.name(), f.size_list()))
            .collect();
        if formats.is_empty() {
            format!("{} ({})", self.path.display(), self.name)
        } else {
            format!("{} ({})", self.path.display(), formats.join("; "))
        }
    }
}

impl CameraFormat {
    pub fn name(&self) -> String {
        self.input_format
            .clone()
            .unwrap_or_else(|| self.fourcc.clone())
    }

    /// Whether the camera offers `width`x`height` in this format (`None`: the driver did not
    /// list sizes, so we cannot tell).
    pub fn offers_size(&self, width: u32, height: u32) -> Option<bool> {
        if self.sizes.is_empty() {
            return None;
        }
        Some(self.sizes.iter().any(|s| match *s {
            FrameSize::Discrete {
                width: w,
                height: h,
                ..
            } => w == width && h == height,
            FrameSize::Range {
                min_width,
                max_width,
                min_height,
                max_height,
            } => {
                (min_width..=max_width).contains(&width)
                    && (min_height..=max_height).contains(&height)
            }
        }))
    }

    pub fn size_list(&self) -> String {
        let sizes: Vec<String> = self
            .sizes
            .iter()
            .map(|s| match s {
                FrameSize::Discrete { width, height, .. } => format!("{width}x{height}"),
                FrameSize::Range {
                    min_width,
                    max_width,
                    min_height,
                    max_height,
                } => format!("{min_width}x{min_height}..{max_width}x{max_height}"),
            })
            .collect();
        sizes.join(", ")
    }
}

impl Devices {
    /// For error messages: `cameras found: /dev/video2 (mjpeg 1280x720)` or `no cameras found`.
    pub fn cameras_summary(&self) -> String {
        if self.cameras.is_empty() {
            "no cameras found (no V4L2 capture device under /dev/video*)".to_string()
        } else {
            let list: Vec<String> = self.cameras.iter().map(Camera::summary).collect();
            format!("cameras found: {}", list.join(", "))
        }
    }

    /// For error messages: `capture devices found: hw:1,0 (USB Audio)` or `none found`.
    pub fn microphones_summary(&self) -> String {
        if self.microphones.is_empty() {
            "no ALSA capture devices found (/proc/asound/pcm lists none)".to_string()
        } else {
            let list: Vec<String> = self
                .microphones
                .iter()
                .map(|m| format!("{} ({})", m.device, m.name))
                .collect();
            format!("capture devices found: {}", list.join(", "))
        }
    }

    pub fn camera(&self, path: &Path) -> Option<&Camera> {
        self.cameras.iter().find(|c| c.path == path)
    }
}

impl fmt::Display for Devices {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Cameras (V4L2, [video] source = \"v4l2\"):")?;
        if self.cameras.is_empty() {
            writeln!(
                f,
                "  none found (no video capture device under /dev/video*)"
            )?;
        }
        for cam in &self.cameras {
            writeln!(f, "  {}  {} ({})", cam.path.display(), cam.name, cam.driver)?;
            for format in &cam.formats {
                writeln!(
                    f,
                    "    input_format = \"{}\"  ({})",
                    format.name(),
                    format.description
                )?;
                for size in &format.sizes {
                    match size {
                        FrameSize::Discrete { width, height, fps } => {
                            let rates: Vec<String> = fps.iter().map(|r| format_fps(*r)).collect();
                            if rates.is_empty() {
                                writeln!(f, "      {width}x{height}")?;
                            } else {
                                writeln!(f, "      {width}x{height} @ {} fps", rates.join(", "))?;
                            }
                        }
                        FrameSize::Range {
                            min_width,
                            max_width,
                            min_height,
                            max_height,
                        } => writeln!(
                            f,
                            "      any size from {min_width}x{min_height} to {max_width}x{max_height}"
                        )?,
                    }
                }
            }
        }
        writeln!(f, "Microphones (ALSA capture, [audio] source = \"alsa\"):")?;
        if self.microphones.is_empty() {
            writeln!(f, "  none found (/proc/asound/pcm lists no capture device)")?;
        }
        for mic in &self.microphones {
            writeln!(f, "  device = \"{}\"  {}", mic.device, mic.name)?;
        }
        Ok(())
    }
}

fn format_fps(fps: f64) -> String {
    if (fps - fps.round()).abs() < 0.005 {
        format!("{}", fps.round() as u64)
    } else {
        format!("{fps:.2}")
    }
}

/// The V4L2 ioctls, declared here because the `libc` crate does not carry videodev2.h.
/// The request numbers follow the generic Linux `_IOC` encoding (x86, ARM, RISC-V).
mod v4l2 {
    use super::*;

    const CAP_VIDEO_CAPTURE: u32 = 0x0000_0001;
    const CAP_VIDEO_CAPTURE_MPLANE: u32 = 0x0000_1000;
    const CAP_VIDEO_M2M: u32 = 0x0000_8000;
    const CAP_VIDEO_M2M_MPLANE: u32 = 0x0000_4000;
    const CAP_DEVICE_CAPS: u32 = 0x8000_0000;
    const BUF_TYPE_VIDEO_CAPTURE: u32 = 1;
    const FRMSIZE_TYPE_DISCRETE: u32 = 1;
    const FRMIVAL_TYPE_DISCRETE: u32 = 1;
    /// Enumeration limits: a broken driver must not make us loop forever.
    const MAX_ENTRIES: u32 = 64;

    #[repr(C)]
    struct Capability {
        driver: [u8; 16],
        card: [u8; 32],
        bus_info: [u8; 32],
        version: u32,
        capabilities: u32,
        device_caps: u32,
        reserved: [u32; 3],
    }

    #[repr(C)]
    struct FmtDesc {
        index: u32,
        type_: u32,
        flags: u32,
        description: [u8; 32],
        pixelformat: u32,
        mbus_code: u32,
        reserved: [u32; 3],
    }

    #[repr(C)]
    struct FrmSizeEnum {
        index: u32,
        pixel_format: u32,
        type_: u32,
        /// discrete: width, height; stepwise: min_w, max_w, step_w, min_h, max_h, step_h.
        u: [u32; 6],
        reserved: [u32; 2],
    }

    #[repr(C)]
    struct FrmIvalEnum {
        index: u32,
        pixel_format: u32,
        width: u32,
        height: u32,
        type_: u32,
        /// discrete: numerator, denominator (a frame interval).
        u: [u32; 6],
        reserved: [u32; 2],
    }

    const fn ioc(dir: u64, nr: u64, size: usize) -> u64 {
        (dir << 30) | ((size as u64) << 16) | ((b'V' as u64) << 8) | nr
    }
    const READ: u64 = 2;
    const READ_WRITE: u64 = 3;
    const QUERYCAP: u64 = ioc(READ, 0, std::mem::size_of::<Capability>());
    const ENUM_FMT: u64 = ioc(READ_WRITE, 2, std::mem::size_of::<FmtDesc>());
    const ENUM_FRAMESIZES: u64 = ioc(READ_WRITE, 74, std::mem::size_of::<FrmSizeEnum>());
    const ENUM_FRAMEINTERVALS: u64 = ioc(READ_WRITE, 75, std::mem::size_of::<FrmIvalEnum>());

    fn ioctl<T>(fd: i32, request: u64, arg: &mut T) -> bool {
        // SAFETY: `arg` is a #[repr(C)] struct matching the kernel's layout for `request`,
        // and lives for the duration of the call.
        unsafe { libc::ioctl(fd, request as _, arg as *mut T) == 0 }
    }

    fn zeroed<T>() -> T {
        // SAFETY: only used for the plain-integer #[repr(C)] structs above.
        unsafe { std::mem::zeroed() }
    }

    fn c_string(bytes: &[u8]) -> String {
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        String::from_utf8_lossy(&bytes[..end]).trim().to_string()
    }

    fn fourcc(code: u32) -> String {
        let b = code.to_le_bytes();
        String::from_utf8_lossy(&b).trim_end().to_string()
    }

    /// Queries one node; `None` if it cannot be opened or is not a video capture device.
    pub(super) fn query(path: &Path) -> Option<Camera> {
        // O_NONBLOCK: never wait on a device another process holds; enumeration does not
        // disturb a stream that is running.
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .ok()?;
        let fd = file.as_raw_fd();
        let mut cap: Capability = zeroed();
        if !ioctl(fd, QUERYCAP, &mut cap) {
            return None;
        }
        let caps = if cap.capabilities & CAP_DEVICE_CAPS != 0 {
            cap.device_caps
        } else {
            cap.capabilities
        };
        let is_capture = caps & (CAP_VIDEO_CAPTURE | CAP_VIDEO_CAPTURE_MPLANE) != 0;
        let is_m2m = caps & (CAP_VIDEO_M2M | CAP_VIDEO_M2M_MPLANE) != 0;
        if !is_capture || is_m2m {
            return None;
        }
        let mut formats = Vec::new();
        for index in 0..MAX_ENTRIES {
            let mut desc: FmtDesc = zeroed();
            desc.index = index;
            desc.type_ = BUF_TYPE_VIDEO_CAPTURE;
            if !ioctl(fd, ENUM_FMT, &mut desc) {
                break;
            }
            let code = fourcc(desc.pixelformat);
            formats.push(CameraFormat {
                input_format: input_format_for_fourcc(&code).map(str::to_string),
                fourcc: code,
                description: c_string(&desc.description),
                sizes: sizes(fd, desc.pixelformat),
            });
        }
        Some(Camera {
            path: path.to_path_buf(),
            name: c_string(&cap.card),
            driver: c_string(&cap.driver),
            formats,
        })
    }

    fn sizes(fd: i32, pixel_format: u32) -> Vec<FrameSize> {
        let mut out = Vec::new();
        for index in 0..MAX_ENTRIES {
            let mut size: FrmSizeEnum = zeroed();
            size.index = index;
            size.pixel_format = pixel_format;
            if !ioctl(fd, ENUM_FRAMESIZES, &mut size) {
                break;
            }
            if size.type_ == FRMSIZE_TYPE_DISCRETE {
                let (width, height) = (size.u[0], size.u[1]);
                out.push(FrameSize::Discrete {
                    width,
                    height,
                    fps: rates(fd, pixel_format, width, height),
                });
            } else {
                out.push(FrameSize::Range {
                    min_width: size.u[0],
                    max_width: size.u[1],
                    min_height: size.u[3],
                    max_height: size.u[4],
                });
                break;
            }
        }
        out
    }

    fn rates(fd: i32, pixel_format: u32, width: u32, height: u32) -> Vec<f64> {
        let mut out = Vec::new();
        for index in 0..MAX_ENTRIES {
            let mut ival: FrmIvalEnum = zeroed();
            ival.index = index;
            ival.pixel_format = pixel_format;
            ival.width = width;
            ival.height = height;
            if !ioctl(fd, ENUM_FRAMEINTERVALS, &mut ival) || ival.type_ != FRMIVAL_TYPE_DISCRETE {
                break;
            }
            let (num, den) = (ival.u[0], ival.u[1]);
            if num > 0 {
                out.push(den as f64 / num as f64);
            }
        }
        out.sort_by(|a, b| b.total_cmp(a));
        out
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn ioctl_numbers_match_videodev2_h() {
            assert_eq!(std::mem::size_of::<Capability>(), 104);
            assert_eq!(std::mem::size_of::<FmtDesc>(), 64);
            assert_eq!(std::mem::size_of::<FrmSizeEnum>(), 44);
            assert_eq!(std::mem::size_of::<FrmIvalEnum>(), 52);
            assert_eq!(QUERYCAP, 0x8068_5600);
            assert_eq!(ENUM_FMT, 0xc040_5602);
            assert_eq!(ENUM_FRAMESIZES, 0xc02c_564a);
            assert_eq!(ENUM_FRAMEINTERVALS, 0xc034_564b);
        }

        #[test]
        fn fourcc_text() {
            assert_eq!(fourcc(u32::from_le_bytes(*b"MJPG")), "MJPG");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_asound_pcm() {
        let text = "00-00: ALC887-VD Analog : ALC887-VD Analog : playback 1 : capture 1\n\
                    00-01: ALC887-VD Digital : ALC887-VD Digital : playback 1\n\
                    01-00: USB Audio : USB Audio : capture 1\n";
        let mics = parse_asound_pcm(text);
        assert_eq!(
            mics,
            vec![
                Microphone {
                    device: "hw:0,0".into(),
                    card: 0,
                    pcm: 0,
                    name: "ALC887-VD Analog".into()
                },
                Microphone {
                    device: "hw:1,0".into(),
                    card: 1,
                    pcm: 0,
                    name: "USB Audio".into()
                },
            ]
        );
    }

    #[test]
    fn listing_works_without_devices() {
        // On a machine without cameras or sound cards this is two empty lists; with devices
        // it lists them. Either way it does not fail, and prints.
        let devices = list_devices();
        let text = devices.to_string();
        assert!(text.contains("Cameras"));
        assert!(text.contains("Microphones"));
    }

    #[test]
    fn camera_summary_names_formats_and_sizes() {
        let cam = Camera {
            path: "/dev/video2".into(),
            name: "Webcam".into(),
            driver: "uvcvideo".into(),
            formats: vec![CameraFormat {
                fourcc: "MJPG".into(),
                input_format: Some("mjpeg".into()),
                description: "Motion-JPEG".into(),
                sizes: vec![
                    FrameSize::Discrete {
                        width: 1280,
                        height: 720,
                        fps: vec![30.0],
                    },
                    FrameSize::Discrete {
                        width: 640,
                        height: 480,
                        fps: vec![30.0, 15.0],
                    },
                ],
            }],
        };
        assert_eq!(cam.summary(), "/dev/video2 (mjpeg 1280x720, 640x480)");
        assert_eq!(cam.formats[0].offers_size(640, 480), Some(true));
        assert_eq!(cam.formats[0].offers_size(1920, 1080), Some(false));
    }
}
